"""Turning JSON inputs into checked numpy arrays, and model outputs back into JSON.

The fast path is one `np.asarray` per input; only when it fails or the checks
do not pass does the slow path walk the nested lists to say exactly where the
request is wrong ("inputs[3][5] is a string").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from bento_compile.runtimes.errors import InputError, PayloadTooLarge
from bento_compile.runtimes.manifest import RuntimeSettings, TensorSpec

_FLOAT_KINDS = "f"
_INT_KINDS = "iu"


def decode_inputs(
    payload: Any, specs: Sequence[TensorSpec], settings: RuntimeSettings, columns: Sequence[str] | None = None
) -> tuple[dict[str, np.ndarray], int]:
    """Validate a request's `inputs` against the model signature.

    `columns`: the feature names of a one-input model fitted on a DataFrame (the manifest's
    `model.feature_names`), so that rows may also come as objects keyed by those names.

    Returns the feeds for the model and the number of rows (the batch size: the shared first axis of the
    batched inputs, 1 when every input is a whole tensor). Raises InputError naming the input and position
    of the first problem.
    """
    if len(specs) == 1 and type(payload) is dict:
        fast = _rows_of_numbers(payload, specs[0], settings)
        if fast is not None:
            return fast
    return _decode_general(payload, specs, settings, columns)


_FAST_FLOATS: dict[str, np.dtype] = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def _rows_of_numbers(payload: dict, spec: TensorSpec, settings: RuntimeSettings) -> tuple[dict, int] | None:
    """The common request, checked with a few numpy calls: one batched float input sent as a list of rows
    of numbers that already fits the declared shape. None for anything else, and for anything the checks
    would refuse: then `_decode_general` decides, and words the error (the same answer either way)."""
    target = _FAST_FLOATS.get(spec.dtype)
    inputs = payload.get("inputs")
    if target is None or type(inputs) is not list or not inputs or not spec.batched:
        return None
    try:
        raw = np.asarray(inputs)
    except ValueError:  # ragged
        return None
    kind = raw.dtype.kind
    shape = raw.shape
    declared = spec.shape
    if kind not in "fiu" or len(shape) != len(declared) or not raw.size or shape[0] > settings.max_batch_rows:
        return None
    if declared[0] is None and None not in declared[1:]:  # rows of a fixed shape: one tuple comparison
        if shape[1:] != declared[1:]:
            return None
    elif any(want is not None and got != want for got, want in zip(shape, declared, strict=True)):
        return None
    if raw.dtype == target:
        array = raw
    elif kind == "f":  # float64 to float32: an overflow (or an inf a Python caller sent) is refused there
        with np.errstate(over="ignore"):
            array = raw.astype(target)
        if np.count_nonzero(np.isinf(array)):  # count_nonzero: half the cost of .any() on a small array
            return None
    else:
        array = raw.astype(target)
    if kind == "f" and not settings.allow_missing and np.count_nonzero(np.isnan(array)):
        return None
    return {spec.name: array}, shape[0]


def _decode_general(
    payload: Any, specs: Sequence[TensorSpec], settings: RuntimeSettings, columns: Sequence[str] | None = None
) -> tuple[dict[str, np.ndarray], int]:
    """decode_inputs for every request: each check in turn, each refusal worded with where it is."""
    if not isinstance(payload, Mapping) or ("inputs" not in payload and specs):
        raise InputError('the body must be a JSON object with an "inputs" field')
    inputs = payload.get("inputs", {})
    names = ", ".join(s.name for s in specs)
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], Mapping) and specs:
        if len(specs) == 1 and columns and tuple(specs[0].shape[1:]) == (len(columns),):
            named = {specs[0].name: _records_to_rows(inputs, columns, settings)}
        else:
            named = _records_to_columns(inputs, specs, settings)
    elif isinstance(inputs, Mapping):
        named = dict(inputs)
        unknown = sorted(set(named) - {s.name for s in specs})
        if unknown:
            raise InputError(f"unknown input {unknown[0]!r}; this model takes: {names or 'no inputs'}")
    elif len(specs) == 1:  # one input: the tensor itself (rows, a whole tensor or a scalar)
        named = {specs[0].name: inputs}
    elif not specs:
        raise InputError('this model takes no inputs: send {"inputs": {}}')
    elif isinstance(inputs, list):
        raise InputError(f"this model takes {len(specs)} named inputs ({names}); "
                         'send {"inputs": {"<name>": [...], ...}}')
    else:
        raise InputError('"inputs" must be a list of rows or an object of named inputs')

    feeds: dict[str, np.ndarray] = {}
    rows: int | None = None
    first_batched = ""
    for spec in specs:
        if spec.name not in named:
            raise InputError(f"missing input {spec.name!r}; this model takes: {names}")
        array = _to_array(named[spec.name], spec, settings)
        if spec.batched:
            if rows is None:
                rows, first_batched = array.shape[0], spec.name
            elif array.shape[0] != rows:
                raise InputError(
                    f"input {spec.name!r} has {array.shape[0]} rows but {first_batched!r} has {rows}: every "
                    f"batched input ({', '.join(s.name for s in specs if s.batched)}) needs the same number of rows")
        feeds[spec.name] = array
    if rows is None:  # whole tensors only: one model run
        return feeds, 1
    if rows > settings.max_batch_rows:
        raise PayloadTooLarge(
            f"{rows} rows in one request; this Bento accepts at most {settings.max_batch_rows} "
            "(runtime.max_batch_rows in bento.yaml): split the request"
        )
    if rows == 0:
        raise InputError("inputs are empty: send at least one row")
    return feeds, rows


def _records_to_rows(records: list, columns: Sequence[str], settings: RuntimeSettings) -> list[list]:
    """Rows sent as objects keyed by a one-input model's feature names, as rows in the fitted column order."""
    _bound_records(records, settings)
    wanted = set(columns)
    rows = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise InputError(f"inputs[{index}] is {_json_type(record)}, but inputs[0] is an object: send every "
                             "row as an object of feature names")
        if record.keys() != wanted:
            _refuse_keys(record, index, columns)
        rows.append([record[name] for name in columns])
    return rows


