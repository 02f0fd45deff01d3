"""TFLite: real .tflite models (from the mediapipe wheel) served over HTTP by the LiteRT backend,
and Keras → TFLite with TensorFlow's own converter (in its own venv), gated quantization included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from bento_compile.compiler.build import BuildRequest, build
from bento_compile.core.config import BentoConfig, load_config
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.errors import IntegrityError
from bento_compile.runtimes.model import BentoModel
from tests.support.helpers import TEST_CACHE, free_port, stop_process, wait_http

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="the [tflite] extra (ai-edge-litert) is missing")



def _build(path, sample=None, name="m", config=None, config_dir=None, **kw):
    return build(BuildRequest(path, config or BentoConfig(), config_dir, name=name, sample_path=sample, **kw),
                 BentoStore())


def _direct(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same model run straight through LiteRT, one row at a time (what the backend must equal)."""
    interpreter = litert.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (detail,) = interpreter.get_input_details()
    rows = []
    for row in next(iter(feeds.values())):
        interpreter.set_tensor(detail["index"], row[None])
        interpreter.invoke()
        rows.append({d["name"]: interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()})
    return {name: np.concatenate([r[name] for r in rows]) for name in rows[0]}


def test_tflite_served_over_http_through_the_tflite_backend(mediapipe_models, tmp_path):
    rng = np.random.default_rng(0)
    sample = rng.uniform(-1, 1, size=(6, 128, 128, 3)).astype(np.float32)
    np.save(tmp_path / "s.npy", sample)
    result = _build(mediapipe_models["face"], tmp_path / "s.npy", name="face")
    model = result.manifest["model"]
    assert model["format"] == "tflite" and model["file"] == "model.tflite"
    assert model["inputs"] == [{"name": "input", "dtype": "float32", "shape": [None, 128, 128, 3], "batch": True}]
    assert [o["name"] for o in model["outputs"]] == ["regressors", "classificators"]
    assert result.parity["passthrough"] and result.manifest["example"] is None  # 49k values a row: not embedded
    port = free_port()
    env = {**os.environ, "BENTO_COMPILE_BENTO": str(result.path), "PORT": str(port)}
    server = subprocess.Popen([sys.executable, "-m", "bento_compile.adapters.server"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=server)
        body = json.dumps({"inputs": sample[:2].tolist()}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            outputs = json.loads(response.read())["outputs"]
        want = _direct(mediapipe_models["face"], {"input": sample[:2]})
        np.testing.assert_allclose(outputs["regressors"], want["regressors"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outputs["classificators"], want["classificators"], rtol=1e-5, atol=1e-5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metadata", timeout=10) as response:
            metadata = json.loads(response.read())
        assert "ai_edge_litert" in metadata["versions"] and metadata["providers"][0].startswith("ai_edge_litert")
        bad = urllib.request.Request(f"http://127.0.0.1:{port}/predict", headers={"content-type": "application/json"},
                                     data=json.dumps({"inputs": [[[0.0] * 3] * 128]}).encode())
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bad, timeout=10)
        assert info.value.code == 422 and "input" in json.loads(info.value.read())["error"]
    finally:
        stop_process(server, timeout=30)


def test_second_real_model_and_tampering(mediapipe_models, tmp_path):
    result = _build(mediapipe_models["recrop"], name="recrop")
    assert result.parity["sample"] == "synthetic"
    row = np.random.default_rng(1).uniform(0, 1, size=(1, 256, 256, 3)).astype(np.float32)
    got = BentoModel.load(result.path).predict({"inputs": row.tolist()})["outputs"]
    want = _direct(mediapipe_models["recrop"], {"input_1": row})
    np.testing.assert_allclose(got["output_crop"], want["output_crop"], rtol=1e-5, atol=1e-5)
    copy = tmp_path / "bento"
    import shutil

    shutil.copytree(result.path, copy)
    data = bytearray((copy / "model.tflite").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model.tflite has sha256"):
        BentoModel.load(copy)


def test_tflite_input_cannot_be_quantized_and_bad_files_are_named(mediapipe_models, tmp_path):
    with pytest.raises(BentoCompileError, match=r"served as it is.*Quantize it with the tool that produced it"):
        _build(mediapipe_models["face"], name="face", quantize="dynamic")
    with pytest.raises(BentoCompileError, match="format: ort converts ONNX models"):
        _build(mediapipe_models["face"], name="face", format="ort")
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(BentoCompileError, match=r"junk\.tflite is not a loadable TFLite model"):
        _build(tmp_path / "junk.tflite")


def test_backend_fallback_error_names_both_runtimes(mediapipe_models):
    """With ai_edge_litert blocked, tflite_runtime is tried next; with neither, the error names both."""
    script = textwrap.dedent(f"""
        import sys
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("ai_edge_litert", "tflite_runtime"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Blocker())
        from bento_compile.runtimes.tflite_backend import TFLiteBackend
        try:
            TFLiteBackend({str(mediapipe_models["face"])!r})
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60).stdout
    assert out.startswith("IntegrityError") and "ai-edge-litert" in out and "tflite-runtime" in out


@pytest.fixture(scope="session")
def tflite_runtime_python() -> str:
    """A venv with the fallback runtime only: tflite-runtime 2.14 (its last release) needs numpy < 2."""
    if sys.version_info[:2] > (3, 11):
        pytest.skip("tflite-runtime has no wheel for Python > 3.11")
    venv = TEST_CACHE.parent / "tflite-runtime-venv"
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import tflite_runtime.interpreter"], capture_output=True) \
        if python.is_file() else None
    if probe is None or probe.returncode != 0:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "tflite-runtime==2.14.0", "numpy<2"],
                                   capture_output=True, text=True, timeout=600)
        if installed.returncode != 0:
            pytest.skip(f"tflite-runtime cannot be installed here: {installed.stderr.strip()[-300:]}")
    return str(python)


@pytest.mark.slow
def test_tflite_runtime_fallback_serves_the_bento(mediapipe_models, tflite_runtime_python, tmp_path):
    """The files that ship in artifacts, on a Python with tflite-runtime and numpy 1.x only."""
    from bento_compile.targets.runtime_files import runtime_package_files

    result = _build(mediapipe_models["face"], name="face")
    for arcname, source in runtime_package_files():
        target = tmp_path / "site" / arcname
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    row = np.random.default_rng(2).uniform(-1, 1, size=(1, 128, 128, 3)).astype(np.float32)
    np.save(tmp_path / "row.npy", row)
    script = textwrap.dedent(f"""
        import json, numpy as np
        from bento_compile.runtimes.model import BentoModel
        model = BentoModel.load({str(result.path)!r})
        out = model.predict({{"inputs": np.load({str(tmp_path / "row.npy")!r}).tolist()}})["outputs"]
        print(json.dumps({{"versions": model.backend.runtime_versions, "numpy": np.__version__,
                           "classificators": out["classificators"]}}))
    """)
    run = subprocess.run([tflite_runtime_python, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer["versions"] == {"tflite_runtime": "2.14.0"} and answer["numpy"].startswith("1.")
    want = _direct(mediapipe_models["face"], {"input": row})
    np.testing.assert_allclose(answer["classificators"], want["classificators"], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ Keras / TensorFlow → TFLite

KERAS_SCRIPT = """
import sys, numpy as np, keras
out = sys.argv[1]
rng = np.random.default_rng(0)
X = rng.standard_normal((600, 16)).astype("float32")
y = (X[:, :4].sum(axis=1) > 0).astype("int64")
inputs = keras.Input(shape=(16,), name="features")
h = keras.layers.Dense(64, activation="relu")(inputs)
h = keras.layers.Dense(64, activation="relu")(h)
model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(X, y, epochs=15, verbose=0)
model.save(out + "/model.keras")
model.export(out + "/saved", verbose=False)
np.save(out + "/sample.npy", X[400:])
np.save(out + "/expected.npy", model.predict(X[400:402], verbose=0))
import tensorflow as tf
class Svd(tf.Module):  # an operator TFLite's builtins do not have
    @tf.function(input_signature=[tf.TensorSpec([None, 4, 4], tf.float32)])
    def __call__(self, x):
        return {"s": tf.linalg.svd(x, compute_uv=False)}
svd = Svd()
tf.saved_model.save(svd, out + "/svd", signatures=svd.__call__)
# A full-integer model whose INPUT and OUTPUT are int8 too (what microcontroller toolchains ask for).
converter = tf.lite.TFLiteConverter.from_saved_model(out + "/saved")
converter.optimizations = [tf.lite.Optimize.DEFAULT]
converter.representative_dataset = lambda: ({"features": X[i : i + 1]} for i in range(200))
converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
converter.inference_input_type = tf.int8
converter.inference_output_type = tf.int8
open(out + "/int8io.tflite", "wb").write(converter.convert())
"""


@pytest.fixture(scope="session")
def tf_python() -> str:
    """A venv with tensorflow-cpu, created once and cached (python -m bento_compile.compiler.tf_frontend --setup)."""
    from bento_compile.compiler import tf_frontend

    try:
        return str(tf_frontend.setup_venv())
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"tensorflow-cpu=={tf_frontend.TF_VERSION} cannot be installed here: {exc}")


@pytest.fixture(scope="session")
def keras_model(tf_python, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("keras")
    (folder / "make.py").write_text(KERAS_SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([tf_python, str(folder / "make.py"), str(folder)], check=True, capture_output=True, env=env,
                   timeout=600)
    return folder


@pytest.mark.tensorflow
def test_keras_to_tflite_with_gated_quantization(keras_model, tf_python, monkeypatch, tmp_path):
    monkeypatch.setenv("BENTO_COMPILE_TF_PYTHON", tf_python)
    (keras_model / "bento.yaml").write_text(
        "name: keras-mlp\nmodel: model.keras\nsample: sample.npy\n"
        "quantize: {method: auto, gate: {output: output_0, max_abs_diff: 0.05, argmax: true}}\n")
    config, config_dir = load_config(keras_model / "bento.yaml")
    result = build(BuildRequest(None, config, config_dir), BentoStore())
    manifest = result.manifest
    assert manifest["model"]["format"] == "tflite" and manifest["source"]["kind"] == "keras"
    assert manifest["model"]["inputs"] == [{"name": "features", "dtype": "float32", "shape": [None, 16], "batch": True}]
    assert "tensorflow" in manifest["versions"]
    table = manifest["quantization"]
    variants = {v["variant"]: v for v in table["variants"]}
    assert set(variants) == {"fp32", "dynamic", "static", "fp16"}
    assert "representative dataset" in variants["static"]["note"]
    assert variants["fp32"]["max_abs_diff"] < 1e-5  # the converted fp32 model equals Keras
    chosen = variants[table["chosen"]]
    assert chosen["passed"] and chosen["size"] == min(v["size"] for v in variants.values() if v["passed"])
    assert chosen["size"] < variants["fp32"]["size"]
    assert table["fp32_parity"]["passed"]
    got = BentoModel.load(result.path).predict({"inputs": np.load(keras_model / "sample.npy")[:2].tolist()})
    np.testing.assert_allclose(got["outputs"]["output_0"], np.load(keras_model / "expected.npy"), atol=0.05)


@pytest.mark.tensorflow
def test_saved_model_folder_and_failing_gate(keras_model, tf_python, monkeypatch, store_home):
    monkeypatch.setenv("BENTO_COMPILE_TF_PYTHON", tf_python)
    result = _build(keras_model / "saved", keras_model / "sample.npy", name="saved")
    assert result.manifest["source"]["kind"] == "tf-savedmodel" and result.parity["passed"]
    assert result.parity["outputs"]["output_0"]["max_abs_diff"] < 1e-5
    strict = BentoConfig.model_validate(
        {"quantize": {"method": "static", "gate": {"output": "output_0", "max_abs_diff": 1e-7}}})
    from bento_compile.compiler.quantize import QuantizationGateError

    with pytest.raises(QuantizationGateError, match="No static variant passed"):
        _build(keras_model / "saved", keras_model / "sample.npy", name="strict", config=strict)
    assert not list((store_home / "bentos").glob("strict/*/manifest.json"))


@pytest.mark.tensorflow
def test_int8_input_and_output_tensors_are_converted_at_the_edges(keras_model):
    """Clients send and get real numbers even when the model's own tensors are int8."""
    result = _build(keras_model / "int8io.tflite", keras_model / "sample.npy", name="int8io")
    model = result.manifest["model"]
    assert model["inputs"][0]["dtype"] == "float32" and model["outputs"][0]["dtype"] == "float32"
    interpreter = litert.Interpreter(model_path=str(keras_model / "int8io.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8  # really int8 inside
    got = BentoModel.load(result.path).predict({"inputs": np.load(keras_model / "sample.npy")[:2].tolist()})
    values = np.array(next(iter(got["outputs"].values())))
    np.testing.assert_allclose(values, np.load(keras_model / "expected.npy"), atol=0.05)


@pytest.mark.tensorflow
def test_unsupported_tensorflow_op_is_named(keras_model, tf_python, monkeypatch):
    monkeypatch.setenv("BENTO_COMPILE_TF_PYTHON", tf_python)
    with pytest.raises(BentoCompileError, match=r"TensorFlow could not convert the model: .*Svd") as info:
        _build(keras_model / "svd", name="svd")
    assert "builtin operators" in info.value.fix


def test_missing_tensorflow_is_a_clear_error(tmp_path, monkeypatch):
    from bento_compile.compiler import tf_frontend

    monkeypatch.setenv("BENTO_COMPILE_TF_PYTHON", str(tmp_path / "nope" / "python"))
    (tmp_path / "m.keras").write_bytes(b"PK")
    with pytest.raises(BentoCompileError, match=r"BENTO_COMPILE_TF_PYTHON=.* does not exist"):
        _build(tmp_path / "m.keras")
    monkeypatch.delenv("BENTO_COMPILE_TF_PYTHON")
    monkeypatch.setattr(tf_frontend, "DEFAULT_VENV", tmp_path / "no-venv")
    monkeypatch.setattr(tf_frontend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BentoCompileError, match=r"needs TensorFlow.*") as info:
        _build(tmp_path / "m.keras")
    assert "--setup" in info.value.fix and "[tensorflow]" in info.value.fix
