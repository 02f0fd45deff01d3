"""POST /predict without the framework: the raw-ASGI hot path, with back-pressure and batching.

Why: one model run is 4–20 µs and JSON in/out another 10, but a FastAPI route costs
150–250 µs of CPU (routing, Request object, middleware, a thread hand-off per request).
`PredictService.asgi` answers /predict straight from the ASGI scope (the app's
`__call__` sends it here before FastAPI sees the request) with the SAME contract as the
FastAPI route, which stays registered for the OpenAPI schema and calls the same
`PredictService.answer`. Errors, statuses and bodies are identical either way. The lean HTTP
protocol (adapters/lean_http.py) skips ASGI too: it reads the body itself and calls `refusal` and
`respond_to_body`, the two halves of `respond`.

Order of checks: declared body size (413) → bounded read (413) → in-flight limit (503; counted
only once the body is whole) → JSON (422) → model ready (503) → signature (422/413) → batcher
admission (503 + Retry-After) → run → split → JSON.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from bento_compile.adapters.workers import log_memory
from bento_compile.runtimes import tracing
from bento_compile.runtimes.backends import thread_plan
from bento_compile.runtimes.batching import Batcher, BatchPolicy, RequestId
from bento_compile.runtimes.errors import InputError, NotReady, Overloaded, PayloadTooLarge
from bento_compile.runtimes.handler_hook import HandlerFault
from bento_compile.runtimes.manifest import Manifest, effective_settings
from bento_compile.runtimes.metrics import Metrics
from bento_compile.runtimes.model import BentoModel, ModelHolder
from bento_compile.runtimes.monitoring import logs_predictions, run_and_after
from bento_compile.runtimes.providers import device_in_use
from bento_compile.runtimes.row_format import instances_request, predictions
from bento_compile.runtimes.serving_pipeline import media_accepted
from bento_compile.runtimes.tensors import decode_inputs, encode_outputs

log = logging.getLogger("bento_compile.http")

JSON_HEADERS = [(b"content-type", b"application/json")]
# Bodies above this are parsed and validated off the event loop, so a 6 MB request does not
# stall every other connection for the ~20 ms its JSON takes.
_OFFLOAD_BODY_BYTES = 256 * 1024
# Watch for a client disconnect (to drop its rows from the batch) only when the work saved is
# worth the watcher task: when a run is predicted to take longer than this.
_WATCH_RUNS_LONGER_THAN_S = 0.0005

Answer = tuple[int, bytes, list[tuple[bytes, bytes]] | None]
_INTERNAL_ERROR: Answer = (500, orjson.dumps({"error": "internal error while predicting; see the server log"}), None)


# What a JSON body may be labelled: JSON itself, and what `curl -d` and browsers' fetch send for a raw body.
_JSON_CAPABLE = (b"application/json", b"text/plain", b"application/x-www-form-urlencoded")


def _json_capable(content_type: bytes) -> bool:
    kind = content_type.split(b";", 1)[0].strip().lower()
    return kind in _JSON_CAPABLE or kind.endswith(b"+json") or not kind


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def _content_type(headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name == b"content-type":
            return value
    return b""


_MAX_REQUEST_ID = 128  # characters of a client's x-request-id kept (a log field, not a blob)


class RequestIds:
    """Each request's id for the prediction log: the client's x-request-id (bytes as sent) when it sent one,
    else a number of this process's, which the log thread turns into the server's own id (its process
    prefix and the number in hex) for the few rows it logs: nothing is formatted per request."""

    def __init__(self) -> None:
        self.count = itertools.count(1)

    def of(self, headers: list[tuple[bytes, bytes]]) -> RequestId:
        for name, value in headers:
            if name == b"x-request-id" and value:
                return value[:_MAX_REQUEST_ID]
        return next(self.count)


def _with_request_id(answer: Answer, request_id: bytes) -> Answer:
    status, body, headers = answer
    return status, body, [*(headers or JSON_HEADERS), (b"x-request-id", request_id)]


def max_concurrency(manifest: Manifest) -> int:
    """In-flight /predict limit: env BENTO_COMPILE_MAX_CONCURRENCY (Knative's containerConcurrency), else
    `runtime.max_concurrency`; 0 means unlimited."""
    env = os.environ.get("BENTO_COMPILE_MAX_CONCURRENCY", "").strip()
    if env:
        if not env.isdigit():
            raise ValueError(f"BENTO_COMPILE_MAX_CONCURRENCY must be a whole number (0 = unlimited), got {env!r}")
        return int(env)
    return manifest.runtime.max_concurrency


class PredictService:
    """Everything /predict does, shared by the raw-ASGI path and the FastAPI route."""

    def __init__(self, holder: ModelHolder, manifest: Manifest, metrics: Metrics):
        self.holder = holder
        self.manifest = manifest
        self.settings = manifest.runtime
        self.metrics = metrics
        self.limit = max_concurrency(manifest)
        self.in_flight = 0
        self.plan = thread_plan(manifest)
        self.policy = BatchPolicy.from_settings(effective_settings(self.settings.batching), manifest.batchable)
        self._batcher: Batcher | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._model: BentoModel | None = None
        self._record_lazily: Callable[[], None] | None = None
        self._on_ready: list[Callable[[], None]] = []
        self.tracer = tracing.tracer()  # None unless an OTLP endpoint is configured: then free
        # Request ids only when the prediction log is on (its records carry them); otherwise no per-request work.
        self.request_ids = RequestIds() if logs_predictions(manifest) else None
        metrics.live(metrics.in_flight, lambda: self.in_flight)
        metrics.live(metrics.depth, lambda: self._batcher.queued_rows if self._batcher else 0)

    # ---- raw ASGI --------------------------------------------------------------------

    async def asgi(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                   send: Callable[[dict], Awaitable[None]]) -> None:
        started = time.perf_counter()
        answer = await self.respond(scope, receive, started)
        if answer is None:  # the client went away; nobody to answer
            return
        status, body, headers = answer
        response_headers = [*(headers or JSON_HEADERS), (b"content-length", str(len(body)).encode())]
        writing = time.perf_counter()
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})
        self.written(status, started, writing)

    def written(self, status: int, started: float, writing: float) -> None:
        """Count an answer handed to the transport (`writing`: when the write began)."""
        done = time.perf_counter()
        self.metrics.phases["write"].observe(done - writing)
        self.metrics.request("/predict", status, done - started)

    async def respond(self, scope: dict, receive: Callable[[], Awaitable[dict]], started: float) -> Answer | None:
        """The answer to one POST /predict, from its scope and ASGI `receive` (None: the client went away,
        counted here); `asgi` above sends it."""
        headers = scope["headers"]
        try:
            # The body first, then the slot: only a whole request counts against the in-flight limit, so
            # clients that send slowly (held to a deadline by adapters/http_guard.py) lock nobody out.
            request = self.refusal(headers) or await self._read_body(receive)
        except Exception:  # never a stack trace to the client, never a non-JSON 500
            log.exception("unexpected error")
            request = _INTERNAL_ERROR
        self.body_read(started)
        if not isinstance(request, bytes):
            if request is None:
                self.client_gone(started)
            return request
        return await self.respond_to_body(request, headers, receive, started)

    def refusal(self, headers: list[tuple[bytes, bytes]]) -> Answer | None:
        """What the head alone refuses, before a byte of the body is read: a declared size over the bound
        (413), a body that is not JSON nor a media type the Bento takes (415)."""
        limit = self.settings.max_body_bytes
        for name, value in headers:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    return self.too_large()
            elif name == b"content-type" and not _json_capable(value) and not media_accepted(self.manifest, value):
                return 415, error_body(f"the body must be JSON (Content-Type: application/json), not "
                                       f"{value[:100].decode('latin-1')!r}"), None
        return None

    async def respond_to_body(self, body: bytes, headers: list[tuple[bytes, bytes]],
                              receive: Callable[[], Awaitable[dict]] | None, started: float) -> Answer | None:
        """The answer to a /predict body read whole (by `respond`, or by the lean HTTP protocol of
        adapters/lean_http.py): in-flight limit, then `answer`. None: the client went away (counted here)."""
        answer: Answer | None
        try:
            if self.limit and self.in_flight >= self.limit:
                answer = self._overloaded(Overloaded(
                    f"over {self.limit} requests in flight (BENTO_COMPILE_MAX_CONCURRENCY / "
                    "runtime.max_concurrency); retry shortly", 1, "concurrency"))
            else:
                self.in_flight += 1
                try:
                    request_id = self.request_ids.of(headers) if self.request_ids is not None else None
                    answer = await self.answer(body, receive, content_type=_content_type(headers),
                                               request_id=request_id)
                    if isinstance(request_id, bytes) and answer is not None:  # echoed: the client finds its records
                        answer = _with_request_id(answer, request_id)
                finally:
                    self.in_flight -= 1
        except Exception:  # never a stack trace to the client, never a non-JSON 500
            log.exception("unexpected error")
            answer = _INTERNAL_ERROR
        if answer is None:
            self.client_gone(started)
        return answer

    def body_read(self, started: float) -> None:
        """The body is whole (or refused, or the client left): the request's `read` phase ends."""
        self.metrics.phases["read"].observe(time.perf_counter() - started)

    def client_gone(self, started: float) -> None:
        """Nobody to answer: counted as 499 (nginx's "client closed request")."""
        self.metrics.request("/predict", 499, time.perf_counter() - started)

    async def _read_body(self, receive: Callable[[], Awaitable[dict]]) -> bytes | Answer | None:
        """The whole body, or the answer instead of one (413 over the bound, None when the client left)."""
        limit = self.settings.max_body_bytes
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body = message.get("body", b"")
        if message.get("more_body", False):
            chunks = [body]
            size = len(body)
            while message.get("more_body", False):
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return self.too_large()
                chunks.append(chunk)
            body = b"".join(chunks)
        if len(body) > limit:
            return self.too_large()
        return body

    def too_large(self) -> Answer:
        return 413, error_body(
            f"request body is over {self.settings.max_body_bytes} bytes "
            "(runtime.max_body_bytes in bento.yaml): send fewer rows per request"), None

    # ---- the contract, framework-free --------------------------------------------------

    async def answer(self, body: bytes, receive: Callable[[], Awaitable[dict]] | None = None, *,
                     content_type: bytes = b"", request_id: RequestId = None) -> Answer | None:
        """Status, JSON body and extra headers for one /predict body (None: client disconnected)."""
        model = self._model
        if model is None:
            try:
                model = await self._wait_for_model()
            except NotReady as exc:
                self.metrics.rejected("not_ready")
                return 503, error_body(str(exc)), [*JSON_HEADERS, (b"retry-after", b"1")]
        parsing = time.perf_counter()
        try:
            # Image decoding and resizing take milliseconds: off the event loop too, like large JSON.
            if len(body) > _OFFLOAD_BODY_BYTES or (model.pipeline is not None and model.pipeline.images):
                loop = asyncio.get_running_loop()
                feeds, rows, finish = await loop.run_in_executor(None, self._decode, body, content_type)
            else:
                feeds, rows, finish = self._decode(body, content_type)
            self.metrics.phases["parse"].observe(time.perf_counter() - parsing)
        except InputError as exc:
            return 422, error_body(str(exc)), None
        except PayloadTooLarge as exc:
            return 413, error_body(str(exc)), None
        except HandlerFault as exc:  # handler.py preprocess failed: its own message stays in the log
            return 500, error_body(str(exc)), None
        batcher = self._batcher
        if batcher is None or batcher.loop is not asyncio.get_running_loop():
            batcher = self._new_batcher(model)
        if self.tracer is not None:
            return await self._traced(batcher, feeds, rows, receive, finish, request_id)
        return await self._run(batcher, feeds, rows, receive, {}, finish, request_id)

    async def _run(self, batcher: Batcher, feeds: dict, rows: int, receive: Callable[[], Awaitable[dict]] | None,
                   timing: dict, finish: Callable[[dict], Any] | None = None,
                   request_id: RequestId = None) -> Answer | None:
        inline_before = batcher.inline_seconds
        try:
            if receive is not None and batcher.latency.predict(rows) > _WATCH_RUNS_LONGER_THAN_S:
                outputs = await self._submit_watching(batcher, feeds, rows, receive, timing, request_id)
                if outputs is None:
                    return None
            else:
                outputs = await batcher.submit(feeds, rows, timing, request_id)
        except Overloaded as exc:
            return self._overloaded(exc)
        except InputError as exc:  # the model refused a value the signature check let through
            return 422, error_body(str(exc)), None
        phases = self.metrics.phases
        # What this request waited behind: runs of other batches done on the event loop meanwhile.
        phases["loop_blocked"].observe(max(0.0, batcher.inline_seconds - inline_before - timing.get("inline_s", 0.0)))
        if finish is not None:  # labels / handler.py postprocess (runtimes/serving_pipeline.py)
            try:
                return 200, orjson.dumps(finish(outputs)), None
            except InputError as exc:
                return 422, error_body(str(exc)), None
            except HandlerFault as exc:
                return 500, error_body(str(exc)), None
        encoding = time.perf_counter()
        body = orjson.dumps({"outputs": encode_outputs(outputs)})
        phases["encode"].observe(time.perf_counter() - encoding)
        return 200, body, None

    async def _traced(self, batcher: Batcher, feeds: dict, rows: int,
                      receive: Callable[[], Awaitable[dict]] | None,
                      finish: Callable[[dict], Any] | None = None, request_id: RequestId = None) -> Answer | None:
        started_ns = time.time_ns()
        timing: dict[str, Any] = {}
        answer = await self._run(batcher, feeds, rows, receive, timing, finish, request_id)
        try:
            tracing.record_predict(self.tracer, started_ns, answer[0] if answer else 499, rows, timing,
                                   self.manifest.tag)
        except Exception:  # tracing must never fail a request
            log.exception("could not record the trace spans")
        return answer

    def _decode(self, body: bytes, content_type: bytes = b"") -> tuple[dict, int, Callable[[dict], Any] | None]:
        pipeline = self._model.pipeline if self._model is not None else None
        if pipeline is not None:  # images / text / handler.py: the request is kept for postprocess
            request = pipeline.request_from_body(body, content_type)
            feeds, rows = pipeline.decode(request)
            return feeds, rows, lambda outputs: pipeline.answer(outputs, request)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"the body is not valid JSON: {exc}") from None
        rowwise = instances_request(payload, self.manifest)  # TF Serving / Vertex AI / KServe / MLflow clients
        if rowwise is not None:
            return (*decode_inputs(rowwise, self.manifest.inputs, self.settings, self.manifest.model.feature_names),
                    predictions)
        return (*decode_inputs(payload, self.manifest.inputs, self.settings, self.manifest.model.feature_names), None)

    async def _submit_watching(self, batcher: Batcher, feeds: dict, rows: int,
                               receive: Callable[[], Awaitable[dict]], timing: dict,
                               request_id: RequestId = None) -> Any:
        """Submit, and cancel the request (dropping it from its batch) if the client disconnects."""
        work = asyncio.ensure_future(batcher.submit(feeds, rows, timing, request_id))
        watcher = asyncio.ensure_future(receive())

        def on_message(done: asyncio.Future) -> None:
            if not done.cancelled() and done.exception() is None and done.result().get("type") == "http.disconnect":
                work.cancel()

        watcher.add_done_callback(on_message)
        try:
            return await work
        except asyncio.CancelledError:
            if watcher.done() and not watcher.cancelled():
                self.metrics.rejected("client_gone")
                return None
            raise
        finally:
            watcher.cancel()

    def _overloaded(self, exc: Overloaded) -> Answer:
        if exc.reason == "concurrency":
            self.metrics.rejected("concurrency")
        headers = [*JSON_HEADERS, (b"retry-after", str(exc.retry_after).encode())]
        return 503, error_body(str(exc)), headers

    async def _wait_for_model(self) -> BentoModel:
        holder = self.holder
        if holder.ready:
            model = holder.get()
        elif holder.error is not None:
            raise NotReady(f"the model failed to load: {holder.error}")
        else:  # loading (background) or not started (lazy): wait off the event loop
            loop = asyncio.get_running_loop()
            model = await loop.run_in_executor(None, holder.get, 30.0)
        self._model = model
        if self._record_lazily is not None:
            record, self._record_lazily = self._record_lazily, None
            record()
        return model

    def _new_batcher(self, model: BentoModel) -> Batcher:
        """One batcher per event loop (TestClient may run several loops over an app's life)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.plan.inference_workers, thread_name_prefix="bento-infer")
        # The batcher times the model's run alone; monitoring runs after it, with the requests of the run.
        run, after_run = run_and_after(model.backend)
        self._batcher = Batcher(run, self.policy, self._executor, workers=self.plan.inference_workers,
                                observer=self.metrics, whole_inputs=self.manifest.whole_inputs, after_run=after_run)
        return self._batcher

    def record_when_loaded(self) -> None:
        """Set the load / cold-start / provider metrics and log the serving plan once the model is up
        (now in eager mode, from a thread in background mode, at first load in lazy mode)."""
        holder = self.holder

        def record() -> None:
            try:
                model = holder.get(None)
            except Exception:
                return
            providers = model.backend.providers
            device = device_in_use(providers)
            self.metrics.model_loaded(model.manifest.tag, providers, device, model.load_seconds)
            plan, policy = self.plan, self.policy
            log.info("serving %s on %s (providers %s); batching %s (max %d rows, %.1f ms); %d intra-op thread(s), "
                     "%d inference worker(s) on %d CPU(s); in-flight limit %s", model.manifest.tag, device,
                     ",".join(providers), policy.mode, policy.max_batch_size, policy.max_latency_s * 1000,
                     plan.intra_op_threads, plan.inference_workers, plan.cpus, self.limit or "none")
            log_memory()  # what one more worker costs (adapters/workers.py)
            for callback in self._on_ready:
                callback()

        if holder.mode == "eager":
            record()
        elif holder.mode == "background":
            threading.Thread(target=record, name="bento-load-metrics", daemon=True).start()
        else:
            self._record_lazily = record

    async def close(self) -> None:
        """Shutdown: refuse what is still queued (503, retry elsewhere) and stop the inference pool."""
        if self._batcher is not None:
            await self._batcher.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> dict[str, Any]:
        """Serving settings for /metadata: batching, threads, limits."""
        return {
            "batching": {"mode": self.policy.mode, "max_batch_size": self.policy.max_batch_size,
                         "max_latency_ms": self.policy.max_latency_s * 1000,
                         "max_queue_rows": self.policy.max_queue_rows, "timeout_ms": self.policy.timeout_s * 1000,
                         "batchable": self.manifest.batchable},
            "threads": self.plan.to_dict(),
            "max_concurrency": self.limit,
        }
