"""What every command prints with: the stderr console, human sizes, the parity table.

Progress and tables go to stderr (rich); stdout carries only what scripts consume.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

err = Console(stderr=True, highlight=False)


def human_size(n: float) -> str:
    """Bytes as B / KiB / MiB / GiB with one decimal (whole bytes below 1 KiB)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def mib(n: int) -> str:
    """Bytes in MiB, the unit Lambda states its limits in."""
    return f"{n / 1024 / 1024:.1f} MiB"


def print_parity(report: dict[str, Any], console: Console | None = None) -> None:
    """The parity table of a compile report: one row per output, measured against its bound."""
    from bento_compile.compiler.parity import table_rows

    table = Table("output", "measured", "bound", "", box=None,
                  title=f"parity on {report['rows']} rows ({report['sample']})")
    for row in table_rows(report):
        table.add_row(*row)
    (console or err).print(table)
