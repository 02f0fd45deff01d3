"""The HTTP app: one contract on every platform (uvicorn, Mangum in Lambda, a device).

Routes: POST /predict, GET /healthz, GET /readyz, GET /metadata, and the
OpenAPI docs. Every error answer is `{"error": "..."}` with the right status;
a client's mistake is never a 500 and no response ever carries a stack trace.

/predict reads the raw body and parses it with orjson instead of a pydantic
model: the signature checks in `runtimes.tensors` are both stricter (feature
counts, dtypes, where the problem is) and much cheaper than generic validation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..runtimes.errors import InputError, NotReady, PayloadTooLarge
from ..runtimes.manifest import read_manifest
from ..runtimes.model import ModelHolder
from .openapi import predict_openapi_extra

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


def create_app(bento_dir: str | Path, load_mode: str = "background", holder: ModelHolder | None = None) -> FastAPI:
    """Build the app for one Bento. The manifest is read now (it is small and drives the
    OpenAPI schema); the model itself loads by `load_mode` (see ModelHolder). Pass `holder`
    to share an already-loading model (the Lambda handler builds the app only for HTTP events)."""
    bento_dir = Path(bento_dir)
    manifest = read_manifest(bento_dir)
    settings = manifest.runtime
    app = FastAPI(
        title=f"{manifest.name} (bento-compile)",
        version=manifest.version,
        description=f"Predictions from the Bento `{manifest.tag}`, compiled by bento-compile {__version__}.",
    )
    holder = holder if holder is not None else ModelHolder(bento_dir, load_mode)
    app.state.holder = holder
    app.state.manifest = manifest

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        return error_response(500, "internal error while predicting; see the server log")

    @app.post("/predict", openapi_extra=predict_openapi_extra(manifest), summary="Predict")
    async def predict(request: Request) -> Response:
        try:
            body = await read_body_bounded(request, settings.max_body_bytes)
        except BodyTooLarge:
            return error_response(
                413, f"request body is over {settings.max_body_bytes} bytes "
                "(runtime.max_body_bytes in bento.yaml): send fewer rows per request"
            )
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return error_response(422, f"the body is not valid JSON: {exc}")
        try:
            model = holder.get(timeout=30.0)
        except NotReady as exc:
            return error_response(503, str(exc), {"Retry-After": "1"})
        try:
            result = await run_in_threadpool(model.predict, payload)
        except InputError as exc:
            return error_response(422, str(exc))
        except PayloadTooLarge as exc:
            return error_response(413, str(exc))
        return json_response(result)

    @app.get("/healthz", summary="Process is up")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz", summary="Model is loaded")
    async def readyz() -> Response:
        if holder.ready:
            return json_response({"status": "ready"})
        if holder.error is not None:
            return error_response(503, f"model failed to load: {holder.error}")
        return error_response(503, "model is loading", {"Retry-After": "1"})

    @app.get("/metadata", summary="Tag, signature and versions")
    async def metadata() -> Response:
        if holder.ready:
            return json_response(holder.get().metadata())
        return json_response({
            "tag": manifest.tag, "name": manifest.name, "version": manifest.version,
            "inputs": [s.to_dict() for s in manifest.inputs],
            "outputs": [s.to_dict() for s in manifest.outputs],
            "versions": manifest.raw.get("versions", {}), "providers": None,
        })

    return app
