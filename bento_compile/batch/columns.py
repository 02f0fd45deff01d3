"""Which table columns feed which model input, and turning a record batch into checked numpy feeds.

A column plan is chosen once per table schema, in this order:
1. `--input-column COL`: one list-valued column holds each row's values (one-input models);
2. `--features A,B,…`: these scalar columns, in this order, are the input's features;
3. the feature names the manifest recorded (a model fitted on a DataFrame): those columns by name;
4. a column named after every input (multi-input Bentos, or one list-valued column per input).
Otherwise the error lists what to pass.

The checks are the HTTP contract's: a row the server would answer 422 (a null where missing values
are not accepted, a string that is not a number, a list of the wrong length) is a row error here,
reported with its row and column; a column of the wrong type fails the whole table, named.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bento_compile.batch.errors import BatchError
from bento_compile.runtimes.manifest import Manifest, TensorSpec

STACK, SCALAR, LIST = "stack", "scalar", "list"


@dataclass(frozen=True)
class Binding:
    """One model input and the column(s) it is read from."""

    spec: TensorSpec
    kind: str  # stack: scalar columns side by side; scalar: one scalar column; list: one list column
    columns: tuple[str, ...]

    @property
    def numeric(self) -> bool:
        return self.spec.dtype not in ("string", "bool")


@dataclass(frozen=True)
class ColumnPlan:
    bindings: tuple[Binding, ...]
    how: str  # said in errors and the summary: where the columns came from

    @property
    def columns(self) -> list[str]:
        return [c for b in self.bindings for c in b.columns]

    def scalar_numeric_columns(self) -> list[str]:
        """Columns a CSV reader should hand over as text, so one bad cell is one row error, not a failed read."""
        return [c for b in self.bindings if b.kind != LIST and b.numeric for c in b.columns]


def without_inputs(manifest: Manifest, names: set[str]) -> Manifest:
    """The manifest the planner sees when some inputs come from elsewhere (decoded images, --set tensors)."""
    if not names:
        return manifest
    return replace(manifest, model=replace(manifest.model, inputs=tuple(s for s in manifest.inputs
                                                                         if s.name not in names)))


def feature_names(manifest: Manifest) -> list[str] | None:
    names = manifest.model.feature_names
    return list(names) if names else None


def plan_columns(manifest: Manifest, names: Sequence[str], features: Sequence[str] | None = None,
                 input_column: str | None = None) -> ColumnPlan:
    """Bind every model input to columns of a table with these column names."""
    specs = manifest.inputs
    available = list(names)
    if features and input_column:
        raise BatchError("--features and --input-column were both given.", "Pass one of them.")
    if input_column:
        spec = _only_input(specs, "--input-column")
        _require(available, [input_column], "--input-column")
        return ColumnPlan((Binding(spec, LIST, (input_column,)),), f"list column '{input_column}'")
    if features:
        spec = _only_input(specs, "--features")
        return ColumnPlan((_stack(spec, list(features), available, "--features"),), "--features")
    recorded = feature_names(manifest)
    if recorded and len(specs) == 1:
        return ColumnPlan((_stack(specs[0], recorded, available, "the feature names the model was fitted on"),),
                          "the model's feature names")
    if all(spec.name in available for spec in specs):
        bindings = tuple(Binding(s, SCALAR if _is_scalar(s) else LIST, (s.name,)) for s in specs)
        return ColumnPlan(bindings, "a column per input")
    missing = [s.name for s in specs if s.name not in available]
    if len(specs) > 1:
        raise BatchError(f"This Bento takes {len(specs)} inputs ({', '.join(s.name for s in specs)}), one column "
                         f"each, but the table has no column {', '.join(map(repr, missing))}.",
                         f"The table's columns: {_list(available)}.")
    raise BatchError(
        f"This Bento does not record its feature names (its model was not fitted on a DataFrame) and the table "
        f"has no column '{specs[0].name}'.",
        f"Name the feature columns in order with --features COL,COL,... or a list-valued column with "
        f"--input-column COL. The table's columns: {_list(available)}.")


def _only_input(specs: Sequence[TensorSpec], option: str) -> TensorSpec:
    if len(specs) != 1:
        raise BatchError(f"{option} is for one-input Bentos; this one takes {len(specs)} "
                         f"({', '.join(s.name for s in specs)}).", "Give the table one column per input, "
                         "named after it, and drop the option.")
    return specs[0]


def _stack(spec: TensorSpec, columns: list[str], available: list[str], source: str) -> Binding:
    if len(spec.shape) != 2:
        raise BatchError(f"Input '{spec.name}' has shape {_shape(spec)}, not rows of features, so {source} cannot "
                         "fill it.", "Use --input-column with a list-valued column.")
    width = spec.shape[1]
    if width is not None and width != len(columns):
        raise BatchError(f"{source} names {len(columns)} columns but input '{spec.name}' takes {width} features.",
                         "List every feature column, in the order the model was trained on.")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise BatchError(f"{source} names {', '.join(map(repr, duplicated))} more than once.",
                         "List each feature column once.")
    _require(available, columns, source)
    return Binding(spec, STACK, tuple(columns))


def _require(available: list[str], wanted: list[str], source: str) -> None:
    missing = [c for c in wanted if c not in available]
    if missing:
        raise BatchError(f"The table has no column {', '.join(map(repr, missing[:5]))}"
                         f"{' (and more)' if len(missing) > 5 else ''}, named by {source}.",
                         f"The table's columns: {_list(available)}.")


def _is_scalar(spec: TensorSpec) -> bool:
    return len(spec.shape) <= 1 or (len(spec.shape) == 2 and spec.shape[1] == 1)


def _shape(spec: TensorSpec) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in spec.shape) + "]"


def _list(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "") if names else "(none)"


# ---- types ---------------------------------------------------------------------------------------------------

def check_types(plan: ColumnPlan, schema: pa.Schema) -> None:
    """Refuse columns whose Arrow type can never fill their input (named, with the type wanted)."""
    for binding in plan.bindings:
        for column in binding.columns:
            arrow_type = schema.field(column).type
            if binding.kind == LIST:
                if not _is_list(arrow_type):
                    raise BatchError(f"Column '{column}' is {arrow_type}, but input '{binding.spec.name}' "
                                     f"({binding.spec.dtype} {_shape(binding.spec)}) needs a list of values per row.",
                                     "Store each row's values as a list column, or name scalar columns with "
                                     "--features.")
                arrow_type = arrow_type.value_type
                if _is_list(arrow_type):
                    raise BatchError(f"Column '{column}' holds lists of lists; input '{binding.spec.name}' reads "
                                     "one flat list per row.", "Flatten each row's values into one list.")
            if pa.types.is_dictionary(arrow_type):  # e.g. a pandas category column: read as its values
                arrow_type = arrow_type.value_type
            if not _fits(arrow_type, binding.spec.dtype):
                raise BatchError(f"Column '{column}' has type {arrow_type}, but input '{binding.spec.name}' takes "
                                 f"{binding.spec.dtype}.", f"Give the column {_wanted(binding.spec.dtype)}.")


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _fits(t: pa.DataType, dtype: str) -> bool:
    if pa.types.is_null(t):
        return True  # an all-null column: its rows are errors (or missing values), not a type error
    if dtype == "string":
        return _is_text(t)
    if dtype == "bool":
        return pa.types.is_boolean(t)
    if dtype.startswith(("int", "uint")):
        return pa.types.is_integer(t) or _is_text(t)
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or _is_text(t)


def _wanted(dtype: str) -> str:
    if dtype == "string":
        return "text values"
    if dtype == "bool":
        return "true/false values"
    return "integer values" if dtype.startswith(("int", "uint")) else "numbers (integers or floats)"


# ---- values --------------------------------------------------------------------------------------------------

class RowErrors:
    """The first reason each bad row of a batch was refused."""

    def __init__(self, rows: int):
        self.bad = np.zeros(rows, dtype=bool)
        self.reasons: dict[int, str] = {}

    def mark(self, mask: np.ndarray, reason_for) -> None:
        for index in np.flatnonzero(mask & ~self.bad):
            self.reasons[int(index)] = reason_for(int(index))
        self.bad |= mask


def to_feeds(batch: pa.RecordBatch, plan: ColumnPlan, allow_missing: bool) -> tuple[dict[str, np.ndarray], RowErrors]:
    """The model's feeds for every row of the batch (bad rows hold placeholders) and which rows are bad."""
    errors = RowErrors(batch.num_rows)
    feeds = {}
    for binding in plan.bindings:
        if binding.kind == LIST:
            feeds[binding.spec.name] = _list_feed(batch.column(binding.columns[0]), binding, allow_missing, errors)
        else:
            arrays = [_scalar_values(batch.column(c), c, binding.spec, allow_missing, errors) for c in binding.columns]
            if binding.kind == STACK:
                feed = np.column_stack(arrays) if arrays else np.zeros((batch.num_rows, 0))
            else:
                feed = arrays[0].reshape((batch.num_rows, *([1] * (len(binding.spec.shape) - 1))))
            feeds[binding.spec.name] = np.ascontiguousarray(feed, dtype=_np_dtype(binding.spec))
    return feeds, errors


