"""The prediction log: sampled rows (inputs, outputs, latency) written off the request path.

Each row is logged with probability `sample_rate`, drawn as the gaps between logged rows (a run that holds
none costs two integer operations); only copies of the sampled rows are queued, and one daemon thread,
woken on a timer, turns them into records and writes them to the sink: one orjson call formats a tensor's
values (in its own precision), one %-format per run puts the names before them. The queue is bounded in
records; when it is full, rows are dropped and counted, so a slow or unreachable sink never slows or fails
a request. Sinks: JSON lines on stdout (what Lambda, Cloud Run and Knative ingest), a rotating local file
(bounded size, for devices), S3 objects of many records each, OTLP logs (when the otel extra is
installed). Redacted features are replaced by a sha256 (or dropped) before a record leaves the process.

Env overrides per deployment: BENTO_COMPILE_MONITORING_LOG (stdout | file:PATH | s3://bucket/prefix/ |
otlp | off) and BENTO_COMPILE_MONITORING_SAMPLE_RATE (0..1).
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import json
import logging
import math
import os
import random
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

try:  # the HTTP and Lambda artifacts ship it; stdlib json otherwise
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised in bundles without the HTTP stack
    _orjson = None  # type: ignore[assignment]

from bento_compile.runtimes.drift import column_of, feature_columns
from bento_compile.runtimes.manifest import Manifest, MonitoringInfo, PredictionLogSettings

log = logging.getLogger("bento_compile.prediction_log")

DRAIN_SECONDS = 0.25  # how often the writer thread takes what runs queued
EXIT_FLUSH_SECONDS = 5.0  # the longest the process exit waits for queued records
S3_BATCH_RECORDS = 1000  # records per S3 object
S3_BATCH_SECONDS = 30.0  # ... or this long after the first record of the object
_MAX_VALUES_PER_TENSOR = 1024  # a row of a wider tensor is logged by shape only


def effective_log_settings(settings: PredictionLogSettings | None) -> PredictionLogSettings | None:
    """`monitoring.log` with the deployment's env overrides; a malformed override fails the load, naming it."""
    target = os.environ.get("BENTO_COMPILE_MONITORING_LOG", "").strip()
    rate = os.environ.get("BENTO_COMPILE_MONITORING_SAMPLE_RATE", "").strip()
    value = None
    if rate:
        try:
            value = float(rate)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 1:
            raise ValueError(f"BENTO_COMPILE_MONITORING_SAMPLE_RATE must be a number from 0 to 1, got {rate!r}")
    if target and target.lower() != "off" and not (target in ("stdout", "otlp") or target.startswith("s3://")
                                                   or (target.startswith("file:") and len(target) > 5)):
        raise ValueError("BENTO_COMPILE_MONITORING_LOG must be stdout, file:PATH, s3://bucket/prefix/, otlp or "
                         f"off, got {target!r}")
    if target.lower() == "off" or (settings is None and not target):
        return None
    settings = settings or PredictionLogSettings()
    if target:
        settings = replace(settings, to=target)
    return settings if value is None else replace(settings, sample_rate=value)


class SinkFailed(Exception):
    """A write failed; `lost` records are gone (an S3 sink loses its whole pending object)."""

    def __init__(self, lost: int, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.lost = lost


class FileSink:
    """JSON lines in one file, rotated to FILE.1 when it passes max_bytes (so at most twice that on disk)."""

    def __init__(self, path: str, max_bytes: int):
        self.path, self.max_bytes = Path(path), max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, lines: list[bytes]) -> int:
        with open(self.path, "ab") as handle:
            handle.write(b"".join(lines))
            size = handle.tell()
        if size >= self.max_bytes:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        return len(lines)

    def close(self) -> int:
        return 0


class StdoutSink:
    def write(self, lines: list[bytes]) -> int:
        # One write per record: Lambda's runtime client frames each write as one log event.
        for line in lines:
            sys.stdout.write(line.decode())
            sys.stdout.flush()
        return len(lines)

    def close(self) -> int:
        return 0


