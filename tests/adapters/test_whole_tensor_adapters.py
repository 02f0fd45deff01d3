"""A model with a whole-tensor input beside its rows, through every adapter: HTTP (with the
micro-batcher), Lambda direct invoke, SQS batches and the edge runner's one-shot predict.

The Bento is y = x @ W + bias (ONNX Gemm): `x` is rows along a symbolic batch axis, `bias` a
whole tensor of its own. Requests that send the same bias may share a run; a different bias runs
apart and must get its own answer.
"""

from __future__ import annotations

import io
import json
from argparse import Namespace
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

from bento_compile.adapters.aws_lambda import LambdaRuntime
from bento_compile.adapters.http_app import create_app
from bento_compile.runtimes.errors import InputError
from tests.support.lambda_support import context, fixture_events, log_lines, sqs_batch

W = np.arange(6, dtype=np.float32).reshape(3, 2)


def expected(x, bias) -> list:
    return (np.asarray(x, np.float32) @ W + np.asarray(bias, np.float32)).tolist()


@pytest.fixture(scope="module")
def gemm_bento(tmp_path_factory):
    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import BentoConfig
    from bento_compile.core.store import BentoStore

    folder = tmp_path_factory.mktemp("gemm")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "bias"], ["y"])], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(W, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "gemm.onnx"))
    return build(BuildRequest(folder / "gemm.onnx", BentoConfig(), name="gemm"), BentoStore(folder / "store")).path


def test_http_answers_each_request_with_its_own_whole_tensor_under_concurrency(gemm_bento):
    requests = [([[1, 0, 0]] * (i % 3 + 1), [float(i % 2), 100.0 * (i % 2)]) for i in range(24)]
    with TestClient(create_app(gemm_bento, load_mode="eager")) as client:
        meta = client.get("/metadata").json()
        assert meta["batchable"] is True and [i["batch"] for i in meta["inputs"]] == [True, False]
        schema = client.get("/openapi.json").json()
        body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        bias = body["properties"]["inputs"]["properties"]["bias"]
        assert bias["x-batch"] is False and bias["minItems"] == bias["maxItems"] == 2

        def post(item):
            x, b = item
            return client.post("/predict", json={"inputs": {"x": x, "bias": b}}).json()

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, requests))
        for (x, b), answer in zip(requests, answers, strict=True):
            assert answer == {"outputs": {"y": expected(x, b)}}
        wrong = client.post("/predict", json={"inputs": {"x": [[1, 0, 0]], "bias": [1.0, 2.0, 3.0]}})
        assert wrong.status_code == 422
        assert wrong.json()["error"] == "inputs.bias must have shape 2 (a whole tensor, not rows), got 3"


def test_lambda_direct_invoke_and_sqs_keep_whole_tensors_apart(gemm_bento, capsys, monkeypatch):
    runtime = LambdaRuntime(gemm_bento, "eager")
    event = {"inputs": {"x": [[0, 1, 0]], "bias": [0.5, 0.5]}}
    assert runtime.handle(event, context()) == {"outputs": {"y": expected([[0, 1, 0]], [0.5, 0.5])}}
    with pytest.raises(InputError, match=r"inputs\.bias must have shape 2"):
        runtime.handle({"inputs": {"x": [[0, 1, 0]], "bias": [0.5]}}, context())

    runs = []
    original = runtime.model().backend.run
    monkeypatch.setattr(runtime.model().backend, "run",
                        lambda feeds: runs.append((len(feeds["x"]), feeds["bias"].tolist())) or original(feeds))
    bodies = {"a": {"x": [[1, 0, 0]], "bias": [0, 0]}, "b": {"x": [[0, 0, 1]] * 2, "bias": [0, 0]},
              "c": {"x": [[1, 1, 1]], "bias": [9, 9]}}
    capsys.readouterr()
    answer = runtime.handle(sqs_batch(fixture_events()["sqs-event.json"],
                                      {k: json.dumps({"inputs": v}) for k, v in bodies.items()}), context())
    assert answer == {"batchItemFailures": []}
    assert runs == [(3, [0.0, 0.0]), (1, [9.0, 9.0])]  # a and b shared a run (same bias); c ran apart
    predictions = {line["messageId"]: line["outputs"] for line in log_lines(capsys.readouterr().out, "prediction")}
    for key, value in bodies.items():
        assert predictions[key] == {"y": expected(value["x"], value["bias"])}


def test_the_edge_runner_predicts_named_whole_tensors(gemm_bento):
    from bento_compile.adapters.edge_runner import cmd_predict

    class Layout:
        bento = gemm_bento

    out = io.StringIO()
    request = json.dumps({"inputs": {"x": [[0, 0, 1]], "bias": [1, -1]}})
    status = cmd_predict(Layout(), Namespace(input=None), io.StringIO(request), out)  # type: ignore[arg-type]
    assert status == 0 and json.loads(out.getvalue()) == {"outputs": {"y": expected([[0, 0, 1]], [1, -1])}}