def _np_dtype(spec: TensorSpec) -> np.dtype:
    return np.dtype(object) if spec.dtype == "string" else np.dtype(spec.dtype)


def _scalar_values(column: pa.Array, name: str, spec: TensorSpec, allow_missing: bool,
                   errors: RowErrors) -> np.ndarray:
    """One column as a numpy vector of the input's dtype; nulls and unparseable cells marked as row errors."""
    target = _np_dtype(spec)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    text = column
    if pa.types.is_null(column.type):
        column = pa.nulls(len(column), pa.float64() if target.kind == "f" else pa.int64())
    elif _is_text(column.type) and spec.dtype != "string":
        column, unparsed = _parse_text(column, spec)
        errors.mark(unparsed, lambda i: f"column '{name}' holds {_cell(text[i].as_py())}, expected "
                    f"{'an integer' if target.kind in 'iu' else 'a number'}")
    nulls = _null_mask(column)
    if spec.dtype == "string":
        values = np.asarray(column.to_pylist(), dtype=object)
    elif target.kind == "b":
        values = column.fill_null(False).to_numpy(zero_copy_only=False) if nulls.any() else \
            column.to_numpy(zero_copy_only=False)
    else:
        values = _numeric(column, target)
    if target.kind == "f":
        _mark_overflow(values, name, spec, errors)
        missing = nulls | np.isnan(values)
        if not allow_missing:
            errors.mark(missing, lambda _i: f"column '{name}' is null or NaN, and this model does not accept "
                        "missing values (runtime.allow_missing: false in bento.yaml)")
        return values
    errors.mark(nulls, lambda _i: f"column '{name}' is null, expected {_wanted(spec.dtype)[:-1]}")
    if target.kind in "iu" and nulls.any():
        values = np.where(nulls, 0, values).astype(target)
    elif target.kind == "O" and nulls.any():
        values = np.where(nulls, "", values)
    return values