def _refuse_keys(record: Mapping, index: int, names: Sequence[str]) -> None:
    unknown = sorted(set(record) - set(names), key=str)
    if unknown:
        listed = ", ".join(names) if len(names) <= 12 else ", ".join(names[:12]) + f", ... ({len(names)} in all)"
        raise InputError(f"inputs[{index}] has unknown input {unknown[0]!r}; this model takes: {listed}")
    missing = next(name for name in names if name not in record)
    raise InputError(f"inputs[{index}] has no {missing!r}; every row needs all {len(names)} of the model's inputs")


def _bound_records(records: list, settings: RuntimeSettings) -> None:
    if len(records) > settings.max_batch_rows:
        raise PayloadTooLarge(f"{len(records)} rows in one request; this Bento accepts at most "
                              f"{settings.max_batch_rows} (runtime.max_batch_rows in bento.yaml): split the request")


def _records_to_columns(records: list, specs: Sequence[TensorSpec], settings: RuntimeSettings) -> dict[str, list]:
    """Rows sent as objects, one per row (`df.to_dict("records")`: `[{"plan": "pro", "tenure": 12}, ...]`),
    as the columns the model takes. A one-column input takes a bare value per row; a wider one its row."""
    _bound_records(records, settings)
    whole = [s.name for s in specs if not s.batched]
    if whole:
        raise InputError(f"input {whole[0]!r} is a whole tensor, not a column of rows: send "
                         '{"inputs": {"<name>": ..., ...}} instead of a list of row objects')
    wanted = {s.name for s in specs}
    columns: dict[str, list] = {s.name: [] for s in specs}
    one_value = {s.name for s in specs if tuple(s.shape[1:]) == (1,)}
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise InputError(f"inputs[{index}] is {_json_type(record)}, but inputs[0] is an object: send every "
                             "row as an object of named inputs")
        if record.keys() != wanted:
            _refuse_keys(record, index, [s.name for s in specs])
        for name, column in columns.items():
            value = record[name]
            column.append([value] if name in one_value and not isinstance(value, list) else value)
    return columns


