"""The row format of TF Serving, Vertex AI, KServe v1 and MLflow: rows in, `{"predictions": [...]}` out.

Clients written for those servers (Vertex AI endpoints send nothing else) post one instance per row
and read one prediction per row. An instance is what a row of `inputs` is (a list of numbers, a value,
or an object of named inputs or columns), so the request is decoded by the same signature check. Each
prediction is the row's one output value, or an object of every output's row when there are several.
`parameters` (Vertex AI) or `params` (MLflow) is accepted and has no meaning for a compiled model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bento_compile.runtimes.errors import InputError
from bento_compile.runtimes.manifest import Manifest

ROW_FIELDS = ("instances", "dataframe_records", "dataframe_split")  # TF Serving / Vertex AI / KServe; MLflow


def instances_request(payload: Any, manifest: Manifest) -> dict[str, Any] | None:
    """`{"inputs": <rows>}` for a row-format body, None for any other (the usual contract).

    Also MLflow's scoring bodies: `dataframe_records` (one object per row) and `dataframe_split`
    (`columns` and `data`), read as objects keyed by column when the model knows its columns (its
    recorded feature names, or its inputs when each is one column), else as plain rows."""
    if type(payload) is not dict or "inputs" in payload:
        return None
    given = [field for field in ROW_FIELDS if field in payload]
    if not given:
        return None
    unknown = sorted(set(payload) - {given[0], "parameters", "params"})
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r} beside {given[0]!r}; the row format takes {given[0]!r} "
                         'and "parameters"')
    check_row_outputs(manifest)
    rows = payload[given[0]]
    if given[0] == "dataframe_split":
        rows = _split_rows(rows, _known_columns(manifest))
    if not isinstance(rows, list):
        raise InputError(f'"{given[0]}" must be a list, one item per row')
    return {"inputs": rows}


def _known_columns(manifest: Manifest) -> Sequence[str] | None:
    if manifest.model.feature_names:
        return manifest.model.feature_names
    if len(manifest.inputs) > 1 and all(tuple(spec.shape[1:]) == (1,) for spec in manifest.inputs):
        return [spec.name for spec in manifest.inputs]
    return None


def _split_rows(split: Any, columns: Sequence[str] | None) -> list:
    if not isinstance(split, dict) or not isinstance(split.get("data"), list):
        raise InputError('"dataframe_split" must be an object with "data" (a list of rows) and "columns"')
    names, data = split.get("columns"), split["data"]
    if not columns or not isinstance(names, list):
        return data
    if not all(isinstance(name, str) for name in names):
        raise InputError('"dataframe_split.columns" must be a list of column names')
    bad = next((i for i, row in enumerate(data) if not isinstance(row, list) or len(row) != len(names)), None)
    if bad is not None:
        raise InputError(f"dataframe_split.data[{bad}] must be a list of {len(names)} values, one per column")
    return [dict(zip(names, row, strict=True)) for row in data]


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
