"""Helpers and fixtures shared by the Lambda tests: the fixture events, a moto S3/SQS server, contexts."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support.helpers import SHARED

EVENTS_DIR = SHARED / "fixtures" / "events"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_REGION": "us-east-1"}


def fixture_events() -> dict[str, dict[str, Any]]:
    """Every sample event in shared/fixtures/events, by file name."""
    events = {path.name: json.loads(path.read_text()) for path in sorted(EVENTS_DIR.glob("*.json"))}
    assert events, f"no events in {EVENTS_DIR}"
    return events


def context(request_id: str = "req-1") -> SimpleNamespace:
    return SimpleNamespace(aws_request_id=request_id, get_remaining_time_in_millis=lambda: 30_000,
                           function_name="bento-test", invoked_function_arn="arn:aws:lambda:us-east-1:1:function:x")


def as_predict_request(name: str, event: dict[str, Any], body: Any, method: str = "POST",
                       path: str = "/predict") -> dict[str, Any]:
    """The fixture event, with only its method, path and body changed, so it reaches /predict."""
    event = copy.deepcopy(event)
    text = body if isinstance(body, str) else json.dumps(body)
    if event.get("version") == "2.0":  # HTTP API 2.0 / function URL
        event["rawPath"] = path
        event["rawQueryString"] = ""
        event["requestContext"]["http"]["method"] = method
        event["requestContext"]["http"]["path"] = path
        event["headers"] = {**event.get("headers", {}), "content-type": "application/json"}
    else:  # REST API 1.0 / ALB
        event["httpMethod"] = method
        event["path"] = path
        event["queryStringParameters"] = None
        event["multiValueQueryStringParameters"] = None
        event["headers"] = {**(event.get("headers") or {}), "content-type": "application/json"}
        if "multiValueHeaders" in event:
            event["multiValueHeaders"] = {**(event.get("multiValueHeaders") or {}),
                                          "content-type": ["application/json"]}
        if "resource" in event:  # the fixture is a {proxy+} resource: the proxied path is the rest
            event["pathParameters"] = {"proxy": path.lstrip("/")}
    event["body"] = text if method == "POST" else None
    event["isBase64Encoded"] = False
    return event


def sqs_batch(template: dict[str, Any], bodies: dict[str, str]) -> dict[str, Any]:
    """The fixture SQS event with one record per (messageId, body)."""
    record = template["Records"][0]
    return {"Records": [{**copy.deepcopy(record), "messageId": mid, "body": body} for mid, body in bodies.items()]}


def emf_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        start = line.find('{"_aws"')
        if start >= 0:
            lines.append(json.loads(line[start:]))
    return lines


def log_lines(text: str, message: str | None = None) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        start = line.find('{"level"')
        if start >= 0:
            entry = json.loads(line[start:])
            if message is None or entry.get("message") == message:
                found.append(entry)
    return found


@pytest.fixture(scope="session")
def moto_server(moto_endpoint):
    """A real moto_server (S3 + SQS API) on 127.0.0.1: the session's one, from conftest."""
    return moto_endpoint


def old_ir_bento(tmp_path: Path, name: str) -> Path:
    """A model onnxruntime 1.16 can read (IR 8, opset 17): what Amazon Linux 2 runtimes can serve."""
    import numpy as np
    import onnx
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import load_config
    from bento_compile.core.store import BentoStore

    X, y = load_iris(return_X_y=True)
    model = to_onnx(LogisticRegression(max_iter=1000).fit(X, y), X[:1].astype(np.float32),
                    target_opset={"": 17, "ai.onnx.ml": 3}, options={"zipmap": False})
    model.ir_version = 8
    onnx.save(model, tmp_path / "tiny.onnx")
    config, _ = load_config(None)
    return build(BuildRequest(tmp_path / "tiny.onnx", config, None, name=name),
                 BentoStore(tmp_path / "store")).path
