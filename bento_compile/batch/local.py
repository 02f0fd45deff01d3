"""The local engine: files streamed through worker processes, each holding one verified session.

The main process reads record batches (one Parquet row group or CSV/JSON block at a time), hands them
to `workers` processes, and writes their results back in input order. At most two batches per worker
are in flight, so memory depends on --batch-rows and the row-group size, never on the file's size.
Each worker gets CPUs // workers intra-op threads, so workers × threads never exceeds the CPUs.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from bento_compile.batch.bento import resolve_bento, verify_bento
from bento_compile.batch.errors import BatchError
from bento_compile.batch.outputs import ERROR_COLUMN
from bento_compile.batch.scorer import ScoreOptions, Scorer, output_schema, resolve_plan
from bento_compile.batch.sinks import AtomicOutput, output_format
from bento_compile.batch.sources import discover, parquet_rows, read_batches, read_schema
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
                         "Omit it to use every CPU (each worker is a process with its own model session).")
    count = workers or cpus
    return count, max(1, cpus // count)


def total_rows(uri: str) -> int | None:
    """The rows a local run will score, when the footers tell (Parquet); for the progress bar's ETA."""
    return parquet_rows(discover(uri))


def score_files(bento: str | Path, input: str, output: str, options: ScoreOptions | None = None, *,
                batch_rows: int = DEFAULT_BATCH_ROWS, workers: int | None = None, fmt: str | None = None,
                overwrite: bool = False, progress: Progress | None = None) -> Summary:
    """Score INPUT into OUTPUT on this machine (the `bento-compile batch` local engine, as a Python call)."""
    options = options or ScoreOptions()
    if not 1 <= batch_rows <= MAX_BATCH_ROWS:
        raise BatchError(f"--batch-rows must be between 1 and {MAX_BATCH_ROWS}, got {batch_rows}.",
                         f"The default, {DEFAULT_BATCH_ROWS}, suits most models.")
    started = time.perf_counter()
    bento_dir = resolve_bento(bento)
    manifest = verify_bento(bento_dir)  # here too: a damaged Bento stops before any worker starts
    inputs = discover(input)
    fmt = output_format(output, fmt)
    count, threads = plan_workers(workers)
    summary = Summary("local", manifest.tag, input, output, fmt, files=len(inputs.files), workers=count,
                      intra_op_threads=threads)
    # Every file's columns are checked before a row is scored: a bad last file must not cost a whole run.
    schemas = [read_schema(inputs, f) for f in inputs.files]
    plans = [resolve_plan(manifest, schema, options) for schema in schemas]
    target = AtomicOutput(output, inputs.is_folder, fmt, overwrite)
    pool = _Pool(bento_dir, options, count, threads)
    try:
        for file, schema, plan in zip(inputs.files, schemas, plans, strict=True):
            text_columns = plan.scalar_numeric_columns() if file.format == "csv" else ()
            # Only the columns the model and --keep use are read, and sent to the workers.
            needed = list(dict.fromkeys([*plan.columns, *options.keep]))
            batches = read_batches(inputs, file, batch_rows, text_columns, columns=needed)
            with target.open_part(file.relative if inputs.is_folder else None,
                                  output_schema(manifest, _reading_schema(schema, text_columns), options)) as writer:
                for result in pool.map_in_order(batches):
                    summary.rows += result.num_rows
                    if options.on_error == "skip":
                        summary.errors += result.num_rows - result.column(ERROR_COLUMN).null_count
                    writer.write(result)
                    if progress:
                        progress(summary.rows, summary.errors)
        target.commit()
    except BaseException:
        target.abort()
        raise
    finally:
        pool.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _reading_schema(schema: pa.Schema, text_columns) -> pa.Schema:
    """The schema batches arrive with once CSV feature columns are read as text (kept columns keep theirs)."""
    if not text_columns:
        return schema
    return pa.schema([pa.field(f.name, pa.string()) if f.name in text_columns else f for f in schema])


class _Pool:
    """In-process scoring for one worker; otherwise spawned processes, each with its own Scorer."""

    def __init__(self, bento_dir: Path, options: ScoreOptions, workers: int, threads: int):
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._scorer: Scorer | None = None
        if workers == 1:
            self._scorer = Scorer(bento_dir, options, threads)
        else:  # spawn: a fresh interpreter, never a fork of a process holding reader threads
            self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_init_worker, initargs=(bento_dir, options, threads))

    def map_in_order(self, batches):
        """Scored batches in input order, at most 2 × workers in flight."""
        first_row = 0
        if self._scorer is not None:
            for batch in batches:
                yield self._scorer.score(batch, first_row)
                first_row += batch.num_rows
            return
        assert self._executor is not None
        pending: deque[Future] = deque()
        try:
            for batch in batches:
                pending.append(self._executor.submit(_score_in_worker, batch, first_row))
                first_row += batch.num_rows
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool:
            raise BatchError(
                "A worker process died before it finished its batch (killed, out of memory, or it could not "
                "start).", "Worker processes are spawned: a script that calls score_files with workers > 1 needs "
                "an `if __name__ == \"__main__\":` guard. Otherwise retry with fewer --workers or --batch-rows, "
                "or --workers 1 (scoring in this process).") from None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)


_WORKER: dict[str, Scorer] = {}


def _init_worker(bento_dir: Path, options: ScoreOptions, threads: int) -> None:
    _WORKER["scorer"] = Scorer(bento_dir, options, threads)


def _score_in_worker(batch: pa.RecordBatch, first_row: int) -> pa.RecordBatch:
    return _WORKER["scorer"].score(batch, first_row)
