"""The Lambda handler in-process: event sources, SQS batching and sinks, load modes, EMF, errors.

The same handler runs from the built zip under the real awslambdaric in
test_lambda_zip.py; here each behaviour is pinned down quickly and precisely.
"""

from __future__ import annotations

import json
import shutil
import uuid

import pytest

from bento_compile.adapters.aws_lambda import LambdaRuntime
from bento_compile.adapters.lambda_events import (
    DirectInvoke,
    HttpRequest,
    ScheduledWarmer,
    SqsBatch,
    UnrecognizedEvent,
    infer,
)
from bento_compile.runtimes.errors import InputError, IntegrityError
from bento_compile.runtimes.model import BentoModel
from tests.support.lambda_support import (
    CREDENTIALS,
    as_predict_request,
    context,
    emf_lines,
    fixture_events,
    log_lines,
    moto_server,  # noqa: F401 - a fixture, used by name
    sqs_batch,
)

EVENTS = fixture_events()


@pytest.fixture(scope="module")
def example(built_example):
    return json.loads((built_example / "manifest.json").read_text())["example"]


@pytest.fixture(scope="module")
def expected(built_example, example):
    return BentoModel.load(built_example).predict(example)


@pytest.fixture(scope="module")
def runtime(built_example):
    return LambdaRuntime(built_example, "eager")


@pytest.fixture
def bento_copy(built_example, tmp_path):
    target = tmp_path / "bento"
    shutil.copytree(built_example, target)
    return target


def corrupt(bento):
    model = bento / "model.onnx"
    data = bytearray(model.read_bytes())
    data[200] ^= 0x01
    model.write_bytes(bytes(data))


def test_infer_picks_one_source_per_fixture_event():
    expected = {
        "alb-lambda-target-request-headers-only.json": HttpRequest,
        "apigw-request.json": HttpRequest,
        "apigw-v2-request-no-authorizer.json": HttpRequest,
        "lambda-urls-request.json": HttpRequest,
        "scheduled-event.json": ScheduledWarmer,
        "sqs-event.json": SqsBatch,
    }
    assert set(EVENTS) == set(expected), "a new fixture event needs an expected source here"
    for name, event in EVENTS.items():
        assert infer(event) is expected[name], name
    assert infer({"inputs": [[1.0]]}) is DirectInvoke
    assert infer({"warmer": True}) is ScheduledWarmer
    with pytest.raises(UnrecognizedEvent, match="does not handle this event"):
        infer({"hello": "world"})
    with pytest.raises(UnrecognizedEvent):
        infer(["not", "a", "mapping"])


def test_direct_invoke_answers_the_http_contract_json(runtime, example, expected, capsys):
    assert runtime.handle(example, context()) == expected
    with pytest.raises(InputError, match="30 features"):
        runtime.handle({"inputs": [[1.0, 2.0]]}, context())
    with pytest.raises(InputError, match="list of rows"):
        runtime.handle({"inputs": "nope"}, context())
    metrics = emf_lines(capsys.readouterr().out)
    direct = [m for m in metrics if m["Source"] == "direct"]
    assert direct[0]["BatchSize"] == len(example["inputs"]) and direct[0]["Latency"] >= 0
    assert direct[-1]["Errors"] == 1 and direct[-1]["errorType"] == "InputError"


@pytest.mark.parametrize("name", [n for n in EVENTS if n.startswith(("alb", "apigw", "lambda-urls"))])
def test_http_events_go_through_the_shared_app(runtime, example, expected, name):
    stock = runtime.handle(EVENTS[name], context())  # the fixture as-is: a path the contract does not have
    assert stock["statusCode"] == 404 and json.loads(stock["body"]) == {"error": "Not Found"}

    answer = runtime.handle(as_predict_request(name, EVENTS[name], example), context())
    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"]) == json.loads(json.dumps(expected))

    bad = runtime.handle(as_predict_request(name, EVENTS[name], {"inputs": [[1.0, 2.0]]}), context())
    assert bad["statusCode"] == 422 and "30 features" in json.loads(bad["body"])["error"]
    invalid = runtime.handle(as_predict_request(name, EVENTS[name], "{not json"), context())
    assert invalid["statusCode"] == 422

    ready = runtime.handle(as_predict_request(name, EVENTS[name], None, method="GET", path="/readyz"), context())
    assert ready["statusCode"] == 200 and json.loads(ready["body"]) == {"status": "ready"}


