"""The local Bento store: `$BENTO_COMPILE_HOME/bentos/<name>/<version>/`.

A Bento is written whole into a temporary folder inside the store and renamed
into place, so a failed or interrupted build leaves nothing behind, and a
reader never sees half a Bento. Versions are content hashes: storing the same
content twice is a no-op.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bento_compile.core.errors import BentoCompileError
from bento_compile.core.files import write_atomic
from bento_compile.runtimes.boundary import UnsafeName, check_name, check_version
from bento_compile.runtimes.manifest import MANIFEST_NAME, Manifest, read_manifest
from bento_compile.runtimes.names import parse_bento_tag


def store_home() -> Path:
    return Path(os.environ.get("BENTO_COMPILE_HOME") or Path.home() / ".bento-compile")


@dataclass(frozen=True)
class StoredBento:
    path: Path
    manifest: Manifest

    @property
    def tag(self) -> str:
        return self.manifest.tag

    @property
    def created(self) -> str:
        return self.manifest.created

    @property
    def size(self) -> int:
        return sum(meta.size for meta in self.manifest.files.values())


class BentoStore:
    def __init__(self, home: Path | None = None):
        self.home = Path(home) if home else store_home()
        self.root = self.home / "bentos"

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A temporary folder on the store's file system; removed unless committed."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def commit(self, staged: Path, name: str, version: str) -> tuple[Path, bool]:
        """Move a staged Bento into place. Returns (path, created_new)."""
        try:  # the last line of defence: these two become folder names under the store
            check_name(name, "Bento name")
            check_version(version, "Bento version")
        except UnsafeName as exc:
            raise BentoCompileError(f"Refusing to store a Bento: {exc}.",
                                    "Nothing was written; rebuild the Bento or pull it from a good copy.") from None
        target = self.root / name / version
        if (target / MANIFEST_NAME).is_file():
            self._set_latest(name, version)
            return target, False
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, target)
        except OSError:  # a concurrent build of the same content won the race
            if not (target / MANIFEST_NAME).is_file():
                raise
            return target, False
        self._set_latest(name, version)
        return target, True

    def _set_latest(self, name: str, version: str) -> None:
        write_atomic(self.root / name / "latest", version + "\n")

    def list(self, name: str | None = None) -> list[StoredBento]:
        if not self.root.is_dir():
            return []
        found = []
        for manifest_path in sorted(self.root.glob(f"{name or '*'}/*/{MANIFEST_NAME}")):
            if manifest_path.parent.name.startswith("."):
                continue
            try:
                found.append(StoredBento(manifest_path.parent, read_manifest(manifest_path.parent)))
            except Exception:  # a damaged entry must not hide the others
                continue
        return sorted(found, key=lambda b: (b.manifest.name, b.created), reverse=False)

    def resolve(self, tag: str) -> StoredBento:
        """`name`, `name:latest` or `name:version` (a unique version prefix is enough)."""
        parsed = parse_bento_tag(tag)
        if parsed is None:
            raise BentoCompileError(f"'{tag}' is not a Bento tag.",
                                    "Use NAME:VERSION or NAME:latest, e.g. churn:latest.")
        name, version = parsed
        candidates = self.list(name)
        if not candidates:
            raise BentoCompileError(f"No Bento named '{name}' in {self.root}.",
                                    "Run `bento-compile list` to see what is stored, or build it first.")
        if version == "latest":
            return self._latest(name, candidates)
        chosen = [b for b in candidates if b.manifest.version.startswith(version)]
        if len(chosen) != 1:
            known = ", ".join(b.tag for b in candidates)
            problem = "matches several Bentos" if chosen else "is not stored"
            raise BentoCompileError(f"'{tag}' {problem}.", f"Stored versions: {known}.")
        return chosen[0]

    def _latest(self, name: str, candidates: Sequence[StoredBento]) -> StoredBento:
        pointer = self.root / name / "latest"
        if pointer.is_file():
            version = pointer.read_text(encoding="utf-8").strip()
            for bento in candidates:
                if bento.manifest.version == version:
                    return bento
        return max(candidates, key=lambda b: b.created)

    def delete(self, tag: str) -> StoredBento:
        bento = self.resolve(tag)
        # Rename first, then remove: a reader never sees a half-deleted Bento.
        doomed = bento.path.parent / f".deleting-{bento.manifest.version}"
        os.rename(bento.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        pointer = bento.path.parent / "latest"
        if pointer.is_file() and pointer.read_text(encoding="utf-8").strip() == bento.manifest.version:
            remaining = self.list(bento.manifest.name)
            if remaining:
                self._set_latest(bento.manifest.name, max(remaining, key=lambda b: b.created).manifest.version)
            else:
                pointer.unlink()
        return bento
