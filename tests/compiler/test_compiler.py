"""The compiler: every supported scikit-learn family and ONNX, parity, errors, content addressing."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC, SVR
from sklearn.tree import DecisionTreeClassifier

from bento_compile.compiler.build import BuildRequest, ParityError, build
from bento_compile.core.config import BentoConfig, InputSpec, load_config
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.model import BentoModel
from tests.support.helpers import save

CLASSIFIERS = {
    "logistic": lambda: Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=2000))]),
    "tree": lambda: DecisionTreeClassifier(max_depth=5, random_state=0),
    "forest": lambda: RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0),
    "gboost": lambda: GradientBoostingClassifier(n_estimators=20, random_state=0),
    "histgb": lambda: HistGradientBoostingClassifier(max_iter=20, random_state=0),
    "mlp": lambda: Pipeline([("scale", StandardScaler()),
                             ("mlp", MLPClassifier((32,), max_iter=300, random_state=0))]),
    "svc": lambda: Pipeline([("scale", StandardScaler()), ("svc", SVC(probability=True, random_state=0))]),
    "knn": lambda: Pipeline([("scale", StandardScaler()), ("knn", KNeighborsClassifier(5))]),
    "imputer_pipeline": lambda: Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler()),
                                          ("clf", LogisticRegression(max_iter=2000))]),
}


@pytest.mark.parametrize("kind", sorted(CLASSIFIERS))
def test_classifiers_compile_and_agree(kind, cancer_data, tmp_path):
    X, y = cancer_data
    model = CLASSIFIERS[kind]().fit(X, y)
    sample = X[::9].astype(np.float32)
    np.save(tmp_path / "sample.npy", sample)
    result = build(BuildRequest(save(model, tmp_path / "m.joblib"), BentoConfig(), name=kind,
                                sample_path=tmp_path / "sample.npy"), BentoStore())
    report = result.parity
    assert report["passed"] and report["rows"] == len(sample)
    assert report["outputs"]["label"]["agreement"] == 1.0
    assert report["outputs"]["probabilities"]["max_abs_diff"] <= 1e-4
    outputs = {o["name"]: o for o in result.manifest["model"]["outputs"]}
    assert set(outputs) == {"label", "probabilities"}
    assert outputs["probabilities"]["shape"] == [None, 2]  # a 2-D tensor, not ZipMap's dicts
    served = BentoModel.load(result.path).predict({"inputs": sample[:3].tolist()})["outputs"]
    assert served["label"] == model.predict(sample[:3].astype(np.float64)).tolist()
    np.testing.assert_allclose(served["probabilities"], model.predict_proba(sample[:3].astype(np.float64)),
                               atol=1e-4)


@pytest.mark.parametrize("regressor", [LinearRegression(), SVR(), HistGradientBoostingRegressor(max_iter=20)],
                         ids=lambda r: type(r).__name__)
def test_regressors_compile_and_agree(regressor, cancer_data, tmp_path):
    X, _ = cancer_data
    target = X[:, 0] * 3 + X[:, 1]
    model = Pipeline([("scale", StandardScaler()), ("reg", regressor)]).fit(X, target)
    result = build(BuildRequest(save(model, tmp_path / "r.joblib"), BentoConfig(), name="reg"), BentoStore())
    assert result.parity["passed"]
    (name,) = result.parity["outputs"]
    assert result.parity["outputs"][name]["kind"] == "continuous"


def test_histgradientboosting_with_missing_values(cancer_data, tmp_path):
    """HistGB routes NaN itself; the compiled model must route them the same way."""
    X, y = cancer_data
    X = X.copy()
    X[::5, 2] = np.nan
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)
    np.save(tmp_path / "s.npy", X[:80].astype(np.float32))
    result = build(BuildRequest(save(model, tmp_path / "h.joblib"), BentoConfig(), name="hgb",
                                sample_path=tmp_path / "s.npy"), BentoStore())
    assert result.parity["passed"]
    row = [None if np.isnan(v) else float(v) for v in X[0].astype(np.float32)]
    assert row[2] is None
    served = BentoModel.load(result.path).predict({"inputs": [row]})["outputs"]
    assert served["label"] == model.predict(X[:1].astype(np.float32).astype(np.float64)).tolist()


def test_named_columns_with_onehot_encoder(tmp_path):
    """A ColumnTransformer on named columns: one input per column, declared in bento.yaml."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"plan": rng.choice(["basic", "pro", "team"], 200),
                          "tenure": rng.uniform(0, 60, 200).astype(np.float32)})
    y = (frame["plan"] == "pro") | (frame["tenure"] > 40)
    model = Pipeline([
        ("cols", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
                                    ("num", StandardScaler(), ["tenure"])])),
        ("clf", LogisticRegression()),
    ]).fit(frame, y)
    (tmp_path / "bento.yaml").write_text("""
name: plans
model: m.joblib
inputs:
  - {name: plan, dtype: string, shape: [null, 1]}
  - {name: tenure, dtype: float32, shape: [null, 1]}
""")
    save(model, tmp_path / "m.joblib")
    config, folder = load_config(tmp_path / "bento.yaml")
    result = build(BuildRequest(None, config, folder), BentoStore())
    assert result.parity["passed"]
    served = BentoModel.load(result.path).predict(
        {"inputs": {"plan": [["pro"], ["basic"]], "tenure": [[1.0], [59.0]]}})["outputs"]
    expected = model.predict(pd.DataFrame({"plan": ["pro", "basic"], "tenure": [1.0, 59.0]}))
    assert served["label"] == expected.tolist()


