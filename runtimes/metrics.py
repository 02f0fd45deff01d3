"""Prometheus metrics for the serving path (prometheus-client), on a registry of our own.

Names (all prefixed `bento_`):
  request_total{route,status}              counter   every HTTP request
  request_duration_seconds{route,status}   histogram server time, read → last byte written
  rejected_total{reason}                   counter   503s: queue_full, deadline, timeout, concurrency, not_ready
  batch_size_rows                          histogram rows per model run
  batch_requests                           histogram requests per model run
  inference_duration_seconds               histogram one model run (a whole batch)
  queue_wait_seconds                       histogram time a request waited for its batch
  queue_depth_rows                         gauge     rows waiting now
  in_flight_requests                       gauge     /predict requests being served now
  model_load_seconds                       gauge     hash check + session creation
  cold_start_seconds                       gauge     process start → model ready
  model_info{tag,device,providers}         gauge = 1 the provider ACTUALLY in use (session.get_providers())
  request_phase_seconds{phase}             histogram where a /predict request's server time goes: read (the body),
                                                     parse (JSON + signature), loop_blocked (waiting while runs of
                                                     OTHER batches held the event loop), encode (outputs to JSON),
                                                     write (handing the answer to the transport)
  gc_pause_seconds{generation}             histogram each cyclic-GC collection (gc.callbacks): a stop-the-world
                                                     pause every request in the process waits out

A private CollectorRegistry (not the global one) so that two apps in one process (tests,
Lambda warm containers) never collide. Label children for the common (route, status) pairs
are cached: `labels()` takes a lock and a dict lookup that the hot path does not need.

The hot path does not observe histograms one value at a time: prometheus-client's `observe`
walks the buckets in Python and takes a lock per value (~2.5 µs here, and a request makes eight
observations). Each histogram child is fed through a `_Deferred` instead: an observation is a
deque append (no lock, safe from any thread), and every 64 requests, every scrape and (with
several workers) every half second, the values are counted into buckets and added to the child
in bulk, one locked increment per non-empty bucket. A scrape sees every value its own process
observed before it; with several workers, the other workers' values at most half a second late.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections import deque
from collections.abc import Callable

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    AVAILABLE = True
except ImportError:  # an artifact built without it still serves; /metrics says what is missing
    AVAILABLE = False
    CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RUN_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = CONTENT_TYPE_LATEST
PHASES = ("read", "parse", "loop_blocked", "encode", "write")
# prometheus-client's own variable: set (by the worker supervisor) before the client is imported.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def process_start_time() -> float:
    """When this process started, in time.time() seconds (Linux /proc; else now)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as handle:
            uptime = float(handle.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


class Metrics:
    """The runtime's metrics; also a `BatchObserver` for the batcher."""

    # prometheus-client metrics, or one _NullMetric for all of them when an artifact was built without it.
    registry: CollectorRegistry | None
    requests: Counter | _NullMetric
    rejections: Counter | _NullMetric
    latency: Histogram | _NullMetric
    batch_rows: Histogram | _NullMetric
    batch_requests: Histogram | _NullMetric
    inference: Histogram | _NullMetric
    wait: Histogram | _NullMetric
    depth: Gauge | _NullMetric
    in_flight: Gauge | _NullMetric
    load_seconds: Gauge | _NullMetric
    cold_start: Gauge | _NullMetric
    info: Gauge | _NullMetric
    phases: dict[str, _Deferred]
    phase: Histogram | _NullMetric
    gc_pause: Histogram | _NullMetric

    def __init__(self) -> None:
        if not AVAILABLE:
            self._null()
            return
        # Several workers (adapters/workers.py) share one metrics folder: each process writes its values to
        # its own files there, and /metrics, whichever worker answers it, sums them all (prometheus-client's
        # multiprocess mode). The metrics themselves are then registered nowhere: the collector reads files.
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        self.registry = CollectorRegistry(auto_describe=True)
        if self.multiprocess:
            from prometheus_client.multiprocess import MultiProcessCollector

            MultiProcessCollector(self.registry)
        registry = None if self.multiprocess else self.registry
        self.requests = Counter("bento_request_total", "HTTP requests", ["route", "status"], registry=registry)
        self.latency = Histogram("bento_request_duration_seconds", "HTTP request time in the server",
                                 ["route", "status"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.rejections = Counter("bento_rejected_total", "Requests refused with 503", ["reason"], registry=registry)
        self.batch_rows = Histogram("bento_batch_size_rows", "Rows per model run", buckets=_ROW_BUCKETS,
                                    registry=registry)
        self.batch_requests = Histogram("bento_batch_requests", "Requests per model run", buckets=_ROW_BUCKETS,
                                        registry=registry)
        self.inference = Histogram("bento_inference_duration_seconds", "One model run (a whole batch)",
                                   buckets=_RUN_BUCKETS, registry=registry)
        self.wait = Histogram("bento_queue_wait_seconds", "Time a request waited for its batch",
                              buckets=_RUN_BUCKETS, registry=registry)
        # Across workers: rows waiting and requests in flight add up; load and cold-start times are the slowest's.
        self.depth = Gauge("bento_queue_depth_rows", "Rows waiting for a batch", registry=registry,
                           multiprocess_mode="livesum")
        self.in_flight = Gauge("bento_in_flight_requests", "/predict requests being served", registry=registry,
                               multiprocess_mode="livesum")
        self.load_seconds = Gauge("bento_model_load_seconds", "Hash check + session creation", registry=registry,
                                  multiprocess_mode="max")
        self.cold_start = Gauge("bento_cold_start_seconds", "Process start to model ready", registry=registry,
                                multiprocess_mode="max")
        self.info = Gauge("bento_model_info", "The Bento served and the execution provider in use",
                          ["tag", "device", "providers"], registry=registry, multiprocess_mode="max")
        self.phase = Histogram("bento_request_phase_seconds", "Where /predict time goes in the server",
                               ["phase"], buckets=(*_RUN_BUCKETS, 2.5, 5.0), registry=registry)
        self.gc_pause = Histogram("bento_gc_pause_seconds", "Cyclic garbage collections (stop the world)",
                                  ["generation"], buckets=_RUN_BUCKETS, registry=registry)
        _GC_WATCH.add(self.gc_pause)
        self._live: list[tuple[Gauge, Callable[[], float]]] = []
        self._defer()

    def _defer(self) -> None:
        """The hot path's observations, gathered and added in bulk (see the module doc)."""
        self._children: dict[tuple[str, int], _Deferred] = {}
        self.phases = {name: _Deferred(self.phase.labels(name)) for name in PHASES}
        self._batch_rows = _Deferred(self.batch_rows)
        self._batch_requests = _Deferred(self.batch_requests)
        self._inference = _Deferred(self.inference)
        self._wait = _Deferred(self.wait)
        self._deferred = [*self.phases.values(), self._batch_rows, self._batch_requests, self._inference, self._wait]
        self._since_flush = 0

    def _null(self) -> None:
        null = _NullMetric()
        self.registry = None
        self.multiprocess = False
        self._live = []
        self.requests = self.latency = self.rejections = self.batch_rows = self.batch_requests = null
        self.inference = self.wait = self.depth = self.in_flight = self.load_seconds = self.cold_start = null
        self.info = self.phase = self.gc_pause = null
        self._defer()

    # HTTP
    def request(self, route: str, status: int, seconds: float) -> None:
        if _GC_WATCH.pending:
            _GC_WATCH.flush()
        key = (route, status)
        child = self._children.get(key)
        if child is None:
            # The request counter moves with the latency histogram: one increment per value it takes in.
            child = _Deferred(self.latency.labels(route, str(status)), self.requests.labels(route, str(status)))
            self._deferred.append(child)
            self._children[key] = child
        child.observe(seconds)
        self._since_flush += 1
        if self._since_flush >= _FLUSH_EVERY:  # small flushes, often: never a long stop of the event loop
            self.flush()

    def flush(self) -> None:
        """Add every value observed so far to the metrics (any thread; also called by a scrape)."""
        self._since_flush = 0
        for deferred in list(self._deferred):
            deferred.flush()

    def live(self, gauge: Gauge | _NullMetric, read: Callable[[], float]) -> None:
        """A gauge read when scraped, not kept up to date on the hot path. With several workers, a scrape
        reads only the answering process, so each worker also copies its value to its file every
        half second (a gauge, sampled anyway)."""
        if not self.multiprocess:
            gauge.set_function(read)
            return
        self._live.append((gauge, read))  # type: ignore[arg-type]
        if len(self._live) == 1:
            threading.Thread(target=self._copy_live_gauges, name="bento-metrics-live", daemon=True).start()

    def _copy_live_gauges(self) -> None:
        while True:
            self._refresh_live()
            time.sleep(0.5)

    def _refresh_live(self) -> None:
        self.flush()  # with several workers another process may answer the scrape: it reads this one's files
        for gauge, read in self._live:
            with contextlib.suppress(Exception):  # a gauge must never take the server down
                gauge.set(read())

    def model_loaded(self, tag: str, providers: list[str], device: str, load_seconds: float) -> None:
        self.load_seconds.set(load_seconds)
        self.cold_start.set(max(0.0, time.time() - process_start_time()))
        self.info.labels(tag, device, ",".join(providers)).set(1)

    def watch_monitoring(self, backend_of) -> None:
        """Drift figures of the model's backend, read at scrape time (runtimes/monitoring_metrics.py)."""
        if self.registry is None or getattr(self, "_watching", False):
            return
        from bento_compile.runtimes.monitoring_metrics import MonitoringCollector

        self.registry.register(MonitoringCollector(backend_of))
        self._watching = True

    def render(self) -> bytes:
        if self.registry is None:
            return b"# prometheus-client is not installed in this artifact: add it to the image's requirements\n"
        self._refresh_live()
        _GC_WATCH.flush()
        return generate_latest(self.registry)

    # BatchObserver (called from the inference threads too: the deferred appends are thread-safe)
    def batch(self, rows: int, requests: int, run_seconds: float) -> None:
        self._batch_rows.observe(rows)
        self._batch_requests.observe(requests)
        self._inference.observe(run_seconds)

    def queue_wait(self, seconds: float) -> None:
        self._wait.observe(seconds)

    def queue_depth(self, rows: int) -> None:
        pass  # the gauge reads the batcher's counter when scraped (set_function): nothing on the hot path

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()


_FLUSH_EVERY = 64  # requests between two flushes of the deferred observations


class _Deferred:
    """One histogram child's observations, gathered with a deque append and added to it in bulk.

    `observe` IS the deque's append (the cheapest call there is; atomic, so any thread may observe).
    `flush` takes what is there, counts it into the child's buckets (bisect over its upper bounds,
    the same `value <= bound` rule as `Histogram.observe`) and adds one increment per non-empty bucket
    and one to the sum, each under the child's own lock; `counter`, when given, is incremented by the
    number of values (a request counter that moves with its latency histogram). A child without the
    bucket attributes this relies on (another prometheus-client, or the _NullMetric) is observed one
    value at a time instead: slower, never wrong."""

    __slots__ = ("_bounds", "_child", "_counter", "_pending", "observe")

    def __init__(self, child: Histogram | _NullMetric, counter: Counter | _NullMetric | None = None):
        self._child = child
        self._counter = counter
        bounds = getattr(child, "_upper_bounds", None)
        bulk = bounds is not None and hasattr(child, "_buckets") and hasattr(child, "_sum")
        self._bounds: list[float] | None = list(bounds) if bulk and bounds is not None else None
        self._pending: deque[float] = deque()
        self.observe: Callable[[float], None] = self._pending.append

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        taken: list[float] = []
        while True:  # popleft, not a copy and clear(): values appended meanwhile by another thread stay
            try:
                taken.append(pending.popleft())
            except IndexError:
                break
        child = self._child
        if self._bounds is None:
            for value in taken:
                child.observe(value)
        else:
            bounds = self._bounds
            counts = [0] * len(bounds)
            for value in taken:
                counts[bisect_left(bounds, value)] += 1
            buckets = child._buckets  # type: ignore[union-attr]
            for index, count in enumerate(counts):
                if count:
                    buckets[index].inc(count)
            child._sum.inc(sum(taken))  # type: ignore[union-attr]
        if self._counter is not None:
            self._counter.inc(len(taken))


class _GcWatch:
    """Times every cyclic-GC collection (gc.callbacks) into each live Metrics' histogram. One callback per
    process however many apps it holds (tests, warm Lambda containers); a dropped app stops being fed.

    The callback only appends to a deque: a collection can start inside ANY allocation, including one
    made while prometheus-client holds a metric's (non-reentrant) lock, so observing from the callback
    deadlocks the process (seen: a worker stuck for good at SIGTERM). The pauses are moved into the
    histograms after each request and before each scrape, outside any lock."""

    def __init__(self) -> None:
        self._targets: weakref.WeakSet = weakref.WeakSet()
        self.pending: deque[tuple[int, float]] = deque(maxlen=4096)
        self._started = 0.0
        self._installed = False

    def add(self, histogram: Histogram) -> None:
        self._targets.add(histogram)
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pending.append((info.get("generation", -1), time.perf_counter() - self._started))

    def flush(self) -> None:
        pending = self.pending
        while pending:
            try:
                generation, seconds = pending.popleft()
            except IndexError:  # drained by another thread meanwhile
                return
            for histogram in list(self._targets):
                histogram.labels(str(generation)).observe(seconds)


_GC_WATCH = _GcWatch()


class _NullMetric:
    """Stands in for every metric when prometheus-client is missing: accepts every call, records nothing."""

    def labels(self, *_args: object) -> _NullMetric:
        return self

    def inc(self, *_args: object) -> None:
        pass

    def observe(self, *_args: object) -> None:
        pass

    def set(self, *_args: object) -> None:
        pass

    def set_function(self, *_args: object) -> None:
        pass
