"""CloudWatch Embedded Metric Format (EMF) lines and structured log lines for Lambda.

Lambda sends every stdout line to CloudWatch Logs; a JSON line with an `_aws`
block is turned into metrics by CloudWatch itself, with no API call and no
agent: the cheapest way to get latency, batch size, cold starts and model load
time out of a function. Plain log lines are JSON too, so Logs Insights can
query them (`filter message = "cold start"`).

Namespace: env BENTO_COMPILE_METRICS_NAMESPACE (default "BentoCompile");
dimensions: FunctionName and Source (direct, http, sqs, warmer).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import orjson

UNITS = {
    "Latency": "Milliseconds",
    "ModelLoadTime": "Milliseconds",
    "PredictLatency": "Milliseconds",
    "InitDuration": "Milliseconds",
    "BatchSize": "Count",
    "Records": "Count",
    "FailedRecords": "Count",
    "ColdStart": "Count",
    "WarmPing": "Count",
    "Errors": "Count",
    "OutOfRange": "Count",
    "DriftingFeatures": "Count",
    "WindowRows": "Count",
    "MonitoringErrors": "Count",
}


def _write(line: dict[str, Any]) -> None:
    # One write per line: awslambdaric frames each write as one log event.
    sys.stdout.write(orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
    sys.stdout.flush()


def emit_metrics(source: str, metrics: dict[str, float], **properties: Any) -> dict[str, Any]:
    """Write one EMF line; returns it (the tests read it back from the log)."""
    namespace = os.environ.get("BENTO_COMPILE_METRICS_NAMESPACE", "BentoCompile")
    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local")
    line: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["FunctionName", "Source"]],
                "Metrics": [{"Name": name, "Unit": UNITS.get(name, "None")} for name in metrics],
            }],
        },
        "FunctionName": function,
        "Source": source,
        **metrics,
        **properties,
    }
    _write(line)
    return line


def emit_emf(dimensions: list[str], metrics: dict[str, float], **properties: Any) -> dict[str, Any]:
    """One EMF line with its own dimension set (e.g. FunctionName + Feature); returns it."""
    namespace = os.environ.get("BENTO_COMPILE_METRICS_NAMESPACE", "BentoCompile")
    line: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimensions],
                "Metrics": [{"Name": name, "Unit": UNITS.get(name, "None")} for name in metrics],
            }],
        },
        "FunctionName": os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "local"),
        **metrics,
        **properties,
    }
    _write(line)
    return line


def log_event(message: str, level: str = "INFO", **fields: Any) -> None:
    """A structured log line (JSON) on stdout, which Lambda ships to CloudWatch Logs."""
    _write({"level": level, "logger": "bento_compile.lambda", "message": message, **fields})
