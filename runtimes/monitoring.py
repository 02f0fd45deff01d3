"""Live drift statistics: every model run's inputs and outputs binned against the Bento's baseline.

`monitored(backend, manifest)` wraps the session that `open_backend` returns, so every adapter (HTTP,
Lambda, edge `run`) and the batch engine get monitoring without a line of their own. It is the bare
backend (nothing added to a run) unless monitoring is on: `monitoring:` in bento.yaml, switched per
deployment by env BENTO_COMPILE_MONITORING=on|off. A run is binned with vectorized numpy, never a loop over
rows: small runs are gathered by reference and binned PENDING_ROWS at a time, and once the window is full one
large run in LARGE_RUN_EVERY adds an evenly spaced subset of MAX_BINNED_ROWS rows to that gathering. The
prediction log's sample is drawn as the gaps between logged rows (a run that holds none costs two integer
operations). A caller that times the model's run itself (the HTTP batcher, whose latency model decides what runs inline)
takes the bare run and `after_run` apart (`run_and_after`), so monitoring never counts as model time.

The window (`monitoring.window` rows, or `window_seconds`) is a ring of WINDOW_SEGMENTS segments: the
figures cover between (segments-1)/segments of the window and all of it, with memory bounded whatever
the traffic. A failure inside monitoring is logged once and counted, never raised into a request.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from bento_compile.runtimes.drift import binners_for, padded, psi, shares
from bento_compile.runtimes.manifest import FeatureBaseline, Manifest, MonitoringInfo
from bento_compile.runtimes.monitoring_share import WindowShare

log = logging.getLogger("bento_compile.monitoring")

WINDOW_SEGMENTS = 10
# Rows binned per large run (PENDING_ROWS or more) once the window has filled: drift is a property of the
# distribution, and a sample of a large batch estimates it as well as every row would, at a bounded cost (the
# window then counts binned rows). While the window fills, every row is binned. Binning is O(rows x features
# x log bins), as costly as a small model's own run: unbounded, monitoring a logistic regression costs more
# than the model itself (bench/RESULTS.md).
MAX_BINNED_ROWS = 16
LARGE_RUN_EVERY = 4
# Runs smaller than this are gathered and binned together (the per-call cost of numpy dominates tiny runs).
PENDING_ROWS = 256
# Set by an adapter that runs the model in the request's own thread (Lambda): the log record's request id.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("bento_request_id", default=None)


def monitoring_enabled(info: MonitoringInfo | None) -> bool:
    """Live monitoring for this deployment: env BENTO_COMPILE_MONITORING (on|off) over the Bento's setting."""
    switch = os.environ.get("BENTO_COMPILE_MONITORING", "").strip().lower()
    if switch not in ("", "on", "off", "1", "0", "true", "false"):
        raise ValueError(f"BENTO_COMPILE_MONITORING must be on or off, got {switch!r}")
    if switch in ("off", "0", "false"):
        return False
    if info is None or not (info.features or info.outputs):
        return False
    return switch in ("on", "1", "true") or info.enabled


def logs_predictions(manifest: Manifest) -> bool:
    """Whether this deployment writes a prediction log (monitoring on, a log configured, a rate above 0)."""
    try:
        if not monitoring_enabled(manifest.monitoring):
            return False
        from bento_compile.runtimes.prediction_log import effective_log_settings

        settings = effective_log_settings(manifest.monitoring.log if manifest.monitoring else None)
    except ValueError:  # a malformed switch: the model's load fails and says why
        return False
    return settings is not None and settings.sample_rate > 0


class _Group:
    """The features read from one tensor, and where their counts sit in the window's flat vector."""

    def __init__(self, tensor: str, binner: Any, start: int, is_output: bool):
        self.tensor, self.binner, self.is_output = tensor, binner, is_output
        count = len(binner.features)
        self.bins = slice(start, start + count * binner.width)
        self.missing = slice(self.bins.stop, self.bins.stop + count)
        self.outside = slice(self.missing.stop, self.missing.stop + count)
        self.rows = self.outside.stop
        self.stop = self.rows + 1