class S3Sink:
    """Records gathered into objects `PREFIX/YYYY/MM/DD/<time>-<uuid>.jsonl` (one PUT per batch)."""

    def __init__(self, url: str):
        import boto3  # in every Lambda runtime; elsewhere the [s3] extra

        bucket, _, prefix = url[len("s3://"):].partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or None)
        self.pending: list[bytes] = []
        self.first = 0.0

    def write(self, lines: list[bytes]) -> int:
        if not self.pending:
            self.first = time.monotonic()
        self.pending.extend(lines)
        if len(self.pending) >= S3_BATCH_RECORDS or time.monotonic() - self.first >= S3_BATCH_SECONDS:
            return self.flush()
        return 0

    def tick(self) -> int:
        return self.flush() if self.pending and time.monotonic() - self.first >= S3_BATCH_SECONDS else 0

    def flush(self) -> int:
        if not self.pending:
            return 0
        count, body, self.pending = len(self.pending), b"".join(self.pending), []
        now = time.gmtime()
        key = "/".join(p for p in (self.prefix, time.strftime("%Y/%m/%d", now),
                                   f"{time.strftime('%H%M%S', now)}-{uuid.uuid4().hex}.jsonl") if p)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-ndjson")
        except Exception as exc:
            raise SinkFailed(count, exc) from exc
        return count

    def close(self) -> int:
        return self.flush()


class OtlpSink:
    """OTLP logs through the OpenTelemetry SDK (the otel extra); endpoint from OTEL_EXPORTER_OTLP_* env."""

    def __init__(self) -> None:
        from opentelemetry._logs import LogRecord
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        self.record_type = LogRecord
        self.provider = LoggerProvider()
        self.provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
        self.logger = self.provider.get_logger("bento_compile.predictions")

    def write(self, lines: list[bytes]) -> int:
        for line in lines:
            self.logger.emit(self.record_type(timestamp=time.time_ns(), severity_text="INFO",
                                              body=line.decode().rstrip("\n")))
        return len(lines)

    def close(self) -> int:
        self.provider.force_flush()
        return 0


def open_sink(settings: PredictionLogSettings) -> Any:
    to = settings.to
    if to == "stdout":
        return StdoutSink()
    if to.startswith("file:"):
        return FileSink(to[len("file:"):], settings.max_file_bytes)
    if to.startswith("s3://"):
        return S3Sink(to)
    if to == "otlp":
        return OtlpSink()
    raise ValueError(f"monitoring.log.to must be stdout, file:PATH, s3://bucket/prefix/ or otlp, got {to!r}")


