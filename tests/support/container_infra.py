"""Real container infrastructure for the container tests: dockerd, a registry, a Python base image.

Everything per shared/INFRA-NOTES.md: dockerd with no bridge and no iptables
(containers run with `--network host`), `docker-registry` on 127.0.0.1, and a
Debian bookworm base image (python3 3.11) made with mmdebstrap, because no
base image can be pulled here. The root file system tar is cached in
`$BENTO_COMPILE_TEST_CACHE` (default `~/.cache/bento-compile-tests/`), keyed
by its recipe, so a CI run builds it once (about 35 s) and later sessions reuse it.

Usable as a script (`python tests/support/container_infra.py`) to warm the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tests.support.helpers import free_port, stop_process

BASE_RECIPE = ["mmdebstrap", "--variant=essential", "--include=python3,libstdc++6", "--mode=root", "--format=tar",
               "bookworm"]
BASE_PYTHON = "3.11"  # Debian bookworm's python3 (libstdc++6: numpy/onnxruntime wheels link it)


def cache_dir() -> Path:
    return Path(os.environ.get("BENTO_COMPILE_TEST_CACHE") or Path.home() / ".cache" / "bento-compile-tests")


def missing(*tools: str) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None]


def base_rootfs_tar() -> Path:
    """The amd64 bookworm + python3 root file system tar, built once and cached (locked against races)."""
    key = hashlib.sha256(" ".join(BASE_RECIPE).encode()).hexdigest()[:16]
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"debian-bookworm-amd64-python3-{key}.tar"
    with open(cache / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            tmp = target.with_suffix(".part")
            result = subprocess.run([*BASE_RECIPE, str(tmp)], capture_output=True, text=True)
            if result.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise RuntimeError(f"mmdebstrap failed:\n{result.stderr[-3000:]}")
            tmp.replace(target)
    return target


@contextmanager
def dockerd(root: Path):
    """A Docker engine on a unix socket under `root`; yields its DOCKER_HOST. No bridge, no iptables."""
    root.mkdir(parents=True, exist_ok=True)
    sock = root / "docker.sock"
    log = open(root / "dockerd.log", "w")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        ["dockerd", "--storage-driver=overlay2", "--iptables=false", "--ip6tables=false", "--bridge=none",
         "--data-root", str(root / "docker"), "--exec-root", str(root / "exec"), "-H", f"unix://{sock}",
         "--pidfile", str(root / "docker.pid")], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    host = f"unix://{sock}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited: {(root / 'dockerd.log').read_text()[-2000:]}")
            if sock.exists() and subprocess.run(["docker", "-H", host, "version"], capture_output=True).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start: {(root / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield host
    finally:
        subprocess.run(["docker", "-H", host, "rm", "-f", *_containers(host)], capture_output=True)
        stop_process(proc, timeout=30)
        netns = root / "exec" / "netns" / "default"
        if netns.exists():
            subprocess.run(["umount", str(netns)], capture_output=True)
        log.close()


def _containers(host: str) -> list[str]:
    out = subprocess.run(["docker", "-H", host, "ps", "-aq"], capture_output=True, text=True).stdout
    return out.split()


@contextmanager
def registry(root: Path):
    """`docker-registry` (distribution) on 127.0.0.1 with filesystem storage; yields HOST:PORT."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: "
        f"{root / 'data'}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n")
    log = open(root / "registry.log", "w")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}/v2/", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"registry did not start: {(root / 'registry.log').read_text()[-2000:]}"
                                       ) from None
                time.sleep(0.1)
        yield address
    finally:
        stop_process(proc)
        log.close()


def make_base_layout(out: Path) -> Path:
    """An OCI layout `out` holding the cached bookworm root file system as `python:3.11`."""
    from bento_compile.targets.oci_layout import layout_from_rootfs_tar

    layout_from_rootfs_tar(base_rootfs_tar(), out, "x86_64", "python")
    return out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        print(base_rootfs_tar())
