"""Fixtures every test folder may ask for by name (registered in tests/conftest.py through pytest_plugins).

An isolated store per test, trained models and Bentos made once per session, a moto_server,
the Knative CRD schema and small real .tflite files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from tests.support.helpers import REPO, TEST_CACHE, free_port, load_example_script, stop_process, wait_http


@pytest.fixture(autouse=True)
def store_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "store"
    monkeypatch.setenv("BENTO_COMPILE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def cancer_data() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    return X, y


@pytest.fixture(scope="session")
def example_model(tmp_path_factory) -> Path:
    """The README's example, trained by its own script."""
    train = load_example_script("breast_cancer")
    out = tmp_path_factory.mktemp("example")
    train.main(out)
    (out / "bento.yaml").write_text((REPO / "examples/breast_cancer/bento.yaml").read_text())
    return out


@pytest.fixture(scope="session")
def built_example(example_model, tmp_path_factory) -> Path:
    """A Bento of the example, built once; returns its folder (tests must not modify it)."""
    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import load_config
    from bento_compile.core.store import BentoStore

    config, config_dir = load_config(example_model / "bento.yaml")
    store = BentoStore(tmp_path_factory.mktemp("session-store"))
    return build(BuildRequest(None, config, config_dir), store).path


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """A real moto_server on 127.0.0.1, started once for the session and stopped afterwards."""
    executable = Path(sys.executable).parent / "moto_server"
    if not executable.exists():
        found = shutil.which("moto_server")
        if not found:
            pytest.skip("moto_server is not installed (pip install 'moto[server]')")
        executable = Path(found)
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(executable), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", timeout=60, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture(scope="session")
def crd_schema() -> dict:
    """The Knative Service CRD's v1 openAPIV3Schema (../shared/schemas)."""
    from tests.support.knative_schema import load_crd_schema

    return load_crd_schema()


MEDIAPIPE = "mediapipe==0.10.14"
MODELS = {
    "face": "mediapipe/modules/face_detection/face_detection_short_range.tflite",  # 224 KB, 1x128x128x3 → 2 outputs
    "recrop": "mediapipe/modules/holistic_landmark/hand_recrop.tflite",  # 121 KB, 1x256x256x3 → 1x1x1x4
}


