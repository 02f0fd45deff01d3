"""Writing a zip that is byte-identical for identical inputs.

Sorted entries, one fixed timestamp (SOURCE_DATE_EPOCH when set, else
1980-01-01, the earliest a zip can hold), fixed Unix permissions (0644, or
0755 for what was executable or is a shared object), no directory entries,
no extra fields, and one compression level. The zip is written next to its
destination and renamed into place, so a failed build never leaves half a zip.
"""

from __future__ import annotations

import os
import stat
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path

from bento_compile.core.files import replacing_file

FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def zip_date() -> tuple[int, int, int, int, int, int]:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return FIXED_DATE
    moment = time.gmtime(max(int(epoch), 315532800))  # zip cannot hold dates before 1980
    return (moment.tm_year, moment.tm_mon, moment.tm_mday, moment.tm_hour, moment.tm_min, moment.tm_sec)


def tree_files(root: Path) -> list[tuple[str, Path]]:
    """(archive name, path) for every regular file under root, sorted by name."""
    return sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())


def write_zip(entries: Iterable[tuple[str, Path]], destination: Path, level: int = 9) -> int:
    """Write the entries (archive name, file) deterministically; returns the zip's size in bytes."""
    date = zip_date()
    with replacing_file(destination) as partial, \
            zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, path in sorted(entries):
            mode = path.stat().st_mode
            executable = bool(mode & stat.S_IXUSR) or ".so" in path.name
            info = zipfile.ZipInfo(name, date_time=date)
            info.create_system = 3  # Unix, so external_attr carries permissions
            info.external_attr = ((0o100755 if executable else 0o100644) & 0xFFFF) << 16
            archive.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=level)
    return destination.stat().st_size
