"""The parity check: does the compiled model still agree with the original?

Labels (integer, string or bool outputs) must agree on at least
`label_agreement` of the rows. Continuous outputs must satisfy
|compiled − original| ≤ tolerance × max(1, |original|) element-wise: an
absolute bound for probabilities and scores in [−1, 1], a relative one for
large regression targets where float32 cannot do better.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bento_compile.core.errors import BentoCompileError


def compare(reference: dict[str, np.ndarray], compiled: dict[str, np.ndarray], tolerance: float,
            label_agreement: float, rows: int, sample_source: str) -> dict[str, Any]:
    """Build the parity report (JSON-ready) for the outputs both sides produced."""
    report_outputs: dict[str, dict[str, Any]] = {}
    passed = True
    for name, original in reference.items():
        got = compiled[name]
        original = np.asarray(original)
        if original.dtype.kind in "OUSbiu" or got.dtype.kind in "OUSbiu":
            same = _as_labels(original) == _as_labels(got)
            agreement = float(same.mean()) if same.size else 1.0
            ok = agreement >= label_agreement
            report_outputs[name] = {"kind": "label", "agreement": agreement, "required": label_agreement,
                                    "mismatched_rows": int((~same).sum()), "passed": ok}
        else:
            a = original.astype(np.float64).reshape(got.shape)
            b = got.astype(np.float64)
            both_nan = np.isnan(a) & np.isnan(b)
            diff = np.where(both_nan, 0.0, np.abs(a - b))
            bound = tolerance * np.maximum(1.0, np.abs(a))
            ok = bool(np.all(both_nan | (diff <= bound)))  # NaN on both sides agrees (|NaN| is no bound)
            report_outputs[name] = {"kind": "continuous", "max_abs_diff": float(np.nanmax(diff)) if diff.size else 0.0,
                                    "tolerance": tolerance, "passed": ok}
        passed = passed and ok
    skipped = sorted(set(compiled) - set(reference))
    return {"passed": passed, "rows": rows, "sample": sample_source, "outputs": report_outputs,
            "not_compared": skipped}


def _as_labels(values: np.ndarray) -> np.ndarray:
    """Labels as comparable strings; bool classes become 0/1 as skl2onnx encodes them."""
    values = np.asarray(values)
    if values.dtype.kind == "b":
        values = values.astype(np.int64)
    return values.astype(str).reshape(-1)


def table_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(output, measure, bound, verdict) rows for printing the report."""
    rows = []
    for name, entry in report["outputs"].items():
        if entry["kind"] == "label":
            rows.append((name, f"agreement {entry['agreement']:.2%}", f"≥ {entry['required']:.2%}",
                         "ok" if entry["passed"] else "FAIL"))
        else:
            bound = "not gated" if entry["tolerance"] is None else f"≤ {entry['tolerance']:.3g}"
            rows.append((name, f"max |Δ| {entry['max_abs_diff']:.3g}", bound, "ok" if entry["passed"] else "FAIL"))
    why = ("served as it is: no original to compare with" if report.get("passthrough")
           else "the original has no equivalent")
    for name in report.get("not_compared", []):
        rows.append((name, "not compared", why, "-"))
    return rows


class ParityError(BentoCompileError):
    """The compiled model disagrees with the original past the tolerance."""

    def __init__(self, report: dict[str, Any]):
        failing = [name for name, entry in report["outputs"].items() if not entry["passed"]]
        super().__init__(
            f"Parity check failed on {', '.join(failing)}: the compiled model does not agree with the original "
            f"on the {report['rows']} sample rows; nothing was stored.",
            "Check the sample is representative; if the difference is acceptable, raise --tolerance "
            "(or parity.tolerance / parity.label_agreement in bento.yaml).")
        self.report = report
