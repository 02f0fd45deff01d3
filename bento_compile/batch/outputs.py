"""The model's outputs as Arrow columns, the HTTP contract's answer laid out as a table.

A Bento with labelled outputs (`outputs:` in bento.yaml: class names, softmax, top-k) first gets the
columns its HTTP answer's `predictions` hold: `label` (the class name), `score` and `top_k` (a list of
{label, score}, best first), computed by the runtime's own answers code; with several labelled outputs
each is prefixed with its output's name (`logits_label`, ...). Then come the raw outputs, as the
answer's `outputs`: one column per output, a list column per row of an [N, k] output, without the
helper outputs the compiler folded into the graph for the answers (top-k indices and scores). A raw
output with the name of an answer column (a scikit-learn classifier's own `label`) gives way to it:
the name the answer gives is the one a reader of the table wants, and the class index it replaces is
the name's position in the labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from bento_compile.runtimes.answers import internal_outputs, top_k
from bento_compile.runtimes.manifest import Manifest, OutputLabels, TensorSpec

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


TOP_K_TYPE = pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))
_ANSWER_FIELDS = (("label", pa.string()), ("score", pa.float64()), ("top_k", TOP_K_TYPE))


@dataclass(frozen=True)
class OutputPlan:
    """Which columns a Bento's outputs become, decided once from its manifest."""

    labelled: tuple[tuple[str, OutputLabels], ...]  # (column prefix, labelled output): the answer's predictions
    raw: tuple[TensorSpec, ...]  # the model outputs written as they are: the answer's outputs

    def fields(self) -> list[pa.Field]:
        answers = [pa.field(prefix + name, kind) for prefix, _ in self.labelled for name, kind in _ANSWER_FIELDS]
        return answers + [pa.field(spec.name, arrow_type(spec)) for spec in self.raw]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields()]

    def columns(self, outputs: Mapping[str, np.ndarray], good: np.ndarray) -> list[pa.Array]:
        """Every output column for a batch whose `good` rows the model ran on (`outputs` has those rows only)."""
        columns: list[pa.Array] = []
        for _prefix, labelled in self.labelled:
            columns.extend(answer_columns(labelled, outputs, good))
        for spec in self.raw:
            values = outputs.get(spec.name)
            if values is None:  # no good row in the batch: the model did not run
                values = np.zeros((0, *[d or 1 for d in spec.shape[1:]]), dtype=_numpy_dtype(spec.dtype))
            columns.append(assemble(spec, values, good))
        return columns


def plan_outputs(manifest: Manifest) -> OutputPlan:
    labelled = tuple(manifest.pipeline.outputs) if manifest.pipeline else ()
    prefixes = [""] if len(labelled) == 1 else [f"{spec.name}_" for spec in labelled]
    answered = {prefix + name for prefix in prefixes for name, _ in _ANSWER_FIELDS}
    hidden = internal_outputs(labelled)
    raw = tuple(s for s in manifest.outputs if s.name not in hidden and s.name not in answered)
    return OutputPlan(tuple(zip(prefixes, labelled, strict=True)), raw)


def output_fields(manifest: Manifest) -> list[pa.Field]:
    return plan_outputs(manifest).fields()


def answer_columns(spec: OutputLabels, outputs: Mapping[str, np.ndarray], good: np.ndarray) -> list[pa.Array]:
    """`label`, `score` and `top_k` for every row, as `runtimes/answers.label_answers` gives them over HTTP
    (same top-k, same names, scores rounded the same way), built column-wise; null where a row is not good."""
    rows = len(good)
    if not good.any():
        return [pa.nulls(rows, kind) for _, kind in _ANSWER_FIELDS]
    scores, indices = top_k(spec, outputs)
    scores = np.round(np.asarray(scores, dtype=np.float64), 6)
    indices = np.asarray(indices, dtype=np.int64)
    # A class past the labels is named by its index, as label_answers does.
    names = pa.array([*spec.labels, *map(str, range(len(spec.labels), int(indices.max()) + 1))], pa.string())
    ranked = pa.StructArray.from_arrays([names.take(pa.array(indices.reshape(-1))), pa.array(scores.reshape(-1))],
                                        fields=list(TOP_K_TYPE.value_type))
    offsets = pa.array(np.arange(0, len(ranked) + 1, indices.shape[1], dtype=np.int32))
    columns = [names.take(pa.array(indices[:, 0])), pa.array(scores[:, 0], pa.float64()),
               pa.ListArray.from_arrays(offsets, ranked, type=TOP_K_TYPE)]
    if good.all():
        return columns
    positions = np.zeros(rows, dtype=np.int64)
    positions[good] = np.arange(int(good.sum()))
    where = pa.array(positions, mask=~good)  # a null position takes a null
    return [column.take(where) for column in columns]


def _numpy_dtype(dtype: str) -> np.dtype:
    return np.dtype(object) if dtype == "string" else np.dtype(dtype)


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
