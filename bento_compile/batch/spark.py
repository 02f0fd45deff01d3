"""The Spark engine: `predict(df, bento)` on `mapInArrow`, with the Bento shipped to executors once.

The Bento travels as a SparkContext archive (unpacked once per executor); each Python worker opens
it, checks every hash against the manifest (and the signature when a key is configured), opens one
session and keeps it for every task it runs afterwards (Spark reuses Python workers). Rows reach
the model as Arrow record batches and never leave the worker process: no server, no HTTP.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from bento_compile.batch.bento import resolve_bento, verify_bento
from bento_compile.batch.errors import BatchError
from bento_compile.batch.extras import require
from bento_compile.batch.local import Summary
from bento_compile.batch.scorer import ROW_FIX, ScoreOptions, output_schema, resolve_plan
from bento_compile.batch.sinks import output_format
from bento_compile.batch.sources import FORMATS
from bento_compile.batch.spark_executor import executor_scorer, ship
from bento_compile.batch.spark_jvm import driver_java_options
from bento_compile.batch.spark_units import score_units
from bento_compile.batch.summary import summarize_output
from bento_compile.core.errors import BentoCompileError

LOG_LEVEL_ENV = "BENTO_COMPILE_SPARK_LOG_LEVEL"  # Spark's log level for a session the CLI starts (default OFF)


def predict(df: Any, bento: str | Path, *, features: list[str] | tuple[str, ...] | None = None,
            input_column: str | None = None, keep: list[str] | tuple[str, ...] = (), on_error: str = "fail",
            intra_op_threads: int = 1) -> Any:
    """Score a Spark DataFrame with a Bento: a DataFrame of the `keep` columns and one column per output
    (plus `error` with on_error="skip"), one row per input row. Lazy, like any transformation.

    >>> scores = predict(spark.read.parquet("s3a://lake/events/"), "churn:latest", keep=["id"])
    """
    require("pyspark")
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    options = ScoreOptions(features=tuple(features) if features else None, input_column=input_column,
                           keep=tuple(keep), on_error=on_error)
    bento_dir = resolve_bento(bento)
    manifest = verify_bento(bento_dir)
    arrow_input = to_arrow_schema(df.schema)
    resolve_plan(manifest, arrow_input, options)  # missing columns and wrong types fail here, on the driver
    archive = ship(df.sparkSession.sparkContext, bento_dir, manifest.version)
    schema = from_arrow_schema(output_schema(manifest, arrow_input, options))
    score = functools.partial(_score_partition, archive=archive, version=manifest.version, options=options,
                              threads=max(1, intra_op_threads))
    return df.mapInArrow(score, schema)


def _score_partition(batches: Iterator[pa.RecordBatch], archive: str, version: str, options: ScoreOptions,
                     threads: int) -> Iterator[pa.RecordBatch]:
    """Runs in the executor's Python worker: the worker's one scorer over this task's batches."""
    scorer = executor_scorer(archive, version, options, threads)
    for batch in batches:
        if batch.num_rows:
            yield scorer.score(batch)


