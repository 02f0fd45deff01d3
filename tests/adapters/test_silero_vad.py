"""silero-vad end to end: a stateful model with a scalar input, built from its wheel's ONNX file and
served over HTTP, with real speech streamed through it chunk by chunk carrying `state`.

The model (from the `silero-vad` wheel, `pip download`ed once, never installed) takes `input`
(rows of audio: 64 samples of context + a 512-sample chunk at 16 kHz), `state` (2 x N x 128, the
recurrent state, a whole tensor) and `sr` (a scalar sample rate) and returns the speech probability
and the next state. The speech is a sentence Debian's espeak-ng speaks into a WAV file, padded with
a second of silence on each side. Every answer must match onnxruntime run directly on the same
chunks, and speech must be told apart from silence.
"""

from __future__ import annotations

import shutil
import subprocess
import wave

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

RATE = 16000
CHUNK = 512
CONTEXT = 64


def spoken_sentence(tmp_path) -> np.ndarray:
    """A spoken sentence at 16 kHz, float32 in [-1, 1], with 1 s of silence before and after."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): no real speech to stream")
    path = tmp_path / "speech.wav"
    subprocess.run([espeak, "-w", str(path), "-s", "150", "Compiled models answer in milliseconds, "
                    "from the cloud to the edge."], check=True, capture_output=True, timeout=60)
    with wave.open(str(path)) as wav:
        rate, frames = wav.getframerate(), wav.readframes(wav.getnframes())
    voice = np.frombuffer(frames, dtype=np.int16).astype(np.float32) / 32768.0
    resampled = np.interp(np.arange(0, len(voice) * RATE / rate) * rate / RATE, np.arange(len(voice)), voice)
    silence = np.zeros(RATE, dtype=np.float32)
    return np.concatenate([silence, resampled.astype(np.float32), silence])


def windows(audio: np.ndarray) -> list[np.ndarray]:
    """What silero's own wrapper feeds the model: each 512-sample chunk after the previous 64 samples."""
    out, context = [], np.zeros(CONTEXT, dtype=np.float32)
    for start in range(0, len(audio) - CHUNK + 1, CHUNK):
        chunk = audio[start:start + CHUNK]
        out.append(np.concatenate([context, chunk])[None, :].astype(np.float32))
        context = chunk[-CONTEXT:]
    return out


def test_silero_vad_streams_speech_with_state_and_matches_onnxruntime(silero_vad_onnx, tmp_path):
    import onnxruntime as ort

    from bento_compile.adapters.http_app import create_app
    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import BentoConfig
    from bento_compile.core.errors import BentoCompileError
    from bento_compile.core.store import BentoStore

    audio = spoken_sentence(tmp_path)
    chunks = windows(audio)
    state0 = np.zeros((2, 1, 128), dtype=np.float32)
    store = BentoStore(tmp_path / "store")

    # Without a sample no safe input exists (the state must carry the chunk's batch on its second axis):
    # the build says so and names the inputs to give.
    with pytest.raises(BentoCompileError) as refused:
        build(BuildRequest(silero_vad_onnx, BentoConfig(), name="vad"), store)
    assert "give a sample" in refused.value.fix and "input, state, sr" in refused.value.fix

    sample = tmp_path / "vad.npz"
    np.savez(sample, input=chunks[RATE // CHUNK + 5], state=state0, sr=np.array(RATE, dtype=np.int64))
    built = build(BuildRequest(silero_vad_onnx, BentoConfig(), name="vad", sample_path=sample), store)
    model = built.manifest["model"]
    assert [(s["name"], s["batch"]) for s in model["inputs"]] == [("input", True), ("state", False), ("sr", False)]
    assert model["inputs"][2]["shape"] == [] and model["batchable"] is False  # stateful: one request per run
    assert built.manifest["example"]["inputs"]["sr"] == RATE

    direct = ort.InferenceSession(str(silero_vad_onnx), providers=["CPUExecutionProvider"])
    served, expected = [], []
    with TestClient(create_app(built.path, load_mode="eager")) as client:
        meta = client.get("/metadata").json()
        assert [(s["name"], s["batch"]) for s in meta["inputs"]] == [("input", True), ("state", False),
                                                                      ("sr", False)]
        schema = client.get("/openapi.json").json()
        body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        sr_schema = body["properties"]["inputs"]["properties"]["sr"]
        assert sr_schema["type"] == "integer" and sr_schema["x-batch"] is False

        state, direct_state = state0, state0
        for window in chunks:
            request = {"inputs": {"input": window.tolist(), "state": state.tolist(), "sr": RATE}}
            response = client.post("/predict", content=orjson.dumps(request),
                                   headers={"content-type": "application/json"})
            assert response.status_code == 200, response.text
            outputs = response.json()["outputs"]
            served.append(outputs["output"][0][0])
            state = np.asarray(outputs["stateN"], dtype=np.float32)  # the client carries the state forward
            probability, direct_state = direct.run(None, {"input": window, "state": direct_state,
                                                          "sr": np.array(RATE, dtype=np.int64)})
            expected.append(float(probability[0][0]))
        np.testing.assert_allclose(state, direct_state, rtol=1e-4, atol=1e-5)

        bad = client.post("/predict", json={"inputs": {"input": chunks[0].tolist(), "state": state.tolist(),
                                                       "sr": [RATE]}})
        assert bad.status_code == 422 and "inputs.sr is a scalar" in bad.json()["error"]

    served_a, expected_a = np.array(served), np.array(expected)
    np.testing.assert_allclose(served_a, expected_a, rtol=1e-4, atol=1e-5)
    per_second = RATE // CHUNK
    lead, tail = served_a[: per_second - 2], served_a[-(per_second - 2):]
    speech = served_a[per_second + 2: -per_second - 2]
    assert lead.max() < 0.3 and tail.max() < 0.3, (lead.max(), tail.max())
    assert (speech > 0.5).mean() > 0.5, speech.round(2).tolist()
