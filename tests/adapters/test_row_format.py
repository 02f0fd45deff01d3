"""The row format of TF Serving / Vertex AI / KServe v1 clients: `{"instances": [...]}` → `{"predictions": [...]}`,
through the app, the Python API and a Lambda direct invoke; the same signature checks as `inputs`."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bento_compile.adapters.http_app import create_app
from bento_compile.runtimes.errors import InputError
from bento_compile.runtimes.model import BentoModel
from bento_compile.runtimes.row_format import predictions


@pytest.fixture(scope="module")
def client(built_example):
    with TestClient(create_app(built_example, load_mode="eager")) as c:
        yield c


@pytest.fixture(scope="module")
def rows(example_model):
    sample = np.load(example_model / "sample.npy")
    return [[None if np.isnan(v) else float(v) for v in row] for row in sample[:3]]


def test_instances_answer_one_prediction_per_row(client, rows):
    columns = client.post("/predict", json={"inputs": rows}).json()["outputs"]
    response = client.post("/predict", json={"instances": rows, "parameters": {"confidence": 0.5}})
    assert response.status_code == 200
    assert response.json() == {"predictions": [
        {"label": columns["label"][i], "probabilities": columns["probabilities"][i]} for i in range(len(rows))]}


@pytest.mark.parametrize("body, fragment", [
    ({"instances": [[1.0, 2.0]]}, "30 features, got 2"),  # the same checks as inputs
    ({"instances": {"input": [[0.0] * 30]}}, '"instances" must be a list'),
    ({"instances": [[0.0] * 30], "signature_name": "serving_default"}, "unknown field 'signature_name'"),
])
def test_bad_instances_are_422_with_a_reason(client, body, fragment):
    response = client.post("/predict", json=body)
    assert response.status_code == 422 and fragment in response.json()["error"]


def test_the_python_api_and_a_direct_invoke_answer_the_row_format(built_example, rows):
    from bento_compile.adapters.aws_lambda import LambdaRuntime
    from tests.support.lambda_support import context

    model = BentoModel.load(built_example)
    answer = model.predict({"instances": rows})
    outputs = model.predict({"inputs": rows})["outputs"]
    assert [p["label"] for p in answer["predictions"]] == outputs["label"]
    runtime = LambdaRuntime(built_example, "eager")
    assert runtime.handle({"instances": rows}, context()) == answer


def test_one_output_is_one_value_per_row_and_a_column_is_flattened():
    assert predictions({"variable": np.array([[1.5], [2.5]], dtype=np.float32)}) == {"predictions": [1.5, 2.5]}
    assert predictions({"scores": np.array([[1.0, 2.0], [3.0, 4.0]])}) == {"predictions": [[1.0, 2.0], [3.0, 4.0]]}


def test_a_model_whose_outputs_are_not_per_row_refuses_the_row_format():
    import re
    from types import SimpleNamespace

    from bento_compile.runtimes.manifest import TensorSpec
    from bento_compile.runtimes.row_format import check_row_outputs

    whole = SimpleNamespace(inputs=[TensorSpec("x", "float32", (3,))], outputs=[TensorSpec("y", "float32", (3,))])
    with pytest.raises(InputError, match=re.escape('send {"inputs": ...}')):
        check_row_outputs(whole)  # type: ignore[arg-type]
