"""A `.tflite` Bento as an edge bundle: the runtime follows the format (tflite-runtime here, the smallest),
installs offline natively, and answers like the LiteRT backend in process. Real model: mediapipe's face
detector (224 KB), unzipped from its wheel by test_tflite's fixture (cached)."""

from __future__ import annotations

import json
import shlex
import subprocess
import tarfile

import numpy as np
import pytest

from bento_compile.compiler.build import BuildRequest, build
from bento_compile.core.config import BentoConfig
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.model import BentoModel
from bento_compile.targets.edge import EdgeOptions, build_edge_bundle
from tests.support import edge_support as es

PY = es.system_python_version()


@pytest.mark.skipif(PY != "3.11", reason="tflite-runtime's last release has wheels up to Python 3.11; "
                    "this test installs with the system Python 3.11 (apt-get install python3 python3-venv)")
def test_tflite_bundle_with_tflite_runtime_installs_offline_and_matches(mediapipe_models, tmp_path):
    bento = build(BuildRequest(mediapipe_models["face"], BentoConfig(), None, name="face"),
                  BentoStore(tmp_path / "store")).path
    built = build_edge_bundle(bento, EdgeOptions(arch="x86_64", python=PY, tflite_runtime="tflite-runtime",
                                                 http=False, measure=False), tmp_path / "dist")
    assert built.model_format == "tflite" and built.plan.engine == "tflite-runtime"
    versions = {w.name: w.version for w in built.wheels}
    assert versions["tflite-runtime"] == "2.14.0" and versions["numpy"].startswith("1.")
    assert "onnxruntime" not in versions and "ai-edge-litert" not in versions
    with tarfile.open(built.path) as tar:
        assert "face-edge-x86_64/bento/model.tflite" in tar.getnames()

    folder = es.unpack(built.path, tmp_path / "unpacked")
    prefix = tmp_path / "opt"
    offline = es.offline_prefix()
    result = subprocess.run([*offline, "sh", str(folder / "install.sh"), "--prefix", str(prefix),
                             "--python", str(es.SYSTEM_PYTHON), "--no-service"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    row = np.random.default_rng(3).uniform(-1, 1, size=(1, 128, 128, 3)).astype(np.float32)
    request = {"inputs": row.tolist()}
    answer = subprocess.run([str(prefix / "current" / "run"), "predict"], input=json.dumps(request),
                            capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr
    pytest.importorskip("ai_edge_litert")
    expected = BentoModel.load(bento).predict(request)["outputs"]
    es.assert_outputs_close(json.loads(answer.stdout)["outputs"], expected, atol=1e-4)
    engine = subprocess.run([str(prefix / "current" / "venv" / "bin" / "python"), "-c",
                             "import tflite_runtime, numpy; print(tflite_runtime.__version__, numpy.__version__)"],
                            capture_output=True, text=True)
    assert engine.stdout.split()[0] == "2.14.0"


def test_armv7_bundle_takes_numpy_from_the_device(mediapipe_models, tmp_path):
    """armv7 (a 32-bit Raspberry Pi OS): tflite-runtime's armv7 wheel, the device's python3-numpy."""
    bento = build(BuildRequest(mediapipe_models["face"], BentoConfig(), None, name="face"),
                  BentoStore(tmp_path / "store")).path
    built = build_edge_bundle(bento, EdgeOptions(arch="armv7", python="3.11", measure=False), tmp_path / "dist")
    assert built.plan.engine == "tflite-runtime" and built.plan.system_modules == ["numpy"]
    files = {w.name: w.filename for w in built.wheels}
    assert "armv7l" in files["tflite-runtime"] and "numpy" not in files and "onnxruntime" not in files
    with tarfile.open(built.path) as tar:
        env = tar.extractfile("face-edge-armv7/bundle.env").read().decode()
        requirements = tar.extractfile("face-edge-armv7/requirements.txt").read().decode()
    values = dict(shlex.split(line)[0].split("=", 1) for line in env.splitlines() if line)  # as the shell reads it
    assert values["SYSTEM_MODULES"] == "numpy" and values["MACHINE"] == "armv7l"
    assert "tflite-runtime==2.14.0" in requirements and "numpy" not in requirements
