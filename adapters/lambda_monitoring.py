"""Drift figures from a Lambda execution environment as CloudWatch EMF lines, aggregated.

The Monitor in the environment's model aggregates every event; every BENTO_COMPILE_MONITORING_FLUSH_EVENTS
events (default 100) or BENTO_COMPILE_MONITORING_FLUSH_SECONDS (default 60), whichever comes first, one
EMF line per feature and per output is written (dimensions FunctionName + Feature / Output), plus one
summary line: never a line per request.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bento_compile.adapters.lambda_metrics import emit_emf


def _setting(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


class DriftEmitter:
    def __init__(self) -> None:
        self.every_events = int(_setting("BENTO_COMPILE_MONITORING_FLUSH_EVENTS", 100))
        self.every_seconds = _setting("BENTO_COMPILE_MONITORING_FLUSH_SECONDS", 60.0)
        self.events = 0
        self.last = time.monotonic()

    def after_event(self, backend: Any, tag: str) -> list[dict[str, Any]]:
        """Count one event; flush when due. Returns the lines written (the tests read them back)."""
        monitor = getattr(backend, "monitor", None)
        if monitor is None:
            return []
        self.events += 1
        if self.events < self.every_events and time.monotonic() - self.last < self.every_seconds:
            return []
        self.events, self.last = 0, time.monotonic()
        return self.flush(monitor, tag)

    def flush_pending(self, backend: Any, tag: str) -> list[dict[str, Any]]:
        """At the environment's end: flush when events came since the last flush (their figures are not out)."""
        monitor = getattr(backend, "monitor", None)
        if monitor is None or not self.events:
            return []
        self.events, self.last = 0, time.monotonic()
        return self.flush(monitor, tag)

    def flush(self, monitor: Any, tag: str) -> list[dict[str, Any]]:
        snap = monitor.snapshot()
        lines = []
        for name, figures in snap["features"].items():
            metrics = {"FeaturePSI": figures["psi"], "MissingRatio": figures["missing_ratio"],
                       "OutOfRange": figures["out_of_range"]}
            lines.append(emit_emf(["FunctionName", "Feature"], _present(metrics), Feature=name, model=tag))
        for name, figures in snap["outputs"].items():
            lines.append(emit_emf(["FunctionName", "Output"], _present({"OutputPSI": figures["psi"]}),
                                  Output=name, model=tag))
        summary = {"DriftingFeatures": len(snap["drifting"]), "WindowRows": snap["window_rows"],
                   "MonitoringErrors": snap["errors"]}
        lines.append(emit_emf(["FunctionName"], summary, model=tag, drifting=snap["drifting"]))
        return lines


def _present(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if v is not None}
