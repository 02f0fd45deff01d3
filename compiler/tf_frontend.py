"""Keras / TensorFlow SavedModel → TFLite with TensorFlow's own converter.

TensorFlow is heavy (tensorflow-cpu: a 274 MB wheel, 1.6 GB installed), so it
need not live in the compiler's environment. The conversion runs in a
subprocess (`tf_worker.py`, which imports nothing of ours) under the first of:

1. `$BENTO_COMPILE_TF_PYTHON`: a Python interpreter that has tensorflow;
2. this interpreter, when `tensorflow` is importable here (`pip install 'bento-compile[tensorflow]'`);
3. `~/.cache/bento-compile/tf-venv/bin/python`, the venv `python -m bento_compile.compiler.tf_frontend
   --setup` creates (and the test suite reuses).

The reference for the parity check is the ORIGINAL model's serving signature,
run by TensorFlow on the sample; the candidate is the `.tflite` run by LiteRT
(the runtime's own backend). Quantized variants: `dynamic` (dynamic-range int8
weights), `static` (full-integer int8 with a representative dataset taken from
the calibration rows; inputs/outputs stay float32) and `fp16`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bento_compile.compiler.native_frontend import tflite_runner
from bento_compile.compiler.quantize import Variant
from bento_compile.compiler.source import NativeSource, check_signature_override
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import TensorSpec, sha256_file

KERAS_SUFFIXES = (".keras", ".h5")
TF_VERSION = "2.21.0"
DEFAULT_VENV = Path.home() / ".cache" / "bento-compile" / "tf-venv"
WORKER = Path(__file__).with_name("tf_worker.py")
TIMEOUT_S = 600
# Our method names → the worker's TFLite conversion names.
TFLITE_VARIANTS = {"dynamic": "dynamic", "static": "int8", "fp16": "fp16"}


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def tf_python() -> str:
    """The interpreter that runs TensorFlow's converter (see the module docstring for the order)."""
    explicit = os.environ.get("BENTO_COMPILE_TF_PYTHON")
    if explicit:
        if not Path(explicit).is_file():
            raise BentoCompileError(f"BENTO_COMPILE_TF_PYTHON={explicit} does not exist.",
                                    "Point it at the python of a venv with tensorflow-cpu installed.")
        return explicit
    if importlib.util.find_spec("tensorflow") is not None:
        return sys.executable
    venv_python = DEFAULT_VENV / "bin" / "python"
    if venv_python.is_file():
        return str(venv_python)
    raise BentoCompileError(
        "Converting a Keras / TensorFlow model needs TensorFlow, which is not installed here.",
        f"Run `python -m bento_compile.compiler.tf_frontend --setup` (a separate venv with tensorflow-cpu=="
        f"{TF_VERSION} in {DEFAULT_VENV}), or pip install 'bento-compile[tensorflow]', or set "
        "BENTO_COMPILE_TF_PYTHON to a python that has tensorflow.")


def setup_venv(target: Path = DEFAULT_VENV) -> Path:
    """Create the TensorFlow venv (about 1.6 GB); a no-op when it already imports tensorflow."""
    python = target / "bin" / "python"
    probe = [str(python), "-c", "import tensorflow"]
    if python.is_file() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"tensorflow-cpu=={TF_VERSION}"], check=True)
    return python


def run_worker(job: dict[str, Any], work: Path) -> None:
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    try:
        result = subprocess.run([tf_python(), str(WORKER), str(job_path)], capture_output=True, text=True,
                                timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise BentoCompileError(f"TensorFlow's converter did not finish in {TIMEOUT_S} s.",
                                "Check the model loads with keras.models.load_model.") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
        detail = lines[-1][7:] if lines else (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BentoCompileError(f"TensorFlow could not convert the model: {detail}",
                                "Save the model with model.save('model.keras') or model.export('saved_model/'), "
                                "using only layers TFLite's builtin operators support (or convert it to ONNX).")


def load_keras(path: Path, input_override: list[TensorSpec] | None) -> NativeSource:
    """A `.keras` / `.h5` file or a SavedModel folder: convert to fp32 TFLite and read its signature."""
    work = tempfile.TemporaryDirectory(prefix="bento-tf-")
    root = Path(work.name)
    run_worker({"model": str(path.resolve()), "out_dir": str(root), "tasks": ["signature", "convert"],
                "variants": ["fp32"]}, root)
    signature = json.loads((root / "signature.json").read_text())
    data = (root / "fp32.tflite").read_bytes()
    from bento_compile.runtimes.tflite_backend import TFLiteBackend

    backend = TFLiteBackend(model_content=data)
    ins, outs = backend.specs()
    inputs = [TensorSpec.from_dict(s) for s in ins]
    check_signature_override(input_override, inputs, path)
    file_sha = _tree_sha256(path)

    def reference(feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        # numpy's stub reads **feeds as if it could hold allow_pickle; here it holds only input arrays.
        np.savez(root / "feeds.npz", **feeds)  # type: ignore[arg-type]
        run_worker({"model": str(path.resolve()), "out_dir": str(root), "tasks": ["predict"],
                    "feeds": str(root / "feeds.npz")}, root)
        with np.load(root / "predictions.npz", allow_pickle=False) as predictions:
            return {name: predictions[name] for name in names if name in predictions.files}

    def variants(qconfig, calibration: dict[str, np.ndarray]) -> list[Variant]:
        wanted = qconfig.candidates if qconfig.method == "auto" else [qconfig.method]
        names = [n for n in wanted if n in TFLITE_VARIANTS]
        if not names:
            return []
        np.save(root / "calibration.npy", calibration[inputs[0].name])
        run_worker({"model": str(path.resolve()), "out_dir": str(root), "tasks": ["convert"],
                    "variants": [TFLITE_VARIANTS[n] for n in names],
                    "calibration": str(root / "calibration.npy")}, root)
        notes = {"dynamic": "dynamic-range int8 weights (TFLite Optimize.DEFAULT)",
                 "static": f"full-integer int8, representative dataset of {len(calibration[inputs[0].name])} rows; "
                           "float32 inputs/outputs",
                 "fp16": "float16 weights (TFLite target_spec float16)"}
        built = []
        for n in names:
            model_file, error_file = root / f"{TFLITE_VARIANTS[n]}.tflite", root / f"{TFLITE_VARIANTS[n]}.error"
            if error_file.is_file():
                built.append(Variant(n, None, None, note=f"TFLite could not convert it: {error_file.read_text()}"))
            else:
                built.append(Variant(n, model_file.read_bytes(), tflite_runner, note=notes[n]))
        return built

    return NativeSource(kind="keras" if path.is_file() else "tf-savedmodel", artifact_format="tflite", data=data,
                        inputs=inputs, outputs=[TensorSpec.from_dict(s) for s in outs], runner_factory=tflite_runner,
                        description=f"{'Keras model' if path.is_file() else 'TensorFlow SavedModel'} ({path.name}) → "
                                    "TFLite", file_sha256=file_sha, reference=reference, variant_factory=variants,
                        converter_versions={**signature.get("versions", {}), **backend.runtime_versions},
                        keep_alive=work)


def _tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a SavedModel folder's files (names and contents, sorted)."""
    if path.is_file():
        return sha256_file(path)
    import hashlib

    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(path)).encode() + b"\0" + sha256_file(item).encode())
    return digest.hexdigest()


if __name__ == "__main__":  # python -m bento_compile.compiler.tf_frontend --setup
    if sys.argv[1:] == ["--setup"]:
        print(setup_venv())
    else:
        print("usage: python -m bento_compile.compiler.tf_frontend --setup", file=sys.stderr)
        sys.exit(2)
