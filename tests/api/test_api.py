"""The public Python API (bento_compile.build / load / target / invoke), for real: a real build of the
example, real predictions, a real Lambda zip run through the Runtime API emulator."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile

import joblib
import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

import bento_compile
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.errors import InputError, PayloadTooLarge
from bento_compile.targets.bytecode import find_interpreter
from tests.support.knative_schema import assert_valid

HEAVY = ("numpy", "onnx", "onnxruntime", "sklearn", "pydantic", "yaml", "click", "rich", "fastapi")


def _modules_after(code: str) -> set[str]:
    """Top-level modules a fresh interpreter holds after `code`, beyond those of a bare start."""
    probe = "import sys; before = set(sys.modules); {code}; print(','.join(sorted(set(sys.modules) - before)))"
    result = subprocess.run([sys.executable, "-c", probe.format(code=code)], capture_output=True, text=True,
                            check=True)
    return set(result.stdout.strip().split(","))


def test_import_bento_compile_imports_nothing_else():
    assert _modules_after("import bento_compile") == {"bento_compile"}
    # Reaching an API name loads the API module, still none of the compiler's or runtime's packages.
    reached = _modules_after("import bento_compile; bento_compile.build")
    assert "bento_compile.api" in reached
    assert not {name.split(".")[0] for name in reached} & set(HEAVY)


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'biuld'"):
        _ = bento_compile.biuld  # type: ignore[attr-defined]
    assert {"build", "load", "target", "invoke"} <= set(dir(bento_compile))


@pytest.fixture(scope="module")
def api_bento(example_model, tmp_path_factory):
    """The example built through the API from its bento.yaml, into a store of this module's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTO_COMPILE_HOME", str(tmp_path_factory.mktemp("api-store")))
        yield bento_compile.build(config=example_model / "bento.yaml")


def test_build_load_predict_metadata(api_bento, example_model, monkeypatch):
    monkeypatch.setenv("BENTO_COMPILE_HOME", str(api_bento.path.parents[2]))
    assert api_bento.name == "cancer" and len(api_bento.version) == 16
    assert api_bento.parity["passed"] and api_bento.parity["sample"] == "file:sample.npy"
    assert (api_bento.path / "manifest.json").is_file()

    model = bento_compile.load(api_bento.tag)
    rows = np.load(example_model / "sample.npy")[:3]
    answer = model.predict({"inputs": rows.tolist()})
    original = joblib.load(example_model / "model.joblib")
    assert answer["outputs"]["label"] == original.predict(rows).tolist()
    assert np.allclose(answer["outputs"]["probabilities"], original.predict_proba(rows), atol=1e-4)
    assert model.predict(json.dumps({"inputs": rows.tolist()}).encode()) == answer  # JSON text: the same
    assert bento_compile.load(api_bento.path).predict({"inputs": rows.tolist()}) == answer  # by folder

    meta = model.metadata()
    assert meta["tag"] == api_bento.tag and meta["device"] == "cpu" and meta["parity"] is True
    assert [spec["name"] for spec in meta["inputs"]] == ["input"]
    assert bento_compile.load("cancer:latest").tag == api_bento.tag


def test_predict_answers_the_http_contracts_errors(api_bento):
    model = bento_compile.load(api_bento.path)
    with pytest.raises(InputError, match="30"):
        model.predict({"inputs": [[1.0, 2.0]]})
    with pytest.raises(InputError, match="not valid JSON"):
        model.predict("{not json")
    with pytest.raises(PayloadTooLarge, match="max_body_bytes"):
        model.predict(" " * (1024 * 1024 + 1))  # the example's bento.yaml: 1 MiB


def test_build_an_estimator_in_memory_with_rows(cancer_data):
    X, y = cancer_data
    estimator = LogisticRegression(max_iter=3000).fit(X, y)
    first = bento_compile.build(estimator, name="churn", sample=X[:20].astype(np.float32), tolerance=1e-3)
    assert first.tag.startswith("churn:") and first.created_new
    assert first.parity["outputs"]["probabilities"]["tolerance"] == 1e-3
    again = bento_compile.build(estimator, name="churn", sample=X[:20].astype(np.float32), tolerance=1e-3)
    assert again.tag == first.tag and not again.created_new  # content-addressed, as from a file


@pytest.mark.parametrize(("call", "problem", "fix"), [
    (lambda: bento_compile.build(object(), name="x"), "neither a path nor a fitted estimator", "Pass a model file"),
    (lambda: bento_compile.build(LogisticRegression()), "needs a name", "name="),
    (lambda: bento_compile.build("m.joblib", config={"nmae": "x"}), "unknown key 'nmae'", "bento.yaml reference"),
    (lambda: bento_compile.build("m.joblib", config=3), "config must be", "config='bento.yaml'"),
    (lambda: bento_compile.build("missing.joblib", name="x"), "does not exist", "Check the path"),
    (lambda: bento_compile.build(LogisticRegression(), name="x", sample=[1, 2]), "2-D array", "X_test"),
    (lambda: bento_compile.load("nothing:latest"), "No Bento named 'nothing'", "bento-compile list"),
    (lambda: bento_compile.load(3), "not int", "churn:latest"),
    (lambda: bento_compile.target("lambda", "cancer:latest"), "Unknown target kind 'lambda'", "lambda-zip"),
    (lambda: bento_compile.target("lambda-zip", "cancer:latest", arhc="arm64"), "no option 'arhc'", "arch"),
    (lambda: bento_compile.target("cloudrun", "cancer:latest"), "needs 'image'", "image="),
    (lambda: bento_compile.invoke("missing.zip", {}), "is not a file", "lambda-zip"),
])
def test_bad_arguments_name_the_problem_and_the_fix(call, problem, fix):
    with pytest.raises(BentoCompileError) as caught:
        call()
    assert problem in caught.value.problem and fix in caught.value.fix