def _mark_overflow(values: np.ndarray, name: str, spec: TensorSpec, errors: RowErrors) -> None:
    """A number past a float32 / float16 input's range would reach the model as inf: the server's 422."""
    if values.dtype.itemsize >= 8:
        return
    infinite = np.isinf(values)
    if infinite.ndim > 1:
        infinite = infinite.reshape(len(infinite), -1).any(axis=1)
    if infinite.any():
        bound = float(np.finfo(values.dtype).max)
        errors.mark(infinite, lambda _i: f"column '{name}' holds a number outside the range of {spec.dtype} "
                    f"(at most {bound:.4g} in magnitude)")


def _null_mask(column: pa.Array) -> np.ndarray:
    if column.null_count == 0:
        return np.zeros(len(column), dtype=bool)
    return column.is_null().to_numpy(zero_copy_only=False)


def _numeric(column: pa.Array, target: np.dtype) -> np.ndarray:
    if pa.types.is_decimal(column.type):
        column = pc.cast(column, pa.float64())
    with np.errstate(over="ignore"):  # a number past the input's range is a row error (_mark_overflow)
        if target.kind == "f" or column.null_count:
            return column.to_numpy(zero_copy_only=False).astype(np.float64 if target.kind != "f" else target)
    return column.to_numpy(zero_copy_only=False)