@pytest.fixture(scope="session")
def mediapipe_models() -> dict[str, Path]:
    """Small real .tflite files, unzipped from the mediapipe wheel (downloaded once, never installed)."""
    folder = TEST_CACHE / MEDIAPIPE.replace("==", "-")
    wanted = {key: folder / Path(member).name for key, member in MODELS.items()}
    if not all(p.is_file() for p in wanted.values()):
        folder.mkdir(parents=True, exist_ok=True)
        download = folder / "wheel"
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", MEDIAPIPE, "--no-deps", "--only-binary=:all:",
             "--python-version", "3.11", "--platform", "manylinux_2_17_x86_64", "-d", str(download), "-q"],
            capture_output=True, text=True, timeout=600)
        wheels = list(download.glob("mediapipe-*.whl"))
        if result.returncode != 0 or not wheels:
            pytest.skip(f"cannot download {MEDIAPIPE} for its .tflite files: {result.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as archive:
            for key, member in MODELS.items():
                tmp = wanted[key].with_suffix(".part")
                tmp.write_bytes(archive.read(member))
                tmp.replace(wanted[key])
        for wheel in wheels:
            wheel.unlink()
    return wanted


@pytest.fixture(scope="session")
def deploy_zip(built_example, tmp_path_factory) -> Path:
    """The example Bento as an x86_64 Lambda zip for the deploy tests (Python 3.12 or 3.13, whichever is
    here), built once for the session."""
    from bento_compile.targets.bytecode import find_interpreter
    from bento_compile.targets.lambda_zip import build_lambda_zip

    python = next((v for v in ("3.12", "3.13") if find_interpreter(v)), None)
    if python is None:
        pytest.skip("no Python 3.12 or 3.13 interpreter here to run Lambda zips with "
                    "(pyenv install 3.12, or set BENTO_COMPILE_PYTHON_3_12=/path/to/python3.12)")
    return build_lambda_zip(built_example, "x86_64", python, tmp_path_factory.mktemp("deploy-dist"),
                            template=False).path


@pytest.fixture(scope="session")
def lambda_run_home(tmp_path_factory) -> Path:
    """A BENTO_COMPILE_HOME kept for the session, so the clean interpreter and the unpacked zips
    that run deployed code are made once, not per test."""
    return tmp_path_factory.mktemp("lambda-run-home")


@pytest.fixture
def stored_example(built_example, store_home) -> str:
    """The example Bento committed to this test's store (the CLI resolves it as cancer:latest); its tag."""
    from bento_compile.core.store import BentoStore
    from bento_compile.runtimes.manifest import read_manifest

    manifest = read_manifest(built_example)
    staged = store_home.parent / "staged-bento"
    shutil.copytree(built_example, staged)
    BentoStore(store_home).commit(staged, manifest.name, manifest.version)
    return manifest.tag


@pytest.fixture(scope="session")
def onnx_node_tests() -> Path:
    """ONNX's backend node tests (from the onnx 1.17 wheel, downloaded once, never installed)."""
    from tests.support.onnx_node_corpus import node_tests_root

    root = node_tests_root()
    if isinstance(root, str):
        pytest.skip(root)
    return root


SILERO_VAD = "silero-vad==6.2.3"
SILERO_MEMBER = "silero_vad/data/silero_vad.onnx"


@pytest.fixture(scope="session")
def silero_vad_onnx() -> Path:
    """silero-vad's ONNX model (2.3 MB), unzipped from its PyPI wheel (downloaded once, never installed)."""
    folder = TEST_CACHE / SILERO_VAD.replace("==", "-")
    model = folder / "silero_vad.onnx"
    if not model.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        download = folder / "wheel"
        result = subprocess.run([sys.executable, "-m", "pip", "download", SILERO_VAD, "--no-deps",
                                 "--only-binary=:all:", "-d", str(download), "-q"],
                                capture_output=True, text=True, timeout=600)
        wheels = list(download.glob("silero_vad-*.whl"))
        if result.returncode != 0 or not wheels:
            pytest.skip(f"cannot download {SILERO_VAD} for its ONNX model: {result.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as archive:
            part = model.with_suffix(".part")
            part.write_bytes(archive.read(SILERO_MEMBER))
            part.replace(model)
        for wheel in wheels:
            wheel.unlink()
    return model


@pytest.fixture(scope="session")
def container_base_layout(tmp_path_factory) -> str:
    """The bookworm + python3 base as an OCI layout reference (DIR:TAG), for daemonless image builds.
    Skips when the root file system cannot be made here (needs root and mmdebstrap)."""
    import os

    from tests.support import container_infra as infra

    if infra.missing("mmdebstrap") or os.geteuid() != 0:
        pytest.skip("needs root and mmdebstrap (apt-get install mmdebstrap) to make the base image")
    return f"{infra.make_base_layout(tmp_path_factory.mktemp('base') / 'python')}:python"


@pytest.fixture(scope="session")
def local_registry(tmp_path_factory):
    """A real `docker-registry` on 127.0.0.1 for the session; yields HOST:PORT."""
    from tests.support import container_infra as infra

    if infra.missing("docker-registry"):
        pytest.skip("needs docker-registry (apt-get install docker-registry)")
    with infra.registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


@pytest.fixture
def otlp_receiver(monkeypatch):
    """A real OTLP/HTTP receiver on 127.0.0.1 (OTEL_EXPORTER_OTLP_ENDPOINT points at it): the list of
    (path, protobuf body) it was sent, for the test to decode with the OTLP schema."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[tuple[str, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append((self.path, self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield received
    finally:
        server.shutdown()
