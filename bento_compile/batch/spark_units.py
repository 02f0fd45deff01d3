"""The Spark engine for s3:// inputs and outputs with plain pyspark: Spark schedules, pyarrow reads and writes.

Spark reads s3a:// only with hadoop-aws (and its AWS SDK) on its classpath, which a `pip install pyspark`
does not bring. So for s3:// the driver lists the files and their row groups through pyarrow (units.py),
Spark runs one task per unit (a plain RDD of
the units' coordinates), and each task opens its unit with pyarrow's S3 file system (standard AWS
credentials and AWS_ENDPOINT_URL, in the executor's environment), scores it with the worker's one
session and writes its rows as an Arrow IPC part next to the output. The driver then copies the parts,
in input order, into the output, which appears only when complete (sinks.py), and removes them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bento_compile.batch.bento import resolve_bento, verify_bento
from bento_compile.batch.local import Summary, reading_schema
from bento_compile.batch.scorer import ScoreOptions, output_schema, resolve_plan
from bento_compile.batch.sinks import AtomicOutput
from bento_compile.batch.sources import InputSet, discover, filesystem_for, read_schema
from bento_compile.batch.spark_executor import executor_scorer, ship
from bento_compile.batch.unit_pool import read_part, write_unit
from bento_compile.batch.units import Unit, plan_units


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
        # A plain RDD of the units' coordinates, one partition per unit: one stage, no SQL plan, no shuffle and
        # no Arrow round trip for the coordinates (a DataFrame + repartition + mapInArrow cost 2-3x as long
        # on a cold JVM: bench/RESULTS.md).
        target.fs.create_dir(scratch)
        numbered = list(enumerate(units))
        done = {r["unit"]: r for r in sc.parallelize(numbered, max(1, len(units))).mapPartitions(task).collect()}
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


def _score_units(numbered: Iterator[tuple[int, Unit]], archive: str, version: str, options: ScoreOptions,
                 inputs: InputSet, reading: dict, batch_rows: int, output: str, scratch: str) -> Iterator[dict]:
    """Runs in the executor's Python worker: each unit of this task read, scored and written as a part."""
    scorer = executor_scorer(archive, version, options, 1)
    fs, _ = filesystem_for(output)
    for index, unit in numbered:
        part = f"{scratch}/unit-{index:08d}.arrow"
        text_columns, columns = reading[unit.file]
        with fs.open_output_stream(part) as sink:
            rows, errors = write_unit(scorer, inputs, unit, batch_rows, text_columns, columns, sink)
        yield {"unit": index, "part": part if rows else None, "rows": rows, "errors": errors}


def _remove(target: AtomicOutput, scratch: str) -> None:
    import pyarrow.fs as pafs

    try:
        if target.fs.get_file_info(scratch).type != pafs.FileType.NotFound or not target.local:
            target.fs.delete_dir(scratch)
    except OSError:
        pass
