"""Shared fixtures: an isolated store per test, and trained models made once per session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


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
    from bento_compile.config import load_config
    from bento_compile.store import BentoStore

    config, config_dir = load_config(example_model / "bento.yaml")
    store = BentoStore(tmp_path_factory.mktemp("session-store"))
    return build(BuildRequest(None, config, config_dir), store).path


def load_example_script(example: str, script: str = "train"):
    """Import examples/<example>/<script>.py under a name of its own: every example has a
    `train.py`, and a plain `import train` would hand the second caller the first one's module."""
    import importlib.util

    path = REPO / "examples" / example / f"{script}.py"
    spec = importlib.util.spec_from_file_location(f"example_{example}_{script}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save(model, path: Path) -> Path:
    joblib.dump(model, path)
    return path


def run_cli(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real command line in a subprocess, as a user runs it."""
    import os

    result = subprocess.run([sys.executable, "-m", "bento_compile.cli", *args], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200", **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"bento-compile {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} not ready after {timeout}s")


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
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
