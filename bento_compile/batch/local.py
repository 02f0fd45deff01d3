"""The local engine: files streamed through one verified session here, or through worker processes.

In this process, record batches are read (one Parquet row group or CSV/JSON block at a time), scored
with every CPU as intra-op threads and written in input order. With worker processes (unit_pool.py)
each worker reads its own units (runs of row groups, or whole files: units.py), scores them and writes
a part that this process copies into the output in input order; at most two units per worker are in
flight, so memory depends on --batch-rows and the row-group size, never on the file's size, and
workers × threads never exceeds the CPUs. The default decides between the two from a measurement
of the first batches (worker_choice.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from bento_compile.batch.bento import resolve_bento, verify_bento
from bento_compile.batch.errors import BatchError
from bento_compile.batch.outputs import ERROR_COLUMN
from bento_compile.batch.scorer import ScoreOptions, Scorer, output_schema, resolve_plan
from bento_compile.batch.sinks import AtomicOutput, output_format
from bento_compile.batch.sources import InputSet, discover, parquet_rows, read_batches, read_schema
from bento_compile.batch.unit_pool import UnitPool
from bento_compile.batch.units import Unit, plan_units
from bento_compile.batch.worker_choice import choose_workers
from bento_compile.runtimes.threads import available_cpus

DEFAULT_BATCH_ROWS = 8192
MAX_BATCH_ROWS = 1 << 20
MAX_WORKERS = 256
Progress = Callable[[int, int], None]  # (rows done, rows with errors)


@dataclass
class Summary:
    """What a run did, printed at the end (and as JSON with --json)."""

    engine: str
    bento: str
    input: str
    output: str
    format: str
    rows: int = 0
    errors: int = 0
    seconds: float = 0.0
    files: int = 0
    workers: int = 1
    intra_op_threads: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(data.pop("extra"))
        data["rows_per_second"] = round(self.rows_per_second, 1)
        data["seconds"] = round(self.seconds, 3)
        return data


def plan_workers(workers: int | None, cpus: int | None = None) -> tuple[int, int]:
    """(worker processes, intra-op threads each): the CPUs by default, and workers × threads ≤ CPUs."""
    cpus = cpus or available_cpus()
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise BatchError(f"--workers must be between 1 and {MAX_WORKERS}, got {workers}.",
                         "Omit it to let the run decide (it measures whether worker processes pay).")
    count = workers or cpus
    return count, max(1, cpus // count)


def total_rows(uri: str) -> int | None:
    """The rows a local run will score, when the footers tell (Parquet); for the progress bar's ETA."""
    return parquet_rows(discover(uri))


def score_files(bento: str | Path, input: str, output: str, options: ScoreOptions | None = None, *,
                batch_rows: int = DEFAULT_BATCH_ROWS, workers: int | None = None, fmt: str | None = None,
                overwrite: bool = False, progress: Progress | None = None) -> Summary:
    """Score INPUT into OUTPUT on this machine (the `bento-compile batch` local engine, as a Python call).

    `workers=None` decides from a measurement (worker_choice.py): this process scores the first batches
    with every CPU's threads and fans out to worker processes only when that is estimated to pay.
    """
    options = options or ScoreOptions()
    if not 1 <= batch_rows <= MAX_BATCH_ROWS:
        raise BatchError(f"--batch-rows must be between 1 and {MAX_BATCH_ROWS}, got {batch_rows}.",
                         f"The default, {DEFAULT_BATCH_ROWS}, suits most models.")
    started = time.perf_counter()
    bento_dir = resolve_bento(bento)
    manifest = verify_bento(bento_dir)  # here too: a damaged Bento stops before any worker starts
    inputs = discover(input)
    fmt = output_format(output, fmt)
    cpus = available_cpus()
    count, threads = plan_workers(workers if workers is not None else 1, cpus)
    summary = Summary("local", manifest.tag, input, output, fmt, files=len(inputs.files), workers=count,
                      intra_op_threads=threads)
    summary.extra["workers_chosen"] = "measured" if workers is None else "--workers"
    # Every file's columns are checked before a row is scored: a bad last file must not cost a whole run.
    schemas = [read_schema(inputs, f) for f in inputs.files]
    plans = [resolve_plan(manifest, schema, options) for schema in schemas]
    units = plan_units(inputs, batch_rows)
    target = AtomicOutput(output, inputs.is_folder, fmt, overwrite)
    run = _Run(bento_dir, options, inputs, units, batch_rows, cpus, summary, progress)
    for index, (file, plan) in enumerate(zip(inputs.files, plans, strict=True)):
        # Only the columns the model and --keep use are read.
        run.reading[index] = (tuple(plan.scalar_numeric_columns()) if file.format == "csv" else (),
                              tuple(dict.fromkeys([*plan.columns, *options.keep])))
    try:
        if count > 1:
            run.start_pool(count, threads, 0)
        for index, (file, schema) in enumerate(zip(inputs.files, schemas, strict=True)):
            text_columns = run.reading[index][0]
            with target.open_part(file.relative if inputs.is_folder else None,
                                  output_schema(manifest, reading_schema(schema, text_columns), options)) as writer:
                for position, unit in enumerate(units):
                    if unit.file == index:
                        for result in run.unit_results(position, workers is None):
                            writer.write(result)
                            run.count(result)
        target.commit()
    except BaseException:
        target.abort()
        raise
    finally:
        run.close()
    summary.workers, summary.intra_op_threads = run.workers, run.threads
    summary.extra["workers_reason"] = run.reason
    summary.seconds = time.perf_counter() - started
    return summary


