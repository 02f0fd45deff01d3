"""Turning JSON inputs into checked numpy arrays, and model outputs back into JSON.

The fast path is one `np.asarray` per input; only when it fails or the checks
do not pass does the slow path walk the nested lists to say exactly where the
request is wrong ("inputs[3][5] is a string").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bento_compile.runtimes.errors import InputError, PayloadTooLarge
from bento_compile.runtimes.manifest import RuntimeSettings, TensorSpec

_FLOAT_KINDS = "f"
_INT_KINDS = "iu"


def decode_inputs(
    payload: Any, specs: Sequence[TensorSpec], settings: RuntimeSettings
) -> tuple[dict[str, np.ndarray], int]:
    """Validate a request's `inputs` against the model signature.

    Returns the feeds for the model and the number of rows (the batch size).
    Raises InputError naming the input and position of the first problem.
    """
    if not isinstance(payload, Mapping) or "inputs" not in payload:
        raise InputError('the body must be a JSON object with an "inputs" field')
    inputs = payload["inputs"]
    if isinstance(inputs, Mapping):
        named = dict(inputs)
        unknown = sorted(set(named) - {s.name for s in specs})
        if unknown:
            raise InputError(
                f"unknown input {unknown[0]!r}; this model takes: {', '.join(s.name for s in specs)}"
            )
    elif isinstance(inputs, list):
        if len(specs) != 1:
            raise InputError(
                f"this model takes {len(specs)} named inputs ({', '.join(s.name for s in specs)}); "
                'send {"inputs": {"<name>": [...], ...}}'
            )
        named = {specs[0].name: inputs}
    else:
        raise InputError('"inputs" must be a list of rows or an object of named inputs')

    feeds: dict[str, np.ndarray] = {}
    rows: int | None = None
    for spec in specs:
        if spec.name not in named:
            raise InputError(f"missing input {spec.name!r}; this model takes: {', '.join(s.name for s in specs)}")
        array = _to_array(named[spec.name], spec, settings)
        if rows is None:
            rows = array.shape[0] if array.ndim else 1
        elif array.ndim and array.shape[0] != rows:
            raise InputError(
                f"input {spec.name!r} has {array.shape[0]} rows but the others have {rows}: "
                "every input needs the same number of rows"
            )
        feeds[spec.name] = array
    assert rows is not None
    if rows > settings.max_batch_rows:
        raise PayloadTooLarge(
            f"{rows} rows in one request; this Bento accepts at most {settings.max_batch_rows} "
            "(runtime.max_batch_rows in bento.yaml): split the request"
        )
    if rows == 0:
        raise InputError("inputs are empty: send at least one row")
    return feeds, rows


def _to_array(value: Any, spec: TensorSpec, settings: RuntimeSettings) -> np.ndarray:
    where = f"inputs.{spec.name}" if spec.name else "inputs"
    if not isinstance(value, list):
        raise InputError(f"{where} must be a list (of rows), got {type(value).__name__}")
    try:
        raw = np.asarray(value)
    except ValueError:
        raise InputError(_describe_ragged(value, where, len(spec.shape))) from None
    target = np.dtype(spec.dtype) if spec.dtype != "string" else np.dtype(object)
    kind = raw.dtype.kind
    if target.kind in _FLOAT_KINDS:
        if kind in "fiu":
            array = raw.astype(target, copy=False)
        elif kind == "O":  # nulls (missing values), or a ragged / mixed list
            array = _floats_with_nulls(value, raw, target, where, len(spec.shape))
        else:
            raise InputError(_first_bad_element(value, where, "a number", _is_number_or_null))
        if not settings.allow_missing and np.isnan(array).any():
            index = tuple(int(i) for i in np.argwhere(np.isnan(array))[0])
            raise InputError(
                f"{where}{_index_text(index)} is null or NaN, and this model does not accept missing "
                "values (runtime.allow_missing: false in bento.yaml): send a number"
            )
    elif target.kind in _INT_KINDS:
        if kind not in _INT_KINDS:
            raise InputError(_first_bad_element(value, where, "an integer", _is_int))
        array = raw.astype(target, copy=False)
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


def _floats_with_nulls(
    value: list, raw: np.ndarray, target: np.dtype, where: str, ndim: int
) -> np.ndarray:
    if raw.ndim != ndim:  # numpy made an object array of lists: the rows are ragged
        raise InputError(_describe_ragged(value, where, ndim))
    if not all(_is_number_or_null(x) for x in _leaves(value)):
        raise InputError(_first_bad_element(value, where, "a number or null", _is_number_or_null))
    try:
        return np.asarray(value, dtype=target)
    except (TypeError, ValueError):
        raise InputError(f"{where} holds values that are not numbers: send numbers or null") from None


def _check_shape(array: np.ndarray, spec: TensorSpec, where: str) -> None:
    if array.ndim != len(spec.shape):
        expected = " x ".join("N" if d is None else str(d) for d in spec.shape)
        raise InputError(
            f"{where} has {array.ndim} dimension(s) but the model expects {len(spec.shape)} ({expected}); "
            + ("send a list of rows, e.g. [[...], [...]]" if len(spec.shape) == 2 else "check the nesting")
        )
    for axis, (got, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
        if want is not None and got != want:
            if axis == 1 and len(spec.shape) == 2:
                raise InputError(f"{where}: each row must have {want} features, got {got}")
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


def _leaves(value: Any):
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
