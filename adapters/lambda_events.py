"""Lambda event sources, one small class each, and `infer()` to pick the one an event is.

The shape is Mangum's: a list of handler classes, each with a cheap
`matches(event)` test, walked in order; the first match answers the event in
its native shape. HTTP-shaped events (API Gateway REST 1.0 and HTTP API 2.0,
function URLs, ALB) all go through Mangum over the same FastAPI app every other
platform serves, so routes, status codes and errors are identical everywhere.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
import orjson

from bento_compile.adapters.lambda_metrics import log_event
from bento_compile.adapters.lambda_sinks import Sink
from bento_compile.runtimes.errors import InputError, PayloadTooLarge
from bento_compile.runtimes.handler_hook import HandlerFault
from bento_compile.runtimes.manifest import Manifest
from bento_compile.runtimes.model import BentoModel
from bento_compile.runtimes.row_format import ROW_FIELDS
from bento_compile.runtimes.stacking import run_alone, run_stacked, take_next
from bento_compile.runtimes.tensors import decode_inputs, encode_outputs, stack_key

Answer = tuple[Any, dict[str, float], dict[str, Any]]  # (response, EMF metrics, EMF properties)


class LambdaRuntime(Protocol):
    """What an event source needs from the execution environment (adapters/aws_lambda.py's
    `LambdaRuntime` is the one): written here so the sources never import the entry point."""

    manifest: Manifest
    warm_pings: int

    def model(self) -> BentoModel: ...  # loading it now, or waiting for the background load

    def sink(self) -> Sink: ...  # where SQS results go

    def http(self) -> Any: ...  # Mangum over the shared FastAPI app


def lambda_settings(manifest: Manifest) -> dict[str, Any]:
    """`targets.lambda` from bento.yaml, as recorded in the manifest (empty when absent)."""
    settings = manifest.targets.get("lambda")
    return settings if isinstance(settings, dict) else {}


class UnrecognizedEvent(InputError):
    """The event is none of the shapes this function answers."""


class EventSource:
    """One kind of Lambda event. Subclasses say whether an event is theirs and answer it."""

    name: ClassVar[str] = "event"

    @staticmethod
    def matches(event: Any) -> bool:
        raise NotImplementedError

    @staticmethod
    def handle(runtime: LambdaRuntime, event: Any, context: Any) -> Answer:
        raise NotImplementedError


class ScheduledWarmer(EventSource):
    """EventBridge scheduled event (or `{"warmer": true}`): load the model, predict nothing."""

    name = "warmer"

    @staticmethod
    def matches(event: Any) -> bool:
        if not isinstance(event, Mapping):
            return False
        scheduled = event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"
        return scheduled or event.get("warmer") is True

    @staticmethod
    def handle(runtime: LambdaRuntime, event: Any, context: Any) -> Answer:
        model = runtime.model()
        runtime.warm_pings += 1
        log_event("warm ping", model=runtime.manifest.tag, rule=(event.get("resources") or [None])[0],
                  warm_pings=runtime.warm_pings)
        answer = {"warm": True, "model": runtime.manifest.tag, "loadSeconds": round(model.load_seconds, 4),
                  "warmPings": runtime.warm_pings}
        return answer, {"WarmPing": 1}, {}


class SqsBatch(EventSource):
    """SQS batch: every record's body is a request; all valid records run as one model batch.

    Results go to the configured sink keyed by messageId. The answer lists, in
    `batchItemFailures`, each record that was invalid, failed to predict or could
    not be delivered, so SQS redelivers only those (the event source mapping
    needs FunctionResponseTypes: [ReportBatchItemFailures], which the SAM template sets).
    """

    name = "sqs"

    @staticmethod
    def matches(event: Any) -> bool:
        if not isinstance(event, Mapping):
            return False
        records = event.get("Records")
        return (isinstance(records, list) and bool(records)
                and all(isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records))

    @staticmethod
    def handle(runtime: LambdaRuntime, event: Any, context: Any) -> Answer:
        manifest = runtime.manifest
        records = event["Records"]
        ids = [str(r.get("messageId") or f"record-{i}") for i, r in enumerate(records)]
        # FIFO queues: a failed record must also fail every record after it (of the batch), or
        # SQS would deliver later messages of its group before it (AWS's partial-batch rule).
        fifo = any(str(r.get("eventSourceARN", "")).endswith(".fifo") for r in records)
        failed: set[str] = set()
        decoded: list[tuple[str, dict[str, np.ndarray], int]] = []
        # Images / text / handler.py (runtimes/serving_pipeline.py) need the loaded model to decode a record.
        pipeline = runtime.model().pipeline if manifest.pipeline is not None else None
        requests: dict[str, Any] = {}
        for message_id, record in zip(ids, records, strict=True):
            if fifo and failed:
                break  # left unprocessed: reported as failed below, redelivered in order
            try:
                decoded.append((message_id, *_decode_record(record, manifest, pipeline, requests, message_id)))
            except (InputError, PayloadTooLarge, HandlerFault) as exc:
                log_event("record rejected", "WARNING", messageId=message_id, error=str(exc))
                failed.add(message_id)

        model = runtime.model() if decoded else None
        started = time.perf_counter()
        finish = None if pipeline is None else (lambda message_id, outputs: pipeline.answer(outputs,
                                                                                         requests[message_id]))
        results, predict_failed = _predict_batched(model, decoded, manifest.runtime.max_batch_rows, finish)
        predict_ms = (time.perf_counter() - started) * 1000
        failed.update(predict_failed)
        if fifo:
            # `attributes` may be null in a malformed record: that record fails alone, never the whole batch.
            groups = {m: _attributes(r).get("MessageGroupId") for m, r in zip(ids, records, strict=True)}
            for message_id, result in results.items():
                if groups.get(message_id):
                    result["messageGroupId"] = groups[message_id]
            first = next((i for i, m in enumerate(ids) if m in failed), len(ids))
            results = {m: results[m] for m in ids[:first] if m in results}  # deliver only what precedes it
        undelivered = runtime.sink().deliver(results) if results else set()
        failed.update(undelivered)
        if fifo:
            first = next((i for i, m in enumerate(ids) if m in failed), len(ids))
            failed.update(ids[first:])
        rows = sum(r for _, _, r in decoded)
        failures = [m for m in ids if m in failed]  # in record order
        metrics = {"BatchSize": rows, "Records": len(records), "FailedRecords": len(failures),
                   "PredictLatency": round(predict_ms, 3)}
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}, metrics, {}


def _attributes(record: Mapping[str, Any]) -> Mapping[str, Any]:
    attributes = record.get("attributes")
    return attributes if isinstance(attributes, Mapping) else {}


def _decode_record(record: Mapping[str, Any], manifest: Manifest, pipeline: Any = None,
                   requests: dict[str, Any] | None = None, message_id: str = "") -> tuple[dict[str, np.ndarray], int]:
    body = record.get("body")
    if not isinstance(body, str) or len(body) > manifest.runtime.max_body_bytes:
        raise InputError(f"the record's body must be a JSON string of at most {manifest.runtime.max_body_bytes} "
                         "bytes (runtime.max_body_bytes)")
    if pipeline is not None:  # a JSON body whose images are base64 strings, or text
        request = pipeline.request_from_body(body.encode())
        if requests is not None:
            requests[message_id] = request
        return pipeline.decode(request)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"the body is not valid JSON: {exc}") from None
    return decode_inputs(payload, manifest.inputs, manifest.runtime, manifest.model.feature_names)


def _predict_batched(model: Any, decoded: list[tuple[str, dict[str, np.ndarray], int]], max_rows: int,
                     finish: Any = None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Run the records as few model batches as the row bound allows; split outputs back per record.

    Batches form and run by the same rules as the HTTP batcher's (runtimes/stacking.py): records
    stack only when the Bento is batchable and their stack keys agree, a batch whose run fails (or
    whose outputs are not per-row) falls back to one run per record, so one poisonous record fails alone.
    """
    results: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    if model is None:
        return results, failed
    manifest = model.manifest
    whole = manifest.whole_inputs
    limit = max_rows if manifest.batchable else 0
    pending = [(stack_key(item[1], whole) if manifest.batchable else (), item) for item in decoded]

    def run(feeds: dict[str, np.ndarray], _members: Sequence[int]) -> dict[str, np.ndarray]:
        return model.backend.run(feeds)

    while pending:
        chosen = take_next([(key, item[2]) for key, item in pending], limit)
        batch = [pending[i][1] for i in chosen]
        if len(batch) > 1:
            answers, outcome = run_stacked(run, [f for _, f, _ in batch], [r for _, _, r in batch], whole)
            if outcome == "run_failed":
                log_event("batch run failed; running records one by one", "WARNING")
        else:
            answers = [run_alone(run, batch[0][1])]
        for (message_id, _, _), answer in zip(batch, answers, strict=True):
            if isinstance(answer, Exception):
                log_event("record failed", "ERROR", messageId=message_id,
                          error=f"{type(answer).__name__}: {answer}")
                failed.append(message_id)
            elif finish is not None:  # labels / handler.py postprocess
                try:
                    results[message_id] = finish(message_id, answer)
                except Exception as exc:
                    log_event("record failed", "ERROR", messageId=message_id, error=f"{type(exc).__name__}: {exc}")
                    failed.append(message_id)
            else:
                results[message_id] = {"outputs": encode_outputs(answer)}
        taken = set(chosen)
        pending = [entry for index, entry in enumerate(pending) if index not in taken]
    return results, failed


