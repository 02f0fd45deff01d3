"""Where the scores go: Parquet, CSV or JSON lines, written under a temporary name and renamed when complete.

An interrupted run never leaves a file that looks finished: a single output is written as
`.NAME.partial-XXXX` beside its target; a folder output is written whole into `.NAME.partial-XXXX/` and
renamed; on S3 (no rename) parts go under `NAME/_partial-XXXX/` and are moved into place at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.fs as pafs

from bento_compile.batch.errors import BatchError
from bento_compile.batch.sources import FORMATS, filesystem_for, format_of

EXTENSIONS = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}


def output_format(output: str, requested: str | None) -> str:
    """--format, else the OUTPUT's suffix, else Parquet."""
    if requested:
        if requested not in FORMATS:
            raise BatchError(f"--format {requested} is not one of {', '.join(FORMATS)}.", "Pick one of them.")
        return requested
    return format_of(output) or "parquet"


class Writer:
    """Writes record batches of one schema to one open file, in the output format."""

    def __init__(self, stream: pa.NativeFile, fmt: str, schema: pa.Schema):
        self.stream, self.format = stream, fmt
        self.schema = text_schema(schema) if fmt == "csv" else schema
        self._writer: Any = None  # pyarrow's ParquetWriter or CSVWriter (None for JSON lines)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(stream, schema, compression="zstd")
        elif fmt == "csv":
            import pyarrow.csv as pacsv

            self._writer = pacsv.CSVWriter(stream, self.schema)

    def write(self, batch: pa.RecordBatch) -> None:
        if self.format == "jsonl":
            self.stream.write(b"".join(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"
                                       for row in batch.to_pylist()))
        elif self.format == "csv":
            self._writer.write_batch(as_text(batch, self.schema))
        else:
            self._writer.write_batch(batch)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def abandon(self) -> None:
        with contextlib.suppress(OSError, pa.ArrowException):
            self.close()


def text_schema(schema: pa.Schema) -> pa.Schema:
    """CSV has no lists: a list column is written as its JSON text, quoted by the CSV writer."""
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_list(f.type) else f for f in schema])


def as_text(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    columns = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_list(field.type):
            column = pa.array([None if v is None else orjson.dumps(v).decode() for v in column.to_pylist()],
                              type=pa.string())
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


class AtomicOutput:
    """One output, file or folder of parts, that appears under its name only when complete."""

    def __init__(self, uri: str, folder: bool, fmt: str, overwrite: bool = False):
        self.uri, self.folder, self.format = uri, folder, fmt
        self.fs, self.path = filesystem_for(uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        existing = self.fs.get_file_info(self.path).type
        if existing != pafs.FileType.NotFound and not overwrite:
            raise BatchError(f"{uri} already exists.", "Delete it, pick another OUTPUT, or pass --overwrite.")
        if self.local and existing == pafs.FileType.Directory and not folder:
            raise BatchError(f"{uri} is a folder, and a single file is scored into a file.",
                             "Name an output file, e.g. scores.parquet.")
        token = uuid.uuid4().hex[:8]
        parent, name = self.path.rsplit("/", 1) if "/" in self.path else ("", self.path)
        if self.local:
            self.staging = f"{parent}/.{name}.partial-{token}"
            os.makedirs(parent, exist_ok=True)
            if folder:
                os.makedirs(self.staging)
        else:
            self.staging = f"{self.path}/_partial-{token}" if folder else f"{self.path}.partial-{token}"
        self._parts: list[str] = []

    def part_name(self, relative: str) -> str:
        """A part's name inside a folder output: the input's relative path with the output's extension."""
        path = PurePosixPath(relative)
        if path.is_absolute() or ".." in path.parts:
            raise BatchError(f"Input part '{relative}' is not a plain relative name.", "Rename the input file.")
        stem = path.name
        for suffix in (".gz", ".bz2", ".zst", ".lz4", ".parquet", ".pq", ".csv", ".jsonl", ".ndjson", ".json"):
            stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
        return str(path.with_name(stem + EXTENSIONS[self.format]))

    @contextmanager
    def open_part(self, relative: str | None, schema: pa.Schema) -> Iterator[Writer]:
        """A writer for one part (folder output) or the whole output (relative=None)."""
        target = f"{self.staging}/{self.part_name(relative)}" if self.folder and relative else self.staging
        if self.local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        with self.fs.open_output_stream(target) as stream:
            writer = Writer(stream, self.format, schema)
            try:
                yield writer
            except BaseException:
                writer.abandon()  # its bytes are removed by abort(); only the file handles matter here
                raise
            writer.close()
        self._parts.append(target)

    def commit(self) -> None:
        """Move the complete output under its name (replacing an old one only now, with --overwrite)."""
        if self.local:
            if os.path.isdir(self.path) and not os.path.islink(self.path):
                doomed = f"{self.staging}.old"
                os.rename(self.path, doomed)
                os.rename(self.staging, self.path)
                shutil.rmtree(doomed, ignore_errors=True)
            else:
                os.replace(self.staging, self.path)
            return
        if not self.folder:
            self.fs.move(self.staging, self.path)
            return
        for part in self._parts:
            self.fs.move(part, self.path + part[len(self.staging):])
        self.fs.delete_dir_contents(self.staging, missing_dir_ok=True)
        self._delete(self.staging)

    def abort(self) -> None:
        """Remove whatever was written; never raises (it runs while another error is on its way out)."""
        try:
            if self.local:
                if os.path.isdir(self.staging):
                    shutil.rmtree(self.staging, ignore_errors=True)
                elif os.path.exists(self.staging):
                    os.unlink(self.staging)
            elif self.folder:
                self.fs.delete_dir_contents(self.staging, missing_dir_ok=True)
                self._delete(self.staging)
            else:
                self._delete(self.staging)
        except OSError:
            pass

    def _delete(self, path: str) -> None:
        try:
            info = self.fs.get_file_info(path)
            if info.type == pafs.FileType.File:
                self.fs.delete_file(path)
            elif info.type == pafs.FileType.Directory:
                self.fs.delete_dir(path)
        except OSError:
            pass
