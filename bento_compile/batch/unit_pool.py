"""The local engine's worker processes: each opens the input files itself, scores whole units and writes
each unit's rows to a part file (Arrow IPC) that the parent copies into the output in input order.

Only coordinates go to a worker (a unit: file, row groups, first row) and only a file name comes
back, so no batch crosses a pipe. The parent submits at most two units per worker ahead of the one it
is writing, so memory (one row group per worker) and the staging disk (a few parts) stay bounded.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from bento_compile.batch.errors import BatchError
from bento_compile.batch.outputs import ERROR_COLUMN
from bento_compile.batch.scorer import ScoreOptions, Scorer
from bento_compile.batch.sources import InputSet, read_batches
from bento_compile.batch.units import Unit

PartResult = tuple[str | None, int, int]  # (part file, rows, rows with an error)


class UnitPool:
    """Spawned processes (a fresh interpreter, never a fork of a process holding reader threads), each with
    its own verified session."""

    def __init__(self, bento_dir: Path, options: ScoreOptions, inputs: InputSet, workers: int, threads: int,
                 batch_rows: int):
        self.workers = workers
        self.staging = tempfile.mkdtemp(prefix="bento-compile-parts-")
        self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker,
                                             initargs=(bento_dir, options, threads, inputs, batch_rows))
        self._count = 0

    def submit(self, unit: Unit, text_columns: Sequence[str], columns: Sequence[str]) -> Future:
        self._count += 1
        part = os.path.join(self.staging, f"part-{self._count:08d}.arrow")
        return self._executor.submit(_score_unit, unit, tuple(text_columns), tuple(columns), part)

    @staticmethod
    def batches(future: Future) -> Iterator[pa.RecordBatch]:
        """A unit's scored batches, read back from its part (removed once read)."""
        try:
            part, _rows, _errors = future.result()
        except BrokenProcessPool:
            raise BatchError(
                "A worker process died before it finished its rows (killed, out of memory, or it could not "
                "start).", "Worker processes are spawned: a script that calls score_files with workers > 1 needs "
                "an `if __name__ == \"__main__\":` guard. Otherwise retry with fewer --workers or --batch-rows, "
                "or --workers 1 (scoring in this process).") from None
        if part is None:
            return
        try:
            yield from read_part(pafs.LocalFileSystem(), part)
        finally:
            os.unlink(part)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.staging, ignore_errors=True)


_WORKER: dict = {}


def _init_worker(bento_dir: Path, options: ScoreOptions, threads: int, inputs: InputSet, batch_rows: int) -> None:
    _WORKER.update(scorer=Scorer(bento_dir, options, threads), inputs=inputs, batch_rows=batch_rows)


def _score_unit(unit: Unit, text_columns: tuple[str, ...], columns: tuple[str, ...], part: str) -> PartResult:
    if unit.row_groups == ():
        return None, 0, 0
    try:
        with pa.OSFile(part, "wb") as sink:
            rows, errors = write_unit(_WORKER["scorer"], _WORKER["inputs"], unit, _WORKER["batch_rows"], text_columns,
                                      columns, sink)
    except BaseException:
        if os.path.exists(part):
            os.unlink(part)
        raise
    if not rows:
        os.unlink(part)
        return None, 0, 0
    return part, rows, errors


def write_unit(scorer: Scorer, inputs: InputSet, unit: Unit, batch_rows: int, text_columns: Sequence[str],
               columns: Sequence[str], sink: pa.NativeFile) -> tuple[int, int]:
    """Read one unit, score it and write its rows to `sink` as an Arrow IPC stream: (rows, rows with an error).
    Nothing is written for a unit without rows. The local engine's workers and Spark's tasks (s3://) share it."""
    if unit.row_groups == ():
        return 0, 0
    rows = errors = 0
    writer = None
    first_row = unit.first_row
    try:
        for batch in read_batches(inputs, inputs.files[unit.file], batch_rows, text_columns, columns=columns,
                                  row_groups=unit.row_groups):
            result = scorer.score(batch, first_row)
            first_row += batch.num_rows
            if writer is None:
                writer = pa.ipc.new_stream(sink, result.schema)
            writer.write_batch(result)
            rows += result.num_rows
            if ERROR_COLUMN in result.schema.names:
                errors += result.num_rows - result.column(ERROR_COLUMN).null_count
    finally:
        if writer is not None:
            writer.close()
    return rows, errors


def read_part(fs: pafs.FileSystem, path: str) -> Iterator[pa.RecordBatch]:
    """A part's batches, in order (the file is read a batch at a time, never whole)."""
    with fs.open_input_file(path) as source:
        yield from pa.ipc.open_stream(source)
