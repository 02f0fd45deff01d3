"""The accuracy gate: does a (quantized) variant still agree with the ORIGINAL model?

Unlike the strict parity check (which proves a conversion is exact), the gate
states how much a smaller or faster variant may drift, in the user's own terms
(bento.yaml `quantize.gate`):

- every label output (integer, string or bool) must agree with the original on
  at least `label_agreement` of the held-out rows;
- the named continuous `output` must stay within `max_abs_diff` (max |Δ|)
  and/or `max_rel_error` (max |Δ| / max |original|, so near-zero values do not
  blow it up).

The report has the parity report's shape, so the same printers show it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bento_compile.compiler.parity import _as_labels
from bento_compile.core.config import QuantizeGate
from bento_compile.core.errors import BentoCompileError


def is_label(values: np.ndarray) -> bool:
    return np.asarray(values).dtype.kind in "OUSbiu"


def check_gate_applies(gate: QuantizeGate, reference: dict[str, np.ndarray]) -> None:
    """Refuse a gate that would let anything through: it must measure at least one output."""
    if gate.output is not None:
        if gate.output not in reference:
            raise BentoCompileError(
                f"quantize.gate.output '{gate.output}' is not an output of the original model "
                f"(it has: {', '.join(sorted(reference))}).", "Name one of those outputs in quantize.gate.output.")
        if is_label(reference[gate.output]):
            raise BentoCompileError(f"quantize.gate.output '{gate.output}' is a label output.",
                                    "Labels are gated by quantize.gate.label_agreement; name a continuous "
                                    "output (scores, probabilities, a regression value) instead.")
        if gate.max_abs_diff is None and gate.max_rel_error is None:
            raise BentoCompileError(f"quantize.gate names output '{gate.output}' but no bound for it.",
                                    "Add max_abs_diff and/or max_rel_error under quantize.gate.")
    elif gate.max_abs_diff is not None or gate.max_rel_error is not None:
        raise BentoCompileError("quantize.gate sets a bound but names no output to apply it to.",
                                "Add quantize.gate.output (e.g. probabilities).")
    has_labels = any(is_label(v) for v in reference.values())
    if not has_labels and gate.output is None:
        raise BentoCompileError(
            "The model has no label output, so the quantization gate would check nothing: "
            f"outputs are {', '.join(sorted(reference))}.",
            "Bound a continuous output: quantize: {gate: {output: NAME, max_rel_error: 0.01}} in bento.yaml.")


def evaluate(gate: QuantizeGate, reference: dict[str, np.ndarray], got: dict[str, np.ndarray], rows: int,
             sample_source: str) -> dict[str, Any]:
    """A parity-shaped report of `got` against the original under the gate's bounds."""
    outputs: dict[str, dict[str, Any]] = {}
    passed = True
    for name, original in reference.items():
        original = np.asarray(original)
        value = np.asarray(got[name])
        if is_label(original) or is_label(value):
            same = _as_labels(original) == _as_labels(value)
            agreement = float(same.mean()) if same.size else 1.0
            ok = agreement >= gate.label_agreement
            outputs[name] = {"kind": "label", "agreement": agreement, "required": gate.label_agreement,
                             "mismatched_rows": int((~same).sum()), "passed": ok}
        else:
            a = original.astype(np.float64).reshape(value.shape)
            diff = np.abs(a - value.astype(np.float64))
            diff = np.where(np.isnan(a) & np.isnan(value), 0.0, diff)
            max_abs = float(np.nanmax(diff)) if diff.size else 0.0
            scale = float(np.nanmax(np.abs(a))) if a.size else 0.0
            ratio = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
            # JSON has no infinity: an unbounded output gets tolerance None ("not gated").
            rel = ratio if math.isfinite(ratio) else None
            entry: dict[str, Any] = {"kind": "continuous", "max_abs_diff": max_abs, "max_rel_error": rel,
                                     "tolerance": None, "gated": name == gate.output, "passed": True}
            if name == gate.output:
                ok = True
                bounds = []
                if gate.max_abs_diff is not None:
                    entry["max_abs_diff_bound"] = gate.max_abs_diff
                    bounds.append(gate.max_abs_diff)
                    ok = ok and max_abs <= gate.max_abs_diff
                if gate.max_rel_error is not None:
                    entry["max_rel_error_bound"] = gate.max_rel_error
                    bounds.append(gate.max_rel_error * scale)  # the same bound, in absolute terms
                    ok = ok and rel is not None and rel <= gate.max_rel_error
                entry["tolerance"] = min(bounds)
                entry["passed"] = ok
            outputs[name] = entry
        passed = passed and outputs[name]["passed"]
    if gate.argmax and gate.output in reference:
        same = (np.asarray(reference[gate.output]).argmax(axis=-1).reshape(-1)
                == np.asarray(got[gate.output]).argmax(axis=-1).reshape(-1))
        agreement = float(same.mean()) if same.size else 1.0
        ok = agreement >= gate.label_agreement
        outputs[f"argmax({gate.output})"] = {"kind": "label", "agreement": agreement, "required": gate.label_agreement,
                                             "mismatched_rows": int((~same).sum()), "passed": ok}
        passed = passed and ok
    return {"passed": passed, "rows": rows, "sample": sample_source, "outputs": outputs,
            "not_compared": sorted(set(got) - set(reference))}


def summary(report: dict[str, Any], gate: QuantizeGate) -> dict[str, Any]:
    """The numbers the variants table shows: lowest label agreement and the gated output's error."""
    labels = [e["agreement"] for e in report["outputs"].values() if e["kind"] == "label"]
    out: dict[str, Any] = {"agreement": min(labels) if labels else None}
    if gate.output and gate.output in report["outputs"]:
        entry = report["outputs"][gate.output]
        out["max_abs_diff"] = entry["max_abs_diff"]
        out["max_rel_error"] = entry["max_rel_error"]
    return out


def failures(report: dict[str, Any]) -> str:
    """Why a variant failed, in one line."""
    parts = []
    for name, entry in report["outputs"].items():
        if entry["passed"]:
            continue
        if entry["kind"] == "label":
            parts.append(f"{name} agreement {entry['agreement']:.2%} < {entry['required']:.2%}")
        else:
            bounds = []
            if "max_abs_diff_bound" in entry:
                bounds.append(f"max |Δ| {entry['max_abs_diff']:.3g} (bound {entry['max_abs_diff_bound']:.3g})")
            if "max_rel_error_bound" in entry:
                rel = "inf" if entry["max_rel_error"] is None else f"{entry['max_rel_error']:.3g}"
                bounds.append(f"rel. error {rel} (bound {entry['max_rel_error_bound']:.3g})")
            parts.append(f"{name} " + ", ".join(bounds))
    return "; ".join(parts)
