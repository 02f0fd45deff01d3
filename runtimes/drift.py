"""Drift arithmetic shared by the build (the baseline), the runtime (live windows) and `bento-compile monitor`.

A feature is one column of a row input (or a 1-D input); an output column is treated the same way.
Numbers are put in quantile bins of the baseline; strings and labels are counted by category (one last
bin for values the baseline never saw). Everything here works on whole arrays: one call per model run
whatever its number of rows, never a Python loop over rows. Import-light (numpy and stdlib only): it
ships inside every artifact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bento_compile.runtimes.manifest import FeatureBaseline, TensorSpec

BINS = 10  # quantile bins per numeric feature
EPSILON = 1e-4  # share given to an empty bin so that PSI stays finite
MAX_CATEGORIES = 64  # the most frequent ones are kept; the rest fall in the "unseen" bin
MAX_FEATURE_COLUMNS = 256  # wider inputs (images, embeddings) are not monitored column by column
_CATEGORICAL_KINDS = "iuUSOb"  # numpy dtype kinds counted by category: integer labels, strings, bools


def is_categorical_dtype(dtype: str) -> bool:
    try:
        return np.dtype(dtype).kind in _CATEGORICAL_KINDS
    except TypeError:
        return True  # "str" / "object" in manifests of string inputs


def feature_columns(specs: Sequence[TensorSpec], feature_names: Sequence[str] | None = None,
                    *, outputs: bool = False) -> list[tuple[str, str, int | None]]:
    """(feature name, tensor name, column) for every monitorable column: 1-D tensors and the columns of
    2-D row tensors up to MAX_FEATURE_COLUMNS. Input features take the model's learned column names when
    it has exactly one 2-D input whose width matches them."""
    found: list[tuple[str, str, int | None]] = []
    for spec in specs:
        if not (spec.batched or outputs) or not spec.shape:
            continue
        if len(spec.shape) == 1:
            found.append((spec.name, spec.name, None))
        elif len(spec.shape) == 2 and isinstance(spec.shape[1], int) and 0 < spec.shape[1] <= MAX_FEATURE_COLUMNS:
            width = spec.shape[1]
            names = list(feature_names) if (not outputs and feature_names and len(feature_names) == width
                                             and len(specs) == 1) else [f"{spec.name}[{j}]" for j in range(width)]
            found.extend((names[j], spec.name, j) for j in range(width))
    return found


def column_of(array: np.ndarray, column: int | None) -> np.ndarray:
    return array if column is None else array[:, column]


def missing_mask(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind == "O":
        return np.array([v is None for v in values.ravel()], dtype=bool).reshape(values.shape)
    return np.zeros(values.shape, dtype=bool)


def numeric_baseline(name: str, tensor: str, column: int | None, values: np.ndarray) -> FeatureBaseline:
    """Quantile bins of the finite values, the missing rate, and the finite range."""
    values = np.asarray(values, dtype=np.float64).ravel()
    missing = np.isnan(values)
    finite = values[np.isfinite(values)]
    rate = float(missing.mean()) if len(values) else 0.0
    if not len(finite):
        return FeatureBaseline(name=name, input=tensor, column=column, edges=[], counts=[0], missing_rate=rate,
                               note="all missing in the baseline: its PSI is not computed")
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, finite, side="left"), minlength=len(edges) + 1)
    low, high = float(finite.min()), float(finite.max())
    return FeatureBaseline(name=name, input=tensor, column=column, edges=[float(e) for e in edges],
                           counts=[int(c) for c in counts], missing_rate=rate, min=low, max=high,
                           note="constant in the baseline" if low == high else "")


def categorical_baseline(name: str, tensor: str, column: int | None, values: np.ndarray) -> FeatureBaseline:
    """The most frequent categories (as strings) and their counts, plus an empty "unseen" bin."""
    values = np.asarray(values).ravel()
    missing = missing_mask(values)
    present = values[~missing].astype(str)
    names, counts = np.unique(present, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:MAX_CATEGORIES]
    kept = [str(names[i]) for i in order]
    seen = [int(counts[i]) for i in order]
    return FeatureBaseline(name=name, input=tensor, column=column, kind="categorical", categories=kept,
                           counts=[*seen, int(counts.sum()) - sum(seen)],
                           missing_rate=float(missing.mean()) if len(values) else 0.0)


def compute_baseline(tensors: dict[str, np.ndarray], columns: list[tuple[str, str, int | None]],
                     categorical: frozenset[str]) -> list[FeatureBaseline]:
    """One FeatureBaseline per column; `categorical` names the tensors counted by category."""
    found = []
    for name, tensor, column in columns:
        if tensor not in tensors:
            continue
        values = column_of(np.asarray(tensors[tensor]), column)
        maker = categorical_baseline if tensor in categorical or values.dtype.kind in "USO" else numeric_baseline
        found.append(maker(name, tensor, column, values))
    return found


@dataclass
class Binned:
    """Live counts of several features in one tensor: `counts[f, b]`, missing and out-of-range per feature."""

    counts: np.ndarray
    missing: np.ndarray
    out_of_range: np.ndarray
    rows: int


class NumericBinner:
    """Bins the numeric columns of one tensor at once: (rows, features, edges) comparisons, one bincount.

    Features with fewer edges are padded with +inf (never exceeded), so every feature has the same bins."""

    def __init__(self, features: list[FeatureBaseline]):
        self.features = features
        self.columns = [f.column for f in features]
        self.indices = [0 if c is None else c for c in self.columns]
        self.width = max((len(f.edges) for f in features), default=0) + 1
        edges = np.full((len(features), self.width - 1), np.inf)
        for i, f in enumerate(features):
            edges[i, :len(f.edges)] = f.edges
        self.edges = edges
        self.low = np.array([np.inf if f.min is None else f.min for f in features])
        self.high = np.array([-np.inf if f.max is None else f.max for f in features])
        self.offsets = np.arange(len(features)) * self.width
        self._identity = list(range(len(features)))
        self._zeros = np.zeros(len(features), dtype=np.int64)
        # Edges rounded to float32 for float32 inputs: a value within float32 rounding of an edge may land one
        # bin over, negligible against a quantile bin's width.
        self.edges32 = edges.astype(np.float32)

    def bin(self, tensor: np.ndarray) -> Binned:
        x = np.asarray(tensor)
        if self.columns == [None]:
            x = x.reshape(-1, 1)
        elif not (x.ndim == 2 and x.shape[1] == len(self.indices) and self.indices == self._identity):
            x = x[:, self.indices]  # a copy only when some columns are not monitored
        if x.dtype.kind != "f":
            x = x.astype(np.float64)
        nan = np.isnan(x)
        # Edges are compared in the input's own precision: float32 rows against float32 edges is half the work.
        edges = self.edges32 if x.dtype == np.float32 else self.edges
        bins = np.count_nonzero(x[:, :, None] > edges[None, :, :], axis=2) + self.offsets
        any_missing = nan.any()
        if any_missing:
            bins[nan] = len(self.features) * self.width  # one spare slot for missing values, sliced off below
        counts = np.bincount(bins.ravel(), minlength=len(self.features) * self.width + 1)
        outside = (x < self.low) | (x > self.high)  # NaN compares False: no warning, never outside
        return Binned(counts[:-1].reshape(len(self.features), self.width),
                      nan.sum(axis=0) if any_missing else self._zeros, outside.sum(axis=0), len(x))


class CategoryBinner:
    """Counts one categorical column: np.unique on the run, then a lookup per DISTINCT value only."""

    def __init__(self, feature: FeatureBaseline):
        self.features = [feature]
        self.column = feature.column
        self.index = {c: i for i, c in enumerate(feature.categories)}
        self.width = len(feature.categories) + 1

        # Integer labels are looked up by value (searchsorted), without turning them into strings.
        numbers = [int(c) for c in feature.categories if _is_int(c)]
        self.numbers = np.array(sorted(numbers), dtype=np.int64) if len(numbers) == len(feature.categories) \
            else None
        if self.numbers is not None:
            self.number_slots = np.array([self.index[str(n)] for n in self.numbers], dtype=np.int64)

    def bin(self, tensor: np.ndarray) -> Binned:
        values = column_of(np.asarray(tensor), self.column).ravel()
        if self.numbers is not None and values.dtype.kind in "iu" and len(self.numbers):
            at = np.minimum(np.searchsorted(self.numbers, values), len(self.numbers) - 1)
            slots = np.where(self.numbers[at] == values, self.number_slots[at], self.width - 1)
            binned = np.bincount(slots, minlength=self.width)
            return Binned(binned.reshape(1, -1), np.zeros(1, dtype=np.int64), binned[-1:], len(values))
        missing = missing_mask(values)
        present = values[~missing]
        names, counts = np.unique(present.astype(str), return_counts=True)
        slots = np.array([self.index.get(str(n), self.width - 1) for n in names], dtype=np.int64)
        binned = np.bincount(slots, weights=counts, minlength=self.width).astype(np.int64)
        unseen = binned[-1:]
        return Binned(binned.reshape(1, -1), np.array([missing.sum()]), unseen, len(values))


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def binners_for(features: list[FeatureBaseline]) -> list[tuple[str, NumericBinner | CategoryBinner]]:
    """(tensor, binner) pairs: one NumericBinner per tensor for its numeric columns, one per category column."""
    numeric: dict[str, list[FeatureBaseline]] = {}
    found: list[tuple[str, NumericBinner | CategoryBinner]] = []
    for feature in features:
        if feature.kind == "categorical":
            found.append((feature.input, CategoryBinner(feature)))
        else:
            numeric.setdefault(feature.input, []).append(feature)
    found.extend((tensor, NumericBinner(group)) for tensor, group in numeric.items())
    return found


def shares(counts: np.ndarray) -> np.ndarray:
    """Row shares per bin, with EPSILON in empty bins (so log ratios stay finite); zeros stay zeros."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, counts / np.where(total > 0, total, 1), 0.0)
    share = np.maximum(share, EPSILON)
    return share / share.sum(axis=-1, keepdims=True)


def psi(expected: np.ndarray, actual: np.ndarray) -> float | None:
    """Population stability index of two count vectors over the same bins; None when either is empty."""
    expected, actual = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if expected.sum() <= 0 or actual.sum() <= 0:
        return None
    e, a = shares(expected), shares(actual)
    return float(np.sum((a - e) * np.log(a / e)))


def ks(expected: np.ndarray, actual: np.ndarray) -> float | None:
    """Kolmogorov-Smirnov statistic of two binned distributions (largest gap of their CDFs at the bin
    edges: the baseline is stored binned, so this is the binned KS); None when either is empty."""
    expected, actual = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if expected.sum() <= 0 or actual.sum() <= 0:
        return None
    return float(np.max(np.abs(np.cumsum(expected) / expected.sum() - np.cumsum(actual) / actual.sum())))


def padded(counts: Sequence[int], width: int) -> np.ndarray:
    out = np.zeros(width, dtype=np.float64)
    out[:len(counts)] = counts
    return out
