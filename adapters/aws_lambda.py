"""The AWS Lambda entry point: `bento_compile.adapters.aws_lambda.handler`.

One handler for every event source (see `lambda_events`): direct invoke,
API Gateway / function URL / ALB through Mangum over the shared HTTP app,
SQS batches, and EventBridge warmers.

Init (module import) reads the manifest and, by the load mode, loads the model:
    eager       load now, during Lambda's init phase (default; a corrupted model
                fails init with the file name and hash mismatch)
    lazy        load on the first event that needs the model
    background  start loading now in a thread; the first event waits for it
The mode comes from env BENTO_COMPILE_LOAD, else `targets.lambda.load` recorded
in the Bento's manifest, else eager. The Bento folder is env BENTO_COMPILE_BENTO,
else `bento/` at the root of the deployment package.

The FastAPI app (and Mangum) are built only when the first HTTP event arrives,
sharing the one ModelHolder: direct, SQS and warmer invocations never pay for
importing the HTTP stack. Mangum runs with lifespan="off" (with "auto" it runs
the ASGI lifespan on every invocation; see shared/INFRA-NOTES.md).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from bento_compile.adapters.lambda_events import infer, lambda_settings
from bento_compile.adapters.lambda_metrics import emit_metrics, log_event
from bento_compile.adapters.lambda_monitoring import DriftEmitter
from bento_compile.adapters.lambda_shutdown import flush_on_sigterm
from bento_compile.adapters.lambda_sinks import Sink, sink_from_environment
from bento_compile.runtimes.errors import NotReady
from bento_compile.runtimes.manifest import read_manifest
from bento_compile.runtimes.model import LOAD_MODES, BentoModel, ModelHolder
from bento_compile.runtimes.monitoring import REQUEST_ID, monitoring_enabled

_IMPORT_STARTED = time.perf_counter()
# One Lambda execution environment answers one event at a time: a micro-batcher could never
# coalesce anything and would only add its wait. Operators can still set it explicitly.
# (Only inside Lambda: importing this module elsewhere must not change the process.)
if "AWS_LAMBDA_RUNTIME_API" in os.environ:
    os.environ.setdefault("BENTO_COMPILE_BATCHING", "off")
SHUTDOWN_LOG_SECONDS = 0.2  # of the 300 ms Lambda gives the runtime after SIGTERM
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the root of the unzipped deployment package


def default_bento_dir() -> Path:
    return Path(os.environ.get("BENTO_COMPILE_BENTO") or PACKAGE_ROOT / "bento")


class LambdaRuntime:
    """Everything one Lambda execution environment keeps between invocations."""

    def __init__(self, bento_dir: str | Path, load_mode: str | None = None):
        started = time.perf_counter()
        self.bento_dir = Path(bento_dir)
        self.manifest = read_manifest(self.bento_dir)
        self.settings = lambda_settings(self.manifest)
        mode = load_mode or os.environ.get("BENTO_COMPILE_LOAD") or self.settings.get("load") or "eager"
        if mode not in LOAD_MODES:
            raise ValueError(f"load mode {mode!r} (BENTO_COMPILE_LOAD or targets.lambda.load) must be one of "
                             f"{', '.join(LOAD_MODES)}")
        self.load_mode = mode
        # One holder for every event source; "lazy" underneath so that *we* decide when it loads.
        self.holder = ModelHolder(self.bento_dir, "lazy")
        self.cold_start = True
        self.warm_pings = 0
        self._load_reported = False
        self._http: Any = None
        self._sink: Sink | None = None
        self.drift = DriftEmitter()
        self._lock = threading.Lock()
        # Inside Lambda only (elsewhere importing this must not change the process's signal handling).
        if "AWS_LAMBDA_RUNTIME_API" in os.environ and monitoring_enabled(self.manifest.monitoring):
            flush_on_sigterm(self.shutdown)
        if mode == "eager":
            self.model()  # raises the load error itself: Lambda reports it as the init error
        elif mode == "background":
            threading.Thread(target=self._load_quietly, name="bento-load", daemon=True).start()
        self.init_seconds = time.perf_counter() - started

    def _load_quietly(self) -> None:
        with contextlib.suppress(Exception):  # remembered by the holder; the first event reports it
            self.model()

    def model(self) -> BentoModel:
        """The loaded model (loading it now, or waiting for the background load)."""
        try:
            model = self.holder.get()
        except NotReady:
            error = self.holder.error
            if error is not None:  # the real cause (IntegrityError naming the file), not a wrapper
                log_event("model load failed", "ERROR", error=f"{type(error).__name__}: {error}",
                          bento=str(self.bento_dir))
                raise error from None
            raise
        with self._lock:
            first = not self._load_reported
            self._load_reported = True
        if first:
            log_event("model loaded", model=self.manifest.tag, load_seconds=round(model.load_seconds, 4),
                      load_mode=self.load_mode, providers=model.backend.providers)
        return model

    def http(self) -> Any:
        """Mangum over the shared FastAPI app, built on the first HTTP event."""
        with self._lock:
            if self._http is None:
                from mangum import Mangum

                from bento_compile.adapters.http_app import create_app

                app = create_app(self.bento_dir, "lazy", holder=self.holder)
                self._http = Mangum(app, lifespan="off")
            return self._http

    def sink(self) -> Sink:
        with self._lock:
            if self._sink is None:
                self._sink = sink_from_environment(self.manifest.tag, self.settings.get("sink"))
            return self._sink

    def shutdown(self) -> None:
        """The environment's end (SIGTERM): the drift figures aggregated since the last flush as EMF lines, and
        the prediction log's queued records, within Lambda's 300 ms for the runtime."""
        if not self.holder.ready:
            return
        backend = self.holder.get().backend
        self.drift.flush_pending(backend, self.manifest.tag)
        log = getattr(backend, "prediction_log", None)
        if log is not None:
            log.close(SHUTDOWN_LOG_SECONDS)

    def handle(self, event: Any, context: Any) -> Any:
        started = time.perf_counter()
        cold, self.cold_start = self.cold_start, False
        if cold:
            log_event("cold start", model=self.manifest.tag, load_mode=self.load_mode,
                      init_seconds=round(self.init_seconds, 4), model_ready=self.holder.ready,
                      import_seconds=round(_IMPORTED - _IMPORT_STARTED, 4) if _IMPORTED else None)
        was_ready = self.holder.ready
        source = infer(event)
        metrics: dict[str, float] = {}
        properties: dict[str, Any] = {}
        request_id = REQUEST_ID.set(getattr(context, "aws_request_id", None))  # the prediction log's request id
        try:
            response, metrics, properties = source.handle(self, event, context)
            return response
        except Exception as exc:
            metrics = {**metrics, "Errors": 1}
            properties = {**properties, "errorType": type(exc).__name__}
            raise
        finally:
            metrics = {"Latency": round((time.perf_counter() - started) * 1000, 3), "ColdStart": int(cold),
                       **metrics}
            if self.holder.ready and (cold or not was_ready):
                metrics["ModelLoadTime"] = round(self.holder.get().load_seconds * 1000, 3)
            emit_metrics(source.name, metrics, model=self.manifest.tag,
                         requestId=getattr(context, "aws_request_id", None), **properties)
            REQUEST_ID.reset(request_id)
            if self.holder.ready:  # drift: aggregated here, one flush per N events or seconds
                self.drift.after_event(self.holder.get().backend, self.manifest.tag)


_RUNTIME: LambdaRuntime | None = None
_IMPORTED: float | None = None


def runtime() -> LambdaRuntime:
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = LambdaRuntime(default_bento_dir())
    return _RUNTIME


def handler(event: Any, context: Any) -> Any:
    """The Lambda handler: `bento_compile.adapters.aws_lambda.handler`."""
    return runtime().handle(event, context)


# Inside Lambda (or with a Bento beside the package) initialise now, during the init phase:
# an eager load happens here, and a broken Bento fails init with the reason.
if "AWS_LAMBDA_RUNTIME_API" in os.environ or (PACKAGE_ROOT / "bento").is_dir():
    runtime()
_IMPORTED = time.perf_counter()
