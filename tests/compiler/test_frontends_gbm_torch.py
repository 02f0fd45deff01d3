"""LightGBM / XGBoost (onnxmltools) and PyTorch frontends: parity against the original, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from bento_compile.compiler.build import BuildRequest, ParityError, build
from bento_compile.core.config import BentoConfig, InputSpec, load_config
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.model import BentoModel
from tests.support.helpers import save

lightgbm = pytest.importorskip("lightgbm", reason="the [gbm] extra (lightgbm) is not installed")
xgboost = pytest.importorskip("xgboost", reason="the [gbm] extra (xgboost-cpu) is not installed")
pytest.importorskip("onnxmltools", reason="the [gbm] extra (onnxmltools) is not installed")


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=600, n_features=12, n_informative=6, random_state=0)
    return X, y


def _build(path, sample=None, config=None, name="m", **kw):
    return build(BuildRequest(path, config or BentoConfig(), None, name=name, sample_path=sample, **kw), BentoStore())


GBM_CLASSIFIERS = {
    "lgbm": lambda: lightgbm.LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1, random_state=0),
    "xgb": lambda: xgboost.XGBClassifier(n_estimators=30, max_depth=4, random_state=0),
    "lgbm_pipeline": lambda: Pipeline([("scale", StandardScaler()),
                                       ("gbm", lightgbm.LGBMClassifier(n_estimators=20, verbose=-1))]),
}


@pytest.mark.parametrize("kind", sorted(GBM_CLASSIFIERS))
def test_gbm_sklearn_api_classifiers_agree(kind, data, tmp_path):
    X, y = data
    model = GBM_CLASSIFIERS[kind]().fit(X, y)
    sample = X[::3].astype(np.float32)
    np.save(tmp_path / "s.npy", sample)
    result = _build(save(model, tmp_path / "m.joblib"), tmp_path / "s.npy", name=kind)
    assert result.parity["passed"] and result.parity["outputs"]["label"]["agreement"] == 1.0
    assert result.parity["outputs"]["probabilities"]["max_abs_diff"] <= 1e-4
    assert "onnxmltools" in result.manifest["versions"]
    served = BentoModel.load(result.path).predict({"inputs": sample[:5].tolist()})["outputs"]
    assert served["label"] == model.predict(sample[:5]).tolist()
    np.testing.assert_allclose(served["probabilities"], model.predict_proba(sample[:5]), atol=1e-4)


@pytest.mark.parametrize("kind", ["lgbm", "xgb"])
def test_gbm_fitted_on_a_dataframe_takes_rows_by_feature_name(kind, data, tmp_path):
    """XGBoost fitted on named columns: onnxmltools refuses feature names other than f0, f1, ...; the build
    converts a copy without them, records the names, and the Bento takes rows keyed by them."""
    pd = pytest.importorskip("pandas")
    X, y = data
    frame = pd.DataFrame(X, columns=[f"feature_{i}" for i in range(X.shape[1])])  # LightGBM would turn spaces into _
    model = GBM_CLASSIFIERS[kind]().fit(frame, y)
    result = _build(save(model, tmp_path / "m.joblib"), name=f"{kind}-frame")
    assert result.parity["passed"] and result.manifest["model"]["feature_names"] == list(frame.columns)
    rows = frame.head(4)
    served = BentoModel.load(result.path).predict({"inputs": rows.iloc[:, ::-1].to_dict("records")})["outputs"]
    assert served["label"] == model.predict(rows).tolist()


@pytest.mark.parametrize("make", [lambda: lightgbm.LGBMRegressor(n_estimators=30, verbose=-1),
                                  lambda: xgboost.XGBRegressor(n_estimators=30, max_depth=4)],
                         ids=["lgbm", "xgb"])
def test_gbm_regressors_agree(make, data, tmp_path):
    X, _ = data
    target = X[:, 0] * 3 + X[:, 1]
    model = make().fit(X, target)
    np.save(tmp_path / "s.npy", X[:100].astype(np.float32))
    result = _build(save(model, tmp_path / "r.joblib"), tmp_path / "s.npy", name="reg")
    (name,) = result.parity["outputs"]
    assert result.parity["passed"] and result.parity["outputs"][name]["kind"] == "continuous"
    served = BentoModel.load(result.path).predict({"inputs": X[:4].astype(np.float32).tolist()})["outputs"]
    np.testing.assert_allclose(np.ravel(served[name]), model.predict(X[:4].astype(np.float32)), rtol=1e-4,
                               atol=1e-4)


def test_native_booster_files(data, tmp_path):
    X, y = data
    booster = lightgbm.train({"objective": "binary", "verbose": -1, "num_leaves": 15}, lightgbm.Dataset(X, y), 20)
    booster.save_model(str(tmp_path / "model.txt"))
    xbooster = xgboost.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 3},
                             xgboost.DMatrix(X, y % 3), 15)
    xbooster.save_model(str(tmp_path / "model.json"))
    np.save(tmp_path / "s.npy", X[:150].astype(np.float32))
    lgb_result = _build(tmp_path / "model.txt", tmp_path / "s.npy", name="lgb")
    assert lgb_result.parity["passed"] and lgb_result.manifest["source"]["description"].startswith("LightGBM")
    xgb_result = _build(tmp_path / "model.json", tmp_path / "s.npy", name="xgb")
    assert xgb_result.parity["passed"]
    assert xgb_result.parity["outputs"]["label"]["agreement"] == 1.0
    # The served label's shape follows the rows (onnxmltools declared a batch of 1).
    label = next(o for o in xgb_result.manifest["model"]["outputs"] if o["name"] == "label")
    assert label["shape"][0] is None
    served = BentoModel.load(xgb_result.path).predict({"inputs": X[:3].astype(np.float32).tolist()})["outputs"]
    np.testing.assert_allclose(served["probabilities"], xbooster.predict(xgboost.DMatrix(X[:3].astype(np.float32))),
                               atol=1e-5)


def test_gbm_parity_gate_fails_loudly(data, tmp_path, store_home):
    X, y = data
    model = lightgbm.LGBMClassifier(n_estimators=30, verbose=-1).fit(X, y)
    np.save(tmp_path / "s.npy", X[:100].astype(np.float32))
    with pytest.raises(ParityError, match="probabilities"):
        _build(save(model, tmp_path / "m.joblib"), tmp_path / "s.npy", tolerance=0.0)
    assert not list((store_home / "bentos").glob("m/*/manifest.json"))


def test_gbm_int8_is_refused_with_the_reason(data, tmp_path):
    X, y = data
    model = xgboost.XGBClassifier(n_estimators=10).fit(X, y)
    np.save(tmp_path / "s.npy", X[:100].astype(np.float32))
    with pytest.raises(BentoCompileError, match="tree ensembles do not shrink under int8"):
        _build(save(model, tmp_path / "m.joblib"), tmp_path / "s.npy", quantize="dynamic")


def test_text_file_that_is_not_a_booster(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(BentoCompileError, match=r"Unsupported model file type '\.txt'.*Supported:"):
        _build(tmp_path / "notes.txt")


# ------------------------------------------------------------------ PyTorch

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="the [torch] extra (torch==2.13.0 CPU) is not installed")


@pytest.fixture(scope="module")
def net(torch, data):
    X, y = data
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(12, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                 torch.nn.ReLU(), torch.nn.Linear(64, 2))
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    features = torch.tensor(X, dtype=torch.float32)
    labels = torch.tensor(y)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(features), labels).backward()
        optimizer.step()
    return module.eval()


INPUTS = [InputSpec(name="features", dtype="float32", shape=[None, 12])]

try:
    import torch as _torch

    class Unsupported(_torch.nn.Module):
        """A module with an operator ONNX cannot express (SVD)."""

        def forward(self, x):
            return _torch.linalg.svd(x).S
except ImportError:  # the torch tests skip
    pass


@pytest.mark.torch
@pytest.mark.parametrize("form", ["module", "torchscript", "checkpoint"])
def test_torch_forms_export_and_agree(form, torch, net, data, tmp_path):
    X, _ = data
    path = tmp_path / "net.pt"
    config = BentoConfig(inputs=INPUTS)
    if form == "module":
        torch.save(net, path)
    elif form == "torchscript":
        torch.jit.save(torch.jit.script(net), path)
    else:
        torch.save({"model": net, "example_input": torch.zeros(1, 12)}, path)
        config = BentoConfig()
    np.save(tmp_path / "s.npy", X[:200].astype(np.float32))
    result = _build(path, tmp_path / "s.npy", config=config, name="net")
    assert result.parity["passed"] and result.manifest["source"]["kind"] == "torch"
    assert result.parity["outputs"]["output"]["max_abs_diff"] <= 1e-4
    spec = result.manifest["model"]["inputs"][0]
    assert spec["shape"] == [None, 12] and result.manifest["model"]["batchable"]
    model = BentoModel.load(result.path)
    for rows in (1, 7):  # the dynamic batch axis really is dynamic
        got = np.array(model.predict({"inputs": X[:rows].astype(np.float32).tolist()})["outputs"]["output"])
        with torch.no_grad():
            want = net(torch.tensor(X[:rows], dtype=torch.float32)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert "torch" in result.manifest["versions"]


@pytest.mark.torch
def test_torch_quantized_with_argmax_gate(torch, net, data, tmp_path):
    X, _ = data
    torch.save(net, tmp_path / "net.pt")
    np.save(tmp_path / "s.npy", X[:300].astype(np.float32))
    (tmp_path / "bento.yaml").write_text(
        "model: net.pt\nsample: s.npy\ninputs: [{name: features, dtype: float32, shape: [null, 12]}]\n"
        "quantize: {method: auto, gate: {output: output, max_rel_error: 0.05, argmax: true}}\n")
    config, config_dir = load_config(tmp_path / "bento.yaml")
    result = build(BuildRequest(None, config, config_dir), BentoStore())
    table = result.manifest["quantization"]
    assert {v["variant"] for v in table["variants"]} == {"fp32", "dynamic", "static", "fp16"}
    chosen = next(v for v in table["variants"] if v["chosen"])
    assert chosen["passed"] and chosen["agreement"] >= 0.995
    assert "argmax(output)" in result.parity["outputs"]


@pytest.mark.torch
def test_torch_input_shape_from_the_sample(torch, net, data, tmp_path):
    X, _ = data
    torch.save(net, tmp_path / "net.pt")
    np.save(tmp_path / "s.npy", X[:50])  # float64 rows: served as float32, what the module takes
    result = _build(tmp_path / "net.pt", tmp_path / "s.npy")
    assert result.manifest["model"]["inputs"] == [{"name": "input", "dtype": "float32", "shape": [None, 12],
                                                   "batch": True}]
    assert result.parity["passed"]


@pytest.mark.torch
def test_torch_clear_errors(torch, net, tmp_path):
    torch.save(net, tmp_path / "net.pt")
    with pytest.raises(BentoCompileError, match="does not say what input the module takes"):
        _build(tmp_path / "net.pt")
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(BentoCompileError, match="probably a state_dict"):
        _build(tmp_path / "weights.pt")
    wrong = BentoConfig(inputs=[InputSpec(name="features", dtype="float32", shape=[None, 5])])
    with pytest.raises(BentoCompileError, match="fails on an input shaped like the declared inputs"):
        _build(tmp_path / "net.pt", config=wrong)

    torch.save(Unsupported(), tmp_path / "svd.pt")
    square = BentoConfig(inputs=[InputSpec(name="x", dtype="float32", shape=[None, 4, 4])])
    with pytest.raises(BentoCompileError, match=r"cannot export this module \(operator aten::linalg_svd\)"):
        _build(tmp_path / "svd.pt", config=square)


@pytest.mark.parametrize("family", ["lightgbm", "xgboost"])
@pytest.mark.parametrize("classifier", [True, False], ids=["classifier", "regressor"])
def test_gbm_on_pandas_category_columns_takes_the_category_names(family, classifier, tmp_path):
    """LightGBM and XGBoost see a category column as its codes; the Bento takes the names, as the DataFrame
    held them, maps an unseen name to missing as they do, and answers as the original on the same rows."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"amount": rng.normal(size=400),
                          "plan": pd.Categorical(rng.choice(["basic", "pro", "team"], 400)),
                          "seats": rng.integers(1, 9, 400).astype(float),
                          "region": pd.Categorical(rng.choice(["eu", "us"], 400))})
    target = ((frame.plan == "pro") ^ (frame.amount > 0)).astype(int) if classifier else \
        frame.amount * 2 + (frame.plan == "team") * 3
    if family == "lightgbm":
        make = lightgbm.LGBMClassifier if classifier else lightgbm.LGBMRegressor
        model = make(n_estimators=30, min_child_samples=5, verbose=-1).fit(frame, target)
    else:
        make = xgboost.XGBClassifier if classifier else xgboost.XGBRegressor
        model = make(n_estimators=30, max_depth=4, enable_categorical=True, tree_method="hist").fit(frame, target)
    result = build(BuildRequest(save(model, tmp_path / "m.joblib"), BentoConfig(), name="plans"), BentoStore())
    assert [(i["name"], i["dtype"]) for i in result.manifest["model"]["inputs"]] == [
        ("amount", "float32"), ("plan", "string"), ("seats", "float32"), ("region", "string")]
    assert result.parity["passed"]
    rows = [{"amount": 0.7, "plan": "pro", "seats": 3, "region": "eu"},
            {"amount": -0.2, "plan": "enterprise", "seats": 1, "region": "us"},  # a plan it never saw
            {"amount": 1.5, "plan": "team", "seats": None, "region": "us"}]
    served = BentoModel.load(result.path).predict({"inputs": rows})["outputs"]
    original = pd.DataFrame(rows).astype({"seats": float}).assign(
        plan=lambda f: pd.Categorical(f.plan, categories=frame.plan.cat.categories),
        region=lambda f: pd.Categorical(f.region, categories=frame.region.cat.categories))
    if classifier:
        np.testing.assert_allclose(served["probabilities"], model.predict_proba(original), atol=1e-5)
        assert served["label"] == model.predict(original).tolist()
    else:
        np.testing.assert_allclose(np.ravel(served["variable"]), model.predict(original), rtol=1e-4, atol=1e-4)