def _mixed_table(rows: int):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(1)
    return pd.DataFrame({"plan": rng.choice(["basic", "pro", "team"], rows),
                         "region": rng.choice(["eu", "us", ""], rows),  # skl2onnx imputes strings given as ""
                         "seats": rng.integers(1, 4, rows),
                         "tenure": rng.uniform(0, 60, rows)})


def test_named_columns_are_inferred_from_the_fitted_model(tmp_path):
    """No bento.yaml: the ColumnTransformer's columns become inputs, typed by what the model learned of them
    (string categories, an imputer's string fill value, integer categories, numbers); a CSV sample with a
    header is read by name; synthetic rows use the real categories; row objects are answered like sklearn."""
    frame = _mixed_table(300)
    y = (frame["plan"] == "pro") ^ (frame["tenure"] > 40)
    model = Pipeline([
        ("cols", ColumnTransformer([
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "seats"]),
            ("region", Pipeline([("fill", SimpleImputer(strategy="constant", fill_value="none",
                                                               missing_values="")),
                                 ("onehot", OneHotEncoder(handle_unknown="ignore"))]), ["region"]),
            ("num", StandardScaler(), ["tenure"])])),
        ("clf", LogisticRegression()),
    ]).fit(frame, y)
    path = save(model, tmp_path / "m.joblib")

    synthetic = build(BuildRequest(path, BentoConfig(), name="mixed"), BentoStore())
    inputs = {i["name"]: (i["dtype"], i["shape"]) for i in synthetic.manifest["model"]["inputs"]}
    assert inputs == {"plan": ("string", [None, 1]), "region": ("string", [None, 1]),
                      "seats": ("int64", [None, 1]), "tenure": ("float32", [None, 1])}
    example = synthetic.manifest["example"]["inputs"]
    assert {row[0] for row in example["plan"]} <= {"basic", "pro", "team"}

    shuffled = frame[["tenure", "region", "plan", "seats"]].assign(extra=1.0).head(40)
    shuffled.to_csv(tmp_path / "sample.csv", index=False)
    result = build(BuildRequest(path, BentoConfig(), name="mixed", sample_path=tmp_path / "sample.csv"), BentoStore())
    assert result.parity["passed"] and result.parity["rows"] == 40 and result.parity["sample"] == "file:sample.csv"

    rows = frame.tail(5).to_dict("records")
    served = BentoModel.load(result.path).predict({"inputs": [
        {k: v.item() if hasattr(v, "item") else v for k, v in row.items()} for row in rows]})
    assert served["outputs"]["label"] == model.predict(frame.tail(5)).tolist()


