"""handler.py: preprocess/postprocess around the model, hashed with the Bento, checked at build against
the runtime's own packages, InputError → 422 with its message, anything else → 500 without a trace."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from bento_compile.adapters.http_app import create_app
from bento_compile.compiler.build import BuildRequest, build
from bento_compile.core.config import BentoConfig
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.errors import IntegrityError
from bento_compile.runtimes.manifest import read_manifest
from bento_compile.runtimes.model import BentoModel

HANDLER = '''
import numpy as np

from bento_compile.runtimes.handler_hook import InputError

FIELDS = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def preprocess(request):
    if "flowers" not in request:
        return request
    flowers = request["flowers"]
    if not isinstance(flowers, list) or not flowers:
        raise InputError("flowers: send a non-empty list of {sepal_length, ...} objects")
    missing = [f for f in FIELDS if f not in flowers[0]]
    if missing:
        raise InputError(f"flowers[0]: missing {missing[0]}")
    return {"inputs": [[float(flower[f]) for f in FIELDS] for flower in flowers], "boom": request.get("boom")}


def postprocess(answer, request):
    if request.get("boom"):
        raise RuntimeError("a secret detail that must not reach the client")
    return {"species": [p["label"] for p in answer["predictions"]],
            "confidence": [float(np.round(p["score"], 3)) for p in answer["predictions"]]}
'''


@pytest.fixture(scope="module")
def iris_folder(tmp_path_factory):
    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])
    folder = tmp_path_factory.mktemp("iris_handler")
    joblib.dump(LogisticRegression(max_iter=500).fit(x.astype(np.float32), names[y]), folder / "model.joblib")
    np.save(folder / "sample.npy", x[::5].astype(np.float32))
    (folder / "handler.py").write_text(HANDLER)
    return folder


def _build(folder, handler: str = "handler.py", name: str = "iris-hook"):
    config = BentoConfig.model_validate({"handler": handler, "outputs": {"probabilities": {"top_k": 1}}})
    return build(BuildRequest(folder / "model.joblib", config, folder, name=name,
                              sample_path=folder / "sample.npy"), BentoStore())


def test_handler_shapes_requests_and_answers_over_http(iris_folder):
    result = _build(iris_folder)
    manifest = read_manifest(result.path)
    assert manifest.pipeline.handler == "handler.py" and "handler.py" in manifest.files
    flower = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    with TestClient(create_app(result.path, load_mode="eager")) as client:
        ok = client.post("/predict", json={"flowers": [flower]})
        assert ok.status_code == 200, ok.text
        assert ok.json()["species"] == ["setosa"]
        refused = client.post("/predict", json={"flowers": [{"sepal_length": 1}]})
        assert refused.status_code == 422 and refused.json() == {"error": "flowers[0]: missing sepal_width"}
        failed = client.post("/predict", json={"flowers": [flower], "boom": True})
        assert failed.status_code == 500
        assert "secret" not in failed.text and "Traceback" not in failed.text
        assert "handler.py postprocess failed" in failed.json()["error"]
        plain = client.post("/predict", json={"inputs": [[6.5, 3.0, 5.5, 1.8]]})  # passes through preprocess
        assert plain.json()["species"] == ["virginica"]
    # the same hooks run for every adapter's direct path (Lambda direct events, edge `run predict`)
    assert BentoModel.load(result.path).predict({"flowers": [flower]})["species"] == ["setosa"]


def test_a_changed_handler_is_refused_at_load(iris_folder, tmp_path):
    import shutil

    result = _build(iris_folder, name="iris-hook-tamper")
    copy = tmp_path / "bento"
    shutil.copytree(result.path, copy)
    (copy / "handler.py").write_text(HANDLER + "\nimport os\n")
    with pytest.raises(IntegrityError, match=r"handler\.py"):
        BentoModel.load(copy)


@pytest.mark.parametrize(("source", "message"), [
    ("import pandas\ndef preprocess(r):\n    return r\n", "imports 'pandas'"),
    ("def helper():\n    pass\n", "defines neither preprocess"),
    ("def preprocess(r):\n    raise ValueError('no')\n", "preprocess fails on the example request"),
    ("def postprocess(a, r):\n    return a['nope']\n", "postprocess fails on the sample"),
    ("def preprocess(r)\n", "fails to import"),
])
def test_handler_problems_are_build_errors(iris_folder, source, message):
    (iris_folder / "bad_handler.py").write_text(source)
    with pytest.raises(BentoCompileError, match=message):
        _build(iris_folder, "bad_handler.py", name="iris-bad")
