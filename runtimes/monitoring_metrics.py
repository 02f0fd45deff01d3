"""Drift figures as Prometheus metrics, computed from the Monitor's window when /metrics is scraped.

  bento_feature_psi{feature}                  gauge    PSI of the window against the baseline
  bento_feature_missing_ratio{feature}        gauge    missing values in the window
  bento_feature_out_of_range_total{feature}   counter  values outside the baseline's range (or unseen)
  bento_output_psi{output}                    gauge
  bento_label_share{output,label}             gauge    share of each label in the window
  bento_feature_drifting{feature}             gauge    1 past monitoring.psi_alert
  bento_monitoring_window_rows                gauge
  bento_prediction_log_{written,dropped,failed}_total  counter

Nothing is added to the request path: the collector reads `Monitor.snapshot()` at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class MonitoringCollector:
    def __init__(self, backend_of: Callable[[], Any]):
        self.backend_of = backend_of  # the model's backend once loaded, else None

    def describe(self) -> list:
        return []  # names depend on the Bento: collected only when scraped

    def collect(self) -> Iterator[Any]:
        backend = self.backend_of()
        monitor = getattr(backend, "monitor", None) if backend is not None else None
        if monitor is None:
            return
        snap = monitor.snapshot()
        psi = GaugeMetricFamily("bento_feature_psi", "PSI of the window against the baseline", labels=["feature"])
        missing = GaugeMetricFamily("bento_feature_missing_ratio", "Missing values in the window", labels=["feature"])
        outside = CounterMetricFamily("bento_feature_out_of_range", "Values outside the baseline range or unseen",
                                      labels=["feature"])
        drifting = GaugeMetricFamily("bento_feature_drifting", "1 when PSI passes monitoring.psi_alert",
                                     labels=["feature"])
        for name, figures in snap["features"].items():
            if figures["psi"] is not None:
                psi.add_metric([name], figures["psi"])
            missing.add_metric([name], figures["missing_ratio"])
            outside.add_metric([name], figures["out_of_range"])
            drifting.add_metric([name], 1.0 if name in snap["drifting"] else 0.0)
        output_psi = GaugeMetricFamily("bento_output_psi", "PSI of an output in the window", labels=["output"])
        labels = GaugeMetricFamily("bento_label_share", "Share of each label in the window", labels=["output", "label"])
        for name, figures in snap["outputs"].items():
            if figures["psi"] is not None:
                output_psi.add_metric([name], figures["psi"])
            for label, share in figures.get("shares", {}).items():
                labels.add_metric([name, label], share)
        rows = GaugeMetricFamily("bento_monitoring_window_rows", "Rows in the drift window", value=snap["window_rows"])
        errors = CounterMetricFamily("bento_monitoring_errors", "Runs monitoring could not bin", value=snap["errors"])
        yield from (psi, missing, outside, drifting, output_psi, labels, rows, errors)
        log = getattr(backend, "prediction_log", None)
        if log is not None:
            figures = log.figures()
            for key in ("written", "dropped", "failed"):
                yield CounterMetricFamily(f"bento_prediction_log_{key}", f"Prediction log records {key}",
                                          value=figures[key])
