"""Unpacking wheels into a folder the way an installer lays them out, without running anything.

A wheel is a zip whose root is site-packages, plus an optional `NAME.data/`
folder whose `purelib` / `platlib` parts also belong in site-packages
(`scripts`, `headers`, `data` do not ship in a serving artifact). Nothing is
executed and nothing is compiled: the wheels were built for the target
platform, not for this machine. Entries that would escape the folder are refused.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from bento_compile.core.errors import BentoCompileError
from bento_compile.targets.wheels import Wheel


def _destination(name: str) -> str | None:
    parts = PurePosixPath(name).parts
    if parts and parts[0].endswith(".data"):
        if len(parts) > 2 and parts[1] in ("purelib", "platlib"):
            return "/".join(parts[2:])
        return None  # scripts, headers, data: not for a serving artifact
    return name


def unpack_wheels(wheels: Iterable[Wheel], dest: Path) -> None:
    """Extract every wheel into `dest` (site-packages layout), keeping executable bits."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    for wheel in wheels:
        with zipfile.ZipFile(wheel.path) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                relative = _destination(info.filename)
                if relative is None:
                    continue
                target = (root / relative).resolve()
                if root not in target.parents:
                    raise BentoCompileError(f"{wheel.filename} holds {info.filename!r}, outside the package folder.",
                                            "Do not ship this wheel; report it to its maintainers.")
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source:
                    target.write_bytes(source.read())
                mode = (info.external_attr >> 16) & 0o777
                target.chmod(0o755 if mode & 0o100 else 0o644)
