"""A deterministic tar.gz: the same entries give the same bytes, on any machine, at any time.

Entries are sorted; every file and folder gets a fixed mtime (SOURCE_DATE_EPOCH
when set), uid/gid 0 with empty owner names, and mode 0755 or 0644; the gzip
header carries no name and mtime 0. So two builds of one bundle have one
sha256, which is what a device (or a person) compares before installing.
The archive is written to a temporary name and renamed: a failed build leaves
no half-written bundle.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bento_compile.core.files import replacing_file

DEFAULT_EPOCH = 1577836800  # 2020-01-01: a fixed, plausible file time


@dataclass(frozen=True)
class Entry:
    """One file of the archive: its path inside, its bytes (or a source path), executable or not."""

    name: str
    source: Path | None = None
    data: bytes | None = None
    executable: bool = False

    def sha256_and_size(self) -> tuple[str, int]:
        if self.data is not None:
            return hashlib.sha256(self.data).hexdigest(), len(self.data)
        assert self.source is not None
        digest = hashlib.sha256()
        size = 0
        with open(self.source, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        return digest.hexdigest(), size


def source_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isdigit() else DEFAULT_EPOCH


def _info(name: str, *, directory: bool, size: int = 0, executable: bool = False, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory or executable else 0o644
    info.size = size
    info.mtime = epoch
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar_gz(path: Path, top: str, entries: list[Entry], compresslevel: int = 6) -> str:
    """Write `entries` under the folder `top` into `path`; returns the archive's sha256."""
    epoch = source_epoch()
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError("duplicate archive names")
    folders = {str(p) for e in entries for p in PurePosixPath(e.name).parents if str(p) != "."}
    with replacing_file(path) as tmp:
        with open(tmp, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=compresslevel) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_info(top, directory=True, epoch=epoch))
            items = [(f, None) for f in folders] + [(e.name, e) for e in entries]
            for name, entry in sorted(items, key=lambda item: item[0]):
                if entry is None:
                    tar.addfile(_info(f"{top}/{name}", directory=True, epoch=epoch))
                    continue
                if entry.data is not None:
                    tar.addfile(_info(f"{top}/{name}", directory=False, size=len(entry.data),
                                      executable=entry.executable, epoch=epoch), io.BytesIO(entry.data))
                    continue
                assert entry.source is not None
                with open(entry.source, "rb") as handle:  # streamed: wheels can be large
                    size = os.fstat(handle.fileno()).st_size
                    tar.addfile(_info(f"{top}/{name}", directory=False, size=size,
                                      executable=entry.executable, epoch=epoch), handle)
        digest = hashlib.sha256()
        with open(tmp, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