class _Run:
    """Which process scores which unit: this one (in order, as it writes) or the worker pool (ahead of it)."""

    def __init__(self, bento_dir: Path, options: ScoreOptions, inputs: InputSet, units: list[Unit],
                 batch_rows: int, cpus: int, summary: Summary, progress: Progress | None):
        self.bento_dir, self.options, self.inputs, self.units = bento_dir, options, inputs, units
        self.batch_rows, self.cpus, self.summary, self.progress = batch_rows, cpus, summary, progress
        self.workers, self.threads = 1, cpus
        self.reason = "in this process: set by --workers"
        self.reading: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._scorer: Scorer | None = None
        self._open_seconds = 0.0
        self._pool: UnitPool | None = None
        self._futures: dict[int, Future] = {}
        self._next = 0  # the next unit the pool is given
        self._decided = False

    def start_pool(self, workers: int, threads: int, first: int) -> None:
        self.workers, self.threads = workers, threads
        if self.reason.startswith("in this process"):
            self.reason = f"{workers} worker processes: set by --workers"
        self._pool = UnitPool(self.bento_dir, self.options, self.inputs, workers, threads, self.batch_rows)
        self._next = first

    def unit_results(self, position: int, measure: bool) -> Iterator[pa.RecordBatch]:
        """The scored batches of one unit, in order."""
        self._fill(position)
        future = self._futures.pop(position, None)
        if future is not None:
            assert self._pool is not None
            yield from self._pool.batches(future)
            self._fill(position + 1)
            return
        yield from self._in_process(position, measure and not self._decided)

    def _in_process(self, position: int, measure: bool) -> Iterator[pa.RecordBatch]:
        if self._scorer is None:
            opened = time.perf_counter()
            self._scorer = Scorer(self.bento_dir, self.options, self.cpus)
            self._open_seconds = time.perf_counter() - opened
        unit = self.units[position]
        if unit.row_groups == ():
            return
        text_columns, columns = self.reading[unit.file]
        first_row, batches, timing = unit.first_row, 0, (0.0, 0.0, 0)
        for batch in read_batches(self.inputs, self.inputs.files[unit.file], self.batch_rows, text_columns,
                                  columns=columns, row_groups=unit.row_groups):
            wall, cpu = time.perf_counter(), time.process_time()
            result = self._scorer.score(batch, first_row)
            timing = (time.perf_counter() - wall, time.process_time() - cpu, batch.num_rows)
            first_row += batch.num_rows
            batches += 1
            if measure and batches == 2 and unit.rows is not None:  # the second batch: past the first run's setup
                self._decide(position, timing, left_in_unit=unit.rows - (first_row - unit.first_row))
                measure = False
            yield result
        if measure and batches:  # a unit of one batch, or a CSV / JSON file: decided from what it took
            self._decide(position, timing, file_rows=None if unit.rows is not None else first_row - unit.first_row)

    def _decide(self, position: int, timing: tuple[float, float, int], left_in_unit: int = 0,
                file_rows: int | None = None) -> None:
        """Measured once, on the first unit: keep scoring here, or hand the units after this one to workers."""
        self._decided = True
        wall, cpu, rows = timing
        later = self.units[position + 1:]
        rows_left: int | None
        if file_rows is not None:  # CSV / JSON: this file's rows, scaled by the sizes of the files left
            size = max(self.inputs.files[self.units[position].file].size, 1)
            rows_left = int(file_rows * sum(self.inputs.files[u.file].size for u in later) / size)
        else:
            counted = [u.rows for u in later]
            rows_left = None if any(r is None for r in counted) else left_in_unit + sum(r or 0 for r in counted)
        choice = choose_workers(self.cpus, rows_left, wall / max(rows, 1), cpu / wall if wall > 0 else 1.0,
                                self._open_seconds, len(later))
        self.reason = choice.reason
        if choice.workers > 1:
            self.start_pool(choice.workers, max(1, self.cpus // choice.workers), position + 1)
            self._fill(position + 1)

    def _fill(self, position: int) -> None:
        """Keep up to two units per worker submitted ahead of the one being written."""
        if self._pool is None:
            return
        self._next = max(self._next, position)
        while self._next < len(self.units) and len(self._futures) < 2 * self._pool.workers:
            unit = self.units[self._next]
            self._futures[self._next] = self._pool.submit(unit, *self.reading[unit.file])
            self._next += 1

    def count(self, result: pa.RecordBatch) -> None:
        self.summary.rows += result.num_rows
        if self.options.on_error == "skip":
            self.summary.errors += result.num_rows - result.column(ERROR_COLUMN).null_count
        if self.progress:
            self.progress(self.summary.rows, self.summary.errors)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


def reading_schema(schema: pa.Schema, text_columns) -> pa.Schema:
    """The schema batches arrive with once CSV feature columns are read as text (kept columns keep theirs)."""
    if not text_columns:
        return schema
    return pa.schema([pa.field(f.name, pa.string()) if f.name in text_columns else f for f in schema])
