"""/healthz, /readyz and /metrics, answered in one place for every app.

The server's raw ASGI app (adapters/asgi.py) and the FastAPI app (adapters/http_app.py, also
behind Mangum in Lambda and on devices) both hand these GETs here before any routing, so a
probe gets the same status, body and headers everywhere, and costs no framework work:

- /healthz  200 while the process is up (liveness);
- /readyz   200 once the model is loaded, 503 while it loads (with Retry-After) or after it
            failed to load (the reason in the body);
- /metrics  Prometheus text (runtimes/metrics.py).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from bento_compile.adapters.fastpath import JSON_HEADERS, error_body
from bento_compile.runtimes.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from bento_compile.runtimes.metrics import Metrics
from bento_compile.runtimes.model import ModelHolder

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
Headers = list[tuple[bytes, bytes]]
_METRICS_HEADERS = [(b"content-type", METRICS_CONTENT_TYPE.encode())]


def probe_answer(path: str, holder: ModelHolder, metrics: Metrics) -> tuple[int, bytes, Headers]:
    """(status, body, headers) for one of PROBE_PATHS."""
    if path == "/healthz":
        return 200, b'{"status":"ok"}', JSON_HEADERS
    if path == "/metrics":
        return 200, metrics.render(), _METRICS_HEADERS
    if holder.ready:
        return 200, b'{"status":"ready"}', JSON_HEADERS
    if holder.error is not None:
        return 503, error_body(f"model failed to load: {holder.error}"), JSON_HEADERS
    return 503, error_body("model is loading"), [*JSON_HEADERS, (b"retry-after", b"1")]


async def send_probe(path: str, holder: ModelHolder, metrics: Metrics,
                     send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """Answer a probe over raw ASGI and count it in the metrics like every other request."""
    started = time.perf_counter()
    status, body, headers = probe_answer(path, holder, metrics)
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
    metrics.request(path, status, time.perf_counter() - started)