def test_warmer_loads_the_model_and_is_counted(built_example, capsys):
    lazy = LambdaRuntime(built_example, "lazy")
    assert not lazy.holder.ready
    answer = lazy.handle(EVENTS["scheduled-event.json"], context())
    assert lazy.holder.ready and answer["warm"] is True and answer["warmPings"] == 1
    assert lazy.handle({"warmer": True}, context())["warmPings"] == 2
    out = capsys.readouterr().out
    assert len(log_lines(out, "warm ping")) == 2
    warm = [m for m in emf_lines(out) if m["Source"] == "warmer"]
    assert [m["WarmPing"] for m in warm] == [1, 1]
    assert warm[0]["ColdStart"] == 1 and "ModelLoadTime" in warm[0]  # the load happened in this invocation
    assert warm[1]["ColdStart"] == 0 and "ModelLoadTime" not in warm[1]


def test_sqs_batch_runs_valid_records_as_one_batch(runtime, example, expected, capsys, monkeypatch):
    model = runtime.model()
    calls = []
    original = model.backend.run

    def counting(feeds):
        calls.append(next(iter(feeds.values())).shape[0])
        return original(feeds)

    monkeypatch.setattr(model.backend, "run", counting)
    bodies = {f"m{i}": json.dumps(example) for i in range(4)}
    bodies["bad-json"] = "Message Body"  # the fixture's own body: not a request
    bodies["bad-shape"] = json.dumps({"inputs": [[1.0]]})
    answer = runtime.handle(sqs_batch(EVENTS["sqs-event.json"], bodies), context())
    assert answer == {"batchItemFailures": [{"itemIdentifier": "bad-json"}, {"itemIdentifier": "bad-shape"}]}
    assert calls == [4 * len(example["inputs"])], "the four valid records must run as ONE model batch"
    out = capsys.readouterr().out
    predictions = {line["messageId"]: line for line in log_lines(out, "prediction")}
    assert sorted(predictions) == ["m0", "m1", "m2", "m3"]
    assert all(p["outputs"] == expected["outputs"] for p in predictions.values())
    sqs = [m for m in emf_lines(out) if m["Source"] == "sqs"][-1]
    assert sqs["Records"] == 6 and sqs["FailedRecords"] == 2 and sqs["BatchSize"] == 4 * len(example["inputs"])


def test_sqs_batch_respects_max_batch_rows(bento_copy, example, monkeypatch):
    manifest = json.loads((bento_copy / "manifest.json").read_text())
    manifest["runtime"]["max_batch_rows"] = 3
    (bento_copy / "manifest.json").write_text(json.dumps(manifest))
    runtime = LambdaRuntime(bento_copy, "eager")
    calls = []
    original = runtime.model().backend.run
    monkeypatch.setattr(runtime.model().backend, "run", lambda feeds: calls.append(len(feeds["input"])) or
                        original(feeds))
    one_row = {"inputs": example["inputs"][:1]}
    answer = runtime.handle(sqs_batch(EVENTS["sqs-event.json"], {f"m{i}": json.dumps(one_row) for i in range(7)}),
                            context())
    assert answer == {"batchItemFailures": []}
    assert calls == [3, 3, 1]


