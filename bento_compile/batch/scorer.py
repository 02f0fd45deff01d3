"""Scoring one record batch with a verified Bento: the piece every engine (local, Spark, Ray) runs.

Output rows = input rows, always, in order: the `keep` columns, then the output columns (outputs.py: a
labelled Bento's `label`, `score`, `top_k`, then one column per raw model output).
With on_error="fail" the first bad row stops the run with its row and reason; with "skip" a bad row
gets null outputs and its reason in an `error` column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bento_compile.batch.bento import open_verified
from bento_compile.batch.columns import ColumnPlan, RowErrors, check_types, plan_columns, to_feeds
from bento_compile.batch.constants import check_constants, constant_feeds, without_constants
from bento_compile.batch.errors import BatchError
from bento_compile.batch.media_columns import image_feeds, image_inputs, without_image_inputs
from bento_compile.batch.outputs import ERROR_COLUMN, output_fields, plan_outputs
from bento_compile.runtimes.manifest import Manifest

ON_ERROR = ("fail", "skip")
ROW_FIX = "Fix the row, or pass --on-error skip to write bad rows with null outputs and an `error` column."


@dataclass(frozen=True)
class ScoreOptions:
    """What to read and what to write, the same for every engine (picklable: it travels to workers)."""

    features: tuple[str, ...] | None = None
    input_column: str | None = None
    keep: tuple[str, ...] = ()
    on_error: str = "fail"
    constants: tuple[tuple[str, Any], ...] = ()  # whole-tensor inputs: (name, JSON value), fed to every run

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise BatchError(f"on_error must be one of {', '.join(ON_ERROR)}, got {self.on_error!r}.",
                             "fail stops at the first bad row; skip writes it with null outputs and an error.")


def resolve_plan(manifest: Manifest, schema: pa.Schema, options: ScoreOptions) -> ColumnPlan:
    """The column plan for a table of this schema, with its types checked and the kept columns present."""
    check_constants(manifest, options.constants)
    planned = without_constants(without_image_inputs(manifest))  # images are decoded, whole inputs --set
    plan = plan_columns(planned, schema.names, options.features, options.input_column)
    check_types(plan, schema)
    missing = [c for c in options.keep if c not in schema.names]
    if missing:
        raise BatchError(f"--keep names {', '.join(map(repr, missing))}, which the table does not have.",
                         f"The table's columns: {', '.join(schema.names[:12])}.")
    clash = [c for c in options.keep if c in {*plan_outputs(manifest).names, ERROR_COLUMN}]
    if clash:
        raise BatchError(f"The kept column {clash[0]!r} has the name of an output column.",
                         "Rename it in the input, or do not keep it.")
    return plan


def output_schema(manifest: Manifest, schema: pa.Schema, options: ScoreOptions) -> pa.Schema:
    """The output table's schema: kept columns (their input types), outputs, and `error` in skip mode."""
    fields = [schema.field(c) for c in options.keep] + output_fields(manifest)
    if options.on_error == "skip":
        fields.append(pa.field(ERROR_COLUMN, pa.string()))
    return pa.schema(fields)


class Scorer:
    """One verified Bento, one session kept for the scorer's whole life, and score() per record batch."""

    def __init__(self, bento_dir: Path, options: ScoreOptions, intra_op_threads: int = 1):
        self.options = options
        self.bento = open_verified(Path(bento_dir), intra_op_threads)
        self.manifest = self.bento.manifest
        self._images = bool(image_inputs(self.manifest))  # image columns are decoded, not planned
        self._constants = constant_feeds(self.manifest, options.constants)
        self._plans: dict[tuple[str, ...], ColumnPlan] = {}
        self._outputs = plan_outputs(self.manifest)

    def _plan(self, schema: pa.Schema) -> ColumnPlan:
        key = tuple(f"{f.name}:{f.type}" for f in schema)
        if key not in self._plans:
            self._plans[key] = resolve_plan(self.manifest, schema, self.options)
        return self._plans[key]

    def score(self, batch: pa.RecordBatch | pa.Table, first_row: int | None = None) -> pa.RecordBatch:
        """The output rows for `batch`; `first_row` is the batch's row number in its file (for errors)."""
        if isinstance(batch, pa.Table):
            batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else pa.RecordBatch.from_pylist(
                [], schema=batch.schema)
        plan = self._plan(batch.schema)
        rows = batch.num_rows
        feeds, errors = to_feeds(batch, plan, self.manifest.runtime.allow_missing)
        if self._images:
            feeds.update(image_feeds(batch, self.manifest, errors))
        good = ~errors.bad
        outputs = self._run(feeds, good, errors) if good.any() else {}
        good = ~errors.bad
        if errors.bad.any() and self.options.on_error == "fail":
            first = int(np.flatnonzero(errors.bad)[0])
            raise BatchError(f"{self._where(batch, first, first_row)}: {errors.reasons[first]}.", ROW_FIX)
        columns = [batch.column(c) for c in self.options.keep] + self._outputs.columns(outputs, good)
        if self.options.on_error == "skip":
            columns.append(pa.array([errors.reasons.get(i) for i in range(rows)], type=pa.string()))
        return pa.RecordBatch.from_arrays(columns, schema=output_schema(self.manifest, batch.schema, self.options))

    def _run(self, feeds: dict[str, np.ndarray], good: np.ndarray, errors: RowErrors) -> dict[str, np.ndarray]:
        """The model on the good rows; a run that fails is retried row by row so only the guilty rows fail."""
        chosen = {name: value[good] for name, value in feeds.items()} if not good.all() else feeds
        if self.manifest.batchable:
            try:
                return self.bento.backend.run({**chosen, **self._constants})
            except Exception:
                pass
        results: dict[str, list[np.ndarray]] = {}
        indices = np.flatnonzero(good)
        kept = np.ones(len(indices), dtype=bool)
        for position, index in enumerate(indices):
            try:
                row = self.bento.backend.run({**{name: value[position:position + 1] for name, value in chosen.items()},
                                              **self._constants})
            except Exception as exc:
                kept[position] = False
                failed = np.zeros(len(good), dtype=bool)
                failed[index] = True
                errors.mark(failed, lambda _i, exc=exc: f"the model failed on this row: {_short(exc)}")
                continue
            for name, value in row.items():
                results.setdefault(name, []).append(value)
        return {name: np.concatenate(parts) for name, parts in results.items()}

    def _where(self, batch: pa.RecordBatch, index: int, first_row: int | None) -> str:
        where = f"Row {first_row + index}" if first_row is not None else "A row"
        if self.options.keep:
            kept = ", ".join(f"{c}={batch.column(c)[index].as_py()!r}" for c in self.options.keep[:3])
            where += f" ({kept})"
        return where


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return text[:300]


__all__: Sequence[str] = ("ON_ERROR", "ROW_FIX", "ScoreOptions", "Scorer", "output_schema", "resolve_plan")
