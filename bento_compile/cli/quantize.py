"""Printing the quantization variants table (build, show, and a failed gate)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n else "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def print_variants(quantization: dict[str, Any], console: Console) -> None:
    """variant, size, latency (1 row, batch 64), agreement, gated error, verdict, chosen."""
    gate = quantization["gate"]
    bound = f"labels ≥ {gate['label_agreement']:.2%}"
    if gate.get("output"):
        parts = [f"max |Δ| ≤ {gate['max_abs_diff']}" if gate.get("max_abs_diff") is not None else "",
                 f"rel. error ≤ {gate['max_rel_error']}" if gate.get("max_rel_error") is not None else ""]
        bound += f"; {gate['output']}: " + ", ".join(p for p in parts if p)
    title = (f"quantization: {quantization['method']} (objective {quantization['objective']}), gate {bound}, "
             f"on {quantization['held_out_rows']} held-out rows")
    table = Table("variant", "size", "ms/row", "ms/64 rows", "agreement", "max |Δ|", "gate", "chosen",
                  title=title, box=None)
    for row in quantization["variants"]:
        verdict = "pass" if row["passed"] else ("FAIL" if row["size"] else "n/a")
        table.add_row(row["variant"], _size(row["size"]), _ms(row["latency_ms_row"]), _ms(row["latency_ms_batch64"]),
                      _pct(row.get("agreement")),
                      "-" if row.get("max_abs_diff") is None else f"{row['max_abs_diff']:.3g}",
                      verdict, "✔" if row["chosen"] else "")
    console.print(table)
    for row in quantization["variants"]:
        if row.get("note"):
            console.print(f"  [dim]{row['variant']}:[/] {row['note']}")
    if quantization.get("chosen"):
        console.print(f"  shipped: [bold]{quantization['chosen']}[/]; limits: " + " ".join(quantization["limits"]))
