"""The HTTP contract, through the real app (TestClient) and through a real `bento-compile serve`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bento_compile.adapters.http_app import create_app
from tests.support.helpers import free_port, run_cli, stop_process, wait_http


@pytest.fixture(scope="module")
def client(built_example):
    with TestClient(create_app(built_example, load_mode="eager")) as c:
        yield c


@pytest.fixture(scope="module")
def rows(example_model):
    sample = np.load(example_model / "sample.npy")
    return [[None if np.isnan(v) else float(v) for v in row] for row in sample]


def test_predict_rows_gives_label_and_probabilities(client, rows, example_model):
    import joblib

    response = client.post("/predict", json={"inputs": rows[:5]})
    assert response.status_code == 200
    outputs = response.json()["outputs"]
    assert set(outputs) == {"label", "probabilities"}
    model = joblib.load(example_model / "model.joblib")
    X = np.array([[np.nan if v is None else v for v in r] for r in rows[:5]], dtype=np.float32).astype(float)
    assert outputs["label"] == model.predict(X).tolist()
    np.testing.assert_allclose(outputs["probabilities"], model.predict_proba(X), atol=1e-4)


def test_named_inputs_form(client, rows):
    named = client.post("/predict", json={"inputs": {"input": rows[:2]}}).json()
    plain = client.post("/predict", json={"inputs": rows[:2]}).json()
    assert named == plain


def test_null_is_a_missing_value(client, rows):
    row = list(rows[0])
    row[3] = None
    response = client.post("/predict", json={"inputs": [row]})
    assert response.status_code == 200
    assert len(response.json()["outputs"]["label"]) == 1


@pytest.mark.parametrize("body, status, fragment", [
    ({"inputs": [[1.0, 2.0]]}, 422, "30 features, got 2"),
    ({"inputs": [[1.0] * 30, [1.0] * 29]}, 422, "inputs.input[1] has 29 values"),
    ({"inputs": [[1.0] * 29 + ["x"]]}, 422, "inputs.input[0][29] is the string 'x'"),
    ({"inputs": [[1.0] * 29 + [{"a": 1}]]}, 422, "is an object"),
    ({"inputs": [1.0] * 30}, 422, "1 dimension(s) but the model expects 2"),
    ({"inputs": {"wrong": [[1.0] * 30]}}, 422, "unknown input 'wrong'"),
    ({"inputs": {}}, 422, "missing input 'input'"),
    ({"rows": [[1.0] * 30]}, 422, '"inputs" field'),
    ({"inputs": "hello"}, 422, "must be a list"),
    ({"inputs": []}, 422, None),
    ([1, 2], 422, '"inputs" field'),
])
def test_bad_inputs_are_422_with_a_reason(client, body, status, fragment):
    response = client.post("/predict", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert "Traceback" not in error
    if fragment:
        assert fragment in error


def test_invalid_json_is_422(client):
    response = client.post("/predict", content=b'{"inputs": [[1, 2,', headers={"content-type": "application/json"})
    assert response.status_code == 422 and "not valid JSON" in response.json()["error"]
    nan_literal = client.post("/predict", content=b'{"inputs": [[NaN]]}')
    assert nan_literal.status_code == 422


def test_body_over_the_limit_is_413(client):
    huge = b'{"inputs": [' + b",".join([b"[" + b",".join([b"1.0"] * 30) + b"]"] * 9000) + b"]}"
    assert len(huge) > 1024 * 1024
    response = client.post("/predict", content=huge)
    assert response.status_code == 413 and "max_body_bytes" in response.json()["error"]


def test_too_many_rows_is_413(client):
    response = client.post("/predict", json={"inputs": [[0.5] * 30] * 513})
    assert response.status_code == 413 and "max_batch_rows" in response.json()["error"]


def test_unknown_route_and_method(client):
    missing = client.get("/nope")
    assert missing.status_code == 404 and "error" in missing.json()
    assert client.get("/predict").status_code == 405


def test_health_ready_metadata(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    meta = client.get("/metadata").json()
    assert meta["tag"].startswith("cancer:")
    assert meta["inputs"] == [{"name": "input", "dtype": "float32", "shape": [None, 30], "batch": True}]
    assert {o["name"] for o in meta["outputs"]} == {"label", "probabilities"}
    assert meta["providers"] == ["CPUExecutionProvider"]
    assert {"onnxruntime", "skl2onnx", "bento_compile"} <= set(meta["versions"])


def test_openapi_documents_the_real_signature(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    rows_schema = body["properties"]["inputs"]["oneOf"][0]
    assert rows_schema["items"]["minItems"] == rows_schema["items"]["maxItems"] == 30
    assert len(body["example"]["inputs"]) == 2 and len(body["example"]["inputs"][0]) == 30
    responses = spec["paths"]["/predict"]["post"]["responses"]
    assert {"200", "413", "422", "503"} <= set(responses)
    assert set(responses["200"]["content"]["application/json"]["schema"]["properties"]["outputs"]["properties"]) \
        == {"label", "probabilities"}
    assert client.get("/docs").status_code == 200


def test_missing_values_refused_when_configured(built_example, tmp_path, rows):
    """runtime.allow_missing: false turns a null into a 422 that names its position."""
    bento = tmp_path / "bento"
    shutil.copytree(built_example, bento)
    manifest = json.loads((bento / "manifest.json").read_text())
    manifest["runtime"]["allow_missing"] = False
    (bento / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(create_app(bento, load_mode="eager")) as strict:
        row = list(rows[2])
        row[4] = None
        response = strict.post("/predict", json={"inputs": [rows[1], row]})
        assert response.status_code == 422
        assert "inputs.input[1][4] is null" in response.json()["error"]
        assert strict.post("/predict", json={"inputs": [rows[1]]}).status_code == 200


def test_readyz_is_503_until_loaded_and_when_load_fails(built_example, tmp_path):
    bento = tmp_path / "bento"
    shutil.copytree(built_example, bento)
    with TestClient(create_app(bento, load_mode="lazy")) as lazy:
        assert lazy.get("/readyz").status_code == 503
        assert lazy.get("/healthz").status_code == 200
        assert lazy.get("/metadata").json()["providers"] is None
    model = bento / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with TestClient(create_app(bento, load_mode="eager")) as broken:
        ready = broken.get("/readyz")
        assert ready.status_code == 503 and "model.onnx has sha256" in ready.json()["error"]
        predict = broken.post("/predict", json={"inputs": [[0.0] * 30]})
        assert predict.status_code == 503


@pytest.mark.slow
def test_bento_compile_serve_real_server(example_model):
    """The CLI path of the README: build, then `serve`, then real HTTP requests."""
    tag = run_cli("build", "-f", str(example_model / "bento.yaml")).stdout.strip().splitlines()[-1]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bento_compile.cli", "serve", tag, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/readyz", proc=server)
        request = urllib.request.Request(base + "/predict", data=json.dumps({"inputs": [[0.1] * 30]}).encode())
        with urllib.request.urlopen(request, timeout=5) as response:
            outputs = json.loads(response.read())["outputs"]
        assert len(outputs["probabilities"][0]) == 2
        # The row format of Vertex AI / TF Serving clients, through the lean protocol's /predict too.
        rowwise = urllib.request.Request(base + "/predict", data=json.dumps({"instances": [[0.1] * 30]}).encode())
        with urllib.request.urlopen(rowwise, timeout=5) as response:
            assert json.loads(response.read())["predictions"] == [
                {"label": outputs["label"][0], "probabilities": outputs["probabilities"][0]}]
        bad = urllib.request.Request(base + "/predict", data=b'{"inputs": [[1]]}')
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bad, timeout=5)
        assert info.value.code == 422
    finally:
        stop_process(server)


# ---- the row format of TF Serving / Vertex AI / KServe v1 clients: {"instances": [...]} → {"predictions": [...]},
# through the app, the Python API and a Lambda direct invoke; the same signature checks as "inputs".

def test_instances_answer_one_prediction_per_row(client, rows):
    rows = rows[:3]
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
    rows = rows[:3]
    from bento_compile.adapters.aws_lambda import LambdaRuntime
    from bento_compile.runtimes.model import BentoModel
    from tests.support.lambda_support import context

    model = BentoModel.load(built_example)
    answer = model.predict({"instances": rows})
    outputs = model.predict({"inputs": rows})["outputs"]
    assert [p["label"] for p in answer["predictions"]] == outputs["label"]
    runtime = LambdaRuntime(built_example, "eager")
    assert runtime.handle({"instances": rows}, context()) == answer


def test_one_output_is_one_value_per_row_and_a_column_is_flattened():
    from bento_compile.runtimes.row_format import predictions

    assert predictions({"variable": np.array([[1.5], [2.5]], dtype=np.float32)}) == {"predictions": [1.5, 2.5]}
    assert predictions({"scores": np.array([[1.0, 2.0], [3.0, 4.0]])}) == {"predictions": [[1.0, 2.0], [3.0, 4.0]]}


def test_a_model_whose_outputs_are_not_per_row_refuses_the_row_format():
    import re
    from types import SimpleNamespace

    from bento_compile.runtimes.manifest import TensorSpec
    from bento_compile.runtimes.row_format import check_row_outputs

    whole = SimpleNamespace(inputs=[TensorSpec("x", "float32", (3,))], outputs=[TensorSpec("y", "float32", (3,))])
    from bento_compile.runtimes.errors import InputError

    with pytest.raises(InputError, match=re.escape('send {"inputs": ...}')):
        check_row_outputs(whole)  # type: ignore[arg-type]


def test_mlflow_scoring_bodies_are_read_as_rows(client, rows):
    """MLflow's `dataframe_records` and `dataframe_split` bodies; without recorded feature names, the
    split's data are the rows."""
    expected = client.post("/predict", json={"instances": rows[:2]}).json()
    split = {"dataframe_split": {"columns": [f"c{i}" for i in range(30)], "data": rows[:2]}, "params": {}}
    assert client.post("/predict", json=split).json() == expected
    assert client.post("/predict", json={"dataframe_records": rows[:2]}).json() == expected
    bad = client.post("/predict", json={"dataframe_split": {"columns": ["a"]}})
    assert bad.status_code == 422 and '"data"' in bad.json()["error"]


def test_a_dataframe_split_is_read_by_column_name_for_a_table_model(tmp_path):
    pd = pytest.importorskip("pandas")
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import BentoConfig
    from bento_compile.core.store import BentoStore
    from bento_compile.runtimes.model import BentoModel
    from tests.support.helpers import save

    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"age": rng.uniform(18, 80, 200), "plan": rng.choice(["basic", "pro"], 200)})
    model = Pipeline([("c", ColumnTransformer([("n", StandardScaler(), ["age"]), ("p", OneHotEncoder(), ["plan"])])),
                      ("m", LogisticRegression())]).fit(frame, frame["age"] < 40)
    result = build(BuildRequest(save(model, tmp_path / "m.joblib"), BentoConfig(), name="table"), BentoStore())
    served = BentoModel.load(result.path)
    # columns in another order than the model's inputs: matched by name
    answer = served.predict({"dataframe_split": {"columns": ["plan", "age"], "data": [["pro", 30.0], ["basic", 70]]}})
    assert [p["label"] for p in answer["predictions"]] == model.predict(
        pd.DataFrame({"age": [30.0, 70.0], "plan": ["pro", "basic"]})).tolist()
