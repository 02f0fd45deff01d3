"""An arm64 Debian root file system under qemu-user, for the edge tests (real parts, no mocks).

Built with mmdebstrap once and cached as a tar in `$BENTO_COMPILE_TEST_CACHE`
(default `~/.cache/bento-compile-tests/`), keyed by the recipe, so a CI run
builds it once (about 2¼ minutes) and every later session only unpacks it.
`Chroot` runs commands inside it with the facts from shared/INFRA-NOTES.md:
binfmt_misc mounted and qemu-aarch64 enabled, `QEMU_CPU=cortex-a72`, and an
aarch64 `/proc/cpuinfo` bind-mounted (onnxruntime crashes at import otherwise).

Usable as a script too (`python tests/support/edge_rootfs.py`) to warm the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

SUITE = "bookworm"
# libstdc++6: manylinux wheels (numpy, onnxruntime) link it; every real board image has it.
PACKAGES = ("python3", "python3-venv", "libstdc++6")
RECIPE = ["mmdebstrap", "--architectures=arm64", "--variant=essential", f"--include={','.join(PACKAGES)}",
          "--mode=root", "--format=tar", SUITE]
CPUINFO = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "cpuinfo-aarch64.txt"
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def cache_dir() -> Path:
    return Path(os.environ.get("BENTO_COMPILE_TEST_CACHE") or Path.home() / ".cache" / "bento-compile-tests")


def recipe_key() -> str:
    return hashlib.sha256(" ".join(RECIPE).encode()).hexdigest()[:16]


def missing_tools() -> list[str]:
    """What this machine lacks for the arm64 tests (empty when everything is there)."""
    missing = [tool for tool in ("mmdebstrap", "qemu-aarch64-static", "update-binfmts", "chroot", "mount")
               if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root (chroot and bind mounts)")
    if not CPUINFO.is_file():
        missing.append(str(CPUINFO))
    return missing


def enable_binfmt() -> None:
    """Mount binfmt_misc (not mounted by default here) and enable qemu-aarch64 for foreign binaries."""
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
    if not (BINFMT / "qemu-aarch64").exists():
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=True, capture_output=True)
    if not (BINFMT / "qemu-aarch64").exists():
        raise RuntimeError("qemu-aarch64 is not registered in binfmt_misc (install qemu-user-static)")


def rootfs_tar() -> Path:
    """The cached tar of the arm64 root file system; built under a lock when missing."""
    enable_binfmt()
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"debian-{SUITE}-arm64-{recipe_key()}.tar"
    with open(cache / ".rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions at once build it once
        if target.is_file():
            return target
        partial = target.with_suffix(".partial")
        result = subprocess.run([*RECIPE, str(partial)], capture_output=True, text=True)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"mmdebstrap failed:\n{result.stderr[-3000:]}")
        os.replace(partial, target)
        for stale in cache.glob(f"debian-{SUITE}-arm64-*.tar"):  # older recipes: never used again
            if stale != target:
                stale.unlink(missing_ok=True)
    return target


class Chroot:
    """An unpacked copy of the cached root file system, with /proc, /dev and the cpuinfo mounted."""

    def __init__(self, root: Path):
        self.root = root
        self._mounts: list[Path] = []

    def _mount(self, *args: str, target: Path) -> None:
        subprocess.run(["mount", *args, str(target)], check=True)
        self._mounts.append(target)

    def start(self) -> None:
        self._mount("-t", "proc", "proc", target=self.root / "proc")
        self._mount("--bind", str(CPUINFO), target=self.root / "proc" / "cpuinfo")
        # /sys too: older onnxruntime releases (1.16, Lambda's Amazon Linux 2 builds) abort at import without
        # /sys/devices/system/cpu/possible. Read-only: nothing in the chroot changes the host.
        self._mount("-t", "sysfs", "-o", "ro", "sysfs", target=self.root / "sys")
        self._mount("--rbind", "/dev", target=self.root / "dev")
        subprocess.run(["mount", "--make-rslave", str(self.root / "dev")], check=True)
        self._mount("-t", "tmpfs", "tmpfs", target=self.root / "tmp")

    def stop(self) -> None:
        for target in reversed(self._mounts):
            subprocess.run(["umount", "-l", str(target)], capture_output=True)
        self._mounts.clear()

    def _command(self, script: str, offline: bool) -> list[str]:
        # offline: a fresh, empty network namespace; nothing but loopback-less isolation.
        return [*(["unshare", "-n"] if offline else []), "chroot", str(self.root), "/bin/sh", "-c", script]

    @staticmethod
    def _env(env: dict[str, str] | None) -> dict[str, str]:
        return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": "/root", "LANG": "C.UTF-8", "QEMU_CPU": "cortex-a72", **(env or {})}

    def run(self, script: str, *, timeout: float = 600, input: str | None = None,
            env: dict[str, str] | None = None, offline: bool = False) -> subprocess.CompletedProcess:
        """Run a shell script inside the root file system as root (emulated aarch64)."""
        return subprocess.run(self._command(script, offline), capture_output=True, text=True, timeout=timeout,
                              input=input, env=self._env(env))

    def popen(self, script: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **kwargs}
        return subprocess.Popen(self._command(script, False), env=self._env(env), start_new_session=True, **options)


@contextmanager
def arm64_chroot(parent: Path | None = None):
    """Unpack the cached root file system into a fresh folder and mount what a chroot needs."""
    tar = rootfs_tar()
    root = Path(tempfile.mkdtemp(prefix="arm64-rootfs-", dir=parent))
    chroot = Chroot(root)
    try:
        subprocess.run(["tar", "-xf", str(tar), "-C", str(root)], check=True)
        chroot.start()
        yield chroot
    finally:
        chroot.stop()
        _remove_root(root)


def _remove_root(root: Path) -> None:
    """Delete an unpacked root, never crossing into a file system still mounted under it (its /dev is the
    host's /dev): `--one-file-system`, and nothing at all while /proc/mounts lists a mount below it."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/mounts", encoding="utf-8") as mounts:
        if any(line.split()[1].startswith(prefix) for line in mounts):
            print(f"edge_rootfs: {root} still has mounts below it; left in place", flush=True)
            return
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)


if __name__ == "__main__":
    print(rootfs_tar())
