"""The row format of TF Serving, Vertex AI and KServe v1: `{"instances": [...]}` in, `{"predictions": [...]}` out.

Clients written for those servers (Vertex AI endpoints send nothing else) post one instance per row
and read one prediction per row. An instance is what a row of `inputs` is (a list of numbers, a value,
or an object of named inputs or columns), so the request is decoded by the same signature check. Each
prediction is the row's one output value, or an object of every output's row when there are several.
`parameters`, which Vertex AI may add, is accepted and has no meaning for a compiled model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bento_compile.runtimes.errors import InputError
from bento_compile.runtimes.manifest import Manifest


def instances_request(payload: Any) -> dict[str, Any] | None:
    """`{"inputs": <instances>}` for a row-format body, None for any other (the usual contract)."""
    if type(payload) is not dict or "instances" not in payload or "inputs" in payload:
        return None
    unknown = sorted(set(payload) - {"instances", "parameters"})
    if unknown:
        raise InputError(f'unknown field {unknown[0]!r} beside "instances"; the row format takes "instances" '
                         'and "parameters"')
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InputError('"instances" must be a list, one instance per row')
    return {"inputs": instances}


def check_row_outputs(manifest: Manifest) -> None:
    """Row-format answers split every output by row: refused up front for a Bento whose outputs are not."""
    whole = [spec.name for spec in manifest.outputs if not spec.batched]
    if whole or not any(spec.batched for spec in manifest.inputs):
        raise InputError(f"this model's outputs are not one per row ({', '.join(whole) or 'no batched input'}), "
                         'so it cannot answer in the row format: send {"inputs": ...} instead of "instances"')


def predictions(outputs: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
    """One prediction per row: the output's row, or `{output: row, ...}` when the model has several."""
    if len(outputs) == 1:  # one value per row, as the prebuilt servers' predict() lists it
        (value,) = outputs.values()
        return {"predictions": (value.reshape(-1) if value.ndim == 2 and value.shape[1] == 1 else value).tolist()}
    columns = {name: value.tolist() for name, value in outputs.items()}
    rows = len(next(iter(columns.values()))) if columns else 0
    return {"predictions": [{name: values[row] for name, values in columns.items()} for row in range(rows)]}