def test_a_csv_sample_that_names_no_input_says_what_the_model_takes(tmp_path):
    frame = _mixed_table(100)
    model = Pipeline([("cols", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])])),
                      ("clf", LogisticRegression())]).fit(frame[["plan"]], frame["seats"] > 1)
    path = save(model, tmp_path / "m.joblib")
    frame[["plan"]].rename(columns={"plan": "tier"}).to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(BentoCompileError, match="header line that names every input"):
        build(BuildRequest(path, BentoConfig(), sample_path=tmp_path / "s.csv"), BentoStore())


def test_onnx_file_as_is(cancer_data, tmp_path):
    from skl2onnx import to_onnx

    X, y = cancer_data
    model = LogisticRegression(max_iter=3000).fit(X, y)
    onx = to_onnx(model, X[:1].astype(np.float32), options={"zipmap": False})
    onnx.save(onx, tmp_path / "lr.onnx")
    result = build(BuildRequest(tmp_path / "lr.onnx", BentoConfig()), BentoStore())
    assert result.tag.startswith("lr:")
    assert result.manifest["source"]["kind"] == "onnx"
    assert result.parity["passed"] and result.parity["sample"] == "synthetic"
    assert result.manifest["model"]["inputs"][0]["name"] == "X"


def test_same_inputs_same_version_no_duplicate(example_model):
    config, folder = load_config(example_model / "bento.yaml")
    store = BentoStore()
    first = build(BuildRequest(None, config, folder), store)
    second = build(BuildRequest(None, config, folder), store)
    assert first.tag == second.tag and first.created_new and not second.created_new
    assert len(store.list("cancer")) == 1
    model_sha = json.loads((first.path / "manifest.json").read_text())["files"]["model.onnx"]["sha256"]
    assert model_sha == second.manifest["files"]["model.onnx"]["sha256"]


def test_different_model_different_version(cancer_data, tmp_path):
    X, y = cancer_data
    tags = set()
    for c in (0.1, 1.0):
        path = save(LogisticRegression(C=c, max_iter=3000).fit(X, y), tmp_path / "m.joblib")
        tags.add(build(BuildRequest(path, BentoConfig(), name="m"), BentoStore()).tag)
    assert len(tags) == 2


def test_parity_failure_stores_nothing(cancer_data, tmp_path, store_home):
    """float32 ONNX vs float64 scikit-learn differ by ~1e-7: a zero tolerance must fail the build."""
    X, y = cancer_data
    model = Pipeline([("s", StandardScaler()), ("m", MLPClassifier((16,), max_iter=200, random_state=0))])
    path = save(model.fit(X, y), tmp_path / "m.joblib")
    with pytest.raises(ParityError) as info:
        build(BuildRequest(path, BentoConfig(), name="strict", tolerance=0.0), BentoStore())
    assert info.value.report["outputs"]["probabilities"]["passed"] is False
    assert "raise --tolerance" in str(info.value)
    assert BentoStore().list() == []
    leftovers = [p for p in (store_home / "bentos").rglob("*") if p.is_file()] if store_home.exists() else []
    assert leftovers == []


def test_label_agreement_gate(cancer_data, tmp_path):
    """A sample whose labels the compiled model gets wrong only if the gate is looser than reality."""
    from bento_compile.compiler import parity

    ref = {"label": np.array([0, 1, 1, 0]), "p": np.array([[0.1], [0.2], [0.3], [0.4]])}
    got = {"label": np.array([0, 1, 0, 0]), "p": np.array([[0.1], [0.2], [0.3], [0.40001]])}
    strict = parity.compare(ref, got, 1e-4, 1.0, 4, "t")
    assert not strict["passed"] and strict["outputs"]["label"]["mismatched_rows"] == 1
    assert strict["outputs"]["p"]["passed"]
    loose = parity.compare(ref, got, 1e-4, 0.75, 4, "t")
    assert loose["passed"]


def test_unsupported_estimator_is_named(tmp_path):
    from sklearn.cross_decomposition import PLSCanonical

    X = np.random.default_rng(0).random((30, 4))
    path = save(Pipeline([("s", StandardScaler()), ("pls", PLSCanonical(2))]).fit(X, X[:, :2]),
                tmp_path / "pls.joblib")
    with pytest.raises(BentoCompileError) as info:
        build(BuildRequest(path, BentoConfig()), BentoStore())
    message = str(info.value)
    assert "PLSCanonical" in message and "supported_converters" in message


