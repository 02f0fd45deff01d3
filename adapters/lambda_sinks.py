"""Where SQS batch predictions go: an SQS queue, an S3 prefix, or JSON lines in the log.

An SQS-triggered function has nobody to answer, so its results must be
delivered somewhere. Each result is keyed by the record's messageId. A record
whose result could not be delivered counts as failed (SQS redelivers it), so
a sink reports, per record, whether delivery succeeded.

Configured by env BENTO_COMPILE_SINK (the SAM template sets it from bento.yaml):
    s3://bucket/prefix/     one object per record: prefix + messageId + ".json"
    https://sqs.…/queue     an SQS queue URL: one message per record (send_message_batch)
    (unset)                 one JSON line per record on stdout (CloudWatch Logs)
boto3 comes from the Lambda Python runtime (it is not bundled in the zip); it is
imported only when an AWS sink is configured, so it costs nothing otherwise.
AWS_ENDPOINT_URL (standard boto3) points it at an S3/SQS-compatible server.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from bento_compile.adapters.lambda_metrics import log_event

SQS_MAX_MESSAGE_BYTES = 256 * 1024
_SQS_ENTRY_ID = re.compile(r"[^A-Za-z0-9_-]")


class Sink(Protocol):
    description: str

    def deliver(self, results: Mapping[str, dict[str, Any]]) -> set[str]:
        """Deliver {messageId: result}; return the messageIds that could NOT be delivered."""
        ...


def _body(message_id: str, result: dict[str, Any], tag: str) -> bytes:
    return orjson.dumps({"messageId": message_id, "model": tag, **result}, option=orjson.OPT_SERIALIZE_NUMPY)


class LogSink:
    """JSON lines on stdout: the default, for trying things out and low-volume queues."""

    description = "log"

    def __init__(self, tag: str):
        self.tag = tag

    def deliver(self, results: Mapping[str, dict[str, Any]]) -> set[str]:
        for message_id, result in results.items():
            log_event("prediction", messageId=message_id, model=self.tag, **result)
        return set()


class S3Sink:
    """One object per record under a prefix; the key is the messageId, so a redelivery overwrites."""

    def __init__(self, uri: str, tag: str, client: Any = None):
        rest = uri[len("s3://"):]
        self.bucket, _, self.prefix = rest.partition("/")
        if not self.bucket:
            raise ValueError(f"BENTO_COMPILE_SINK={uri!r} names no bucket: use s3://bucket/prefix/")
        self.tag = tag
        self.description = f"s3://{self.bucket}/{self.prefix}"
        self._client = client

    def client(self) -> Any:
        if self._client is None:
            import boto3  # provided by the Lambda Python runtime

            self._client = boto3.client("s3")
        return self._client

    def deliver(self, results: Mapping[str, dict[str, Any]]) -> set[str]:
        failed: set[str] = set()
        for message_id, result in results.items():
            key = f"{self.prefix}{message_id}.json"
            try:
                self.client().put_object(Bucket=self.bucket, Key=key, Body=_body(message_id, result, self.tag),
                                         ContentType="application/json")
            except Exception as exc:  # any delivery failure: SQS retries this record
                log_event("sink delivery failed", "ERROR", messageId=message_id, sink=self.description,
                          error=f"{type(exc).__name__}: {exc}")
                failed.add(message_id)
        return failed


class SqsSink:
    """One message per record on an output queue, sent ten at a time (the SQS batch limit)."""

    def __init__(self, queue_url: str, tag: str, client: Any = None):
        self.queue_url = queue_url
        self.fifo = queue_url.rstrip("/").endswith(".fifo")
        self.tag = tag
        self.description = queue_url
        self._client = client

    def client(self) -> Any:
        if self._client is None:
            import boto3  # provided by the Lambda Python runtime

            self._client = boto3.client("sqs")
        return self._client

    def _entry(self, entry_id: str, message_id: str, body: bytes, group: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"Id": entry_id, "MessageBody": body.decode(), "MessageAttributes": {
            "sourceMessageId": {"DataType": "String", "StringValue": message_id}}}
        if self.fifo:  # FIFO output queue: keep the input's group, and a redelivery is deduplicated
            entry["MessageGroupId"] = group[:128]
            entry["MessageDeduplicationId"] = _SQS_ENTRY_ID.sub("_", message_id)[:128]
        return entry

    def deliver(self, results: Mapping[str, dict[str, Any]]) -> set[str]:
        failed: set[str] = set()
        entries = []
        for index, (message_id, result) in enumerate(results.items()):
            body = _body(message_id, result, self.tag)
            if len(body) > SQS_MAX_MESSAGE_BYTES:
                log_event("sink delivery failed", "ERROR", messageId=message_id, sink=self.description,
                          error=f"result is {len(body)} bytes, over the SQS limit of {SQS_MAX_MESSAGE_BYTES}")
                failed.add(message_id)
                continue
            entries.append((f"r{index}-{_SQS_ENTRY_ID.sub('_', message_id)[:60]}", message_id, body,
                            str(result.get("messageGroupId") or self.tag.replace(":", "-"))))
        for start in range(0, len(entries), 10):
            chunk = entries[start:start + 10]
            by_id = {entry_id: message_id for entry_id, message_id, _, _ in chunk}
            try:
                answer = self.client().send_message_batch(QueueUrl=self.queue_url, Entries=[
                    self._entry(entry_id, message_id, body, group) for entry_id, message_id, body, group in chunk])
            except Exception as exc:
                log_event("sink delivery failed", "ERROR", sink=self.description, records=len(chunk),
                          error=f"{type(exc).__name__}: {exc}")
                failed.update(by_id.values())
                continue
            for item in answer.get("Failed", []):
                message_id = by_id.get(item.get("Id"), "")
                log_event("sink delivery failed", "ERROR", messageId=message_id, sink=self.description,
                          error=f"{item.get('Code')}: {item.get('Message')}")
                failed.add(message_id)
        return failed


def sink_from_environment(tag: str, default: str | None = None) -> Sink:
    """The sink named by BENTO_COMPILE_SINK (or `default`, from the Bento's lambda settings)."""
    target = os.environ.get("BENTO_COMPILE_SINK", default or "").strip()
    if not target or target == "log":
        return LogSink(tag)
    if target.startswith("s3://"):
        return S3Sink(target, tag)
    if target.startswith(("https://", "http://")):
        return SqsSink(target, tag)
    raise ValueError(f"BENTO_COMPILE_SINK={target!r} is not a sink: use s3://bucket/prefix/, an SQS queue URL "
                     "(https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE), or leave it unset for log lines")