class PredictionLog:
    """Samples rows of each run into records and writes them from a background thread."""

    def __init__(self, settings: PredictionLogSettings, tag: str, columns: list[tuple[str, str, int | None]],
                 sink: Any = None):
        self.settings, self.tag = settings, tag
        self.redact = frozenset(settings.redact)
        self.columns = columns
        self.by_tensor: dict[str, list[tuple[str, int | None]]] = {}
        for name, tensor, column in columns:
            self.by_tensor.setdefault(tensor, []).append((name, column))
        # One item per sampled run; its records are counted against queue_size (a bound in records).
        self.queue: deque[tuple] = deque()
        self._stop = threading.Event()
        self._queued = 0
        self._lock = threading.Lock()
        self._full_reported = False
        self.dropped = 0
        self.written = 0
        self.failed = 0
        self._sink = sink
        self._gaps = np.random.default_rng()
        self._random = random.Random()
        # Rows of the stream until the next logged one (see _pick); the first is drawn like every other gap.
        self._skip = int(self._gaps.geometric(settings.sample_rate)) - 1 if 0 < settings.sample_rate < 1 else 0
        self._plans: dict[str, _ColumnPlan] = {}
        self._run_prefix, self._run_ids = uuid.uuid4().hex[:16], itertools.count(1)  # unique across processes
        self._reported: set[str] = set()
        self._thread = threading.Thread(target=self._drain, name="bento-prediction-log", daemon=True)
        self._thread.start()
        self._closed = False
        # A daemon thread dies with the process: write what is queued at exit (one-shot `run predict`, batch
        # workers, a CLI), bounded so a dead sink cannot hold the exit.
        atexit.register(self.close, EXIT_FLUSH_SECONDS)
        if "multiprocessing" in sys.modules:  # pool workers leave through os._exit, which skips atexit
            from multiprocessing.util import Finalize

            Finalize(self, self.close, args=(EXIT_FLUSH_SECONDS,), exitpriority=10)

    def _report_once(self, message: str) -> None:
        if message not in self._reported:
            self._reported.add(message)
            log.warning("prediction log: %s", message)

    def offer_run(self, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray], seconds: float,
                  request_ids: RequestIds = None) -> None:
        """Sample this run's rows and queue them (copies of the sampled rows only: the records are made and
        serialized in the log thread). `request_ids`: the run's one id, or (id, rows) per request in the run's
        row order when several requests share it (the HTTP micro-batcher). Never raises, never blocks."""
        rate = self.settings.sample_rate
        if rate <= 0:
            return
        try:
            rows = _rows(feeds, outputs)
            picked = np.arange(rows) if rate >= 1 else self._pick(rows, rate)
            if picked is None:
                return
            with self._lock:
                room = self.settings.queue_size - self._queued
                if room < len(picked):
                    self.dropped += len(picked) - max(room, 0)
                    picked = picked[:max(room, 0)]
                self._queued += len(picked)
            if self.dropped and not self._full_reported:
                self._full_reported = True
                self._report_once(f"the queue is full ({self.settings.queue_size} records): records are dropped "
                                  "and counted (bento_prediction_log_dropped_total)")
            if not len(picked):
                return
            taken = {name: _rows_of(value, picked, rows) for name, value in feeds.items()}
            answers = {name: _rows_of(value, picked, rows) for name, value in outputs.items()}
            self.queue.append((taken, answers, len(picked), _ids_of(request_ids, picked), time.time(), seconds))
        except Exception as exc:
            self._report_once(f"a record could not be made ({type(exc).__name__}: {exc})")

    def _pick(self, rows: int, rate: float) -> np.ndarray | None:
        """The rows of this run that are logged (None: none). Each row of the stream is logged with probability
        `rate`, drawn as the gaps between logged rows (geometric): a run that holds no logged row costs two
        integer operations, a large run one draw per LOGGED row, never a draw per row it holds."""
        with self._lock:
            skip = self._skip
            if skip >= rows:
                self._skip = skip - rows
                return None
            if (rows - skip) * rate < 16:  # a few logged rows (every HTTP run): Python's draws beat numpy's calls
                picked = []
                while skip < rows:
                    picked.append(skip)
                    skip += self._gap(rate)
                self._skip = skip - rows
                return np.array(picked, dtype=np.int64)
            found = np.array([skip], dtype=np.int64)
            while found[-1] < rows:
                more = int((rows - found[-1]) * rate * 1.25) + 4
                found = np.concatenate([found, found[-1] + np.cumsum(self._gaps.geometric(rate, more))])
            end = int(np.searchsorted(found, rows))
            self._skip = int(found[end]) - rows
            return found[:end]

    def _gap(self, rate: float) -> int:
        """Rows from one logged row to the next: geometric, by inversion of one uniform draw."""
        return int(math.log(1.0 - self._random.random()) / math.log1p(-rate)) + 1

    def _lines(self, item: tuple) -> list[bytes]:
        feeds, outputs, count, ids, now, seconds = item
        if ids is None or (isinstance(ids, list) and None in ids):  # no id given: one of the run's own
            run_id = f"{self._run_prefix}-{next(self._run_ids):x}"  # a uuid4 per run was 1 % of batch scoring
            ids = run_id if ids is None else [i or run_id for i in ids]
        if isinstance(ids, list):  # a header's bytes, or the server's request number: as text
            ids = [i if isinstance(i, str) else i.decode("latin-1") if isinstance(i, bytes)
                   else f"{self._run_prefix}-r{i:x}" for i in ids]
        elif not isinstance(ids, str):
            ids = ids.decode("latin-1") if isinstance(ids, bytes) else f"{self._run_prefix}-r{ids:x}"
        item = (feeds, outputs, count, ids, now, seconds)
        if _orjson is None:  # stdlib JSON, one row at a time (artifacts without orjson: edge `run` bundles)
            return [self._record(feeds, outputs, row, count, _id_at(ids, row), now, seconds) for row in range(count)]
        try:
            return self._table_lines(feeds, outputs, count, ids, now, seconds)
        except (TypeError, ValueError):  # a dtype orjson cannot take from numpy (strings, objects): per row
            return self._plain_lines(item)

    def _table_lines(self, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray], count: int,
                     ids: str | list[str | None], now: float, seconds: float) -> list[bytes]:
        """A run's records with no Python per row or per value: every value of a tensor is formatted by one
        orjson call (in the tensor's own precision, non-finite as null) and split into cells; the cells of
        all fields are laid out row by row in one object array, and one %-format of the record's template
        (names, brackets and separators, `%b` per value) repeated `count` times writes every line."""
        meta = {"time": round(now, 3), "request_id": "", "bento": self.tag, "latency_ms": round(seconds * 1000, 3)}
        head, _, tail = _orjson.dumps(meta)[:-1].replace(b"%", b"%%").partition(b'"request_id":""')
        fields: list[tuple[bytes, list[Any] | np.ndarray, int]] = []  # (template, cells row by row, cells per row)
        id_cells = [_orjson.dumps(i) for i in ids] if isinstance(ids, list) else [_orjson.dumps(ids)] * count
        fields.append((b'"request_id":%b', id_cells, 1))
        for tensor, value in feeds.items():
            columns = self.by_tensor.get(tensor)
            if columns and np.ndim(value) and len(value) == count:
                template, cells, width = self._named_cells(tensor, value, columns, count)
            elif tensor in self.redact:
                continue
            else:  # a whole tensor, or a row tensor without named columns: its JSON per row
                template = _key(tensor) + b"%b"
                cells, width = [_orjson.dumps(_tensor_value(value, row, count)) for row in range(count)], 1
            if width:
                fields.append((template, cells, width))
        inputs_end = len(fields)
        answers: list[bytes] = []
        for name, value in outputs.items():
            if np.ndim(value) in (1, 2) and len(value) == count and np.size(value) <= _MAX_VALUES_PER_TENSOR * count:
                template, cells = _key(name) + (b"%b" if np.ndim(value) == 1 else b"[%b]"), _row_cells(value)
            else:
                template = _key(name) + b"%b"
                cells = [_orjson.dumps(_tensor_value(value, row, count)) for row in range(count)]
            answers.append(template)
            fields.append((template, cells, 1))
        line = (head + b'"request_id":%b' + tail + b',"inputs":{' + b",".join(t for t, _, _ in fields[1:inputs_end])
                + b'},"outputs":{' + b",".join(answers) + b"}}\n")
        table = np.empty((count, sum(width for _, _, width in fields)), dtype=object)
        at = 0
        for _, cells, width in fields:
            table[:, at:at + width] = np.asarray(cells, dtype=object).reshape(count, width)
            at += width
        return ((line * count) % tuple(table.ravel())).splitlines(keepends=True)

    def _named_cells(self, tensor: str, value: np.ndarray, columns: list[tuple[str, int | None]],
                     count: int) -> tuple[bytes, Any, int]:
        """A row tensor's named columns: their template, their cells row by row, and how many per row."""
        plan = self._plans.get(tensor)
        if plan is None:
            plan = self._plans[tensor] = _ColumnPlan(columns, self.redact, self.settings.redact_mode)
        width = len(plan.indices)
        if not width:
            return b"", [], 0
        cells = np.asarray(_flat_cells(plan.select(value)), dtype=object).reshape(count, width)
        for position, column in plan.hashed:  # a redacted value's hash instead of the value
            cells[:, position] = [_orjson.dumps(_hashed(v)) for v in np.asarray(column_of(value, column)).tolist()]
        return plan.template, cells, width

    def _plain_lines(self, item: tuple) -> list[bytes]:
        """Records of tensors orjson cannot take as numpy arrays: Python lists first, then one dict per row."""
        feeds, outputs, count, ids, now, seconds = item
        inputs: list[dict[str, Any]] = [{} for _ in range(count)]
        for tensor, value in feeds.items():
            columns = self.by_tensor.get(tensor)
            if columns and np.ndim(value) and len(value) == count:
                table = _plain(value)
                for name, column in columns:
                    if name in self.redact and self.settings.redact_mode == "drop":
                        continue
                    for row, values in zip(inputs, table, strict=True):
                        item = values if column is None else values[column]
                        row[name] = _hashed(item) if name in self.redact else item
            elif tensor not in self.redact:
                for row_number, row in enumerate(inputs):
                    row[tensor] = _tensor_value(value, row_number, count)
        answers = {name: _plain(value) if np.ndim(value) and len(value) == count else None
                   for name, value in outputs.items()}
        meta = {"time": round(now, 3), "bento": self.tag, "latency_ms": round(seconds * 1000, 3)}
        return [_orjson.dumps({**meta, "request_id": _id_at(ids, row), "inputs": inputs[row],
                               "outputs": {name: (values[row] if values is not None else
                                                  _tensor_value(outputs[name], row, count))
                                           for name, values in answers.items()}}) + b"\n"
                for row in range(count)]

    def _record(self, feeds, outputs, row: int, rows: int, run_id: str, now: float, seconds: float) -> bytes:
        inputs: dict[str, Any] = {}
        for tensor, value in feeds.items():
            columns = self.by_tensor.get(tensor)
            if columns and np.ndim(value) and len(value) == rows:
                for name, column in columns:
                    item = _json_value(value[row] if column is None else value[row, column])
                    if name in self.redact:
                        if self.settings.redact_mode == "drop":
                            continue
                        item = _hashed(item)
                    inputs[name] = item
            elif tensor not in self.redact:
                inputs[tensor] = _tensor_value(value, row, rows)
        answer = {name: _tensor_value(value, row, rows) for name, value in outputs.items()}
        record = {"time": round(now, 3), "request_id": run_id, "bento": self.tag,
                  "latency_ms": round(seconds * 1000, 3), "inputs": inputs, "outputs": answer}
        return json.dumps(record, allow_nan=False, default=str).encode() + b"\n"

    def _drain(self) -> None:
        try:
            if self._sink is None:
                self._sink = open_sink(self.settings)
        except Exception as exc:
            self._report_once(f"the sink {self.settings.to} cannot be opened ({type(exc).__name__}: {exc}); "
                              "records are dropped")
            self._sink = _NullSink()
        # Woken on a timer, not per run: a run only appends to a deque, and never hands the GIL to this thread.
        while True:
            done = self._stop.wait(DRAIN_SECONDS)
            runs = []
            while self.queue:
                runs.append(self.queue.popleft())
            lines: list[bytes] = []
            for item in runs:
                try:
                    lines.extend(self._lines(item))
                except Exception as exc:
                    self.failed += item[2]
                    self._report_once(f"a record could not be made ({type(exc).__name__}: {exc})")
                # Hand the GIL over between runs: a thread waiting for it (the scorer's, the event loop) would
                # otherwise wait out the interpreter's switch interval (5 ms) behind a long drain.
                time.sleep(0)
            with self._lock:
                self._queued -= sum(i[2] for i in runs)
            self._write(lines)
            if not lines:
                self._tick()
            if done:
                self._close_sink()
                return

    def _tick(self) -> None:
        """A quiet period: let a batching sink (S3) write what it holds once it is old enough."""
        tick = getattr(self._sink, "tick", None)
        if tick is None:
            return
        try:
            self.written += tick()
        except Exception as exc:
            self.failed += exc.lost if isinstance(exc, SinkFailed) else 0
            self._report_once(f"writing to {self.settings.to} failed ({type(exc).__name__}: {exc})")

    def _write(self, batch: list[bytes]) -> None:
        if not batch:
            return
        try:
            self.written += self._sink.write(batch)
        except Exception as exc:
            self.failed += exc.lost if isinstance(exc, SinkFailed) else len(batch)
            self._report_once(f"writing to {self.settings.to} failed ({type(exc).__name__}: {exc}); "
                              "those records are dropped and counted")

    def _close_sink(self) -> None:
        try:
            self.written += self._sink.close()
        except Exception as exc:
            self.failed += exc.lost if isinstance(exc, SinkFailed) else 0
            self._report_once(f"closing {self.settings.to} failed ({type(exc).__name__}: {exc})")

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and close the sink (S3: the last object); used at shutdown and in tests."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(timeout)

    def figures(self) -> dict[str, Any]:
        return {"to": self.settings.to.split("?")[0], "sample_rate": self.settings.sample_rate,
                "written": self.written, "dropped": self.dropped, "failed": self.failed,
                "queued": self._queued}


