"""The model's outputs as Arrow columns: one column per output, a list column per row of an [N, k] output."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from bento_compile.runtimes.manifest import TensorSpec

_ARROW_TYPES = {
    "float32": pa.float32(), "float64": pa.float64(), "float16": pa.float16(), "int64": pa.int64(),
    "int32": pa.int32(), "int8": pa.int8(), "uint8": pa.uint8(), "bool": pa.bool_(), "string": pa.string(),
}
ERROR_COLUMN = "error"


def arrow_type(spec: TensorSpec) -> pa.DataType:
    """An output's column type: its scalar type, wrapped in one list per axis after the rows."""
    value = _ARROW_TYPES.get(spec.dtype, pa.float64())
    for _ in spec.shape[1:]:
        value = pa.list_(value)
    return value


def output_fields(specs: tuple[TensorSpec, ...]) -> list[pa.Field]:
    return [pa.field(spec.name, arrow_type(spec)) for spec in specs]


def assemble(spec: TensorSpec, values: np.ndarray, good: np.ndarray) -> pa.Array:
    """One output column for every row of a batch: the model's values where `good`, null elsewhere."""
    kind = arrow_type(spec)
    if values.ndim <= 1 or not pa.types.is_list(kind):
        flat = values.reshape(-1) if values.ndim > 1 else values
        return _scalars(flat, good, kind)
    inner_type = kind
    dims = values.shape[1:]
    for _ in dims:
        inner_type = inner_type.value_type
    inner = _scalars(values.reshape(-1), np.ones(values.size, dtype=bool), inner_type)
    for size in reversed(dims[1:]):  # the axes after the first one: every list has the same length
        offsets = np.arange(0, len(inner) + 1, size, dtype=np.int32)
        inner = pa.ListArray.from_arrays(pa.array(offsets), inner)
    lengths = np.where(good, dims[0], 0).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32)
    mask = None if good.all() else pa.array(~good)
    return pa.ListArray.from_arrays(pa.array(offsets), inner, mask=mask)


def _scalars(values: np.ndarray, good: np.ndarray, kind: pa.DataType) -> pa.Array:
    rows = len(good)
    if good.all():
        if kind == pa.string():
            return pa.array([None if v is None else str(v) for v in values.tolist()], type=kind)
        return pa.array(values, type=kind)
    if kind == pa.string():
        full: list = [None] * rows
        for index, value in zip(np.flatnonzero(good), values.tolist(), strict=True):
            full[index] = value
        return pa.array(full, type=kind)
    dense = np.zeros(rows, dtype=values.dtype)
    dense[good] = values
    return pa.array(dense, type=kind, mask=~good)
