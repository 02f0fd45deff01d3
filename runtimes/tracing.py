"""Optional OpenTelemetry spans around queue wait and inference: on when an OTLP endpoint is set, free otherwise.

Configured the standard way: `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
(plus the usual `OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`, ...), exported over OTLP/HTTP
by `opentelemetry-sdk` + `opentelemetry-exporter-otlp-proto-http` (the `otel` extra; not in the
default artifact). With no endpoint, `tracer()` is None, nothing is imported and the request path
pays one `is None` test. Each /predict becomes a `bento.predict` span with two children,
`bento.queue_wait` (enqueued → its batch dispatched) and `bento.inference` (the batch's run), whose
attributes say how many rows and requests shared that run.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

log = logging.getLogger("bento_compile.runtime")

_UNSET = object()
_tracer: Any = _UNSET
_provider: Any = None


def endpoint() -> str | None:
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")


def tracer() -> Any:
    """The process's tracer, or None when no OTLP endpoint is configured (or the SDK is missing)."""
    global _tracer
    if _tracer is _UNSET:
        _tracer = _make_tracer()
    return _tracer


def _make_tracer() -> Any:
    if not endpoint():
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-sdk / opentelemetry-exporter-otlp-proto-http "
                    "are not installed: no spans (pip install 'bento-compile[otel]')")
        return None
    global _provider
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "bento-compile")})
    provider = _provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("OpenTelemetry spans exported to %s", endpoint())
    return provider.get_tracer("bento_compile.runtime")


def flush(timeout_ms: int = 10_000) -> None:
    """Export what is buffered now (shutdown, tests)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def reset() -> None:
    """Flush and forget the tracer (tests change the environment)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer, _provider = _UNSET, None


def record_predict(tracer: Any, started_ns: int, status: int, rows: int, timing: dict[str, Any], tag: str) -> None:
    """One finished /predict as spans, from the timestamps the batcher filled in `timing`."""
    end_ns = time.time_ns()
    span = tracer.start_span("bento.predict", start_time=started_ns,
                             attributes={"bento.tag": tag, "bento.rows": rows, "http.response.status_code": status})
    from opentelemetry import trace

    context = trace.set_span_in_context(span)
    enqueued, dispatched = timing.get("enqueued_ns"), timing.get("dispatched_ns")
    if enqueued and dispatched:
        tracer.start_span("bento.queue_wait", context=context, start_time=enqueued).end(end_time=dispatched)
    run_start, run_end = timing.get("run_start_ns"), timing.get("run_end_ns")
    if run_start and run_end:
        tracer.start_span("bento.inference", context=context, start_time=run_start, attributes={
            "bento.batch.rows": timing.get("batch_rows", rows), "bento.batch.requests": timing.get("batch_requests", 1),
        }).end(end_time=run_end)
    span.end(end_time=end_ns)
