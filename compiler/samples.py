"""Samples: read from .npy / .csv / .npz / .json for the parity check (synthesis: compiler/synthetic.py).

The sample is both the evidence of parity and the API's documented example,
so a real one beats a synthetic one; without it we say so in the report.

Formats: `.npy` (one array: the single input, or one column per input), `.csv` (rows of numbers, or
a table whose header names each one-column input), `.npz` (one array per input name, scalars
included) and `.json` (a request body `{"inputs": {...}}`, read by the runtime's own request parser
so the sample means exactly what a request would). A sample is one model run; its first rows
(whole-tensor inputs as they are) become the API example.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import TensorSpec

EXAMPLE_ROWS = 2
EXAMPLE_MAX_VALUES = 4096  # past this an example is not embedded (the manifest and /docs show the signature)
MAX_JSON_SAMPLE_BYTES = 256 * 1024 * 1024


def load_sample(path: Path, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """Read sample rows into feeds keyed by input name."""
    path = Path(path)
    if not path.is_file():
        raise BentoCompileError(f"The sample file {path} does not exist.",
                                "Pass an existing .npy, .csv, .npz or .json file.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise BentoCompileError(f"{path} holds Python objects or is not a .npy array ({exc}).",
                                    "Save a numeric array with np.save(path, X.astype('float32')).") from None
        if len(specs) == 1 and not specs[0].batched:
            return {specs[0].name: _whole(array, specs[0], path)}
        return _split_columns(array, specs, path)
    if suffix == ".csv":
        named = _read_named_csv(path, specs)
        return named if named is not None else _split_columns(_read_csv(path), specs, path)
    if suffix == ".npz":
        return _read_npz(path, specs)
    if suffix == ".json":
        return _read_json(path, specs)
    raise BentoCompileError(f"Unsupported sample format '{suffix}' ({path}).",
                            "Use a .npy array, a .csv file, an .npz with one array per input, or a .json "
                            'request body {"inputs": {...}}.')


def _read_npz(path: Path, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    names = ", ".join(s.name for s in specs) or "none"
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError) as exc:
        raise BentoCompileError(f"{path} is not a readable .npz of plain arrays ({exc}).",
                                "Save it with np.savez(path, **{input_name: array, ...}).") from None
    unknown = sorted(set(arrays) - {s.name for s in specs})
    if unknown:
        raise BentoCompileError(f"The sample {path} holds '{unknown[0]}', which is not an input of the model.",
                                f"Name each array after an input; the model takes: {names}.")
    feeds = {}
    for spec in specs:
        if spec.name not in arrays:
            raise BentoCompileError(f"The sample {path} has no array for input '{spec.name}'.",
                                    f"Give one array per input: {names} (np.savez(path, {spec.name}=...)).")
        array = arrays[spec.name]
        feeds[spec.name] = _batched(array, spec, path) if spec.batched else _whole(array, spec, path)
    _check_rows(feeds, specs, path)
    return feeds


def _read_json(path: Path, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    import json

    from bento_compile.runtimes.errors import InputError, PayloadTooLarge
    from bento_compile.runtimes.manifest import RuntimeSettings
    from bento_compile.runtimes.tensors import decode_inputs

    if path.stat().st_size > MAX_JSON_SAMPLE_BYTES:
        raise BentoCompileError(f"The sample {path} is over {MAX_JSON_SAMPLE_BYTES >> 20} MiB.",
                                "Use an .npz file for large samples.")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BentoCompileError(f"The sample {path} is not valid JSON ({exc}).",
                                'Write a request body: {"inputs": {"<input>": [...], ...}}.') from None
    settings = RuntimeSettings(allow_missing=True, max_batch_rows=1 << 31)
    try:
        feeds, _rows = decode_inputs(payload, specs, settings)
    except (InputError, PayloadTooLarge) as exc:
        raise BentoCompileError(f"The sample {path} is not a request this model takes: {exc}.",
                                'Write it as a /predict body: {"inputs": {"<input>": [...], ...}}.') from None
    return feeds


def _batched(array: np.ndarray, spec: TensorSpec, path: Path) -> np.ndarray:
    if array.ndim == 0:
        raise BentoCompileError(f"The sample {path} gives input '{spec.name}' as a scalar, but it takes rows "
                                f"shaped {_shape_text(spec.shape)}.", "Save an array of rows for it.")
    _check_width(array, spec, path)
    return _cast(array, spec, path)


def _whole(array: np.ndarray, spec: TensorSpec, path: Path) -> np.ndarray:
    """A whole-tensor input: every fixed axis must match (a scalar input takes a 0-d array)."""
    fits = array.ndim == len(spec.shape) and all(
        want is None or got == want for got, want in zip(array.shape, spec.shape, strict=False))
    if not fits:
        raise BentoCompileError(
            f"The sample {path} gives input '{spec.name}' shape {_shape_text(array.shape)}, but the model takes it "
            f"whole with shape {_shape_text(spec.shape)}.",
            f"Save '{spec.name}' with exactly that shape (a scalar as np.array(value)).")
    return _cast(array, spec, path)


def _cast(array: np.ndarray, spec: TensorSpec, path: Path) -> np.ndarray:
    if spec.dtype == "string":
        if array.dtype.kind not in "US":
            raise BentoCompileError(f"The sample {path} gives string input '{spec.name}' as {array.dtype}.",
                                    "Save it as a string array.")
        return array.astype(str).astype(object)
    if array.dtype.kind in "USO":
        raise BentoCompileError(f"The sample {path} gives input '{spec.name}' ({spec.dtype}) as strings.",
                                f"Save it as a {spec.dtype} array.")
    return array.astype(spec.dtype)


def _check_rows(feeds: dict[str, np.ndarray], specs: list[TensorSpec], path: Path) -> None:
    rows = {s.name: len(feeds[s.name]) for s in specs if s.batched}
    if len(set(rows.values())) > 1:
        detail = ", ".join(f"{name}: {n}" for name, n in rows.items())
        raise BentoCompileError(f"The sample {path} has different row counts for the batched inputs ({detail}).",
                                "Give every batched input the same number of rows.")


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")" if shape else "() (a scalar)"


def _read_named_csv(path: Path, specs: list[TensorSpec]) -> dict[str, np.ndarray] | None:
    """A table with a header naming every input (one column each, any order, extra columns ignored), as
    `df.to_csv(index=False)` writes it for a model that takes named columns. None for any other CSV."""
    if len(specs) < 2 or not all(s.batched and tuple(s.shape[1:]) == (1,) for s in specs):
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if not rows or not {s.name for s in specs} <= set(rows[0]):
        return None
    header = rows[0]
    if len(rows) < 2:
        raise BentoCompileError(f"The sample {path} has a header but no rows.", "Save at least one row.")
    feeds = {}
    for spec in specs:
        at = header.index(spec.name)
        cells = [row[at] if at < len(row) else "" for row in rows[1:]]
        feeds[spec.name] = _csv_column(cells, spec, path).reshape(-1, 1)
    return feeds


def _csv_column(cells: list[str], spec: TensorSpec, path: Path) -> np.ndarray:
    if spec.dtype == "string":
        return np.array(cells, dtype=object)
    for line, cell in enumerate(cells, start=2):
        text = cell.strip()
        if text in ("", "nan", "NaN"):
            if np.dtype(spec.dtype).kind != "f":
                raise BentoCompileError(f"{path} line {line}: column '{spec.name}' ({spec.dtype}) is empty.",
                                        f"Give every row a value for {spec.name}.")
            continue
        try:
            float(text) if np.dtype(spec.dtype).kind == "f" else int(text)
        except ValueError:
            raise BentoCompileError(
                f"{path} line {line}: column '{spec.name}' holds {cell!r}, which is not {_a_value_of(spec.dtype)}.",
                f"Use the values the model was trained on, or declare '{spec.name}' under `inputs:` with its "
                "dtype.") from None
    if np.dtype(spec.dtype).kind == "f":
        return np.array([float(c) if c.strip() not in ("", "nan", "NaN") else np.nan for c in cells],
                        dtype=spec.dtype)
    return np.array([int(c) for c in cells], dtype=spec.dtype)


def _a_value_of(dtype: str) -> str:
    return "a number" if np.dtype(dtype).kind == "f" else f"an integer ({dtype})"


def _read_csv(path: Path) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if not rows:
        raise BentoCompileError(f"{path} is empty.", "Put at least one row of features in it.")
    if not _is_numeric_row(rows[0]):
        rows = rows[1:]  # a header line
    try:
        return np.array([[float(v) if v.strip() not in ("", "nan", "NaN") else np.nan for v in r] for r in rows],
                        dtype=np.float64)
    except ValueError as exc:
        raise BentoCompileError(f"{path} holds a value that is not a number ({exc}).",
                                "Use numeric columns only, or a .npy file; for a model that takes named columns, "
                                "a header line that names every input.") from None


def _is_numeric_row(row: list[str]) -> bool:
    try:
        [float(v) for v in row if v.strip() not in ("", "nan", "NaN")]
    except ValueError:
        return False
    return True


def _split_columns(array: np.ndarray, specs: list[TensorSpec], path: Path) -> dict[str, np.ndarray]:
    if array.ndim == 0:
        raise BentoCompileError(f"The sample {path} is a single number, but the model takes rows.",
                                "Save an array of rows, or an .npz with one array per input.")
    if array.ndim == 1:
        array = array.reshape(1, -1) if len(specs) == 1 and len(specs[0].shape) == 2 else array
    if len(array) == 0:
        raise BentoCompileError(f"The sample {path} has no rows.", "Save at least one row.")
    if len(specs) == 1:
        spec = specs[0]
        _check_width(array, spec, path)
        return {spec.name: array.astype(_numpy_dtype(spec.dtype))}
    # Several inputs, each one column (the ColumnTransformer-on-named-columns case).
    if array.ndim != 2 or array.shape[1] != len(specs) or not all(s.batched for s in specs):
        raise BentoCompileError(
            f"The sample {path} has shape {array.shape}, but the model has {len(specs)} inputs "
            f"({', '.join(s.name for s in specs)}).",
            "Save an .npz with one array per input (np.savez(path, name=array, ...)), or for one-column inputs "
            "one column per input, in the order of `inputs:` in bento.yaml.")
    return {s.name: array[:, i : i + 1].astype(_numpy_dtype(s.dtype)) for i, s in enumerate(specs)}


def _check_width(array: np.ndarray, spec: TensorSpec, path: Path) -> None:
    if array.ndim != len(spec.shape):
        raise BentoCompileError(f"The sample {path} has {array.ndim} dimensions; the model input "
                                f"'{spec.name}' has {len(spec.shape)}.", "Save rows shaped like the model input.")
    for got, want in zip(array.shape[1:], spec.shape[1:], strict=True):
        if want is not None and got != want:
            raise BentoCompileError(
                f"The sample {path} has rows of {array.shape[1:]} but the model expects {tuple(spec.shape[1:])}.",
                "Use sample rows from the data the model was trained on.")


def sample_rows(feeds: dict[str, np.ndarray], inputs: list[TensorSpec]) -> int:
    """The sample's rows: the batched inputs' first axis; 1 (one run) when every input is a whole tensor."""
    first = next((feeds[s.name] for s in inputs if s.batched and np.ndim(feeds[s.name])), None)
    return len(first) if first is not None else 1


def example_values(feeds: dict[str, np.ndarray], inputs: list[TensorSpec]) -> int:
    """How many values one example request holds (a row of each batched input, whole tensors entire)."""
    batched = {s.name for s in inputs if s.batched}
    return sum(int(np.prod(v.shape[1:] if name in batched else v.shape)) for name, v in feeds.items())


def whole_names(inputs: list[TensorSpec]) -> frozenset[str]:
    return frozenset(s.name for s in inputs if not s.batched)


def require_row_inputs(inputs: list[TensorSpec], method: str) -> None:
    """Quantization calibrates on some sample rows and gates on the others: it needs every input in rows."""
    whole = [s.name for s in inputs if not s.batched]
    if whole:
        raise BentoCompileError(
            f"quantize.method '{method}' splits the sample's rows into calibration and held-out halves, but "
            f"input(s) {', '.join(whole)} are whole tensors, not rows.",
            "Build without quantization (quantize: none), or quantize the model with the tool that made it.")


def _numpy_dtype(dtype: str) -> np.dtype:
    return np.dtype(object) if dtype == "string" else np.dtype(dtype)


def api_example(feeds: dict[str, np.ndarray], inputs: list[TensorSpec]) -> dict | None:
    """The example request the manifest records, or None when one request would be too large to embed."""
    if example_values(feeds, inputs) > EXAMPLE_MAX_VALUES:
        return None
    return example_payload(feeds, whole=whole_names(inputs))


def example_payload(feeds: dict[str, np.ndarray], rows: int = EXAMPLE_ROWS,
                    whole: frozenset[str] = frozenset()) -> dict:
    """The API's documented request body: the sample's first rows of batched inputs, whole-tensor inputs
    as they are (NaN becomes null). One batched input: the plain rows form."""
    def part(name: str, array: np.ndarray) -> object:
        return _nan_to_none((array if name in whole else array[:rows]).tolist())

    if len(feeds) == 1 and not whole:
        name, array = next(iter(feeds.items()))
        return {"inputs": part(name, array)}
    return {"inputs": {name: part(name, array) for name, array in feeds.items()}}


def _nan_to_none(value: object) -> object:
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value
