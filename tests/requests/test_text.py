"""Text in: the Bento's own tokenizer.json (trained with `tokenizers` on local text) builds the model's
input_ids / attention_mask; a named topic comes out; empty or over-long text is refused naming the field."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from bento_compile.adapters.http_app import create_app
from bento_compile.compiler.build import BuildRequest, build
from bento_compile.core.config import load_config
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.errors import InputError, PayloadTooLarge
from bento_compile.runtimes.manifest import read_manifest
from bento_compile.runtimes.text import TextEncoder
from tests.support.helpers import REPO, load_example_script


@pytest.fixture(scope="module")
def text_bento(tmp_path_factory):
    pytest.importorskip("torch", reason="the text example exports a torch model")
    pytest.importorskip("tokenizers", reason="text requests need tokenizers")
    work = tmp_path_factory.mktemp("text_classifier")
    load_example_script("text_classifier").main(work)
    shutil.copyfile(REPO / "examples" / "text_classifier" / "bento.yaml", work / "bento.yaml")
    config, config_dir = load_config(work / "bento.yaml")
    return build(BuildRequest(None, config, config_dir), BentoStore(tmp_path_factory.mktemp("text_store"))).path


def test_manifest_ships_and_hashes_the_tokenizer(text_bento):
    manifest = read_manifest(text_bento)
    assert "tokenizer-text.json" in manifest.files and manifest.pipeline.requires == ["tokenizers"]
    assert [s.name for s in manifest.inputs] == ["input_ids", "attention_mask"]
    assert manifest.inputs[0].shape == (None, 64)


def test_sentences_in_topics_out(text_bento):
    with TestClient(create_app(text_bento, load_mode="eager")) as client:
        one = client.post("/predict", json={"inputs": {"text": "a cold storm with snow and wind tonight"}})
        assert one.status_code == 200, one.text
        assert one.json()["predictions"][0]["label"] == "weather"
        batch = client.post("/predict", json={"inputs": ["fry the garlic in olive oil", "the team scored a goal"]})
        assert [p["label"] for p in batch.json()["predictions"]] == ["cooking", "sports"]
        form = client.post("/predict", files={"text": (None, "bake the cake until golden")})
        assert form.status_code == 200 and form.json()["predictions"][0]["label"] == "cooking"
        empty = client.post("/predict", json={"inputs": {"text": "  "}})
        assert empty.status_code == 422 and "inputs.text" in empty.json()["error"]
        huge = client.post("/predict", json={"inputs": {"text": "rain " * 5000}})
        assert huge.status_code == 413 and "inputs.text" in huge.json()["error"]
        wrong = client.post("/predict", json={"inputs": {"text": 42}})
        assert wrong.status_code == 422 and "string" in wrong.json()["error"]
        # long text is truncated to max_length, as declared
        long = client.post("/predict", json={"inputs": {"text": "snow " * 200}})
        assert long.status_code == 200 and long.json()["predictions"][0]["label"] == "weather"


def test_truncation_refuse_and_padding(text_bento):
    spec = read_manifest(text_bento).pipeline.inputs[0]
    encoder = TextEncoder(text_bento, replace(spec, truncation="refuse", max_length=8))
    feeds = encoder.encode(["rain", "snow and wind"], "inputs.text")
    assert feeds["input_ids"].shape == (2, 8) and feeds["attention_mask"][0].sum() == 1
    with pytest.raises(InputError, match=r"inputs\.text: \d+ tokens, over max_length 8"):
        encoder.encode("the striker scored a late goal and the crowd roared again", "inputs.text")
    with pytest.raises(PayloadTooLarge):
        encoder.encode("x" * 10_000, "inputs.text")


def test_show_prints_the_request_pipeline(text_bento, monkeypatch):
    from tests.support.helpers import run_cli

    monkeypatch.setenv("BENTO_COMPILE_HOME", str(text_bento.parents[2]))
    shown = run_cli("show", "text-classifier:latest").stdout
    assert "request pipeline" in shown and "runtime (tokenizers)" in shown and "ONNX graph" in shown
