"""Shared, cached builders for the edge tests: a tiny Bento and its bundles, made once per test process.

The bundles hold real wheels resolved from PyPI for the target platform, so each
costs a download; every test file that needs one gets the same copy from here.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SYSTEM_PYTHON = Path("/usr/bin/python3")
REQUEST = {"inputs": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]]}


@functools.cache
def _root() -> Path:
    return Path(tempfile.mkdtemp(prefix="bento-edge-tests-"))


def tiny_bento(seed: int = 0, model_format: str = "onnx") -> Path:
    """A 4-feature logistic regression on iris (a few kB: emulation is 25–270× slower); `model_format`
    "ort" compiles it to the ONNX Runtime format (with its operator config) instead."""
    if model_format != "onnx":
        return _tiny_bento_in(seed, model_format)
    return _tiny_bento(seed)


@functools.cache
def _tiny_bento_in(seed: int, model_format: str) -> Path:
    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import load_config
    from bento_compile.core.store import BentoStore

    _tiny_bento(seed)
    work = _root() / f"model-{seed}"
    config, _ = load_config(None)
    request = BuildRequest(work / "tiny.joblib", config, None, name=f"tiny{model_format}",
                           sample_path=work / "sample.npy", format=model_format)
    return build(request, BentoStore(work / f"store-{model_format}")).path


@functools.cache
def _tiny_bento(seed: int) -> Path:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import load_config
    from bento_compile.core.store import BentoStore

    work = _root() / f"model-{seed}"
    work.mkdir()
    X, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(X))[:120]
    joblib.dump(LogisticRegression(max_iter=1000, C=1.0 + seed).fit(X[rows], y[rows]), work / "tiny.joblib")
    np.save(work / "sample.npy", X[::10].astype(np.float32))
    config, _ = load_config(None)
    request = BuildRequest(work / "tiny.joblib", config, None, name="tiny", sample_path=work / "sample.npy")
    return build(request, BentoStore(work / "store")).path


@functools.cache
def offline_prefix() -> list[str]:
    """`unshare -n`: run a command in a fresh network namespace with no network at all, proving an
    install needs none. Empty (and the test still runs, just without that proof) where it is not allowed."""
    import os

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return []
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return ["unshare", "-n"] if probe.returncode == 0 else []


def system_python_version() -> str | None:
    """The Python a device-like install uses here (/usr/bin/python3, with venv), as X.Y."""
    if not SYSTEM_PYTHON.is_file():
        return None
    probe = "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"
    result = subprocess.run([str(SYSTEM_PYTHON), "-c", probe], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def bundle(arch: str, python: str, seed: int = 0) -> Path:
    """The tiny Bento's bundle for a platform, built once per test process."""
    return _bundle(arch, python, seed)


@functools.cache
def _bundle(arch: str, python: str, seed: int) -> Path:
    from bento_compile.targets.edge import EdgeOptions, build_edge_bundle

    return build_edge_bundle(tiny_bento(seed), EdgeOptions(arch=arch, python=python, measure=False),
                             _root() / f"dist-{seed}").path


def unpack(bundle_path: Path, into: Path) -> Path:
    """Unpack a bundle like a user would (tar -xzf); returns the bundle's folder."""
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xzf", str(bundle_path), "-C", str(into)], check=True)
    (folder,) = [p for p in into.iterdir() if p.is_dir()]
    return folder


def expected_outputs(request: dict = REQUEST, seed: int = 0) -> dict:
    """The x86_64 answer, in process, for comparing with what the bundle answers elsewhere."""
    from bento_compile.runtimes.model import BentoModel

    return BentoModel.load(tiny_bento(seed)).predict(request)["outputs"]


def assert_outputs_close(actual: dict, expected: dict, atol: float = 1e-5) -> None:
    assert set(actual) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(actual[name], dtype=float), np.asarray(value, dtype=float),
                                   atol=atol, err_msg=name)


def cleanup() -> None:
    shutil.rmtree(_root(), ignore_errors=True)
