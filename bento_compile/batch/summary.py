"""Counting what an engine that writes its own parts (Spark, Ray) wrote: rows, and rows with an error."""

from __future__ import annotations

import os

import pyarrow as pa

from bento_compile.batch.outputs import ERROR_COLUMN
from bento_compile.batch.sources import discover, read_batches


def summarize_output(folder: str, fmt: str, with_errors: bool) -> tuple[int, int, int]:
    """(rows, rows with an error, part files) of a local output folder: from the Parquet footers when it can."""
    if not os.path.isdir(folder) or not any(files for _root, _dirs, files in os.walk(folder)):
        return 0, 0, 0
    try:
        inputs = discover(folder)
    except Exception:
        return 0, 0, 0
    rows = errors = 0
    for file in inputs.files:
        if file.format == "parquet":  # the footer counts the rows; only the error column is read
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(file.path)
            rows += parquet.metadata.num_rows
            if with_errors and ERROR_COLUMN in parquet.schema_arrow.names:
                column = parquet.read(columns=[ERROR_COLUMN]).column(ERROR_COLUMN)
                errors += len(column) - column.null_count
            continue
        for batch in read_batches(inputs, file, 1 << 16):
            rows += batch.num_rows
            if with_errors and ERROR_COLUMN in batch.schema.names:
                column = batch.column(ERROR_COLUMN)
                errors += batch.num_rows - column.null_count if column.type != pa.null() else 0
    return rows, errors, len(inputs.files)
