"""The server's ASGI app: answers /predict, probes and /metrics from the first millisecond, and builds
the FastAPI app (docs, OpenAPI, /metadata, 404/405 answers) off the cold-start path.

Why: importing FastAPI and building its routes and schema is about half of a cold start (250–400
ms of 0.5–0.7 s here), yet a scale-from-zero request only needs /predict. This module imports
no FastAPI: `python -m bento_compile.adapters.server` serves /predict as soon as the model is
loaded, and the FastAPI app (`http_app.create_app`, sharing this app's model, metrics and
batcher, so every answer is the same) is built in a thread once the model is ready, or on the
first request that needs it. `create_app` stays the app for TestClient, Mangum and embedding.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from pathlib import Path
from typing import Any

from bento_compile.adapters.fastpath import PredictService
from bento_compile.adapters.probes import PROBE_PATHS, send_probe
from bento_compile.runtimes.manifest import read_manifest
from bento_compile.runtimes.metrics import Metrics
from bento_compile.runtimes.model import ModelHolder

log = logging.getLogger("bento_compile.http")

_FASTAPI_ROUTES = frozenset({"/metadata", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"})


class ServingApp:
    """Raw ASGI: POST /predict, GET /healthz, /readyz, /metrics here; everything else to FastAPI."""

    def __init__(self, bento_dir: str | Path, load_mode: str = "background", prebuild: bool = True):
        """prebuild: build the FastAPI app in a thread once the model is ready (else on first need)."""
        self.bento_dir = Path(bento_dir)
        manifest = read_manifest(self.bento_dir)
        self.holder = ModelHolder(self.bento_dir, load_mode)
        self.metrics = Metrics()
        self.service = PredictService(self.holder, manifest, self.metrics)
        # The drift gauges from the first scrape, not only once the FastAPI half is built (create_app does the same).
        self.metrics.watch_monitoring(lambda: self.holder.get().backend if self.holder.ready else None)
        self._fastapi: Any = None
        self._lock = threading.Lock()
        if prebuild:
            self.service._on_ready.append(self._build_in_background)
        self.service.record_when_loaded()

    # ---- the FastAPI half, built lazily ------------------------------------------------

    def _build(self) -> Any:
        with self._lock:
            if self._fastapi is None:
                from bento_compile.adapters.http_app import create_app

                self._fastapi = create_app(self.bento_dir, service=self.service)
                # Everything allocated so far (modules, FastAPI's routes and schema, the session) lives
                # as long as the process: move it out of the cyclic GC's reach, so that collections
                # triggered by request garbage stay short (fewer multi-ms pauses in the latency tail).
                gc.freeze()
                _tune_gc()
        return self._fastapi

    def _build_in_background(self) -> None:
        threading.Thread(target=self._build, name="bento-fastapi", daemon=True).start()

    async def _fastapi_app(self) -> Any:
        if self._fastapi is not None:
            return self._fastapi
        return await asyncio.get_running_loop().run_in_executor(None, self._build)

    # ---- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            method = scope["method"]
            if path == "/predict" and method == "POST":
                await self.service.asgi(scope, receive, send)
                return
            if method == "GET" and path in PROBE_PATHS:
                await send_probe(path, self.holder, self.metrics, send)
                return
        elif kind == "lifespan":
            await self._lifespan(receive, send)
            return
        app = await self._fastapi_app()
        await app(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.service.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


# Measured (bench/bench_tail.py, bench/RESULTS.md): at CPython's 700, 128 requests in flight keep
# enough young objects alive (coroutines, futures, dicts) for ~40 collections a second, the slowest in the
# 10-25 ms bucket; at 20,000 none ran in 3 s at c = 8..128 and c = 128's p99 fell 3x. Request garbage is
# freed by reference counting; the cyclic GC only has to catch rare cycles, so collecting less often costs
# nothing but a bounded amount of memory.
GC_GEN0_DEFAULT = 20_000


def _tune_gc() -> None:
    """The first GC generation's threshold: BENTO_COMPILE_GC_GEN0, else GC_GEN0_DEFAULT (700: CPython's)."""
    value = os.environ.get("BENTO_COMPILE_GC_GEN0", "").strip()
    threshold = int(value) if value.isdigit() and int(value) > 0 else GC_GEN0_DEFAULT
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(threshold, gen1, gen2)


def create_server_app(bento_dir: str | Path, load_mode: str = "background") -> ServingApp:
    """The app `python -m bento_compile.adapters.server` runs (see the module doc)."""
    return ServingApp(bento_dir, load_mode)
