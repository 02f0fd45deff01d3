"""Unpacking wheels into a folder the way an installer lays them out, without running anything.

A wheel is a zip whose root is site-packages, plus an optional `NAME.data/`
folder whose `purelib` / `platlib` parts also belong in site-packages
(`scripts`, `headers`, `data` do not ship in a serving artifact). Nothing is
executed and nothing is compiled: the wheels were built for the target
platform, not for this machine. Entries that would escape the folder are refused.
Modes are normalised: 0755 for executables, 0644 otherwise.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from bento_compile.core.errors import BentoCompileError
from bento_compile.core.files import cached_folder
from bento_compile.targets.wheels import Wheel


def _destination(name: str) -> str | None:
    parts = PurePosixPath(name).parts
    if parts and parts[0].endswith(".data"):
        if len(parts) > 2 and parts[1] in ("purelib", "platlib"):
            return "/".join(parts[2:])
        return None  # scripts, headers, data: not for a serving artifact
    return name


def _refuse(wheel: Wheel, entry: str) -> BentoCompileError:
    return BentoCompileError(f"{wheel.filename} holds {entry!r}, outside the package folder.",
                             "Do not ship this wheel (it may be tampered with); report it to its maintainers.")


def unpack_wheel(wheel: Wheel, dest: Path) -> None:
    """Extract one wheel into `dest` (site-packages layout); a file another wheel put there is replaced."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with zipfile.ZipFile(wheel.path) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            relative = _destination(info.filename)
            if relative is None:
                continue
            # Both checks: the name as written (absolute or with `..`), and where it lands once
            # resolved (through any folder an earlier entry made).
            if relative.startswith("/") or ".." in PurePosixPath(relative).parts:
                raise _refuse(wheel, info.filename)
            target = (root / relative).resolve()
            if root not in target.parents:
                raise _refuse(wheel, info.filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)  # streamed: some shared libraries are 100+ MB
            executable = (info.external_attr >> 16) & 0o111
            target.chmod(0o755 if executable else 0o644)


def unpack_wheels(wheels: Iterable[Wheel], dest: Path) -> None:
    """Extract every wheel into one `dest` folder, in order."""
    dest.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        unpack_wheel(wheel, dest)


def unpacked_wheel(wheel: Wheel, cache: Path) -> Path:
    """The wheel unpacked into a folder of its own under `cache/unpacked/`, kept by its sha256."""
    return cached_folder(cache / "unpacked" / wheel.sha256, lambda work: unpack_wheel(wheel, work), ".unpack-")