def score_files(bento: str | Path, input: str, output: str, options: ScoreOptions | None = None, *,
                master: str = "local[2]", batch_rows: int = 8192, fmt: str | None = None,
                overwrite: bool = False, io: str = "auto") -> Summary:
    """`bento-compile batch --engine spark`: score INPUT into OUTPUT on Spark.

    `io`: "pyarrow" (Spark schedules units of row groups, each task reads and writes them with pyarrow;
    OUTPUT is shaped like the local engine's), "spark" (Spark's own reader and writer; OUTPUT is a folder
    of parts), or "auto": pyarrow for s3:// and on a local master, Spark's own otherwise."""
    pyspark = require("pyspark")
    if io not in ("auto", "pyarrow", "spark"):
        raise BatchError(f"io={io!r} is not one of auto, pyarrow, spark.", "Pass io='auto'.")
    options = options or ScoreOptions()
    fmt = output_format(output, fmt)
    started = time.perf_counter()
    local_output = "://" not in output
    if local_output and os.path.exists(output) and not overwrite:
        raise BatchError(f"{output} already exists.", "Delete it, pick another OUTPUT, or pass --overwrite.")
    # s3:// with plain pyspark, and any files on a local master (one machine: every task sees the files):
    # Spark schedules units, pyarrow reads and writes (spark_units.py). Rows then never cross into the
    # JVM and back, Spark's own Arrow round trip that made up most of a local[2] run. A cluster master
    # with local paths keeps Spark's own reader and writer (each node resolves file:// itself).
    units = io == "pyarrow" or (io == "auto" and (not local_output or "://" in input or master.startswith("local")))
    builder = (pyspark.sql.SparkSession.builder.master(master).appName("bento-compile batch")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_rows))
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false"))
    # Python workers run this interpreter (where bento-compile is installed) unless told otherwise; pyspark
    # reads the variable when the context starts.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    owned = pyspark.sql.SparkSession.getActiveSession() is None  # stop only a session this call started
    if master.startswith("local"):  # a local master listens on the loopback only, never on the LAN
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        java_options = driver_java_options(scheduling_only=units) if owned else None
        if java_options:
            builder = builder.config("spark.driver.extraJavaOptions", java_options)
    spark = builder.getOrCreate()
    if owned:  # quiet: a failing task's stack trace is told once, plainly, by _spark_error
        spark.sparkContext.setLogLevel(os.environ.get(LOG_LEVEL_ENV, "OFF"))
    try:
        if units:
            try:
                summary = score_units(spark, bento, input, output, options, batch_rows=batch_rows, fmt=fmt,
                                      overwrite=overwrite, master=master)
            except BentoCompileError:
                raise
            except Exception as exc:
                raise _spark_error(exc) from None
            summary.seconds = time.perf_counter() - started
            return summary
        df = _read(spark, input)
        scored = predict(df, bento, features=options.features, input_column=options.input_column,
                         keep=options.keep, on_error=options.on_error)
        target = output
        if local_output:  # Spark commits its parts into a folder; the folder appears whole, by rename
            parent, name = os.path.split(os.path.abspath(output))
            os.makedirs(parent, exist_ok=True)
            target = os.path.join(parent, f".{name}.partial-{uuid.uuid4().hex[:8]}")
        try:
            _write(scored, target, fmt)
        except Exception as exc:
            raise _spark_error(exc) from None
        finally:
            if local_output and os.path.exists(target) and not os.path.exists(os.path.join(target, "_SUCCESS")):
                shutil.rmtree(target, ignore_errors=True)
        if local_output:
            if os.path.isdir(output):
                shutil.rmtree(output)
            elif os.path.exists(output):
                os.unlink(output)
            os.rename(target, output)
        summary = Summary("spark", verify_bento(resolve_bento(bento)).tag, input, output, fmt,
                          workers=spark.sparkContext.defaultParallelism, extra={"master": master})
        if local_output:
            summary.rows, summary.errors, summary.files = summarize_output(output, fmt, options.on_error == "skip")
    finally:
        if owned:
            spark.stop()
    summary.seconds = time.perf_counter() - started
    return summary


def _read(spark: Any, input: str) -> Any:
    from bento_compile.batch.sources import format_of

    probe = input.rstrip("/")
    fmt = format_of(probe)
    if fmt is None and os.path.isdir(probe):
        found = {format_of(name) for _root, _dirs, names in os.walk(probe) for name in names} - {None}
        fmt = found.pop() if len(found) == 1 else None
    if fmt not in FORMATS:
        raise BatchError(f"Cannot tell the format of {input}.", "Give .parquet, .csv or .jsonl files.")
    reader = spark.read
    if fmt == "csv":
        return reader.option("header", True).option("inferSchema", True).csv(input)
    if fmt == "jsonl":
        return reader.json(input)
    return reader.parquet(input)


def _write(scored: Any, target: str, fmt: str) -> None:
    writer = scored
    if fmt == "csv":
        from pyspark.sql import functions as F
        from pyspark.sql.types import ArrayType

        writer = scored.select(*[F.to_json(F.col(f.name)).alias(f.name) if isinstance(f.dataType, ArrayType)
                                 else F.col(f.name) for f in scored.schema.fields])
        writer.write.mode("overwrite").option("header", True).csv(target)
    elif fmt == "jsonl":
        writer.write.mode("overwrite").json(target)
    else:
        writer.write.mode("overwrite").parquet(target)


def _spark_error(exc: Exception) -> Exception:
    """Our own error from inside a task, told once and plainly instead of as a Java stack trace."""
    text = str(exc)
    for kind in ("BatchError: ", "IntegrityError: "):
        if kind in text:
            message = text.split(kind, 1)[1].splitlines()[0].strip()
            if kind == "IntegrityError: ":
                return BatchError(f"The Bento cannot be used: {message}",
                                  "Rebuild the Bento, or pull it again from a good copy.")
            # The task's text is the error's problem and fix together; a row error's fix is known.
            if message.endswith(ROW_FIX):
                return BatchError(message[: -len(ROW_FIX)].strip(), ROW_FIX)
            return BatchError(message, "See the message above.")
    return BatchError(f"Spark failed: {text.strip().splitlines()[0][:500] if text.strip() else type(exc).__name__}",
                      f"Rerun with {LOG_LEVEL_ENV}=ERROR to see Spark's own log of the failing stage.")
