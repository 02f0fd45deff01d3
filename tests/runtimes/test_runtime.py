"""The runtime that ships in artifacts: import-light, hash-checked, load policies."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from bento_compile.runtimes.errors import IntegrityError, NotReady
from bento_compile.runtimes.manifest import read_manifest, verify_files
from bento_compile.runtimes.model import BentoModel, ModelHolder

BLOCKED = ["sklearn", "skl2onnx", "onnx", "click", "joblib", "pandas", "scipy", "rich", "yaml",
           "bento_compile.compiler", "bento_compile.targets", "bento_compile.cli", "bento_compile.core",
           "bento_compile.tools"]


def test_runtime_and_adapters_import_and_serve_without_heavy_packages(built_example):
    """Block the compiler's packages at import time, then serve a real request."""
    script = textwrap.dedent(f"""
        import sys, json
        BLOCKED = {BLOCKED!r}
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError("blocked for the import-light test: " + name)
        sys.meta_path.insert(0, Blocker())
        from fastapi.testclient import TestClient
        from bento_compile.adapters.http_app import create_app
        with TestClient(create_app({str(built_example)!r}, load_mode="eager")) as client:
            r = client.post("/predict", json={{"inputs": [[0.1] * 30]}})
            assert r.status_code == 200, r.text
        leaked = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
        print(json.dumps({{"status": r.status_code, "leaked": leaked}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"status": 200, "leaked": []}


def copy_bento(built_example, tmp_path):
    target = tmp_path / "bento"
    shutil.copytree(built_example, target)
    return target


def test_tampered_model_is_refused_naming_the_file(built_example, tmp_path):
    bento = copy_bento(built_example, tmp_path)
    model = bento / "model.onnx"
    data = bytearray(model.read_bytes())
    data[100] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model.onnx has sha256 .* but the manifest says"):
        BentoModel.load(bento)


def test_truncated_and_missing_files_are_refused(built_example, tmp_path):
    bento = copy_bento(built_example, tmp_path)
    model = bento / "model.onnx"
    model.write_bytes(model.read_bytes()[:-10])
    with pytest.raises(IntegrityError, match=r"model.onnx is .* bytes but the manifest says"):
        verify_files(bento, read_manifest(bento))
    model.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        BentoModel.load(bento)
    (bento / "manifest.json").write_text("{not json")
    with pytest.raises(IntegrityError, match="cannot be read as JSON"):
        BentoModel.load(bento)


def test_load_modes(built_example):
    eager = ModelHolder(built_example, "eager")
    assert eager.ready
    lazy = ModelHolder(built_example, "lazy")
    assert not lazy.ready
    assert lazy.get().manifest.name == "cancer" and lazy.ready
    background = ModelHolder(built_example, "background")
    assert background.get(timeout=30).manifest.name == "cancer"
    with pytest.raises(ValueError):
        ModelHolder(built_example, "sometimes")


def test_failed_load_is_remembered(tmp_path):
    holder = ModelHolder(tmp_path, "eager")
    assert not holder.ready and isinstance(holder.error, IntegrityError)
    with pytest.raises(NotReady, match="failed to load"):
        holder.get()


def test_loading_and_predicting_never_imports_the_batcher(built_example):
    """A Lambda direct invoke loads and predicts; the micro-batcher (and asyncio) is cold-start weight it never uses."""
    script = (
        "import sys; from bento_compile.runtimes.model import BentoModel; "
        f"m = BentoModel.load({str(built_example)!r}); m.predict({{'inputs': [[0.1] * 30]}}); "
        "print('bento_compile.runtimes.batching' in sys.modules, 'asyncio' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
