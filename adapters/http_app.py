"""The HTTP app: one contract on every platform (uvicorn, Mangum in Lambda, a device).

Routes: POST /predict, GET /healthz, GET /readyz, GET /metadata, and the
OpenAPI docs. Every error answer is `{"error": "..."}` with the right status;
a client's mistake is never a 500 and no response ever carries a stack trace.

/predict reads the raw body and parses it with orjson instead of a pydantic
model: the signature checks in `runtimes.tensors` are both stricter (feature
counts, dtypes, where the problem is) and much cheaper than generic validation.
`BentoApp.__call__` hands POST /predict to the raw-ASGI fast path
(`adapters.fastpath.PredictService`) before FastAPI's routing; the FastAPI route
stays for the OpenAPI schema and answers through the same service. /metrics
serves Prometheus text (runtimes/metrics.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from bento_compile import __version__
from bento_compile.adapters.fastpath import PredictService
from bento_compile.adapters.openapi import predict_openapi_extra
from bento_compile.adapters.probes import PROBE_PATHS, probe_answer, send_probe
from bento_compile.runtimes.manifest import read_manifest
from bento_compile.runtimes.metrics import Metrics
from bento_compile.runtimes.model import ModelHolder
from bento_compile.runtimes.monitoring import monitoring_figures
from bento_compile.runtimes.providers import device_in_use

log = logging.getLogger("bento_compile.http")


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json",
                    headers=headers)


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status_code, headers)


class BodyTooLarge(Exception):
    pass


async def read_body_bounded(request: Request, limit: int) -> bytes:
    """Read the body, refusing (413) as soon as it passes `limit` bytes, chunked or not."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


_ROUTES = frozenset({"/predict", "/healthz", "/readyz", "/metadata", "/metrics", "/monitoring", "/docs",
                     "/openapi.json"})


class BentoApp(FastAPI):
    """FastAPI, with POST /predict answered by the raw-ASGI fast path before routing, and every
    other HTTP request counted in the metrics by route and status."""

    predict_service: PredictService | None = None
    metrics: Metrics | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self.predict_service is None:
            await super().__call__(scope, receive, send)
            return
        path = scope["path"]
        if path == "/predict" and scope["method"] == "POST":
            await self.predict_service.asgi(scope, receive, send)
            return
        if path in PROBE_PATHS and scope["method"] == "GET":
            await send_probe(path, self.predict_service.holder, self.predict_service.metrics, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_counted(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await super().__call__(scope, receive, send_counted)
        finally:
            route = path if path in _ROUTES else "other"
            self.predict_service.metrics.request(route, status[0], time.perf_counter() - started)


def create_app(bento_dir: str | Path, load_mode: str = "background", holder: ModelHolder | None = None, *,
               service: PredictService | None = None) -> FastAPI:
    """Build the app for one Bento. The manifest is read now (it is small and drives the
    OpenAPI schema); the model itself loads by `load_mode` (see ModelHolder). Pass `holder`
    to share an already-loading model (the Lambda handler builds the app only for HTTP events),
    or `service` to share the model, metrics and batcher of the server's app (adapters/asgi.py)."""
    bento_dir = Path(bento_dir)
    manifest = read_manifest(bento_dir)
    app = BentoApp(
        title=f"{manifest.name} (bento-compile)",
        version=manifest.version,
        description=f"Predictions from the Bento `{manifest.tag}`, compiled by bento-compile {__version__}.",
    )
    if service is None:
        holder = holder if holder is not None else ModelHolder(bento_dir, load_mode)
        service = PredictService(holder, manifest, Metrics())
        service.record_when_loaded()
    holder, metrics = service.holder, service.metrics
    app.state.holder = holder
    app.state.manifest = manifest
    app.state.metrics = metrics
    app.metrics = metrics
    app.predict_service = service
    metrics.watch_monitoring(lambda: holder.get().backend if holder.ready else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        return error_response(500, "internal error while predicting; see the server log")

    @app.post("/predict", openapi_extra=predict_openapi_extra(manifest), summary="Predict")
    async def predict(request: Request) -> Response:
        """Reached only when the fast path is bypassed (e.g. under a root_path); same answers."""
        try:
            body = await read_body_bounded(request, manifest.runtime.max_body_bytes)
        except BodyTooLarge:
            status, content, headers = service.too_large()
        else:
            answer = await service.answer(body, content_type=request.headers.get("content-type", "").encode())
            status, content, headers = answer if answer is not None else (499, b"{}", None)
        extra = {k.decode(): v.decode() for k, v in headers or [] if k != b"content-type"}
        return Response(content, status_code=status, media_type="application/json", headers=extra)

    # The probes are answered before routing (BentoApp.__call__, adapters/probes.py); these routes put
    # them in the OpenAPI document and answer the same way when that is bypassed (e.g. under a root_path).
    def probe_route(path: str) -> Callable[[], Awaitable[Response]]:
        async def probe() -> Response:
            status, body, headers = probe_answer(path, holder, metrics)
            return Response(body, status_code=status, headers={k.decode(): v.decode() for k, v in headers})

        return probe

    app.get("/metrics", summary="Prometheus metrics")(probe_route("/metrics"))
    app.get("/healthz", summary="Process is up")(probe_route("/healthz"))
    app.get("/readyz", summary="Model is loaded")(probe_route("/readyz"))

    @app.get("/monitoring", summary="Drift against the training baseline")
    async def monitoring() -> Response:
        """The window's PSI, missing ratio and out-of-range count per feature, and which features drift."""
        if not holder.ready:
            return error_response(503, "the model is still loading; retry shortly", {"Retry-After": "1"})
        figures = monitoring_figures(holder.get().backend, manifest.monitoring)
        return json_response(figures, 200 if figures.get("enabled") else 404)

    @app.get("/metadata", summary="Tag, signature and versions")
    async def metadata() -> Response:
        if holder.ready:
            model = holder.get()
            return json_response({**model.metadata(), "device": device_in_use(model.backend.providers),
                                  "serving": service.describe()})
        return json_response({
            "tag": manifest.tag, "name": manifest.name, "version": manifest.version,
            "inputs": [s.to_dict() for s in manifest.inputs],
            "outputs": [s.to_dict() for s in manifest.outputs],
            "versions": manifest.versions, "providers": None,
        })

    return app
