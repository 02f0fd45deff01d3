"""Finding the Bento inside a built artifact, so `verify` checks what will actually run.

Targets copy the whole Bento folder into their artifact: a Lambda zip, an
edge bundle (.tar.gz), an OCI image layout (a folder with index.json and
blobs/). This module walks those formats with the standard library only,
finds the one folder whose `manifest.json` is a Bento manifest, and extracts
that folder (and nothing else) into a temporary directory for verification.
Entry names are checked: nothing is ever written outside that directory.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import MANIFEST_NAME

_MAX_MANIFEST = 16 * 1024 * 1024
Opener = Callable[[], IO[bytes]]


def _is_bento_manifest(data: bytes) -> bool:
    try:
        raw = json.loads(data)
    except ValueError:
        return False
    return isinstance(raw, dict) and {"name", "version", "files", "model"} <= raw.keys()


def _safe(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name.lstrip("/").removeprefix("./"))
    if not path.parts or any(part in ("..", "") for part in path.parts):
        return None
    return path


def _zip_entries(path: Path) -> Iterator[tuple[str, int, Opener]]:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.is_dir():
                yield info.filename, info.file_size, functools.partial(archive.open, info)


def _tar_entries(fileobj: IO[bytes] | io.BufferedIOBase) -> Iterator[tuple[str, int, Opener]]:
    with tarfile.open(fileobj=fileobj, mode="r:*") as archive:
        for member in archive:
            if member.isfile():
                yield member.name, member.size, functools.partial(_member_reader, archive, member)


def _member_reader(archive: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    handle = archive.extractfile(member)
    if handle is None:  # extractfile answers None only for what is not a regular file, filtered out above
        raise BentoCompileError(f"{member.name} in the archive is not a regular file.",
                                "Rebuild the artifact with `bento-compile target …`.")
    return handle


def _oci_layers(layout: Path) -> list[Path]:
    """Layer blobs of every image in an OCI layout (first manifest of nested indexes), base layer first."""
    def blob(digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return layout / "blobs" / algorithm / hexdigest

    def manifests(index_path: Path) -> list[dict]:
        index = json.loads(index_path.read_text())
        found = []
        for descriptor in index.get("manifests", []):
            media = descriptor.get("mediaType", "")
            if "index" in media or "manifest.list" in media:
                found += manifests(blob(descriptor["digest"]))
            else:
                found.append(json.loads(blob(descriptor["digest"]).read_text()))
        return found

    layers: list[Path] = []
    for manifest in manifests(layout / "index.json"):
        layers += [blob(layer["digest"]) for layer in manifest.get("layers", [])]
    return layers


def _open_layer(path: Path) -> io.BufferedIOBase:
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


@contextlib.contextmanager
def _sources(artifact: Path) -> Iterator[list[Callable[[], Iterator[tuple[str, int, Opener]]]]]:
    """One or more entry iterators (several for the layers of an OCI layout)."""
    if artifact.is_dir() and (artifact / "index.json").is_file() and (artifact / "blobs").is_dir():
        stack = contextlib.ExitStack()
        with stack:
            def layer_entries(layer: Path) -> Iterator[tuple[str, int, Opener]]:
                handle = stack.enter_context(_open_layer(layer))
                yield from _tar_entries(handle)
            yield [functools.partial(layer_entries, layer) for layer in _oci_layers(artifact)]
        return
    if artifact.is_file() and zipfile.is_zipfile(artifact):
        yield [functools.partial(_zip_entries, artifact)]
        return
    if artifact.is_file():
        try:
            with tarfile.open(artifact, "r:*"):
                pass
        except tarfile.TarError:
            pass
        else:
            def tar_entries() -> Iterator[tuple[str, int, Opener]]:
                with open(artifact, "rb") as handle:
                    yield from _tar_entries(handle)
            yield [tar_entries]
            return
    raise BentoCompileError(f"{artifact} is not a Bento folder, a zip, a tar(.gz) bundle or an OCI image layout.",
                            "Pass a stored TAG, a Bento folder, or the file/folder a `bento-compile target` wrote.")


def _runtime_folder(artifact: Path, found: str) -> str | None:
    """Where the runtime of this artifact kind loads its Bento from, when the kind says: the Lambda handler
    loads `bento/` at the zip's root, an edge bundle's `run` loads TOP/bento; None when it cannot be told."""
    if artifact.is_file() and zipfile.is_zipfile(artifact):
        return "bento"
    if artifact.is_file() and "/" in found:
        return f"{found.split('/', 1)[0]}/bento"
    return None


@contextlib.contextmanager
def extracted_bento(artifact: Path) -> Iterator[Path]:
    """Yield a temporary folder holding the artifact's Bento (every file of its folder); removed afterwards."""
    artifact = Path(artifact)
    if artifact.is_dir() and (artifact / MANIFEST_NAME).is_file():
        yield artifact
        return
    with _sources(artifact) as sources:
        folders: dict[str, bytes] = {}
        for entries in sources:
            for name, size, opener in entries():
                safe = _safe(name)
                if safe is None or safe.name != MANIFEST_NAME:
                    continue
                if size > _MAX_MANIFEST:  # never skipped: a Bento verify cannot read may be the one that runs
                    raise BentoCompileError(
                        f"{artifact} holds {safe.as_posix()} of {size} bytes, over the {_MAX_MANIFEST} a Bento "
                        "manifest can be: verify cannot read it, and the runtime might load it. Refusing.",
                        "Rebuild the artifact with `bento-compile target …`.")
                with opener() as handle:
                    data = handle.read()
                if _is_bento_manifest(data):
                    folders[safe.parent.as_posix()] = data
        if not folders:
            raise BentoCompileError(f"No Bento (a folder with a Bento manifest.json) found in {artifact}.",
                                    "Check the artifact was built by `bento-compile target …`.")
        if len(folders) > 1:  # the runtime loads exactly one: a second copy (even an identical one) is a decoy
            raise BentoCompileError(f"{artifact} holds more than one Bento ({', '.join(sorted(folders))}); the "
                                    "runtime loads exactly one, so verify refuses the ambiguity.",
                                    "Rebuild the artifact with `bento-compile target …`; it holds one Bento.")
        prefix = next(iter(folders))
        expected = _runtime_folder(artifact, prefix)
        if expected is not None and prefix != expected:
            raise BentoCompileError(f"{artifact} holds its Bento in {prefix}/, but the runtime loads {expected}/.",
                                    "Rebuild the artifact with `bento-compile target …`.")
        tmp = Path(tempfile.mkdtemp(prefix="bento-verify-"))
        try:
            for entries in sources:
                for name, _size, opener in entries():
                    safe = _safe(name)
                    if safe is None:
                        continue
                    try:
                        relative = safe.relative_to(prefix) if prefix != "." else safe
                    except ValueError:
                        continue
                    dest = tmp.joinpath(*relative.parts)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with opener() as source, open(dest, "wb") as out:
                        shutil.copyfileobj(source, out, 1 << 20)
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