def test_knative_target_for_an_image_pinned_by_digest(built_example, crd_schema, tmp_path):
    image = "127.0.0.1:5000/cancer@sha256:" + "ab" * 32  # pinned: no registry is asked
    files = bento_compile.target("knative", built_example, image=image, manifest_only=True, output=tmp_path)
    assert files == [tmp_path / "knative.yaml"]
    service = yaml.safe_load(files[0].read_text())
    assert_valid(service, crd_schema)
    assert service["spec"]["template"]["spec"]["containers"][0]["image"] == image
    revision = service["spec"]["template"]["metadata"]["name"]

    canary = bento_compile.target("knative", built_example, image=image, manifest_only=True, output=tmp_path,
                                  canary=10, current_revision="cancer-old")
    assert [p.name for p in canary] == ["knative.yaml", "knative-promote.yaml", "knative-rollback.yaml"]
    traffic = yaml.safe_load(canary[0].read_text())["spec"]["traffic"]
    assert {(t["revisionName"], t["percent"]) for t in traffic} == {(revision, 10), ("cancer-old", 90)}


@pytest.mark.slow
def test_edge_target_writes_the_bundle_and_its_checksum(built_example, tmp_path):
    bundle, checksum = bento_compile.target("edge", built_example, arch="x86_64", python="3.11", http=False,
                                            output=tmp_path)
    assert bundle.name == "cancer-edge-x86_64.tar.gz"
    assert checksum.read_text().split()[0] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    with tarfile.open(bundle) as archive:
        manifests = [m for m in archive.getnames() if m.endswith("bento/manifest.json")]
        shipped = json.load(archive.extractfile(manifests[0]))
    assert shipped["version"] == json.loads((built_example / "manifest.json").read_text())["version"]
    with pytest.raises(BentoCompileError, match=r"is not MAJOR\.MINOR"):
        bento_compile.target("edge", built_example, glibc="2", output=tmp_path)


@pytest.mark.slow
@pytest.mark.containers
def test_image_targets_build_daemonless_oci_layouts(built_example, tmp_path):
    from tests.support.container_infra import make_base_layout

    base = f"{make_base_layout(tmp_path / 'base')}:python"  # the suite's cached bookworm + python3
    service, record, layout = bento_compile.target("cloudrun", built_example, image="127.0.0.1:5000/cancer",
                                                   builder="oci", base_image=base, output=tmp_path / "run")
    image = json.loads(record.read_text())
    assert service.name == "service.yaml" and (layout / "index.json").is_file()
    assert image["pinned"] == f"127.0.0.1:5000/cancer@{image['digest']}" and not image["pushed"]
    assert yaml.safe_load(service.read_text())["spec"]["template"]["spec"]["containers"][0]["image"] == image["pinned"]

    files = bento_compile.target("lambda-image", built_example, image="127.0.0.1:5000/cancer-fn", builder="oci",
                                 base_image=base, output=tmp_path / "fn")
    assert [p.name for p in files] == ["image.json", "oci", "context"]
    dockerfile = (files[2] / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python3", "-m", "awslambdaric"]' in dockerfile
    assert 'CMD ["bento_compile.adapters.aws_lambda.handler"]' in dockerfile


@pytest.mark.slow
@pytest.mark.lambda_zip
def test_lambda_zip_target_and_invoke_through_the_emulator(built_example, example_model, tmp_path, monkeypatch):
    python = next((v for v in ("3.12", "3.13") if find_interpreter(v)), None)
    if python is None:
        pytest.skip("no Python 3.12 or 3.13 interpreter here to run a Lambda zip with "
                    "(pyenv install 3.12, or set BENTO_COMPILE_PYTHON_3_12=/path/to/python3.12)")
    monkeypatch.setenv("BENTO_COMPILE_HOME", str(built_example.parents[2]))  # keep the wheel caches of the suite
    files = bento_compile.target("lambda-zip", built_example, output=tmp_path, python=python)
    zip_path, template = files
    assert zip_path.suffix == ".zip" and zip_path.is_file() and template.name == "template.yaml"

    sample = np.load(example_model / "sample.npy")[:2]
    rows = [[None if np.isnan(value) else float(value) for value in row] for row in sample]  # JSON: null
    answer = bento_compile.invoke(zip_path, {"inputs": rows})
    assert answer.ok and answer.init_seconds > 0
    assert answer.body == bento_compile.load(built_example).predict({"inputs": rows})
    with pytest.raises(BentoCompileError, match="not JSON"):
        bento_compile.invoke(zip_path, {"inputs": sample.tolist()})  # NaN has no JSON form
    refused = bento_compile.invoke(zip_path, {"inputs": [[1.0]]})
    assert not refused.ok and "features" in refused.body["errorMessage"]
