"""The Spark engine for s3:// inputs and outputs with plain pyspark: Spark schedules, pyarrow reads and writes.

Spark reads s3a:// only with hadoop-aws (and its AWS SDK) on its classpath, which a `pip install pyspark`
does not bring. So for s3:// the driver lists the files and their row groups through pyarrow (units.py),
Spark runs one task per unit, and each task opens its unit with pyarrow's S3 file system (standard AWS
credentials and AWS_ENDPOINT_URL, in the executor's environment), scores it with the worker's one
session and writes its rows as an Arrow IPC part next to the output. The driver then copies the parts,
in input order, into the output, which appears only when complete (sinks.py), and removes them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from bento_compile.batch.bento import resolve_bento, verify_bento
from bento_compile.batch.local import Summary, reading_schema
from bento_compile.batch.scorer import ScoreOptions, output_schema, resolve_plan
from bento_compile.batch.sinks import AtomicOutput
from bento_compile.batch.sources import InputSet, discover, filesystem_for, read_schema
from bento_compile.batch.spark_executor import executor_scorer, ship
from bento_compile.batch.unit_pool import read_part, write_unit
from bento_compile.batch.units import Unit, plan_units

_UNITS = "unit long, file long, row_groups array<long>, first_row long"
_DONE = pa.schema([("unit", pa.int64()), ("part", pa.string()), ("rows", pa.int64()), ("errors", pa.int64())])
_DONE_DDL = "unit long, part string, rows long, errors long"


def score_units(spark: Any, bento: str | Path, input: str, output: str, options: ScoreOptions, *, batch_rows: int,
                fmt: str, overwrite: bool, master: str) -> Summary:
    bento_dir = resolve_bento(bento)
    manifest = verify_bento(bento_dir)
    inputs = discover(input)
    schemas = [read_schema(inputs, f) for f in inputs.files]
    plans = [resolve_plan(manifest, schema, options) for schema in schemas]  # every file checked before a row
    reading = {index: (tuple(plan.scalar_numeric_columns()) if file.format == "csv" else (),
                       tuple(dict.fromkeys([*plan.columns, *options.keep])))
               for index, (file, plan) in enumerate(zip(inputs.files, plans, strict=True))}
    units = plan_units(inputs, batch_rows)
    target = AtomicOutput(output, inputs.is_folder, fmt, overwrite)
    scratch = f"{target.staging}.units"  # beside the staging output, on the output's file system
    sc = spark.sparkContext
    task = functools.partial(_score_units, archive=ship(sc, bento_dir, manifest.version), version=manifest.version,
                             options=options, inputs=inputs, reading=reading, batch_rows=batch_rows, output=output,
                             scratch=scratch)
    summary = Summary("spark", manifest.tag, input, output, fmt, files=len(inputs.files),
                      workers=sc.defaultParallelism, extra={"master": master, "io": "pyarrow"})
    try:
        rows = [(i, u.file, list(u.row_groups) if u.row_groups is not None else None, u.first_row)
                for i, u in enumerate(units)]
        frame = spark.createDataFrame(rows, _UNITS).repartition(max(1, len(units)))
        target.fs.create_dir(scratch)
        done = {r["unit"]: r for r in frame.mapInArrow(task, _DONE_DDL).collect()}
        for index, (file, schema) in enumerate(zip(inputs.files, schemas, strict=True)):
            schema_out = output_schema(manifest, reading_schema(schema, reading[index][0]), options)
            with target.open_part(file.relative if inputs.is_folder else None, schema_out) as writer:
                for position, unit in enumerate(units):
                    if unit.file == index and done[position]["part"]:
                        for batch in read_part(target.fs, done[position]["part"]):
                            writer.write(batch)
                        summary.rows += done[position]["rows"]
                        summary.errors += done[position]["errors"]
        target.commit()
    except BaseException:
        target.abort()
        raise
    finally:
        _remove(target, scratch)
    return summary


def _score_units(batches: Iterator[pa.RecordBatch], archive: str, version: str, options: ScoreOptions,
                 inputs: InputSet, reading: dict, batch_rows: int, output: str, scratch: str
                 ) -> Iterator[pa.RecordBatch]:
    """Runs in the executor's Python worker: each unit of this task read, scored and written as a part."""
    scorer = executor_scorer(archive, version, options, 1)
    fs, _ = filesystem_for(output)
    for batch in batches:
        for row in batch.to_pylist():
            groups = row["row_groups"]
            unit = Unit(row["file"], tuple(groups) if groups is not None else None, row["first_row"], None)
            part = f"{scratch}/unit-{row['unit']:08d}.arrow"
            text_columns, columns = reading[unit.file]
            with fs.open_output_stream(part) as sink:
                rows, errors = write_unit(scorer, inputs, unit, batch_rows, text_columns, columns, sink)
            yield pa.RecordBatch.from_pylist([{"unit": row["unit"], "part": part if rows else None, "rows": rows,
                                               "errors": errors}], schema=_DONE)


def _remove(target: AtomicOutput, scratch: str) -> None:
    import pyarrow.fs as pafs

    try:
        if target.fs.get_file_info(scratch).type != pafs.FileType.NotFound or not target.local:
            target.fs.delete_dir(scratch)
    except OSError:
        pass
