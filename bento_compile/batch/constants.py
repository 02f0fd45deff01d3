"""Whole-tensor inputs in batch scoring: an input whose first axis is not the rows (a scalar threshold, a
fixed-shape table) cannot come from a column, so it is given once (`--set NAME=JSON`) and fed, whole,
to every run. Its value is checked exactly as the HTTP contract checks a whole tensor (runtimes/tensors.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bento_compile.batch.columns import without_inputs
from bento_compile.batch.errors import BatchError
from bento_compile.runtimes.errors import RuntimeFault
from bento_compile.runtimes.manifest import Manifest, TensorSpec


def whole_inputs(manifest: Manifest) -> list[TensorSpec]:
    return [spec for spec in manifest.inputs if not spec.batched]


def check_constants(manifest: Manifest, constants: tuple[tuple[str, Any], ...]) -> None:
    """Every whole input given, and only those: each mistake named with its fix."""
    given = dict(constants)
    specs = {spec.name: spec for spec in manifest.inputs}
    for name in given:
        if name not in specs:
            raise BatchError(f"--set names {name!r}, which is not an input of this Bento.",
                             f"Its inputs: {', '.join(specs)}.")
        if specs[name].batched:
            raise BatchError(f"--set names {name!r}, an input with one value per row.",
                             "Read it from a column instead (a column named after it, --features or --input-column).")
    for spec in whole_inputs(manifest):
        if spec.name not in given:
            shape = "[" + ", ".join("N" if d is None else str(d) for d in spec.shape) + "]"
            raise BatchError(f"Input {spec.name!r} ({spec.dtype} {shape}) is one whole tensor per run, not a value "
                             "per row, so no column can fill it.",
                             f"Give it once for every batch: --set {spec.name}=JSON (e.g. --set {spec.name}="
                             f"{_example(spec)}).")


def without_constants(manifest: Manifest) -> Manifest:
    """The manifest the column planner sees: whole inputs come from --set, not from columns."""
    return without_inputs(manifest, {spec.name for spec in whole_inputs(manifest)})


def constant_feeds(manifest: Manifest, constants: tuple[tuple[str, Any], ...]) -> dict[str, np.ndarray]:
    """The whole inputs' tensors, decoded and checked once (the error names the input, as a 422 would)."""
    from bento_compile.runtimes.tensors import decode_inputs

    check_constants(manifest, constants)
    specs = whole_inputs(manifest)
    if not specs:
        return {}
    try:
        feeds, _rows = decode_inputs({"inputs": dict(constants)}, specs, manifest.runtime)
    except RuntimeFault as exc:
        raise BatchError(f"--set: {exc}", "Give each whole input a JSON value of its dtype and shape.") from None
    return feeds


def _example(spec: TensorSpec) -> str:
    value = "0.5" if spec.dtype.startswith("float") else ("true" if spec.dtype == "bool" else "1")
    if spec.dtype == "string":
        value = '\\"text\\"'
    for size in reversed(spec.shape):
        value = "[" + ",".join([value] * (size or 1)) + "]"
    return value
