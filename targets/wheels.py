"""Resolving the runtime's dependencies as wheels for the TARGET platform.

Never from the build machine's site-packages, and never compiled here: pip
downloads binary wheels only (`--only-binary=:all:`) for the target's Python
version, ABI and the whole list of manylinux tags it accepts. With a single
tag pip silently picks an old release (see shared/INFRA-NOTES.md), so the
list spans every glibc the target provides.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import parse_wheel_filename

from bento_compile.core.errors import BentoCompileError

ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64", "armv7": "armv7l"}
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
# Oldest manylinux glibc minor each architecture has wheels for.
_OLDEST_GLIBC = {"x86_64": 5, "aarch64": 17, "armv7l": 17}
_LEGACY_ALIASES = {(2, 5): "manylinux1", (2, 12): "manylinux2010", (2, 17): "manylinux2014"}


@dataclass(frozen=True)
class TargetPlatform:
    """Where an artifact will run: CPU architecture, Python version, newest glibc available."""

    arch: str = "x86_64"
    python: str = "3.12"
    glibc: tuple[int, int] = (2, 34)

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise BentoCompileError(f"Unknown architecture '{self.arch}'.", f"Use one of: {', '.join(ARCHES)}.")
        if self.python not in PYTHONS:
            raise BentoCompileError(f"Unsupported Python '{self.python}'.", f"Use one of: {', '.join(PYTHONS)}.")

    @property
    def machine(self) -> str:
        """The `uname -m` / wheel-tag spelling: x86_64, aarch64, armv7l."""
        return ARCHES[self.arch]

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    def platform_tags(self) -> list[str]:
        """Every manylinux tag the target accepts, newest first (the list pip needs)."""
        tags = []
        major, newest = self.glibc
        for minor in range(newest, _OLDEST_GLIBC[self.machine] - 1, -1):
            tags.append(f"manylinux_{major}_{minor}_{self.machine}")
            alias = _LEGACY_ALIASES.get((major, minor))
            if alias:
                tags.append(f"{alias}_{self.machine}")
        if self.machine == "armv7l":
            tags.append("linux_armv7l")  # piwheels-style wheels (tflite-runtime) use the bare tag
        return tags


@dataclass(frozen=True)
class Wheel:
    """One resolved wheel file, with what an SBOM and a reproducible build need."""

    name: str
    version: str
    path: Path
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.name


def resolve_wheels(requirements: list[str], target: TargetPlatform, dest: Path, *, dependencies: bool = True,
                   fix: str | None = None) -> list[Wheel]:
    """Download binary wheels for `target` into `dest` (with their dependencies unless told not to); returns
    every wheel in `dest`, sorted by name. `fix`: what the error tells the user to do instead."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
               *([] if dependencies else ["--no-deps"]), "--only-binary=:all:",
               "--python-version", target.python, "--implementation", "cp",
               "--abi", target.abi, "--abi", "abi3", "--abi", "none", "--dest", str(dest)]
    for tag in target.platform_tags():
        command += ["--platform", tag]
    result = subprocess.run([*command, *requirements], capture_output=True, text=True)
    if result.returncode != 0:
        detail = "\n".join(line for line in result.stderr.splitlines() if "is ignored" not in line)[-1500:]
        raise BentoCompileError(
            f"Could not resolve wheels for {target.machine} / Python {target.python} "
            f"({', '.join(requirements)}):\n{detail}",
            fix or "Check the package has a binary wheel for that platform and Python, or pick another "
                   "--python/--arch.")
    return wheels_in(dest)


def wheels_in(folder: Path) -> list[Wheel]:
    found = []
    for path in sorted(folder.glob("*.whl")):
        name, version, _build, _tags = parse_wheel_filename(path.name)
        found.append(Wheel(name=str(name), version=str(version), path=path, sha256=_sha256(path)))
    return sorted(found, key=lambda w: w.name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
