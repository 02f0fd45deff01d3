"""Installing a checked edge bundle into a mounted root file system, in Python, on the flashing machine.

`flash --to ROOT` never runs code from the bundle here (its install.sh would run as whoever
flashes, often root): this module does what `install.sh --root` did, from the files
`bundle_check.check_bundle` already verified. The layout is install.sh's, so the device
picks up from it: `PREFIX/releases/ID` (with `.pending`: its venv is made on first boot by
the unit's `ExecStartPre`), relative `current` / `previous` links, older releases pruned,
`config.env` written only when missing, the unit installed and enabled. Nothing outside
ROOT is ever touched: every path is resolved and checked to stay inside it (a root file
system may hold absolute symlinks, which would point into this machine).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bento_compile.core.errors import BentoCompileError
from bento_compile.tools.bundle_check import CheckedBundle


def _inside(root: Path, path: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise BentoCompileError(f"{path} resolves to {resolved}, outside the root file system {root} (a symbolic "
                                "link in the image points out of it).",
                                "Refusing to write there: fix the link in the image, or pick another --prefix.")
    return path


def _swap_link(target: str, link: Path) -> None:
    """Replace `link` atomically: a fresh symlink renamed over it."""
    fresh = link.with_name(f"{link.name}.tmp.{os.getpid()}")
    if fresh.is_symlink() or fresh.exists():
        fresh.unlink()
    os.symlink(target, fresh)
    os.replace(fresh, link)


def install_into_root(checked: CheckedBundle, staged: Path, root: Path, prefix: str, service: bool) -> str:
    """Install the verified bundle folder `staged` under ROOT/PREFIX; returns PREFIX/releases/ID."""
    root = root.resolve()
    dest = _inside(root, root / prefix.lstrip("/"))
    releases = _inside(root, dest / "releases")
    releases.mkdir(parents=True, exist_ok=True)
    lock = dest / ".install.lock"
    try:
        lock.mkdir()
    except FileExistsError:
        raise BentoCompileError(f"Another install into {prefix} is running (or one was killed: {lock} exists).",
                                f"Wait for it, or remove {lock} if no install runs.") from None
    try:
        release_id = checked.info["release_id"]
        release = releases / release_id
        if not ((release / ".installed").is_file() or (release / ".pending").is_file()):
            partial = releases / f"{release_id}.partial"
            for leftover in (release, partial):  # of an interrupted install
                shutil.rmtree(leftover, ignore_errors=True)
            try:
                shutil.copytree(staged, partial, symlinks=True)
                (partial / ".pending").touch()
                os.rename(partial, release)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
        new = f"releases/{release_id}"
        current, previous = dest / "current", dest / "previous"
        old = os.readlink(current) if current.is_symlink() else None
        if old != new:
            if old:
                _swap_link(old, previous)
            _swap_link(new, current)
        keep = os.readlink(previous) if previous.is_symlink() else None
        for folder in releases.iterdir():
            if folder.is_dir() and not folder.is_symlink() and f"releases/{folder.name}" not in (new, keep):
                shutil.rmtree(folder)
        config = dest / "config.env"
        if not config.exists() and not config.is_symlink():
            shutil.copyfile(release / "config.env", config)
        if service:
            _install_unit(root, release, checked.info["service"], prefix)
    finally:
        lock.rmdir()
    return f"{prefix}/{new}"


def _install_unit(root: Path, release: Path, service: str, prefix: str) -> None:
    unit_dir = _inside(root, root / "etc" / "systemd" / "system")
    wants = _inside(root, unit_dir / "multi-user.target.wants")
    wants.mkdir(parents=True, exist_ok=True)
    # The prefix was checked (absolute, no '..', only characters systemd and sed read literally).
    text = (release / f"{service}.service").read_text(encoding="utf-8").replace("@PREFIX@", prefix)
    partial = unit_dir / f".{service}.service.tmp"
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, unit_dir / f"{service}.service")  # replaces a link there, never follows it
    # Absolute, as systemctl enable writes it: it points into the device's own /etc once booted.
    _swap_link(f"/etc/systemd/system/{service}.service", wants / f"{service}.service")
