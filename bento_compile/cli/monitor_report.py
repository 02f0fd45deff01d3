"""The offline drift report: a prediction log (or a table of rows) binned against a Bento's baseline.

Reads JSON lines written by the prediction log (a file, a folder of files, or an s3:// prefix of
objects), or a Parquet/CSV file whose columns are the feature names. Per feature and output: PSI and
the binned KS statistic (runtimes/drift.py), drifting ones first. The HTML page is one file with an
inline SVG histogram per feature (baseline vs live), no script and nothing fetched.
"""

from __future__ import annotations

import html
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.drift import CategoryBinner, NumericBinner, ks, padded, psi, shares
from bento_compile.runtimes.manifest import FeatureBaseline, Manifest

MAX_LOG_BYTES = 2 << 30  # refuse to read more than this much log in one report


def read_records(source: str) -> list[dict[str, Any]]:
    """Prediction log records, or table rows turned into records ({"inputs": row})."""
    if source.startswith("s3://"):
        return _parse_lines(_s3_bytes(source), source)
    path = Path(source)
    if not path.exists():
        raise BentoCompileError(f"{source} does not exist.", "Pass a prediction log file, a folder of them, an "
                                "s3://bucket/prefix/, or a .parquet/.csv of rows.")
    if path.suffix.lower() in (".parquet", ".csv"):
        return _table_records(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if sum(p.stat().st_size for p in files) > MAX_LOG_BYTES:
        raise BentoCompileError(f"{source} holds more than {MAX_LOG_BYTES >> 30} GiB of log.",
                                "Report on a shorter period (a subfolder or one day's prefix).")
    return _parse_lines(b"".join(p.read_bytes() for p in files), source)


def _s3_bytes(url: str) -> bytes:
    try:
        import boto3
    except ImportError:
        raise BentoCompileError("Reading s3:// needs boto3.", "pip install 'bento-compile[s3]'.") from None
    import os

    bucket, _, prefix = url[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or None)
    chunks, total = [], 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                total += item["Size"]
                if total > MAX_LOG_BYTES:
                    raise BentoCompileError(f"{url} holds more than {MAX_LOG_BYTES >> 30} GiB of log.",
                                            "Report on a shorter period (one day's prefix: PREFIX/YYYY/MM/DD/).")
                chunks.append(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
    except BentoCompileError:
        raise
    except Exception as exc:
        raise BentoCompileError(f"Cannot read {url}: {exc}", "Check the bucket, prefix and AWS credentials.") from None
    return b"".join(chunks)


def _parse_lines(data: bytes, where: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise BentoCompileError(f"{where}: line {number} is not JSON.",
                                    "Pass a prediction log (JSON lines) or a .parquet/.csv of rows.") from None
        if isinstance(record, dict) and isinstance(record.get("inputs"), dict):
            records.append(record)
    if not records:
        raise BentoCompileError(f"{where} holds no prediction records.",
                                "Turn the log on (monitoring.log in bento.yaml) and let traffic reach it.")
    return records


def _table_records(path: Path) -> list[dict[str, Any]]:
    import pyarrow.csv
    import pyarrow.parquet

    table = pyarrow.parquet.read_table(path) if path.suffix.lower() == ".parquet" else pyarrow.csv.read_csv(path)
    return [{"inputs": row, "outputs": {}} for row in table.to_pylist()]


def _values(records: list[dict[str, Any]], feature: FeatureBaseline, output: bool) -> np.ndarray | None:
    """The feature's column over the records; None when no record carries it (or it was redacted)."""
    found: list[Any] = []
    for record in records:
        if output:
            value = record.get("outputs", {}).get(feature.input)
            if feature.column is not None and isinstance(value, list):
                value = value[feature.column] if len(value) > feature.column else None
        else:
            value = record["inputs"].get(feature.name)
        if isinstance(value, str) and value.startswith("sha256:"):
            return None
        found.append(value)
    if all(v is None for v in found):
        return None
    if feature.kind == "categorical":
        return np.array([None if v is None else str(v) for v in found], dtype=object)
    return np.array([np.nan if v is None else _number(v) for v in found], dtype=np.float64)


def _number(value: Any) -> float:
    if isinstance(value, str):
        return float(value) if value in ("inf", "-inf") else np.nan
    return float(value) if isinstance(value, (int, float)) else np.nan


def drift_report(manifest: Manifest, records: list[dict[str, Any]], psi_alert: float | None = None,
                 ks_alert: float | None = None) -> dict[str, Any]:
    info = manifest.monitoring
    if info is None or not (info.features or info.outputs):
        raise BentoCompileError(f"{manifest.tag} has no drift baseline in its manifest.",
                                "Rebuild it with this version of bento-compile (the baseline is recorded at build).")
    psi_alert = info.psi_alert if psi_alert is None else psi_alert
    rows: list[dict[str, Any]] = []
    for features, output in ((info.features, False), (info.outputs, True)):
        for feature in features:
            values = _values(records, feature, output)
            entry: dict[str, Any] = {"name": feature.name, "kind": "output" if output else "feature",
                                     "baseline": list(map(float, shares(np.asarray(feature.counts, float))))}
            if values is None:
                rows.append({**entry, "psi": None, "ks": None, "rows": 0, "drifting": False,
                             "note": "not in the log (redacted or not logged)"})
                continue
            flat = replace(feature, column=0 if feature.kind != "categorical" else None)
            binner = CategoryBinner(flat) if feature.kind == "categorical" else NumericBinner([flat])
            binned = binner.bin(values.reshape(-1, 1) if feature.kind != "categorical" else values)
            live = binned.counts[0]
            expected = padded(feature.counts, len(live))
            value, distance = psi(expected, live), ks(expected, live)
            drifting = (value is not None and value > psi_alert) or (
                ks_alert is not None and distance is not None and distance > ks_alert)
            rows.append({**entry, "psi": value, "ks": distance, "rows": len(values),
                         "missing_ratio": float(binned.missing[0]) / max(1, len(values)),
                         "out_of_range": int(binned.out_of_range[0]), "drifting": bool(drifting),
                         "live": list(map(float, shares(live))) if live.sum() else [0.0] * len(live),
                         "edges": feature.edges, "categories": feature.categories, "note": feature.note})
    rows.sort(key=lambda r: (not r["drifting"], -(r["psi"] or 0.0)))
    return {"tag": manifest.tag, "records": len(records), "psi_alert": psi_alert, "ks_alert": ks_alert,
            "drifting": [r["name"] for r in rows if r["drifting"]], "features": rows}


def render_html(report: dict[str, Any]) -> str:
    """One self-contained page: a table and an SVG histogram (baseline vs live) per feature."""
    esc = html.escape
    cards = []
    for row in report["features"]:
        chart = _svg(row.get("baseline", []), row.get("live", [])) if row.get("live") else "<p>no live values</p>"
        figures = f"PSI {row['psi']:.4f}, KS {row['ks']:.4f}, {row['rows']} rows" if row["psi"] is not None \
            else esc(row.get("note", ""))
        cards.append(f'<section class="card{" drift" if row["drifting"] else ""}"><h2>{esc(row["name"])}'
                     f'{" — drifting" if row["drifting"] else ""}</h2><p>{figures}</p>{chart}</section>')
    drifting = ", ".join(esc(n) for n in report["drifting"]) or "none"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report: {esc(report['tag'])}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}}
.grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}}
.card{{border:1px solid #ccc;border-radius:6px;padding:8px}} .card.drift{{border:3px solid #d62728}}
h2{{font-size:14px;margin:4px 0}} p{{font-size:12px;margin:4px 0}}
.legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}}
</style></head><body>
<h1>Drift report: {esc(report['tag'])}</h1>
<p>{report['records']} records; PSI alert {report['psi_alert']}; drifting: <b>{drifting}</b></p>
<p class="legend"><span style="background:#1f77b4"></span>baseline<span style="background:#ff7f0e"></span>live</p>
<div class="grid">{''.join(cards)}</div></body></html>
"""


def _svg(baseline: list[float], live: list[float], width: int = 280, height: int = 120) -> str:
    bins = max(len(baseline), len(live), 1)
    top = max([*baseline, *live, 1e-9])
    step = width / bins
    bars = []
    for i in range(bins):
        for j, (values, color) in enumerate(((baseline, "#1f77b4"), (live, "#ff7f0e"))):
            value = values[i] if i < len(values) else 0.0
            h = value / top * (height - 10)
            bars.append(f'<rect x="{i * step + j * step / 2 + 1:.1f}" y="{height - h:.1f}" width="{step / 2 - 2:.1f}" '
                        f'height="{h:.1f}" fill="{color}"/>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
            f'{"".join(bars)}</svg>')
