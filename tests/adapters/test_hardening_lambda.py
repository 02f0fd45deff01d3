"""AWS-shaped but malformed events get the answer their source expects, never a function error: a 400 for HTTP
sources (a body flagged base64 that is not, null or missing headers), and for SQS a per-record outcome (a FIFO
record whose `attributes` is null must not fail — and so redeliver — the whole batch). Built from the
platform's own sample events in ../shared/fixtures/events."""

from __future__ import annotations

import json

import pytest

from bento_compile.adapters.aws_lambda import LambdaRuntime
from tests.support.lambda_support import as_predict_request, context, fixture_events, sqs_batch

EVENTS = fixture_events()
HTTP_EVENTS = [n for n in EVENTS if n.startswith(("alb", "apigw", "lambda-urls"))]


@pytest.fixture(scope="module")
def runtime(built_example):
    return LambdaRuntime(built_example, "eager")


@pytest.fixture(scope="module")
def example(built_example):
    return json.loads((built_example / "manifest.json").read_text())["example"]


@pytest.mark.parametrize("name", HTTP_EVENTS)
def test_a_body_flagged_base64_that_is_not_gets_a_400(runtime, example, name):
    event = as_predict_request(name, EVENTS[name], example)
    event["isBase64Encoded"] = True
    event["body"] = "this is {not} base64!"
    answer = runtime.handle(event, context())
    assert answer["statusCode"] == 400
    assert "not base64" in json.loads(answer["body"])["error"]


@pytest.mark.parametrize("name", HTTP_EVENTS)
def test_null_or_missing_headers_are_answered(runtime, example, name):
    for change in ("null", "missing"):
        event = as_predict_request(name, EVENTS[name], example)
        event.pop("multiValueHeaders", None)
        if change == "null":
            event["headers"] = None
        else:
            event.pop("headers", None)
        answer = runtime.handle(event, context())
        assert isinstance(answer, dict) and answer["statusCode"] in (200, 400, 415, 422), answer


@pytest.mark.parametrize("name", HTTP_EVENTS)
def test_headers_of_the_wrong_type_get_a_400(runtime, example, name):
    event = as_predict_request(name, EVENTS[name], example)
    event["headers"] = ["content-type", "application/json"]
    answer = runtime.handle(event, context())
    assert answer["statusCode"] == 400 and "'headers' is a list" in json.loads(answer["body"])["error"]


def test_a_fifo_record_with_null_attributes_fails_alone_not_the_batch(runtime, example):
    event = sqs_batch(EVENTS["sqs-event.json"], {"a": json.dumps(example), "b": json.dumps(example),
                                                  "c": "{broken"})
    for record in event["Records"]:
        record["eventSourceARN"] = "arn:aws:sqs:us-east-1:123456789012:orders.fifo"
    event["Records"][0]["attributes"] = None
    answer = runtime.handle(event, context())
    # "c" is bad and is last: only it is redelivered; "a" (null attributes) and "b" were answered.
    assert answer == {"batchItemFailures": [{"itemIdentifier": "c"}]}