@pytest.mark.parametrize("filename, content, expected", [
    ("model.txt", b"hello", "Unsupported model file type"),
    ("model.joblib", b"not a pickle", "cannot be unpickled"),
    ("model.onnx", b"\x00garbage", "not a readable ONNX model"),
])
def test_bad_model_files(tmp_path, filename, content, expected):
    (tmp_path / filename).write_bytes(content)
    with pytest.raises(BentoCompileError, match=expected):
        build(BuildRequest(tmp_path / filename, BentoConfig()), BentoStore())


def test_sample_formats(cancer_data, tmp_path):
    X, y = cancer_data
    path = save(LogisticRegression(max_iter=3000).fit(X, y), tmp_path / "m.joblib")
    header = ",".join(f"f{i}" for i in range(30))
    np.savetxt(tmp_path / "s.csv", X[:10], delimiter=",", header=header, comments="")
    result = build(BuildRequest(path, BentoConfig(), sample_path=tmp_path / "s.csv"), BentoStore())
    assert result.parity["rows"] == 10 and result.parity["sample"] == "file:s.csv"
    assert len(result.manifest["example"]["inputs"]) == 2
    np.save(tmp_path / "narrow.npy", X[:5, :10])
    with pytest.raises(BentoCompileError, match="expects"):
        build(BuildRequest(path, BentoConfig(), sample_path=tmp_path / "narrow.npy"), BentoStore())


def test_input_override_must_name_real_inputs(cancer_data, tmp_path):
    from skl2onnx import to_onnx

    X, y = cancer_data
    onnx.save(to_onnx(LogisticRegression(max_iter=3000).fit(X, y), X[:1].astype(np.float32),
                      options={"zipmap": False}), tmp_path / "m.onnx")
    config = BentoConfig(inputs=[InputSpec(name="features", shape=[None, 30])])
    with pytest.raises(BentoCompileError, match="declares input 'features'"):
        build(BuildRequest(tmp_path / "m.onnx", config), BentoStore())


def test_a_model_that_refuses_nan_gets_a_bento_that_refuses_nulls(cancer_data, tmp_path):
    """LogisticRegression alone raises on NaN; served, it would answer NaN probabilities and a label."""
    from bento_compile.runtimes.errors import InputError

    X, y = cancer_data
    bare = save(LogisticRegression(max_iter=3000).fit(X, y), tmp_path / "bare.joblib")
    imputed = save(Pipeline([("fill", SimpleImputer()), ("clf", LogisticRegression(max_iter=3000))]).fit(X, y),
                   tmp_path / "imputed.joblib")
    row_with_null = {"inputs": [[None, *X[0, 1:].tolist()]]}

    refused = build(BuildRequest(bare, BentoConfig(), name="bare"), BentoStore())
    assert refused.manifest["runtime"]["allow_missing"] is False
    with pytest.raises(InputError, match=r"inputs.input\[0\]\[0\] is null or NaN"):
        BentoModel.load(refused.path).predict(row_with_null)

    taken = build(BuildRequest(imputed, BentoConfig(), name="imputed"), BentoStore())
    assert taken.manifest["runtime"]["allow_missing"] is True
    answer = BentoModel.load(taken.path).predict(row_with_null)["outputs"]
    assert np.isfinite(answer["probabilities"]).all() and answer["label"][0] in (0, 1)

    told = build(BuildRequest(bare, BentoConfig.model_validate({"runtime": {"allow_missing": True}}), name="told"),
                 BentoStore())
    assert told.manifest["runtime"]["allow_missing"] is True  # bento.yaml decides when it says so