class _NullSink:
    def write(self, lines: list[bytes]) -> int:
        raise OSError("the sink could not be opened")

    def close(self) -> int:
        return 0


def _rows(feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> int:
    for value in (*feeds.values(), *outputs.values()):
        if np.ndim(value):
            return len(value)
    return 1


def _plain(value: np.ndarray) -> list[Any]:
    """A row-aligned tensor as Python lists in one call; non-finite floats become NaN (orjson writes null)."""
    array = np.asarray(value)
    if array.dtype.kind == "f":
        array = np.where(np.isfinite(array), array, np.nan)
    return array.tolist()


def _hashed(value: Any) -> str:
    clean = None if isinstance(value, float) and value != value else value
    return "sha256:" + hashlib.sha256(json.dumps(clean).encode()).hexdigest()


# A run's request id, or (id, rows) per request of a run that several requests share, in row order. An id is
# text, a header's bytes, or a number of the server's (turned into text in the log thread, for logged rows only).
RequestIds = str | Sequence[tuple[str | bytes | int | None, int]] | None


def _ids_of(request_ids: RequestIds, picked: np.ndarray) -> Any:
    """The request id of each picked row (one id for the whole run when it has one)."""
    if request_ids is None or isinstance(request_ids, str):
        return request_ids
    ends = np.cumsum([rows for _, rows in request_ids])
    return [request_ids[i][0] for i in np.searchsorted(ends, picked, side="right")]


def _id_at(ids: str | list[str | None] | None, row: int) -> str | None:
    return ids[row] if isinstance(ids, list) else ids


class _ColumnPlan:
    """How one row tensor's cells become `"name":value` pairs: the key of each logged column, which columns
    are logged (redacted ones dropped), and where a hash replaces a value."""

    def __init__(self, columns: list[tuple[str, int | None]], redact: frozenset[str], mode: str):
        logged = [(name, column) for name, column in columns if not (name in redact and mode == "drop")]
        # `"name":%b,...`: the %-format puts every name before its value (4x a join over pairs).
        self.template = b",".join(_orjson.dumps(name).replace(b"%", b"%%") + b":%b" for name, _ in logged)
        self.hashed = [(position, column) for position, (name, column) in enumerate(logged) if name in redact]
        indices = [0 if column is None else column for _, column in logged]
        self.identity = indices == list(range(len(indices)))
        self.indices = indices

    def select(self, value: np.ndarray) -> np.ndarray:
        """The logged columns of a row tensor, in order (a copy only when some are dropped)."""
        return value if self.identity or np.ndim(value) != 2 else value[:, self.indices]


def _key(name: str) -> bytes:
    """`"name":` for a %-format template."""
    return _orjson.dumps(name).replace(b"%", b"%%") + b":"


def _numeric_json(value: np.ndarray) -> tuple[bytes, int]:
    """A 1-D or 2-D numeric tensor as JSON from one orjson call, without its outer brackets, and its rank;
    TypeError for any other tensor (its records are then made row by row)."""
    array = np.ascontiguousarray(value)
    text = _orjson.dumps(array, option=_orjson.OPT_SERIALIZE_NUMPY)
    if array.ndim == 1:
        return text[1:-1], 1
    if array.ndim != 2 or not array.shape[1]:
        raise TypeError("only 1-D and 2-D tensors are formatted in one call")
    return text[2:-2], 2


def _row_cells(value: np.ndarray) -> list[bytes]:
    """Each row of a 1-D or 2-D numeric tensor as JSON (a 2-D row without its brackets)."""
    text, rank = _numeric_json(value)
    return text.split(b",") if rank == 1 else text.split(b"],[")


def _flat_cells(value: np.ndarray) -> list[bytes]:
    """The JSON of every value of a 1-D or 2-D numeric tensor, row after row."""
    text, rank = _numeric_json(value)
    return (text if rank == 1 else text.replace(b"],[", b",")).split(b",")


def _rows_of(value: np.ndarray, picked: np.ndarray, rows: int) -> np.ndarray:
    """The picked rows of a row-aligned tensor (a copy of those rows only); a whole tensor as it is."""
    return value[picked] if np.ndim(value) and len(value) == rows else value


def _json_value(value: Any) -> Any:
    item = value.item() if isinstance(value, np.generic) else value
    if isinstance(item, float) and not np.isfinite(item):
        return None if np.isnan(item) else ("inf" if item > 0 else "-inf")
    return item


def _tensor_value(value: np.ndarray, row: int, rows: int) -> Any:
    part = value[row] if np.ndim(value) and len(value) == rows else value
    part = np.asarray(part)
    if part.size > _MAX_VALUES_PER_TENSOR:
        return {"shape": list(part.shape), "dtype": str(part.dtype)}
    if part.dtype.kind == "f":
        cleaned = np.where(np.isfinite(part), part, np.nan).astype(object)
        cleaned[np.isnan(part.astype(np.float64))] = None
        return cleaned.tolist()
    return part.tolist()


def prediction_log_for(manifest: Manifest, info: MonitoringInfo) -> PredictionLog | None:
    settings = effective_log_settings(info.log)
    if settings is None:
        return None
    columns = feature_columns(manifest.inputs, manifest.model.feature_names)
    return PredictionLog(settings, manifest.tag, columns)