class HttpRequest(EventSource):
    """API Gateway REST (1.0) and HTTP API (2.0), function URLs, ALB: Mangum over the shared app."""

    name = "http"

    @staticmethod
    def matches(event: Any) -> bool:
        if not isinstance(event, Mapping) or not isinstance(event.get("requestContext"), Mapping):
            return False
        context = event["requestContext"]
        if "elb" in context:
            return True  # ALB
        if event.get("version") == "2.0" and "http" in context:
            return True  # HTTP API 2.0 and function URLs
        return "httpMethod" in event and "resource" in event  # REST API 1.0

    @staticmethod
    def handle(runtime: LambdaRuntime, event: Any, context: Any) -> Answer:
        event, problem = _well_formed_http_event(event)
        if problem is None:
            try:
                response = runtime.http()(event, context)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:  # Mangum on an event it cannot read
                problem = f"the {type(exc).__name__} {exc} reading the event"
        if problem is not None:
            log_event("malformed HTTP event", "WARNING", error=problem)
            response = {"statusCode": 400, "headers": {"content-type": "application/json"},
                        "body": orjson.dumps({"error": f"malformed request: {problem}"}).decode(),
                        "isBase64Encoded": False}
        return response, {}, {"StatusCode": response.get("statusCode")}


def _well_formed_http_event(event: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The event with what AWS may send as null (headers, multiValueHeaders, query strings) made empty, and the
    reason it cannot be answered as a request (a body flagged base64 that is not), for a 400 instead of a
    function error."""
    fixed = dict(event)
    for key in ("headers", "multiValueHeaders", "queryStringParameters", "multiValueQueryStringParameters"):
        if key in fixed and not isinstance(fixed[key], Mapping):
            if fixed[key] is not None:
                return fixed, f"'{key}' is a {type(fixed[key]).__name__}, not an object"
            fixed.pop(key)
    if "headers" not in fixed and "multiValueHeaders" not in fixed:
        fixed["headers"] = {}  # ALB without headers; Mangum reads them unconditionally
    body = fixed.get("body")
    if body is not None and not isinstance(body, str):
        return fixed, f"'body' is a {type(body).__name__}, not a string"
    if fixed.get("isBase64Encoded") and body:
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return fixed, "'isBase64Encoded' is true but 'body' is not base64"
    return fixed, None


class DirectInvoke(EventSource):
    """`{"inputs": ...}` → `{"outputs": ...}` (or `{"instances": [...]}` → `{"predictions": [...]}`): the HTTP
    contract's JSON without the HTTP wrapper.

    Bad input raises InputError, which the runtime reports as errorType
    "InputError" with the message naming what was wrong.
    """

    name = "direct"

    @staticmethod
    def matches(event: Any) -> bool:
        return isinstance(event, Mapping) and any(field in event for field in ("inputs", *ROW_FIELDS))

    @staticmethod
    def handle(runtime: LambdaRuntime, event: Any, context: Any) -> Answer:
        result = runtime.model().predict(event)
        if "predictions" in result and "outputs" not in result:  # the row format (runtimes/row_format.py)
            return result, {"BatchSize": len(result["predictions"])}, {}
        first: Any = next(iter(result.get("outputs", {}).values()), [])
        return result, {"BatchSize": len(first) if isinstance(first, list) else 1}, {}


EVENT_SOURCES: tuple[type[EventSource], ...] = (ScheduledWarmer, SqsBatch, HttpRequest, DirectInvoke)


def infer(event: Any) -> type[EventSource]:
    """The event source class for `event`, or UnrecognizedEvent saying what is accepted."""
    for source in EVENT_SOURCES:
        if source.matches(event):
            return source
    keys = sorted(event)[:8] if isinstance(event, Mapping) else type(event).__name__
    raise UnrecognizedEvent(
        f"this function does not handle this event (keys: {keys}); it answers a direct invoke "
        '{"inputs": ...} or {"instances": [...]}, API Gateway REST/HTTP API, function URL and ALB requests, '
        'SQS batches, and EventBridge scheduled events (warmers)')