def test_a_text_column_is_a_string_input_and_its_normalizer_loads_anywhere(tmp_path):
    """A TfidfVectorizer on one column (named as a string, not a list) plus a selector-picked number column.
    skl2onnx names the en_US.UTF-8 locale for lower-casing, which slim images do not have (ONNX Runtime
    then refuses to load the model): the Bento's graph uses C.UTF-8, and answers as scikit-learn does."""
    pd = pytest.importorskip("pandas")
    from sklearn.compose import make_column_selector
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = np.random.default_rng(2)
    words = ["good", "bad", "great", "awful", "fine", "meh"]
    frame = pd.DataFrame({"review": [" ".join(rng.choice(words, 4)) for _ in range(200)], "x": rng.normal(size=200)})
    columns = ColumnTransformer([("text", TfidfVectorizer(), "review"),
                                 ("num", "passthrough", make_column_selector(dtype_include="number"))])
    model = Pipeline([("cols", columns), ("clf", LogisticRegression())])
    model.fit(frame, frame["review"].str.contains("good|great"))
    result = build(BuildRequest(save(model, tmp_path / "m.joblib"), BentoConfig(), name="reviews"), BentoStore())
    assert [(i["name"], i["dtype"]) for i in result.manifest["model"]["inputs"]] == [("review", "string"),
                                                                                    ("x", "float32")]
    graph = onnx.load(result.path / result.manifest["model"]["file"]).graph
    locales = {a.s.decode() for n in graph.node if n.op_type == "StringNormalizer" for a in n.attribute
               if a.name == "locale"}
    assert locales == {"C.UTF-8"}
    rows = [{"review": "GOOD Great Été", "x": 0.5}, {"review": "Awful MEH", "x": -1.0}]
    served = BentoModel.load(result.path).predict({"inputs": rows})["outputs"]["probabilities"]
    np.testing.assert_allclose(served, model.predict_proba(pd.DataFrame(rows)), atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: __import__("sklearn.ensemble", fromlist=["IsolationForest"]).IsolationForest(n_estimators=30,
                                                                                         random_state=0),
    lambda: __import__("sklearn.cluster", fromlist=["KMeans"]).KMeans(3, n_init=3, random_state=0),
], ids=["isolation_forest", "kmeans"])
def test_anomaly_and_cluster_models_compile_with_their_scores_checked(make, cancer_data, tmp_path):
    """IsolationForest needs an older ai.onnx.ml opset than skl2onnx's default (it says which): the build
    retries with it. Both models' `scores` (decision_function; distances to the centres) pass the gate."""
    X, _ = cancer_data
    model = make().fit(X)
    np.save(tmp_path / "s.npy", X[:50].astype(np.float32))
    result = build(BuildRequest(save(model, tmp_path / "m.joblib"), BentoConfig(), name="unsupervised",
                                sample_path=tmp_path / "s.npy"), BentoStore())
    outputs = result.parity["outputs"]
    assert outputs["label"]["passed"] and outputs["scores"]["kind"] == "continuous" and outputs["scores"]["passed"]


def test_histgradientboosting_with_categorical_splits_is_refused_before_converting(tmp_path):
    """skl2onnx converts the category bitsets as thresholds (35 % agreement when measured): named up front."""
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=300), rng.integers(0, 3, 300)]
    model = HistGradientBoostingClassifier(max_iter=10, categorical_features=[1]).fit(X, (X[:, 1] == 1) & (X[:, 0] > 0))
    with pytest.raises(BentoCompileError, match="native categorical splits") as refused:
        build(BuildRequest(save(model, tmp_path / "m.joblib"), BentoConfig()), BentoStore())
    assert "categorical_features=None" in refused.value.fix


