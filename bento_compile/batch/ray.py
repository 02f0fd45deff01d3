"""The Ray engine: `predict(dataset, bento)` on Ray Data's `map_batches`, one verified session per actor.

The Bento travels through Ray's object store as one archive; each actor unpacks it into a private
folder, checks every hash (and the signature when a key is configured), opens one session and
scores every batch it is given as a pyarrow Table. No server, no HTTP.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from bento_compile.batch.bento import bento_archive, resolve_bento, unpack_archive, verify_bento
from bento_compile.batch.errors import BatchError
from bento_compile.batch.extras import require
from bento_compile.batch.local import Summary, plan_workers
from bento_compile.batch.scorer import ROW_FIX, ScoreOptions, Scorer
from bento_compile.batch.sinks import as_text, output_format, text_schema
from bento_compile.batch.sources import format_of
from bento_compile.batch.summary import summarize_output
from bento_compile.runtimes.errors import IntegrityError


class BentoPredictor:
    """The callable class Ray Data runs as actors: built once per actor, called once per batch."""

    def __init__(self, archive: list, version: str, options: ScoreOptions, intra_op_threads: int = 1):
        import ray

        data = ray.get(archive[0])  # wrapped in a list so Ray hands over the reference, not the bytes
        self._folder = Path(tempfile.mkdtemp(prefix="bento-compile-ray-"))
        self.scorer = Scorer(unpack_archive(data, self._folder), options, intra_op_threads)
        if self.scorer.manifest.version != version:
            raise IntegrityError(f"the actor's copy of the Bento is version {self.scorer.manifest.version}, "
                                 f"the driver asked for {version}")

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_batches([self.scorer.score(batch)])

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "_folder", ""), ignore_errors=True)


def predict(dataset: Any, bento: str | Path, *, concurrency: int = 1, features: list[str] | tuple[str, ...] | None
            = None, input_column: str | None = None, keep: list[str] | tuple[str, ...] = (), on_error: str = "fail",
            batch_size: int = 4096, intra_op_threads: int = 1) -> Any:
    """Score a Ray Dataset with a Bento: a Dataset of the `keep` columns and one column per output (plus
    `error` with on_error="skip"), one row per input row, with `concurrency` actors. Lazy, like map_batches.

    >>> scores = predict(ray.data.read_parquet("s3://lake/events/"), "churn:latest", concurrency=4, keep=["id"])
    """
    ray = require("ray")
    options = ScoreOptions(features=tuple(features) if features else None, input_column=input_column,
                           keep=tuple(keep), on_error=on_error)
    if concurrency < 1:
        raise BatchError(f"concurrency must be at least 1, got {concurrency}.", "Use one actor per CPU or GPU.")
    bento_dir = resolve_bento(bento)
    manifest = verify_bento(bento_dir)
    archive = ray.put(bento_archive(bento_dir))
    return dataset.map_batches(BentoPredictor, fn_constructor_kwargs={
        "archive": [archive], "version": manifest.version, "options": options,
        "intra_op_threads": max(1, intra_op_threads)}, batch_format="pyarrow", batch_size=batch_size,
        concurrency=concurrency, num_cpus=max(1, intra_op_threads), zero_copy_batch=True)


def score_files(bento: str | Path, input: str, output: str, options: ScoreOptions | None = None, *,
                workers: int | None = None, batch_rows: int = 8192, fmt: str | None = None,
                overwrite: bool = False) -> Summary:
    """`bento-compile batch --engine ray`: a local Ray cluster reads INPUT, actors score, parts land in OUTPUT."""
    ray = require("ray")
    options = options or ScoreOptions()
    fmt = output_format(output, fmt)
    if "://" in output:
        raise BatchError("--engine ray writes a local folder here.", "Score into a local folder, then copy it; or "
                         "use the local engine, which writes s3:// itself.")
    if os.path.exists(output) and not overwrite:
        raise BatchError(f"{output} already exists.", "Delete it, pick another OUTPUT, or pass --overwrite.")
    actors, threads = plan_workers(workers)
    started = time.perf_counter()
    bento_dir = resolve_bento(bento)
    manifest = verify_bento(bento_dir)
    # One CPU more than the actors take: Ray Data's read and write tasks need one, and with every CPU held by an
    # actor they would wait forever (the I/O tasks are light; the actors keep workers × threads ≤ CPUs).
    owned = not ray.is_initialized()  # shut down only a cluster this call started
    if owned:
        ray.init(num_cpus=actors * threads + 1, include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
    parent, name = os.path.split(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # output rows in input order
        context.enable_progress_bars = False  # the CLI shows its own status
        scored = predict(_read(ray, input), bento_dir, concurrency=actors, features=options.features,
                         input_column=options.input_column, keep=options.keep, on_error=options.on_error,
                         batch_size=batch_rows, intra_op_threads=threads)
        try:
            _write(scored, staging, fmt)
        except Exception as exc:
            raise _ray_error(exc) from None
        if os.path.isdir(output):
            shutil.rmtree(output)
        elif os.path.exists(output):
            os.unlink(output)
        os.rename(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if owned:
            ray.shutdown()
    summary = Summary("ray", manifest.tag, input, output, fmt, workers=actors, intra_op_threads=threads)
    summary.rows, summary.errors, summary.files = summarize_output(output, fmt, options.on_error == "skip")
    summary.seconds = time.perf_counter() - started
    return summary


def _read(ray: Any, input: str) -> Any:
    fmt = format_of(input.rstrip("/"))
    if fmt is None and os.path.isdir(input):
        found = {format_of(n) for _root, _dirs, names in os.walk(input) for n in names} - {None}
        fmt = found.pop() if len(found) == 1 else None
    if fmt == "csv":
        return ray.data.read_csv(input)
    if fmt == "jsonl":
        return ray.data.read_json(input, lines=True) if _accepts_lines(ray) else ray.data.read_json(input)
    if fmt == "parquet":
        return ray.data.read_parquet(input)
    raise BatchError(f"Cannot tell the format of {input}.", "Give .parquet, .csv or .jsonl files.")


def _accepts_lines(ray: Any) -> bool:
    import inspect

    return "lines" in inspect.signature(ray.data.read_json).parameters


def _write(scored: Any, target: str, fmt: str) -> None:
    if fmt == "csv":
        scored.map_batches(_as_text_table, batch_format="pyarrow").write_csv(target)
    elif fmt == "jsonl":
        scored.write_json(target)
    else:
        scored.write_parquet(target)


def _as_text_table(table: pa.Table) -> pa.Table:
    """CSV has no lists: list columns become JSON text, as in the local engine."""
    schema = text_schema(table.schema)
    return pa.Table.from_batches([as_text(b, schema) for b in table.to_batches()], schema=schema)


def _ray_error(exc: Exception) -> Exception:
    """Our own error from inside an actor, told once and plainly."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, BatchError | IntegrityError):
            return cause if isinstance(cause, BatchError) else BatchError(
                f"The Bento cannot be used: {cause}", "Rebuild it, or pull it again from a good copy.")
        cause = cause.__cause__ or getattr(cause, "cause", None)
    text = str(exc)
    for kind in ("BatchError: ", "IntegrityError: "):
        if kind in text:
            message = text.split(kind, 1)[1].splitlines()[0].strip()
            return BatchError(message[: -len(ROW_FIX)].strip() if message.endswith(ROW_FIX) else message, ROW_FIX)
    return BatchError(f"Ray failed: {text.strip().splitlines()[0][:500] if text.strip() else type(exc).__name__}",
                      "See Ray's log for the failing task.")
