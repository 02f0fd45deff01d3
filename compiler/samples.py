"""Sample rows: read from .npy / .csv for the parity check, or derived from the signature.

The sample is both the evidence of parity and the API's documented example,
so a real one beats a synthetic one; without it we say so in the report.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import TensorSpec

SYNTHETIC_ROWS = 64
EXAMPLE_ROWS = 2


def load_sample(path: Path, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """Read sample rows into feeds keyed by input name."""
    path = Path(path)
    if not path.is_file():
        raise BentoCompileError(f"The sample file {path} does not exist.", "Pass an existing .npy or .csv file.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise BentoCompileError(f"{path} holds Python objects or is not a .npy array ({exc}).",
                                    "Save a numeric array with np.save(path, X.astype('float32')).") from None
        return _split_columns(array, specs, path)
    if suffix == ".csv":
        return _split_columns(_read_csv(path), specs, path)
    raise BentoCompileError(f"Unsupported sample format '{suffix}' ({path}).", "Use a .npy array or a .csv file.")


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
                                "Use numeric columns only, or a .npy file.") from None


def _is_numeric_row(row: list[str]) -> bool:
    try:
        [float(v) for v in row if v.strip() not in ("", "nan", "NaN")]
    except ValueError:
        return False
    return True


def _split_columns(array: np.ndarray, specs: list[TensorSpec], path: Path) -> dict[str, np.ndarray]:
    if array.ndim == 1:
        array = array.reshape(1, -1) if len(specs) == 1 and len(specs[0].shape) == 2 else array
    if len(array) == 0:
        raise BentoCompileError(f"The sample {path} has no rows.", "Save at least one row.")
    if len(specs) == 1:
        spec = specs[0]
        _check_width(array, spec, path)
        return {spec.name: array.astype(_numpy_dtype(spec.dtype))}
    # Several inputs, each one column (the ColumnTransformer-on-named-columns case).
    if array.ndim != 2 or array.shape[1] != len(specs):
        raise BentoCompileError(
            f"The sample {path} has shape {array.shape}, but the model has {len(specs)} inputs.",
            "Give one column per input, in the order of `inputs:` in bento.yaml.")
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


def synthesize(specs: list[TensorSpec], rows: int = SYNTHETIC_ROWS, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal rows shaped by the signature (free non-batch axes get size 1)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = (rows, *[d or 1 for d in spec.shape[1:]])
        if spec.dtype == "string":
            feeds[spec.name] = np.array([["a"]] * rows, dtype=object).reshape(shape)
        elif spec.dtype in ("int64", "int32"):
            feeds[spec.name] = rng.integers(0, 3, size=shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


def _numpy_dtype(dtype: str) -> object:
    return object if dtype == "string" else np.dtype(dtype)


def example_payload(feeds: dict[str, np.ndarray], rows: int = EXAMPLE_ROWS) -> dict:
    """A few sample rows as the API's documented request body (NaN becomes null)."""
    if len(feeds) == 1:
        return {"inputs": _nan_to_none(next(iter(feeds.values()))[:rows].tolist())}
    return {"inputs": {name: _nan_to_none(array[:rows].tolist()) for name, array in feeds.items()}}


def _nan_to_none(value: object) -> object:
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value