def test_sqs_results_go_to_s3_and_sqs_sinks(runtime, example, expected, moto_server, monkeypatch):  # noqa: F811
    import boto3

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    s3 = boto3.client("s3")
    bucket = f"results-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    bodies = {"a1": json.dumps(example), "a2": json.dumps(example), "broken": "{"}

    monkeypatch.setenv("BENTO_COMPILE_SINK", f"s3://{bucket}/predictions/")
    runtime._sink = None
    assert runtime.handle(sqs_batch(EVENTS["sqs-event.json"], bodies), context()) == {
        "batchItemFailures": [{"itemIdentifier": "broken"}]}
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["predictions/a1.json", "predictions/a2.json"]
    stored = json.loads(s3.get_object(Bucket=bucket, Key="predictions/a1.json")["Body"].read())
    assert stored["messageId"] == "a1" and stored["outputs"] == expected["outputs"]

    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName=f"results-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    monkeypatch.setenv("BENTO_COMPILE_SINK", queue)
    runtime._sink = None
    assert runtime.handle(sqs_batch(EVENTS["sqs-event.json"], bodies), context()) == {
        "batchItemFailures": [{"itemIdentifier": "broken"}]}
    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
    messages = {json.loads(m["Body"])["messageId"]: m for m in received["Messages"]}
    assert sorted(messages) == ["a1", "a2"]
    assert messages["a2"]["MessageAttributes"]["sourceMessageId"]["StringValue"] == "a2"

    # A result that cannot be delivered counts as failed, so SQS redelivers the record.
    monkeypatch.setenv("BENTO_COMPILE_SINK", f"s3://missing-{uuid.uuid4().hex[:10]}/x/")
    runtime._sink = None
    failed = runtime.handle(sqs_batch(EVENTS["sqs-event.json"], bodies), context())["batchItemFailures"]
    assert sorted(f["itemIdentifier"] for f in failed) == ["a1", "a2", "broken"]
    runtime._sink = None


def test_a_bad_sink_setting_is_a_clear_error(runtime, example, monkeypatch):
    monkeypatch.setenv("BENTO_COMPILE_SINK", "ftp://nowhere")
    runtime._sink = None
    with pytest.raises(ValueError, match="is not a sink"):
        runtime.handle(sqs_batch(EVENTS["sqs-event.json"], {"a": json.dumps(example)}), context())
    runtime._sink = None


def test_load_modes_and_cold_start_logging(built_example, example, expected, capsys, monkeypatch):
    lazy = LambdaRuntime(built_example, "lazy")
    assert not lazy.holder.ready
    assert lazy.handle(example, context()) == expected
    out = capsys.readouterr().out
    cold = log_lines(out, "cold start")[0]
    assert cold["load_mode"] == "lazy" and cold["model_ready"] is False
    assert log_lines(out, "model loaded")[0]["load_seconds"] > 0
    first = emf_lines(out)[0]
    assert first["ColdStart"] == 1 and first["ModelLoadTime"] > 0

    background = LambdaRuntime(built_example, "background")
    assert background.handle(example, context()) == expected and background.holder.ready

    monkeypatch.setenv("BENTO_COMPILE_LOAD", "lazy")
    assert LambdaRuntime(built_example).load_mode == "lazy"
    monkeypatch.setenv("BENTO_COMPILE_LOAD", "sometimes")
    with pytest.raises(ValueError, match="must be one of eager, lazy, background"):
        LambdaRuntime(built_example)


def test_load_mode_comes_from_the_manifest_targets(bento_copy, monkeypatch):
    monkeypatch.delenv("BENTO_COMPILE_LOAD", raising=False)
    manifest = json.loads((bento_copy / "manifest.json").read_text())
    manifest["targets"] = {"lambda": {"load": "background"}}
    (bento_copy / "manifest.json").write_text(json.dumps(manifest))
    assert LambdaRuntime(bento_copy).load_mode == "background"


def test_corrupted_model_fails_init_naming_the_file(bento_copy, example):
    corrupt(bento_copy)
    with pytest.raises(IntegrityError, match=r"model.onnx has sha256 [0-9a-f]{64} but the manifest says"):
        LambdaRuntime(bento_copy, "eager")
    lazy = LambdaRuntime(bento_copy, "lazy")  # lazy: init succeeds, the first event reports the cause
    with pytest.raises(IntegrityError, match=r"model\.onnx has sha256"):
        lazy.handle(example, context())
    with pytest.raises(IntegrityError, match=r"model\.onnx has sha256"):
        lazy.handle({"warmer": True}, context())


def test_missing_manifest_fails_init(tmp_path):
    with pytest.raises(IntegrityError, match=r"manifest\.json is missing"):
        LambdaRuntime(tmp_path, "eager")


def test_emf_lines_declare_every_metric_they_carry(runtime, example, capsys):
    runtime.handle(example, context())
    runtime.handle(sqs_batch(EVENTS["sqs-event.json"], {"x": json.dumps(example)}), context())
    for line in emf_lines(capsys.readouterr().out):
        declaration = line["_aws"]["CloudWatchMetrics"][0]
        assert declaration["Namespace"] == "BentoCompile"
        assert declaration["Dimensions"] == [["FunctionName", "Source"]]
        for metric in declaration["Metrics"]:
            assert isinstance(line[metric["Name"]], int | float), metric
            assert metric["Unit"] in ("Milliseconds", "Count"), metric
        assert isinstance(line["_aws"]["Timestamp"], int)


def test_direct_and_sqs_events_never_import_the_http_stack(built_example):
    """Every cold start pays for what it imports: direct, SQS and warmer events must not load
    FastAPI, Mangum, pydantic or boto3 (and nothing of the compiler)."""
    import subprocess
    import sys
    import textwrap

    blocked = ["fastapi", "starlette", "mangum", "pydantic", "boto3", "botocore", "sklearn", "onnx", "click",
               "yaml", "bento_compile.compiler", "bento_compile.targets", "bento_compile.cli",
               "bento_compile.core"]
    script = textwrap.dedent(f"""
        import json, sys, types
        BLOCKED = {blocked!r}
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Blocker())
        from bento_compile.adapters.aws_lambda import LambdaRuntime
        runtime = LambdaRuntime({str(built_example)!r}, "eager")
        ctx = types.SimpleNamespace(aws_request_id="r", get_remaining_time_in_millis=lambda: 1000)
        example = json.load(open({str(built_example / "manifest.json")!r}))["example"]
        out = runtime.handle(example, ctx)
        runtime.handle({{"warmer": True}}, ctx)
        record = {{"eventSource": "aws:sqs", "messageId": "m", "body": json.dumps(example)}}
        sqs = runtime.handle({{"Records": [record]}}, ctx)
        leaked = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
        print(json.dumps({{"labels": out["outputs"]["label"], "sqs": sqs, "leaked": leaked}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["leaked"] == [] and answer["sqs"] == {"batchItemFailures": []} and answer["labels"]


def test_fifo_batches_fail_everything_after_the_first_failure(runtime, example, expected, capsys):
    """AWS's rule for FIFO partial batch responses: report the failed record and every later one,
    so SQS never delivers a group's later message before an earlier one."""
    fifo = json.loads(json.dumps(EVENTS["sqs-event.json"]))
    fifo["Records"][0]["eventSourceARN"] = "arn:aws:sqs:us-west-2:123456789012:requests.fifo"
    fifo["Records"][0]["attributes"]["MessageGroupId"] = "customer-7"
    batch = sqs_batch(fifo, {"f1": json.dumps(example), "f2": "{broken", "f3": json.dumps(example)})
    assert runtime.handle(batch, context()) == {
        "batchItemFailures": [{"itemIdentifier": "f2"}, {"itemIdentifier": "f3"}]}
    predictions = log_lines(capsys.readouterr().out, "prediction")
    assert [p["messageId"] for p in predictions] == ["f1"]  # f3 is redelivered, in order, not answered twice
    assert predictions[0]["messageGroupId"] == "customer-7"
    assert predictions[0]["outputs"] == expected["outputs"]


def test_fifo_output_queue_gets_group_and_deduplication_ids(runtime, example, moto_server, monkeypatch):  # noqa: F811
    import boto3

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName=f"out-{uuid.uuid4().hex[:8]}.fifo",
                             Attributes={"FifoQueue": "true"})["QueueUrl"]
    monkeypatch.setenv("BENTO_COMPILE_SINK", queue)
    runtime._sink = None
    try:
        batch = sqs_batch(EVENTS["sqs-event.json"], {"g1": json.dumps(example), "g2": json.dumps(example)})
        assert runtime.handle(batch, context()) == {"batchItemFailures": []}
        runtime.handle(batch, context())  # a redelivery: deduplicated by messageId
        received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, AttributeNames=["All"])
        bodies = [json.loads(m["Body"]) for m in received["Messages"]]
        assert [b["messageId"] for b in bodies] == ["g1", "g2"]
        assert {m["Attributes"]["MessageGroupId"] for m in received["Messages"]} == {
            runtime.manifest.tag.replace(":", "-")}
    finally:
        runtime._sink = None
