"""Named labels out: sklearn classes_, a labels file, softmax and top-k folded into the ONNX graph."""

from __future__ import annotations

import joblib
import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from bento_compile.adapters.http_app import create_app
from bento_compile.compiler.build import BuildRequest, build
from bento_compile.core.config import BentoConfig
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.manifest import read_manifest
from bento_compile.runtimes.model import BentoModel

NAMES = np.array(["setosa", "versicolor", "virginica"])


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory):
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x.astype(np.float32), NAMES[y])
    folder = tmp_path_factory.mktemp("iris")
    joblib.dump(model, folder / "model.joblib")
    np.save(folder / "sample.npy", x[::5].astype(np.float32))
    return folder, model, x.astype(np.float32)


def _build(folder, config: dict, name: str = "iris"):
    request = BuildRequest(folder / "model.joblib", BentoConfig.model_validate(config), folder, name=name,
                           sample_path=folder / "sample.npy")
    return build(request, BentoStore())


def test_sklearn_classes_name_the_answers_and_top_k_is_folded(iris_model):
    folder, model, x = iris_model
    result = _build(folder, {"outputs": {"probabilities": {"top_k": 2}}})
    manifest = read_manifest(result.path)
    spec = manifest.pipeline.outputs[0]
    assert spec.labels == list(NAMES) and spec.labels_source == "classes_"
    assert spec.where == "onnx" and spec.top_k_indices == "probabilities_top_k_indices"
    graph = onnx.load(result.path / "model.onnx").graph
    assert "TopK" in {n.op_type for n in graph.node}
    bento = BentoModel.load(result.path)
    answer = bento.predict({"inputs": x[:4].tolist()})
    expected = model.predict(x[:4])
    assert [p["label"] for p in answer["predictions"]] == list(expected)
    top = answer["predictions"][0]["top_k"]
    assert len(top) == 2 and top[0]["score"] >= top[1]["score"]
    assert np.isclose(top[0]["score"], model.predict_proba(x[:1]).max(), atol=1e-5)
    # the helper outputs stay out of the raw outputs
    assert set(answer["outputs"]) == {"label", "probabilities"}


def test_labels_file_softmax_over_http(iris_model, tmp_path):
    folder, model, x = iris_model
    (folder / "labels.txt").write_text("a\nb\nc\n")
    result = _build(folder, {"outputs": {"probabilities": {"labels": "labels.txt", "softmax": True, "top_k": 3}}},
                    name="iris-file")
    manifest = read_manifest(result.path)
    assert "labels-probabilities.txt" in manifest.files
    assert manifest.pipeline.parity["folded"]["probabilities"]["passed"]
    with TestClient(create_app(result.path, load_mode="eager")) as client:
        response = client.post("/predict", json={"inputs": x[:2].tolist()})
    assert response.status_code == 200, response.text
    first = response.json()["predictions"][0]
    probabilities = model.predict_proba(x[:1])[0]
    softened = np.exp(probabilities) / np.exp(probabilities).sum()
    assert first["label"] == "abc"[int(np.argmax(probabilities))]
    assert np.isclose(first["score"], softened.max(), atol=1e-5)
    assert sum(t["score"] for t in first["top_k"]) == pytest.approx(1.0, abs=1e-4)


def test_wrong_label_count_and_unknown_output_are_build_errors(iris_model):
    folder, _, _ = iris_model
    with pytest.raises(BentoCompileError, match="2 labels but the output has 3 classes"):
        _build(folder, {"outputs": {"probabilities": {"labels": ["a", "b"]}}}, name="bad1")
    with pytest.raises(BentoCompileError, match="'logits' is not an output"):
        _build(folder, {"outputs": {"logits": {"top_k": 1}}}, name="bad2")
    with pytest.raises(BentoCompileError, match="labels, softmax and top_k read"):
        _build(folder, {"outputs": {"label": {"top_k": 1}}}, name="bad3")


def test_plain_bento_has_no_pipeline(iris_model):
    folder, _, _ = iris_model
    assert read_manifest(_build(folder, {}, name="plain").path).pipeline is None


def test_iris_species_example_answers_with_class_names(tmp_path):
    import shutil

    from bento_compile.core.config import load_config
    from tests.support.helpers import REPO, load_example_script

    load_example_script("iris_species").main(tmp_path)
    shutil.copyfile(REPO / "examples" / "iris_species" / "bento.yaml", tmp_path / "bento.yaml")
    config, config_dir = load_config(tmp_path / "bento.yaml")
    result = build(BuildRequest(None, config, config_dir), BentoStore())
    answer = BentoModel.load(result.path).predict({"inputs": [[6.7, 3.0, 5.2, 2.3], [5.0, 3.4, 1.5, 0.2]]})
    assert [p["label"] for p in answer["predictions"]] == ["virginica", "setosa"]
    assert answer["outputs"]["label"] == ["virginica", "setosa"]