def _to_array(value: Any, spec: TensorSpec, settings: RuntimeSettings) -> np.ndarray:
    where = f"inputs.{spec.name}" if spec.name else "inputs"
    if not spec.shape:
        if isinstance(value, list | dict):
            raise InputError(f"{where} is a scalar: send one {_wanted(spec.dtype)}, e.g. {_scalar_example(spec)}, "
                             "not a list")
    elif not isinstance(value, list):
        form = "a list of rows" if spec.batched else f"a nested list shaped {_shape_text(spec.shape)}"
        raise InputError(f"{where} must be {form}, got {_json_type(value)}")
    if spec.batched and tuple(spec.shape[1:]) == (1,) and value and not any(isinstance(v, list) for v in value):
        value = [[v] for v in value]  # a one-column input sent as a flat column: one value per row
    try:
        raw = np.asarray(value)
    except ValueError:
        raise InputError(_describe_ragged(value, where, len(spec.shape))) from None
    target = np.dtype(spec.dtype) if spec.dtype != "string" else np.dtype(object)
    kind = raw.dtype.kind
    if raw.size == 0 and raw.ndim:  # [] carries no type (it takes the declared one) nor its inner axes
        array = np.zeros(_empty_shape(raw.shape, spec.shape), dtype=target)
    elif target.kind in _FLOAT_KINDS:
        with np.errstate(over="ignore"):  # a number past the dtype's range is refused just below, not warned
            if kind in "fiu":
                array = raw.astype(target, copy=False)
            elif kind == "O":  # nulls (missing values), or a ragged / mixed list
                array = _floats_with_nulls(value, raw, target, where, len(spec.shape))
            else:
                raise InputError(_first_bad_element(value, where, "a number", _is_number_or_null))
        if array.dtype.itemsize < 8 and np.isinf(array).any():  # JSON has no infinity: this is an overflow
            index = tuple(int(i) for i in np.argwhere(np.isinf(array))[0])
            raise InputError(f"{where}{_index_text(index)} is outside the range of {spec.dtype} (at most "
                             f"{float(np.finfo(array.dtype).max):.4g} in magnitude): send a smaller number")
        if not settings.allow_missing and np.isnan(array).any():
            index = tuple(int(i) for i in np.argwhere(np.isnan(array))[0])
            raise InputError(
                f"{where}{_index_text(index)} is null or NaN, and this model does not accept missing "
                "values (the original model refuses NaN, or runtime.allow_missing is false): send a number"
            )
    elif target.kind in _INT_KINDS:
        # Python ints past int64 (uint64's top half) make numpy choose float64 or object: walk those.
        if kind not in _INT_KINDS and not (kind in "fO" and all(_is_int(x) for x in _leaves_of(value))):
            raise InputError(_first_bad_element(value, where, "an integer", _is_int))
        array = _integers(value, raw, target, where)
    elif target.kind == "b":
        if kind != "b":
            raise InputError(_first_bad_element(value, where, "true or false", _is_bool))
        array = raw
    else:  # strings
        if kind != "U":
            raise InputError(_first_bad_element(value, where, "a string", _is_str))
        array = raw.astype(object)
    _check_shape(array, spec, where)
    return array


def _empty_shape(got: tuple[int, ...], declared: Sequence[int | None]) -> tuple[int, ...]:
    """JSON writes an empty (2, 0, 4) tensor as [[], []]: the axes after the empty one come from the
    declared shape when it fixes them all."""
    rest = declared[len(got):]
    if got and got[-1] == 0 and len(got) < len(declared) and all(d is not None for d in rest):
        return (*got, *(int(d) for d in rest if d is not None))
    return got


def _integers(value: Any, raw: np.ndarray, target: np.dtype, where: str) -> np.ndarray:
    """Integers in the declared type's range, or an error naming the first one outside it."""
    info = np.iinfo(target)
    if raw.dtype.kind in _INT_KINDS and raw.size and (raw.min() >= info.min and raw.max() <= info.max):
        return raw.astype(target, copy=False)
    for index, item in _indexed_leaves(value, ()):
        if not info.min <= item <= info.max:
            return_text = f"{where}{_index_text(index)} is {item}, outside {target.name}'s range {info.min}..{info.max}"
            raise InputError(return_text + ": send a value the model's input type holds")
    try:
        return np.asarray(value, dtype=target)
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{where} is ragged or mixes lists and integers: send a rectangular nested list") from None


def _indexed_leaves(value: Any, index: tuple[int, ...]):
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _indexed_leaves(item, (*index, i))
    else:
        yield index, value


def _leaves_of(value: Any):
    return _leaves(value) if isinstance(value, list) else iter([value])


def _wanted(dtype: str) -> str:
    kind = "U" if dtype == "string" else np.dtype(dtype).kind
    return {"f": "number", "i": "integer", "u": "integer", "b": "boolean", "U": "string"}.get(kind, "value")


def _scalar_example(spec: TensorSpec) -> str:
    return {"number": "0.5", "integer": "16000", "boolean": "true", "string": '"text"'}[_wanted(spec.dtype)]


def _shape_text(shape: Sequence[int | None]) -> str:
    return " x ".join("N" if d is None else str(d) for d in shape) if shape else "() (a scalar)"


def _floats_with_nulls(
    value: list, raw: np.ndarray, target: np.dtype, where: str, ndim: int
) -> np.ndarray:
    if raw.ndim != ndim:  # numpy made an object array of lists: the rows are ragged
        raise InputError(_describe_ragged(value, where, ndim))
    if not all(_is_number_or_null(x) for x in _leaves_of(value)):
        raise InputError(_first_bad_element(value, where, "a number or null", _is_number_or_null))
    try:
        return np.asarray(value, dtype=target)
    except (TypeError, ValueError):
        raise InputError(f"{where} holds values that are not numbers: send numbers or null") from None


