"""`bento-compile monitor`: drift of a prediction log against the Bento's baseline, for people and CI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from bento_compile.cli.monitor_report import drift_report, read_records, render_html
from bento_compile.core.files import write_atomic
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.manifest import MonitoringInfo

DRIFT_EXIT = 3  # distinct from 1 (an error), so a CI gate or cron job can tell them apart


@click.command()
@click.argument("tag")
@click.option("--log", "source", required=True,
              help="Prediction log: a JSON-lines file or folder, an s3://bucket/prefix/, or a .parquet/.csv of rows.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a self-contained HTML page with a histogram per feature.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--psi-alert", type=click.FloatRange(min=0, min_open=True),
              help="PSI past which a feature drifts (default: monitoring.psi_alert of the Bento, 0.2).")
@click.option("--ks-alert", type=click.FloatRange(0, 1), help="Also call a feature drifting past this KS statistic.")
def monitor(tag: str, source: str, html_path: Path | None, as_json: bool, psi_alert: float | None,
            ks_alert: float | None) -> None:
    """Report drift of logged predictions against the baseline recorded in Bento TAG.

    Per feature and output: PSI and the (binned) KS statistic, the drifting ones first. Exits 3 when a
    feature drifts past the thresholds, 0 when none does, 1 on an error.

    \b
    Examples:
      bento-compile monitor cancer:latest --log /var/log/bento/predictions.jsonl
      bento-compile monitor cancer:latest --log s3://my-bucket/predictions/2026/12/02/ --html drift.html
      bento-compile monitor cancer:latest --log rows.parquet --json --psi-alert 0.1
    """
    bento = BentoStore().resolve(tag)
    report = drift_report(bento.manifest, read_records(source), psi_alert, ks_alert)
    if html_path is not None:
        write_atomic(html_path, render_html(report))
    if as_json:
        click.echo(json.dumps(report, sort_keys=True))
    else:
        _print(report, Console())
    if report["drifting"]:
        sys.exit(DRIFT_EXIT)


def _print(report: dict, out: Console) -> None:
    table = Table("feature", "PSI", "KS", "missing", "out of range", "rows", "",
                  title=f"{report['tag']}: {report['records']} records, PSI alert {report['psi_alert']}", box=None)
    for row in report["features"]:
        if row["psi"] is None:
            table.add_row(row["name"], "-", "-", "-", "-", "0", row.get("note", ""))
            continue
        table.add_row(row["name"], f"{row['psi']:.4f}", f"{row['ks']:.4f}", f"{row['missing_ratio']:.1%}",
                      str(row["out_of_range"]), str(row["rows"]), "[red]DRIFT[/]" if row["drifting"] else "ok")
    out.print(table)
    out.print(f"drifting: {', '.join(report['drifting']) or 'none'}")


def print_baseline(info: MonitoringInfo | None, out: Console) -> None:
    """`bento-compile show`: the drift baseline and the live monitoring settings."""
    if info is None:
        out.print("monitoring: no baseline (built before bento-compile recorded one)")
        return
    live = f"on (window {info.window_seconds or info.window} {'s' if info.window_seconds else 'rows'}, " \
           f"PSI alert {info.psi_alert})" if info.enabled else "off (no monitoring: section)"
    out.print(f"monitoring: live {live}; baseline of {info.baseline_rows} rows from {info.baseline_source}")
    table = Table("", "name", "kind", "bins / categories", "range", "missing", "note", title="baseline", box=None)
    for kind, features in (("input", info.features), ("output", info.outputs)):
        for f in features:
            spread = ", ".join(f.categories[:5]) + ("…" if len(f.categories) > 5 else "") \
                if f.kind == "categorical" else f"{len(f.counts)} bins"
            span = f"{f.min:.4g} … {f.max:.4g}" if f.min is not None and f.max is not None else ""
            table.add_row(kind, f.name, f.kind, spread, span, f"{f.missing_rate:.1%}", f.note)
    out.print(table)
