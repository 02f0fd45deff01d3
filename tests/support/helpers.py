"""Plain helpers the tests call: the repository's paths, the real CLI in a subprocess, ports, waiting, stopping."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import joblib

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
# Downloaded test models (the mediapipe wheel's .tflite files) and tool venvs, kept between runs.
TEST_CACHE = Path(os.environ.get("BENTO_COMPILE_TEST_CACHE", Path.home() / ".cache" / "bento-compile" / "test-models"))


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


def stop_process(proc: subprocess.Popen, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int:
    """Ask a child to stop (SIGTERM by default), wait, then kill it; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode
