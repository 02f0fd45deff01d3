"""Size budgets: measure an artifact, and fail with its largest contributors when it is over.

A platform limit found at deploy time costs a round trip; found at build time,
with the ten biggest folders named, it costs a minute.
"""

from __future__ import annotations

import zipfile
from collections import defaultdict
from pathlib import Path

from bento_compile.core.errors import BentoCompileError

MIB = 1024 * 1024


def mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def _group(name: str) -> str:
    """Group a path by its first two components (onnxruntime/capi, numpy.libs, bento/model.onnx)."""
    parts = name.split("/")
    return "/".join(parts[:2]) + ("/" if len(parts) > 2 else "")


def contributors_in_tree(root: Path, top: int = 10) -> list[tuple[str, int]]:
    sizes: dict[str, int] = defaultdict(int)
    for path in root.rglob("*"):
        if path.is_file():
            sizes[_group(path.relative_to(root).as_posix())] += path.stat().st_size
    return sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:top]


def contributors_in_zip(zip_path: Path, top: int = 10) -> list[tuple[str, int]]:
    """(group, compressed bytes), largest first."""
    sizes: dict[str, int] = defaultdict(int)
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            sizes[_group(info.filename)] += info.compress_size
    return sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:top]


def check_budget(what: str, size: int, limit: int, contributors: list[tuple[str, int]], advice: str) -> None:
    """Raise BentoCompileError naming the ten largest contributors when `size` > `limit`."""
    if size <= limit:
        return
    table = "\n".join(f"  {mib(n):>10}  {name}" for name, n in contributors)
    raise BentoCompileError(f"The artifact is {mib(size)} {what}, over the limit of {mib(limit)}. "
                            f"Largest contributors:\n{table}", advice)
