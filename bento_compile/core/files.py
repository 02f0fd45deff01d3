"""Writing files and folders so that a reader sees the old one or the new one, never half of one.

Every helper works the same way: the new content is written beside its destination (same file
system, so the final rename is atomic), renamed into place only once complete, and removed on
any failure. The runtime side (runtimes/, adapters/) cannot import this and keeps its own.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    """Where resolved wheels, unpacked wheels, base images and local Lambda runtimes are kept between
    builds: $BENTO_COMPILE_CACHE, else $XDG_CACHE_HOME/bento-compile, else ~/.cache/bento-compile."""
    explicit = os.environ.get("BENTO_COMPILE_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bento-compile"


@contextmanager
def replacing_file(path: Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; on success it replaces `path`.

    `mode`: the temporary file is created with it before the caller writes a byte (a private key
    is never readable by others, not even briefly). Without it, the caller creates the file and
    it gets the usual permissions. On any failure the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A random part, so two writers of one destination never share a temporary file.
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    try:
        if mode is not None:
            os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
            os.chmod(partial, mode)  # the umask may have taken bits away
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes | str, mode: int | None = None) -> Path:
    """Write `data` (text is UTF-8) to `path` through `replacing_file`."""
    with replacing_file(path, mode) as partial, open(partial, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_json_atomic(path: Path, data: object) -> None:
    """Deterministic JSON (sorted keys, two-space indent), written through `replacing_file`."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextmanager
def replacing_folder(target: Path, prefix: str) -> Iterator[Path]:
    """Yield an empty folder beside `target`; on success it replaces `target` (and whatever was there).

    On any failure it is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        yield work
        if target.exists():
            shutil.rmtree(target)
        work.replace(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def cached_folder(target: Path, fill: Callable[[Path], None], prefix: str = ".fill-") -> Path:
    """`target`, made once by `fill(empty folder beside it)` and renamed into place.

    For caches keyed by their content: when `target` exists it is returned as it is, and when
    another process renames its copy first, ours is dropped (same key, same content). A failing
    `fill` leaves nothing behind and raises.
    """
    target = Path(target)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        fill(work)
        try:
            work.rename(target)
        except OSError:  # another process won the race
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