@pytest.mark.parametrize("make", [
    lambda: __import__("sklearn.svm", fromlist=["LinearSVC"]).LinearSVC(),
    lambda: SVC(),  # probability=False
    lambda: Pipeline([("scale", StandardScaler()),
                      ("sgd", __import__("sklearn.linear_model", fromlist=["SGDClassifier"]).SGDClassifier(
                          random_state=0))]),
    lambda: __import__("sklearn.linear_model", fromlist=["RidgeClassifier"]).RidgeClassifier(),
], ids=["linear_svc", "svc_no_probability", "sgd_hinge", "ridge"])
@pytest.mark.parametrize("classes", [2, 3])
def test_a_classifier_without_probabilities_answers_its_decision_scores_as_scores(make, classes, tmp_path):
    """skl2onnx's second output holds decision_function for these (negative numbers, rows not summing to 1),
    under the name `probabilities`; LinearSVC's converter also refuses the zipmap option. The Bento builds,
    names the output `scores`, and the gate compares it with decision_function."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    y = y if classes == 3 else (y == 0).astype(int)
    model = make().fit(X, y)
    result = build(BuildRequest(save(model, tmp_path / "m.joblib"), BentoConfig(), name="margins"), BentoStore())
    assert {o["name"] for o in result.manifest["model"]["outputs"]} == {"label", "scores"}
    assert result.parity["outputs"]["scores"]["passed"] and result.parity["not_compared"] == []
    served = BentoModel.load(result.path).predict({"inputs": X[::25].tolist()})["outputs"]
    assert served["label"] == model.predict(X[::25]).tolist()
    expected = model.decision_function(X[::25].astype(np.float64))
    if classes == 2:  # column k scores class k (LinearSVC, Ridge: the one decision value)
        one = type(model).__name__ in ("LinearSVC", "RidgeClassifier")
        expected = expected.reshape(-1, 1) if one else np.c_[-expected, expected]
    declared = {o["name"]: o["shape"] for o in result.manifest["model"]["outputs"]}["scores"]
    assert declared == [None, expected.shape[1]]  # as computed (skl2onnx declares 2 for Ridge's 1)
    np.testing.assert_allclose(served["scores"], expected, atol=1e-3)


def test_a_soft_voting_classifier_compiles(cancer_data, tmp_path):
    """skl2onnx refuses flatten_transform=True (VotingClassifier's default), which shapes only transform():
    the build converts a copy without it."""
    from sklearn.ensemble import VotingClassifier

    X, y = cancer_data
    model = VotingClassifier([("lr", Pipeline([("s", StandardScaler()), ("m", LogisticRegression())])),
                              ("tree", DecisionTreeClassifier(max_depth=4, random_state=0))], voting="soft").fit(X, y)
    np.save(tmp_path / "s.npy", X[::7].astype(np.float32))
    result = build(BuildRequest(save(model, tmp_path / "m.joblib"), BentoConfig(), name="vote",
                                sample_path=tmp_path / "s.npy"), BentoStore())
    assert result.parity["passed"] and result.parity["outputs"]["probabilities"]["passed"]
    assert model.flatten_transform  # the user's estimator is left as it was


def test_a_model_fitted_on_float32_is_checked_with_float32(tmp_path):
    """A KMeans fitted on float32 refuses float64 input ("Buffer dtype mismatch"): the reference then runs
    on the float32 values themselves."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_iris
    from sklearn.decomposition import PCA

    X = load_iris(return_X_y=True)[0].astype(np.float32)
    model = Pipeline([("pca", PCA(2)), ("k", KMeans(3, n_init=3, random_state=0))]).fit(X)
    result = build(BuildRequest(save(model, tmp_path / "m.joblib"), BentoConfig(), name="clusters"), BentoStore())
    assert result.parity["passed"] and result.parity["outputs"]["scores"]["passed"]
    served = BentoModel.load(result.path).predict({"inputs": X[:5].tolist()})["outputs"]
    assert served["label"] == model.predict(X[:5]).tolist()


def test_a_classifier_fitted_on_true_false_answers_true_false(cancer_data, tmp_path):
    X, y = cancer_data
    model = Pipeline([("s", StandardScaler()), ("m", LogisticRegression())]).fit(X, y.astype(bool))
    result = build(BuildRequest(save(model, tmp_path / "m.joblib"), BentoConfig(), name="flags"), BentoStore())
    labels = {o["name"]: o["dtype"] for o in result.manifest["model"]["outputs"]}
    assert labels["label"] == "bool" and result.parity["passed"]
    body = json.dumps(BentoModel.load(result.path).predict({"inputs": X[:6].astype(np.float32).tolist()}))
    assert json.loads(body)["outputs"]["label"] == model.predict(X[:6]).tolist()  # JSON true/false
    assert "true" in body or "false" in body


def test_a_text_pipeline_takes_one_string_per_row_without_a_bento_yaml(tmp_path):
    """A vectorizer first records no n_features_in_: the model takes one string per row ([N, 1]), sent as a
    flat list of documents; the gate runs the vectorizer on the same documents."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = np.random.default_rng(3)
    words = ["good", "bad", "great", "awful", "plot", "acting"]
    texts = [" ".join(rng.choice(words, 5)) for _ in range(150)]
    labels = np.array(["pos" if ("good" in t or "great" in t) else "neg" for t in texts])
    model = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())]).fit(texts, labels)
    result = build(BuildRequest(save(model, tmp_path / "m.joblib"), BentoConfig(), name="reviews"), BentoStore())
    assert [(i["name"], i["dtype"], i["shape"]) for i in result.manifest["model"]["inputs"]] == [
        ("input", "string", [None, 1])]
    assert result.parity["passed"] and result.parity["outputs"]["probabilities"]["passed"]
    docs = ["good acting, great plot", "awful AWFUL plot", "bad"]
    served = BentoModel.load(result.path).predict({"inputs": docs})["outputs"]
    assert served["label"] == model.predict(docs).tolist()
    np.testing.assert_allclose(served["probabilities"], model.predict_proba(docs), atol=1e-5)


@pytest.mark.parametrize("target", ["log", "log1p", "sqrt", "scaler"])
def test_a_transformed_target_regressor_compiles_with_its_inverse_in_the_graph(target, cancer_data, tmp_path):
    """skl2onnx has no converter for TransformedTargetRegressor: its regressor is converted and the inverse
    transform appended; the gate compares with the original's predict."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.linear_model import Ridge

    X, _ = cancer_data
    y = np.exp(X[:, 0] / 10) * 50 + X[:, 1]
    kwargs = {"log": {"func": np.log, "inverse_func": np.exp}, "log1p": {"func": np.log1p, "inverse_func": np.expm1},
              "sqrt": {"func": np.sqrt, "inverse_func": np.square}, "scaler": {"transformer": StandardScaler()}}[target]
    model = TransformedTargetRegressor(Pipeline([("s", StandardScaler()), ("r", Ridge())]), **kwargs).fit(X, y)
    np.save(tmp_path / "s.npy", X[::11].astype(np.float32))
    result = build(BuildRequest(save(model, tmp_path / "m.joblib"), BentoConfig(), name="price",
                                sample_path=tmp_path / "s.npy"), BentoStore())
    assert result.parity["passed"]
    served = BentoModel.load(result.path).predict({"inputs": X[:4].astype(np.float32).tolist()})["outputs"]
    np.testing.assert_allclose(np.ravel(next(iter(served.values()))), model.predict(X[:4].astype(np.float32)),
                               rtol=1e-4)


def test_a_transformed_target_with_an_arbitrary_inverse_is_refused_by_name(cancer_data, tmp_path):
    from sklearn.compose import TransformedTargetRegressor

    X, _ = cancer_data
    model = TransformedTargetRegressor(LinearRegression(), func=np.cbrt, inverse_func=np.cbrt,
                                       check_inverse=False).fit(X, X[:, 0])
    with pytest.raises(BentoCompileError, match="inverse_func is cbrt") as refused:
        build(BuildRequest(save(model, tmp_path / "m.joblib"), BentoConfig()), BentoStore())
    assert "np.expm1" in refused.value.fix


def test_a_function_transformer_of_an_elementwise_numpy_function_compiles(cancer_data, tmp_path):
    """skl2onnx converts FunctionTransformer only as the identity; np.log1p (and the other functions with an
    exact ONNX form) become nodes. Without a sample the synthetic rows stay in log1p's domain."""
    from sklearn.preprocessing import FunctionTransformer

    X, y = cancer_data
    model = Pipeline([("log", FunctionTransformer(np.log1p)), ("s", StandardScaler()),
                      ("m", LogisticRegression(max_iter=2000))]).fit(X, y)
    result = build(BuildRequest(save(model, tmp_path / "m.joblib"), BentoConfig(), name="logs"), BentoStore())
    assert result.parity["passed"] and result.parity["outputs"]["probabilities"]["passed"]
    served = BentoModel.load(result.path).predict({"inputs": X[:3].astype(np.float32).tolist()})["outputs"]
    np.testing.assert_allclose(served["probabilities"], model.predict_proba(X[:3].astype(np.float32)), atol=1e-4)

    other = Pipeline([("f", FunctionTransformer(np.cbrt)), ("m", LogisticRegression(max_iter=2000))]).fit(X, y)
    with pytest.raises(BentoCompileError, match=r"FunctionTransformer\(cbrt\) has no ONNX form") as refused:
        build(BuildRequest(save(other, tmp_path / "o.joblib"), BentoConfig()), BentoStore())
    assert "FunctionTransformer step" in refused.value.fix
