"""What the HTTP image installs follows the Bento: the fast server stack always, LiteRT for .tflite."""

from __future__ import annotations

import json
import shutil

from bento_compile.targets import images


def requirements_for(bento, monkeypatch) -> list[str]:
    captured = {}

    def capture(kind, bento_dir, base, arch, python, requirements, *args, **kwargs):
        captured["requirements"] = requirements
        return None

    monkeypatch.setattr(images, "plan_image", capture)  # stop before resolving wheels: only the list matters
    images.plan_http_image(bento, "unused-base")
    return captured["requirements"]


def test_onnx_bento_gets_onnxruntime_and_the_fast_server_stack(built_example, monkeypatch):
    names = {r.split(">")[0].split("=")[0] for r in requirements_for(built_example, monkeypatch)}
    assert {"onnxruntime", "uvloop", "httptools", "prometheus-client", "fastapi", "uvicorn"} <= names
    assert "ai-edge-litert" not in names


def test_tflite_bento_gets_litert_not_onnxruntime(built_example, tmp_path, monkeypatch):
    bento = tmp_path / "bento"
    shutil.copytree(built_example, bento)
    manifest = json.loads((bento / "manifest.json").read_text())
    manifest["model"]["format"] = "tflite"
    (bento / "manifest.json").write_text(json.dumps(manifest))
    names = {r.split(">")[0].split("=")[0] for r in requirements_for(bento, monkeypatch)}
    assert "ai-edge-litert" in names and "onnxruntime" not in names
