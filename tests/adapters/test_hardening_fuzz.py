"""Property-based fuzzing (hypothesis), bounded in examples: whatever JSON a client sends, request decoding
answers arrays or an InputError/PayloadTooLarge (a 422/413), never another exception; whatever an event
looks like, the Lambda handler's event parsing picks a source or says it does not know it, and an
HTTP-shaped event always gets an HTTP answer (a dict with a statusCode), never a function error."""

from __future__ import annotations

import contextlib
import copy
import json

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bento_compile.adapters.aws_lambda import LambdaRuntime
from bento_compile.adapters.lambda_events import HttpRequest, UnrecognizedEvent, infer
from bento_compile.runtimes.errors import InputError, PayloadTooLarge
from bento_compile.runtimes.manifest import RuntimeSettings, TensorSpec
from bento_compile.runtimes.tensors import decode_inputs
from tests.support.lambda_support import context, fixture_events

EVENTS = fixture_events()
HTTP_EVENTS = sorted(n for n in EVENTS if n.startswith(("alb", "apigw", "lambda-urls")))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=6), inner, max_size=4), max_leaves=24)
numbers = st.floats(-1e40, 1e40, allow_nan=False) | st.integers(-(2**65), 2**65) | st.none()
rows = st.lists(st.lists(numbers, min_size=0, max_size=4), min_size=0, max_size=4)

SPECS = {
    "float_rows": (TensorSpec("x", "float32", (None, 3)),),
    "int_rows": (TensorSpec("ids", "int64", (None, 2)),),
    "two_inputs": (TensorSpec("a", "float32", (None, 1)), TensorSpec("b", "string", (None, 1))),
    "scalar": (TensorSpec("x", "float32", (None, 2)), TensorSpec("t", "float32", (), batch=False)),
}
SETTINGS = (RuntimeSettings(), RuntimeSettings(allow_missing=False, max_batch_rows=3))


def _decodes_or_refuses(payload, specs, runtime_settings) -> None:
    try:
        feeds, count = decode_inputs(payload, specs, runtime_settings)
    except (InputError, PayloadTooLarge):
        return
    assert set(feeds) == {s.name for s in specs}
    for spec in specs:
        array = feeds[spec.name]
        assert isinstance(array, np.ndarray)
        if array.dtype.kind == "f":
            assert not np.isinf(array).any(), "an overflow must be a 422, not an infinity"
    assert count >= 0


@FUZZ
@given(payload=json_values, spec_name=st.sampled_from(sorted(SPECS)), which=st.sampled_from([0, 1]))
def test_request_decoding_never_raises_anything_but_a_client_error(payload, spec_name, which):
    _decodes_or_refuses(payload, SPECS[spec_name], SETTINGS[which])


@FUZZ
@given(values=rows, which=st.sampled_from([0, 1]))
def test_numeric_rows_decode_or_are_refused_by_name(values, which):
    _decodes_or_refuses({"inputs": values}, SPECS["float_rows"], SETTINGS[which])
    _decodes_or_refuses({"inputs": {"ids": values}}, SPECS["int_rows"], SETTINGS[which])


@FUZZ
@given(body=st.binary(max_size=64))
def test_arbitrary_bytes_are_json_or_a_json_error(body):
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return  # the server answers 422 "the body is not valid JSON"
    _decodes_or_refuses(payload, SPECS["float_rows"], SETTINGS[0])


@FUZZ
@given(event=json_values)
def test_event_parsing_picks_a_source_or_names_the_event_unknown(event):
    with contextlib.suppress(UnrecognizedEvent):  # the handler's answer for an event it does not know
        assert infer(event) is not None


@pytest.fixture(scope="module")
def runtime(built_example):
    return LambdaRuntime(built_example, "eager")


http_changes = st.fixed_dictionaries({}, optional={
    "headers": st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3) | json_values,
    "multiValueHeaders": st.none() | json_values,
    "body": st.none() | st.text(max_size=40) | json_values,
    "isBase64Encoded": st.booleans() | json_values,
    "queryStringParameters": st.none() | json_values,
})


@settings(FUZZ, max_examples=80)
@given(name=st.sampled_from(HTTP_EVENTS), changes=http_changes, drop=st.sets(st.sampled_from(
    ["headers", "multiValueHeaders", "body", "isBase64Encoded"]), max_size=2))
def test_http_shaped_events_always_get_an_http_answer(runtime, name, changes, drop):
    event = copy.deepcopy(EVENTS[name])
    for key in drop:
        event.pop(key, None)
    event.update(changes)
    answer, _metrics, _fields = HttpRequest.handle(runtime, event, context())
    assert isinstance(answer, dict) and isinstance(answer.get("statusCode"), int)
    assert answer["statusCode"] < 500, json.dumps(answer)[:500]
