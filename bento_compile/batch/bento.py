"""Finding the Bento to score with, and opening it the way the runtime does: hashes, signature, session."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.backends import Backend, open_backend
from bento_compile.runtimes.errors import IntegrityError
from bento_compile.runtimes.manifest import MANIFEST_NAME, Manifest, read_manifest, verify_files
from bento_compile.runtimes.names import parse_bento_tag
from bento_compile.runtimes.trust import enforce_trust


def resolve_bento(ref: str | Path) -> Path:
    """A Bento folder from `name:version` / `name:latest` (the local store) or a path to a Bento folder."""
    path = Path(ref)
    if path.is_dir():
        if not (path / MANIFEST_NAME).is_file():
            raise BentoCompileError(f"{path} is a folder without {MANIFEST_NAME}: it is not a Bento.",
                                    "Pass a Bento tag (NAME:VERSION) or the folder `bento-compile show` prints.")
        return path.resolve()
    if isinstance(ref, str) and parse_bento_tag(ref) is not None:
        return BentoStore().resolve(ref).path
    raise BentoCompileError(f"'{ref}' is neither a stored Bento tag nor a Bento folder.",
                            "Pass NAME:VERSION or NAME:latest (see `bento-compile list`), or a Bento folder.")


@dataclass
class OpenBento:
    """A Bento whose files passed their checks, with one session that scoring keeps for its whole life."""

    path: Path
    manifest: Manifest
    backend: Backend


def verify_bento(bento_dir: Path) -> Manifest:
    """The manifest of a Bento whose signature (when a key is configured) and file hashes check out."""
    manifest = read_manifest(bento_dir)
    enforce_trust(bento_dir, manifest)
    verify_files(bento_dir, manifest)
    return manifest


def open_verified(bento_dir: Path, intra_op_threads: int) -> OpenBento:
    """Read the manifest, check the signature (when a key is configured) and every file's sha256, then open the
    session: exactly the runtime's load, so a damaged or unsigned Bento scores nothing."""
    manifest = verify_bento(bento_dir)
    return OpenBento(bento_dir, manifest, open_backend(bento_dir, manifest, intra_op_threads))


def bento_archive(bento_dir: Path) -> bytes:
    """The Bento folder as a gzip tar (sorted names, fixed times): how it travels to executors and actors."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(p for p in bento_dir.rglob("*") if p.is_file()):
            info = archive.gettarinfo(str(path), arcname=str(path.relative_to(bento_dir)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(path, "rb") as handle:
                archive.addfile(info, handle)
    return buffer.getvalue()


def unpack_archive(data: bytes, target: Path) -> Path:
    """Unpack a Bento archive made by `bento_archive`; refuses members that would land outside `target`."""
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            if not member.isfile() or member.name.startswith("/") or ".." in Path(member.name).parts:
                raise IntegrityError(f"the Bento archive holds '{member.name}', which is not a plain file inside it")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: refuse links and odd modes as well
            archive.extractall(target, filter="data")
        else:
            archive.extractall(target)
    return target
