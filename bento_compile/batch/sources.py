"""Where the rows come from: a Parquet, CSV or JSON-lines file, a folder or glob of them, locally or on S3,
read as a stream of Arrow record batches (one row group or block in memory at a time, never the file)."""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

from bento_compile.batch.errors import BatchError

FORMATS = ("parquet", "csv", "jsonl")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
             ".json": "jsonl"}
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
_BLOCK_BYTES = 4 << 20  # CSV / JSON blocks: the unit the readers hold in memory
_READ_BUFFER = 1 << 20  # Parquet: bytes read at a time within a column chunk


@dataclass(frozen=True)
class InputFile:
    path: str  # in its file system
    relative: str  # under the input folder (a part's name in a folder output); the file name otherwise
    format: str
    size: int


@dataclass(frozen=True)
class InputSet:
    uri: str
    fs: pafs.FileSystem
    files: tuple[InputFile, ...]
    is_folder: bool  # a folder or a glob: the output is a folder of parts, one per input file


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's file system for a local path or `s3://bucket/key` (standard AWS credentials; the endpoint from
    AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, e.g. MinIO or moto)."""
    if uri.startswith("s3://"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        options: dict = {"region": region}
        if endpoint:
            options["endpoint_override"] = endpoint
            options["scheme"] = "http" if endpoint.startswith("http://") else "https"
        path = uri[len("s3://"):].rstrip("/")
        if not path or path.startswith("/"):
            raise BatchError(f"'{uri}' names no bucket.", "Use s3://BUCKET/KEY or s3://BUCKET/PREFIX/.")
        return pafs.S3FileSystem(**options), path
    if "://" in uri:
        raise BatchError(f"'{uri}' uses a scheme batch scoring does not read.",
                         "Use a local path or s3://BUCKET/KEY.")
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def format_of(name: str) -> str | None:
    lower = name.lower()
    for suffix in _COMPRESSED:
        if lower.endswith(suffix):
            lower = lower[: -len(suffix)]
    return _SUFFIXES.get(os.path.splitext(lower)[1])


def discover(uri: str) -> InputSet:
    """The input files, sorted by name; a folder is read recursively (hidden and `_` files skipped)."""
    fs, path = filesystem_for(uri)
    if any(ch in path for ch in "*?["):
        files = _globbed(fs, path, uri)
        return InputSet(uri, fs, files, True)
    info = _info(fs, path, uri)
    if info.type == pafs.FileType.File:
        fmt = format_of(info.base_name)
        if fmt is None:
            raise BatchError(f"Cannot tell the format of {uri} from its name.",
                             "Name it .parquet, .csv or .jsonl (optionally compressed: .csv.gz, .jsonl.gz).")
        return InputSet(uri, fs, (InputFile(path, info.base_name, fmt, info.size),), False)
    listed = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = tuple(_data_files(listed, path))
    if not files:
        raise BatchError(f"{uri} holds no .parquet, .csv or .jsonl files.", "Point INPUT at a file, a folder of "
                         "them, or a glob such as 'data/*.parquet'.")
    return InputSet(uri, fs, _one_format(files, uri), True)


def _info(fs: pafs.FileSystem, path: str, uri: str) -> pafs.FileInfo:
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise BatchError(f"Cannot read {uri}: {exc}", "Check the path and, for S3, the credentials and "
                         "AWS_ENDPOINT_URL.") from None
    if info.type == pafs.FileType.NotFound:
        raise BatchError(f"{uri} does not exist.", "Check the path.")
    return info


def _globbed(fs: pafs.FileSystem, pattern: str, uri: str) -> tuple[InputFile, ...]:
    if isinstance(fs, pafs.LocalFileSystem):
        matches = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        infos = fs.get_file_info(matches)
    else:
        root = pattern[: min(pattern.find(c) for c in "*?[" if c in pattern)].rsplit("/", 1)[0]
        infos = [i for i in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
                 if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, pattern)]
    files = tuple(InputFile(i.path, i.base_name, fmt, i.size) for i in sorted(infos, key=lambda i: i.path)
                  if (fmt := format_of(i.base_name)))
    if not files:
        raise BatchError(f"No .parquet, .csv or .jsonl file matches {uri}.", "Check the pattern.")
    names = [f.relative for f in files]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise BatchError(f"The glob matches two files named {duplicated[0]!r}; their output parts would collide.",
                         "Point INPUT at their common folder instead (parts keep their sub-folders).")
    return _one_format(files, uri)


def _data_files(listed: Sequence[pafs.FileInfo], root: str) -> Iterator[InputFile]:
    for info in sorted(listed, key=lambda i: i.path):
        if info.type != pafs.FileType.File:
            continue
        relative = info.path[len(root):].lstrip("/")
        if any(part.startswith((".", "_")) for part in relative.split("/")):
            continue  # _SUCCESS, _temporary, .crc files: a Spark or Hadoop folder's bookkeeping
        fmt = format_of(info.base_name)
        if fmt:
            yield InputFile(info.path, relative, fmt, info.size)


def _one_format(files: tuple[InputFile, ...], uri: str) -> tuple[InputFile, ...]:
    formats = sorted({f.format for f in files})
    if len(formats) > 1:
        raise BatchError(f"{uri} mixes {' and '.join(formats)} files.", "Score one format at a time (a glob such "
                         "as 'data/*.parquet' picks one).")
    return files


def parquet_rows(inputs: InputSet) -> int | None:
    """Total rows from the Parquet footers (no data read), for the progress bar; None for CSV / JSON."""
    if any(f.format != "parquet" for f in inputs.files):
        return None
    import pyarrow.parquet as pq

    total = 0
    for file in inputs.files:
        with inputs.fs.open_input_file(file.path) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def read_schema(inputs: InputSet, file: InputFile) -> pa.Schema:
    """The columns of a file, from the footer (Parquet) or the first block (CSV / JSON)."""
    for batch in _batches(inputs.fs, file, 1024, (), schema_only=True):
        return batch.schema
    raise BatchError(f"{file.path} is empty.", "Score a file with a header and rows.")


def read_batches(inputs: InputSet, file: InputFile, batch_rows: int, text_columns: Sequence[str] = (),
                 columns: Sequence[str] | None = None,
                 row_groups: Sequence[int] | None = None) -> Iterator[pa.RecordBatch]:
    """The file's rows as record batches of at most `batch_rows` rows, in order.

    `text_columns` (CSV only) are read as text, so that one cell that is not a number is one row error;
    `columns` (when given) are the only ones read (Parquet, CSV) or kept (JSON lines); `row_groups`
    (Parquet only, when given) are the only row groups read.
    """
    for batch in _batches(inputs.fs, file, batch_rows, text_columns, columns=columns, row_groups=row_groups):
        if columns is not None and batch.schema.names != list(columns):
            batch = batch.select(list(columns))
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)


def _batches(fs: pafs.FileSystem, file: InputFile, batch_rows: int, text_columns: Sequence[str],
             schema_only: bool = False, columns: Sequence[str] | None = None,
             row_groups: Sequence[int] | None = None) -> Iterator[pa.RecordBatch]:
    try:
        if file.format == "parquet":
            import pyarrow.parquet as pq

            with fs.open_input_file(file.path) as handle:
                # pre_buffer (pyarrow's default) reads ahead without bound: a 2M-row file held 600 MB in
                # Arrow's pool by its end. A 1 MiB read buffer keeps one row group's pages at a time.
                parquet = pq.ParquetFile(handle, buffer_size=_READ_BUFFER, pre_buffer=False)
                if schema_only:
                    yield pa.RecordBatch.from_pylist([], schema=parquet.schema_arrow)
                    return
                yield from parquet.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None,
                                                row_groups=list(row_groups) if row_groups is not None else None)
        elif file.format == "csv":
            import pyarrow.csv as pacsv

            with fs.open_input_stream(file.path, compression="detect") as stream:
                reader = pacsv.open_csv(
                    stream, read_options=pacsv.ReadOptions(block_size=_BLOCK_BYTES),
                    convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in text_columns},
                                                         strings_can_be_null=True,
                                                         include_columns=list(columns) if columns else None))
                if schema_only:
                    yield pa.RecordBatch.from_pylist([], schema=reader.schema)
                    return
                yield from reader
        else:
            import pyarrow.json as pajson

            with fs.open_input_stream(file.path, compression="detect") as stream:
                reader = pajson.open_json(stream, read_options=pajson.ReadOptions(block_size=_BLOCK_BYTES))
                if schema_only:
                    yield pa.RecordBatch.from_pylist([], schema=reader.schema)
                    return
                yield from reader
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise BatchError(f"Cannot read {file.relative} as {file.format}: {exc}",
                         "Check the file is well-formed (one JSON object per line for .jsonl; a header line for "
                         ".csv) and that each column holds one type.") from None