class Monitor:
    """Sliding-window histograms of one Bento's features and outputs; thread-safe, cheap per run."""

    def __init__(self, info: MonitoringInfo, tag: str = ""):
        self.info, self.tag = info, tag
        self.window_rows = info.window
        self.window_seconds = info.window_seconds
        self.groups: list[_Group] = []
        start = 0
        for features, is_output in ((info.features, False), (info.outputs, True)):
            for tensor, binner in binners_for(list(features)):
                group = _Group(tensor, binner, start, is_output)
                self.groups.append(group)
                start = group.stop
        self.size = start
        self._lock = threading.Lock()
        self._current = np.zeros(self.size)
        self._current_rows = 0
        self._current_started = time.monotonic()
        self._closed: deque[tuple[float, np.ndarray]] = deque(maxlen=WINDOW_SEGMENTS - 1)
        self._out_of_range_total = np.zeros(self.size)
        self.runs = 0
        self._binned_total = 0
        self.errors = 0
        self._reported: set[str] = set()
        self._inputs = sorted({g.tensor for g in self.groups if not g.is_output})
        self._outputs = sorted({g.tensor for g in self.groups if g.is_output})
        self._pending: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = []
        self._pending_rows = 0
        self._pending_lock = threading.Lock()
        self._large_runs = 0
        for feature in (*info.features, *info.outputs):
            if feature.note:
                self.report_once(f"{feature.name}: {feature.note}")
        # A worker of several publishes its window, and answers with every worker's (runtimes/monitoring_share.py).
        self.share: WindowShare | None = None
        try:
            self.share = WindowShare.from_env(self.size)
        except OSError as exc:
            self.report_once(f"the window cannot be shared with the other workers ({exc}): this worker's "
                             "figures cover its own traffic only")
        if self.share is not None:
            self.share.keep_publishing(self.publish)

    def report_once(self, message: str) -> None:
        """Each distinct problem is logged once per process (never once per request)."""
        if message not in self._reported and len(self._reported) < 1000:
            self._reported.add(message)
            log.warning("monitoring: %s", message)

    def observe(self, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Take one model run. Small runs wait (by reference) until PENDING_ROWS rows have gathered, then are
        binned together: a single-row run costs an append, not a dozen numpy calls. Never raises."""
        rows = _run_rows(feeds, outputs)
        if rows >= PENDING_ROWS and self._binned_total >= self.window_rows:
            # Window full: one large run in LARGE_RUN_EVERY joins the gathering as an evenly spaced subset
            # (views, no copy), so batch scoring bins once per that many times PENDING_ROWS // MAX_BINNED_ROWS
            # runs, and the others cost a counter.
            skip, self._large_runs = self._large_runs % LARGE_RUN_EVERY, self._large_runs + 1
            if skip:
                return
            step = rows // MAX_BINNED_ROWS
            start = self.runs % step  # another offset each time: every row of a run may be counted
            feeds = {name: value[start::step] if np.ndim(value) and len(value) == rows else value
                     for name, value in feeds.items()}
            outputs = {name: value[start::step] if np.ndim(value) and len(value) == rows else value
                       for name, value in outputs.items()}
            rows = _run_rows(feeds, outputs)
        elif rows >= PENDING_ROWS:
            self._bin_run(feeds, outputs)
            return
        with self._pending_lock:
            self._pending.append((feeds, outputs))
            self._pending_rows += rows
            if self._pending_rows < PENDING_ROWS:
                return
            taken, self._pending, self._pending_rows = self._pending, [], 0
        self._bin_pending(taken)

    def flush(self) -> None:
        """Bin what is pending (before every snapshot, so the figures are never behind)."""
        with self._pending_lock:
            taken, self._pending, self._pending_rows = self._pending, [], 0
        self._bin_pending(taken)

    def _bin_pending(self, taken: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]) -> None:
        if len(taken) <= 1:
            for feeds, outputs in taken:
                self._bin_run(feeds, outputs)
            return
        try:
            feeds = {name: np.concatenate([f[name] for f, _ in taken]) for name in self._inputs}
            outputs = {name: np.concatenate([o[name] for _, o in taken]) for name in self._outputs}
        except Exception:  # runs that do not stack (a wrong width): each on its own, counted where it fails
            for feeds, outputs in taken:
                self._bin_run(feeds, outputs)
            return
        self._bin_run(feeds, outputs, len(taken))

    def _bin_run(self, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray], runs: int = 1) -> None:
        """Bin one run (or several stacked). Never raises: a failure is counted and reported once."""
        try:
            delta = np.zeros(self.size)
            rows = 0
            for group in self.groups:
                tensor = (outputs if group.is_output else feeds).get(group.tensor)
                if tensor is None or not np.ndim(tensor):
                    continue
                binned = group.binner.bin(tensor)
                delta[group.bins] = binned.counts.ravel()
                delta[group.missing] = binned.missing
                delta[group.outside] = binned.out_of_range
                delta[group.rows] = binned.rows
                rows = max(rows, binned.rows)
        except Exception as exc:
            self.errors += 1
            self.report_once(f"a run could not be binned ({type(exc).__name__}: {exc}); it is left out")
            return
        with self._lock:
            self._rotate(time.monotonic())
            self._current += delta
            self._current_rows += rows
            self._binned_total += rows
            self._out_of_range_total += delta
            self.runs += runs

    def _rotate(self, now: float) -> None:
        full = self._current_rows >= max(1, self.window_rows // WINDOW_SEGMENTS) if not self.window_seconds \
            else now - self._current_started >= self.window_seconds / WINDOW_SEGMENTS
        if full:
            self._closed.append((self._current_started, self._current))
            self._current = np.zeros(self.size)
            self._current_rows = 0
            self._current_started = now
        if self.window_seconds:
            while self._closed and self._closed[0][0] < now - self.window_seconds:
                self._closed.popleft()

    def _own(self) -> tuple[np.ndarray, np.ndarray, int, int]:
        """This process's window, cumulative counts, runs and errors (what is gathered binned first)."""
        self.flush()
        with self._lock:
            self._rotate(time.monotonic())
            total = self._current.copy()
            for _started, segment in self._closed:
                total += segment
            return total, self._out_of_range_total.copy(), self.runs, self.errors

    def publish(self) -> None:
        """Put this worker's figures where its siblings read them (never raises: a thread calls it)."""
        if self.share is None:
            return
        try:
            self.share.publish(*self._own())
        except Exception as exc:
            self.report_once(f"publishing the window to the other workers failed ({type(exc).__name__}: {exc})")

    def _totals(self) -> tuple[np.ndarray, np.ndarray, int, int]:
        """The figures to answer with: every worker's when the window is shared, else this process's."""
        if self.share is None:
            return self._own()
        self.publish()  # this worker's part as of now; its siblings' as of their last publish
        return self.share.totals()

    def window(self) -> np.ndarray:
        return self._totals()[0]

    def snapshot(self) -> dict[str, Any]:
        """The figures of GET /monitoring, /metrics and the Lambda EMF lines (computed when asked)."""
        total, cumulative, runs, errors = self._totals()
        features: dict[str, Any] = {}
        outputs: dict[str, Any] = {}
        window_rows = 0
        for group in self.groups:
            rows = int(total[group.rows])
            window_rows = max(window_rows, rows) if not group.is_output else window_rows
            counts = total[group.bins].reshape(len(group.binner.features), group.binner.width)
            for i, feature in enumerate(group.binner.features):
                figures = _figures(feature, counts[i], total[group.missing][i], rows,
                                   cumulative[group.outside][i])
                (outputs if group.is_output else features)[feature.name] = figures
        alert = self.info.psi_alert
        drifting = sorted((n for n, f in features.items() if f["psi"] is not None and f["psi"] > alert),
                          key=lambda n: -features[n]["psi"])
        return {"tag": self.tag, "psi_alert": alert, "window_rows": window_rows, "drifting": drifting,
                "drifting_outputs": [n for n, f in outputs.items() if f["psi"] is not None and f["psi"] > alert],
                "features": features, "outputs": outputs, "runs": runs, "errors": errors,
                "baseline_rows": self.info.baseline_rows}


def _figures(feature: FeatureBaseline, live: np.ndarray, missing: float, rows: int, outside_total: float):
    expected = padded(feature.counts, len(live))
    value = psi(expected, live) if rows else None
    figures: dict[str, Any] = {
        "psi": None if value is None else round(value, 6),
        "missing_ratio": round(float(missing) / rows, 6) if rows else 0.0,
        "out_of_range": int(outside_total),
        "baseline_missing_rate": feature.missing_rate,
    }
    if feature.kind == "categorical":
        live_shares = shares(live) if live.sum() else np.zeros(len(live))
        figures["shares"] = {c: round(float(s), 6) for c, s in zip(feature.categories, live_shares, strict=False)}
        figures["unseen_share"] = round(float(live[-1] / live.sum()), 6) if live.sum() else 0.0
    if feature.note:
        figures["note"] = feature.note
    return figures


def _run_rows(feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> int:
    for value in (*feeds.values(), *outputs.values()):
        if np.ndim(value):
            return len(value)
    return 1


class MonitoredBackend:
    """A backend whose every run is also binned (and sampled into the prediction log): the same
    `run`, `providers` and `output_names`; every other attribute reads through to the session."""

    def __init__(self, backend: Any, monitor: Monitor, prediction_log: Any = None):
        self._backend = backend
        self.monitor = monitor
        self.prediction_log = prediction_log
        self.output_names = backend.output_names

    @property
    def providers(self) -> list[str]:
        return self._backend.providers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        outputs = self._backend.run(feeds)
        self.after_run(feeds, outputs, time.perf_counter() - started, REQUEST_ID.get())
        return outputs

    def after_run(self, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray], seconds: float,
                  request_ids: Any = None) -> None:
        """Monitoring's part of one run, apart from the run: binning and the log's sample. `request_ids`: the
        run's id, or (id, rows) per request when several share the run (runtimes/prediction_log.py)."""
        self.monitor.observe(feeds, outputs)
        if self.prediction_log is not None:
            self.prediction_log.offer_run(feeds, outputs, seconds, request_ids)


def run_and_after(backend: Any) -> tuple[Any, Any]:
    """The bare run and monitoring's after-run step (None when off), for a caller that times the model's run
    itself: the HTTP batcher's latency model must learn what a run of the MODEL costs, or monitoring's
    work (a gathered binning every few runs) would move its inline-or-thread and wait-or-run decisions."""
    if isinstance(backend, MonitoredBackend):
        return backend._backend.run, backend.after_run
    return backend.run, None


def monitored(backend: Any, manifest: Manifest) -> Any:
    """The backend itself when monitoring is off (costs nothing); else a MonitoredBackend."""
    info = manifest.monitoring
    if not monitoring_enabled(info):
        return backend
    assert info is not None
    monitor = Monitor(info, manifest.tag)
    from bento_compile.runtimes.prediction_log import prediction_log_for

    return MonitoredBackend(backend, monitor, prediction_log_for(manifest, info))


def monitor_of(backend: Any) -> Monitor | None:
    return backend.monitor if isinstance(backend, MonitoredBackend) else None


def monitoring_figures(backend: Any, info: MonitoringInfo | None) -> dict[str, Any]:
    """GET /monitoring (and the edge `run --monitoring`): the snapshot, or why there is none."""
    monitor = monitor_of(backend)
    if monitor is None:
        why = ("this Bento was built without a `monitoring:` section" if info is None or not info.enabled
               else "monitoring is switched off (BENTO_COMPILE_MONITORING=off)")
        return {"enabled": False, "error": f"live monitoring is off: {why}; the baseline is in the manifest "
                "(bento-compile show), and `bento-compile monitor` reports drift from a prediction log"}
    figures = {"enabled": True, **monitor.snapshot()}
    log_ = getattr(backend, "prediction_log", None)
    if log_ is not None:
        figures["prediction_log"] = log_.figures()
    return figures