def _check_shape(array: np.ndarray, spec: TensorSpec, where: str) -> None:
    if array.ndim != len(spec.shape):
        expected = _shape_text(spec.shape)
        if not spec.batched:
            raise InputError(f"{where} has {array.ndim} dimension(s) but the model takes it whole with shape "
                             f"{expected}: send a nested list of exactly that shape" if spec.shape else
                             f"{where} must be a scalar (a single value), not a list")
        raise InputError(
            f"{where} has {array.ndim} dimension(s) but the model expects {len(spec.shape)} ({expected}); "
            + ("send a list of rows, e.g. [[...], [...]]" if len(spec.shape) == 2 else "check the nesting")
        )
    for axis, (got, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
        if want is not None and got != want:
            if axis == 1 and len(spec.shape) == 2 and spec.batched:
                raise InputError(f"{where}: each row must have {want} features, got {got}")
            if not spec.batched:
                raise InputError(f"{where} must have shape {_shape_text(spec.shape)} (a whole tensor, not rows), "
                                 f"got {_shape_text(array.shape)}")
            raise InputError(f"{where}: axis {axis} must have size {want}, got {got}")


def _describe_ragged(value: list, where: str, ndim: int) -> str:
    """Find the first row whose length differs from the first row's."""
    if value and isinstance(value[0], list):
        width = len(value[0])
        for i, row in enumerate(value):
            if not isinstance(row, list):
                return f"{where}[{i}] is not a list, but {where}[0] is: every row must be a list"
            if len(row) != width:
                return (f"{where}[{i}] has {len(row)} values but {where}[0] has {width}: "
                        "rows must all be the same length")
    return f"{where} is ragged or mixes lists and scalars: send a rectangular nested list"


def _first_bad_element(value: Any, where: str, wanted: str, ok: Callable[[Any], bool]) -> str:
    """Walk the nested lists in order and describe the first element `ok` refuses."""
    stack: list[tuple[Any, tuple[int, ...]]] = [(value, ())]
    while stack:
        item, index = stack.pop()
        if isinstance(item, list):
            stack.extend((child, (*index, i)) for i, child in reversed(list(enumerate(item))))
        elif not ok(item):
            return f"{where}{_index_text(index)} is {_json_type(item)}, expected {wanted}"
    return f"{where} does not hold {wanted} values of one type"


def _leaves(value: list) -> Iterator[Any]:
    """Every non-list element of a nested list, in order."""
    for item in value:
        if isinstance(item, list):
            yield from _leaves(item)
        else:
            yield item


def _index_text(index: tuple[int, ...]) -> str:
    return "".join(f"[{i}]" for i in index)


def _json_type(item: Any) -> str:
    if item is None:
        return "null"
    if isinstance(item, bool):
        return f"the boolean {str(item).lower()}"
    if isinstance(item, str):
        return f"the string {item[:40]!r}"
    if isinstance(item, dict):
        return "an object"
    if isinstance(item, list):
        return "a list"
    return f"{item!r}"


def _is_number_or_null(item: Any) -> bool:
    return item is None or (isinstance(item, int | float) and not isinstance(item, bool))


def _is_int(item: Any) -> bool:
    return isinstance(item, int) and not isinstance(item, bool)


def _is_bool(item: Any) -> bool:
    return isinstance(item, bool)


def _is_str(item: Any) -> bool:
    return isinstance(item, str)


def encode_outputs(outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Model outputs as JSON-ready nested lists (NaN becomes null when serialized)."""
    return {name: value.tolist() for name, value in outputs.items()}


def split_rows(outputs: Mapping[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    """The rows [start, stop) of every output: how a batch is split back to its requests."""
    return {name: value[start:stop] for name, value in outputs.items()}


def stack_key(feeds: Mapping[str, np.ndarray], whole: frozenset[str]) -> tuple:
    """Requests with equal keys may share one run: the batched inputs' trailing axes agree and every
    whole-tensor input is the same tensor (a request that differs in one runs apart, never stacked)."""
    return tuple((name, value.shape, value.dtype.str, _content(value)) if name in whole else value.shape[1:]
                 for name, value in feeds.items())


def _content(value: np.ndarray) -> object:
    # An object (string) array's bytes are pointers, not its text.
    return tuple(value.ravel().tolist()) if value.dtype.kind == "O" else value.tobytes()


def stack_feeds(parts: Sequence[Mapping[str, np.ndarray]], whole: frozenset[str]) -> dict[str, np.ndarray]:
    """One run's feeds from requests of one `stack_key`: batched inputs concatenated along the batch axis,
    whole-tensor inputs taken once."""
    first = parts[0]
    return {name: value if name in whole else np.concatenate([p[name] for p in parts])
            for name, value in first.items()}