def _parse_text(column: pa.Array, spec: TensorSpec) -> tuple[pa.Array, np.ndarray]:
    """Text cells as numbers: one cast when every cell parses, else cell by cell (the unparseable become nulls)."""
    arrow_target = pa.int64() if spec.dtype.startswith(("int", "uint")) else pa.float64()
    stripped = pc.utf8_trim_whitespace(column)
    try:
        return pc.cast(stripped, arrow_target), np.zeros(len(column), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    parse = int if arrow_target == pa.int64() else float
    values: list[int | float | None] = []
    bad = np.zeros(len(column), dtype=bool)
    for index, text in enumerate(stripped.to_pylist()):
        if text is None or text == "":
            values.append(None)
            continue
        try:
            values.append(parse(text))
        except ValueError:
            values.append(None)
            bad[index] = True
    return pa.array(values, type=arrow_target), bad


def _cell(value) -> str:
    text = repr(value)
    return text if len(text) <= 42 else text[:40] + "…'"


def _list_feed(column: pa.Array, binding: Binding, allow_missing: bool, errors: RowErrors) -> np.ndarray:
    """A list column as a (rows, *shape[1:]) array; null lists and lists of the wrong length are row errors."""
    spec, name = binding.spec, binding.columns[0]
    rows = len(column)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    nulls = _null_mask(column)
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    declared = tuple(spec.shape[1:])
    inner: tuple[int, ...] = tuple(d for d in declared if d is not None)
    if len(inner) == len(declared):  # every axis after the rows is fixed
        width = math.prod(inner)
    else:
        valid_lengths = lengths[~nulls]
        width = int(valid_lengths[0]) if len(valid_lengths) else 0
        inner = tuple(width if d is None else d for d in declared)
        if math.prod(inner) != width:
            inner = (width,)
    errors.mark(nulls, lambda _i: f"column '{name}' is null, expected a list of {width} values")
    wrong = ~nulls & (lengths != width)
    errors.mark(wrong, lambda i: f"column '{name}' has {lengths[i]} values, input '{spec.name}' takes {width}")
    target = _np_dtype(spec)
    out = np.zeros((rows, width), dtype=target if target.kind != "O" else object)
    good = ~(nulls | wrong)
    if good.any():
        kept = column.filter(pa.array(good))
        flat = pc.list_flatten(kept)
        if _is_text(flat.type) and spec.dtype != "string":
            flat, unparsed = _parse_text(flat, spec)
            owners = np.flatnonzero(good)[np.flatnonzero(unparsed) // max(width, 1)]
            bad_rows = np.zeros(rows, dtype=bool)
            bad_rows[owners] = True
            errors.mark(bad_rows, lambda _i: f"column '{name}' holds a value that is not a number")
        element_nulls = _null_mask(flat)
        if spec.dtype == "string":
            values = np.asarray(flat.to_pylist(), dtype=object)
        else:
            values = _numeric(flat, target) if target.kind != "b" else flat.to_numpy(zero_copy_only=False)
        if element_nulls.any() and (target.kind != "f" or not allow_missing):
            owners = np.flatnonzero(good)[np.flatnonzero(element_nulls) // max(width, 1)]
            bad_rows = np.zeros(rows, dtype=bool)
            bad_rows[owners] = True
            errors.mark(bad_rows, lambda _i: f"column '{name}' holds a null value, and this model does not accept "
                        "missing values")
        if target.kind in "iu":
            values = np.where(element_nulls, 0, values)
        out[good] = values.reshape(-1, width)
        if target.kind == "f":
            _mark_overflow(out, name, spec, errors)
        if target.kind == "f" and not allow_missing:
            nan_rows = np.zeros(rows, dtype=bool)
            nan_rows[good] = np.isnan(out[good]).any(axis=1)
            errors.mark(nan_rows, lambda _i: f"column '{name}' holds NaN, and this model does not accept missing "
                        "values (runtime.allow_missing: false in bento.yaml)")
    return out.reshape((rows, *inner))
