"""Images in, named labels out, through the real HTTP app, against the torchvision-defined reference on
real photographs (scikit-image's), with every kind of bad image refused by a 422/413 naming the field."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from bento_compile.adapters.http_app import create_app
from bento_compile.compiler.image_reference import reference_tensor
from bento_compile.core.config import load_config
from bento_compile.runtimes.manifest import read_manifest
from bento_compile.runtimes.model import BentoModel


@pytest.fixture(scope="module")
def client(image_example):
    _, bento = image_example
    with TestClient(create_app(bento, load_mode="eager")) as c:
        yield c


def _reference_answer(work: Path, bento: Path, image: Path) -> tuple[str, float]:
    """The label and score a naive server would give: torchvision's preprocessing, the model, softmax."""
    spec = next(s for s in load_config(work / "bento.yaml")[0].inputs if s.name == "image")
    tensor, _ = reference_tensor(image, spec)
    session = ort.InferenceSession(str(bento / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["output"], {"image": tensor[None]})[0][0].astype(np.float64)
    scores = np.exp(logits - logits.max())
    scores /= scores.sum()
    labels = (work / "labels.txt").read_text().splitlines()
    return labels[int(np.argmax(scores))], float(scores.max())


def test_manifest_records_where_each_step_runs_and_the_image_parity(image_example):
    _, bento = image_example
    pipeline = read_manifest(bento).pipeline
    assert pipeline.requires == ["pillow"]
    assert pipeline.inputs[0].kind == "image" and pipeline.inputs[0].where == "runtime"
    assert pipeline.outputs[0].where == "onnx" and pipeline.outputs[0].top_k == 5
    images = pipeline.parity["images"]["image"]
    assert images["checked"] and images["images"] == 6 and images["tensor_max_abs_diff"] <= 1e-4
    assert images["label_agreement"] == 1.0


@pytest.mark.parametrize("name", ["rocket.jpg", "chelsea.png", "astronaut.png"])
def test_image_body_answers_like_the_reference(client, image_example, name):
    work, bento = image_example
    path = work / "images" / name
    media = "image/jpeg" if name.endswith(".jpg") else "image/png"
    response = client.post("/predict", content=path.read_bytes(), headers={"content-type": media})
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    label, score = _reference_answer(work, bento, path)
    assert prediction["label"] == label
    assert prediction["score"] == pytest.approx(score, abs=1e-5)
    assert len(prediction["top_k"]) == 5


def test_webp_multipart_and_base64_batch(client, image_example):
    from PIL import Image

    work, bento = image_example
    webp = io.BytesIO()
    Image.open(work / "images" / "coffee.png").convert("RGB").save(webp, "WEBP", lossless=True)
    response = client.post("/predict", content=webp.getvalue(), headers={"content-type": "image/webp"})
    assert response.status_code == 200, response.text
    jpeg = (work / "images" / "rocket.jpg").read_bytes()
    form = client.post("/predict", files={"image": ("rocket.jpg", jpeg, "image/jpeg")})
    assert form.status_code == 200, form.text
    assert form.json()["predictions"][0]["label"] == _reference_answer(work, bento, work / "images" / "rocket.jpg")[0]
    encoded = base64.b64encode(jpeg).decode()
    batch = client.post("/predict", json={"inputs": {"image": [encoded, "data:image/webp;base64,"
                                                                + base64.b64encode(webp.getvalue()).decode()]}})
    assert batch.status_code == 200, batch.text
    assert len(batch.json()["predictions"]) == 2
    assert batch.json()["predictions"][0] == form.json()["predictions"][0]
    # The JPEG is ~20x smaller than the float tensor as JSON.
    tensor_json = len(str(np.zeros((1, 3, 224, 224), np.float32).round(4).tolist()))
    assert len(jpeg) * 5 < tensor_json


def test_edge_and_lambda_path_take_image_bytes(image_example):
    work, bento = image_example
    model = BentoModel.load(bento)
    answer = model.predict({"inputs": {"image": [(work / "images" / "rocket.jpg").read_bytes()]}})
    assert answer["predictions"][0]["label"] == _reference_answer(work, bento, work / "images" / "rocket.jpg")[0]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (one tiny compressed row): a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def test_bad_images_are_refused_naming_the_field(client, image_example):
    import skimage.data

    work, _ = image_example
    jpeg = (work / "images" / "rocket.jpg").read_bytes()
    gif = (Path(skimage.data.__file__).parent / "no_time_for_that_tiny.gif").read_bytes()
    cases = [
        (jpeg[: len(jpeg) // 2], "image/jpeg", 422, "truncated"),
        (gif, "image/gif", 422, "GIF image; this model takes jpeg, png, webp"),
        (_png_header_only(20000, 20000), "image/png", 413, "max_pixels"),
        (_png_header_only(8000, 8000), "image/png", 413, "8000x8000 pixels"),
        (b"", "image/jpeg", 422, "empty"),
        (b"hello", "image/png", 422, "not an image"),
    ]
    for body, media, status, message in cases:
        response = client.post("/predict", content=body, headers={"content-type": media})
        assert response.status_code == status, (media, response.text)
        assert message in response.json()["error"] and "inputs.image" in response.json()["error"]
    wrong_field = client.post("/predict", files={"photo": ("a.jpg", jpeg, "image/jpeg")})
    assert wrong_field.status_code == 422 and "'photo'" in wrong_field.json()["error"]
    assert "image" in wrong_field.json()["error"]
    bad_b64 = client.post("/predict", json={"inputs": {"image": ["not*base64!"]}})
    assert bad_b64.status_code == 422 and "inputs.image" in bad_b64.json()["error"]
    assert "base64" in bad_b64.json()["error"]
    too_many = client.post("/predict", json={"inputs": {"image": [base64.b64encode(jpeg).decode()] * 17}})
    assert too_many.status_code == 413


def test_runtime_preprocessing_matches_the_reference_on_every_image(image_example):
    from bento_compile.runtimes.media import decode_image, preprocess

    work, bento = image_example
    entry = read_manifest(bento).pipeline.inputs[0]
    spec = next(s for s in load_config(work / "bento.yaml")[0].inputs if s.name == "image")
    for path in sorted((work / "images").iterdir()):
        ours = preprocess(decode_image(path.read_bytes(), entry, "image"), entry)
        reference, _ = reference_tensor(path, spec)
        assert ours.shape == (3, 224, 224)
        np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_sqs_records_with_base64_images(image_example, capsys):
    import json

    from bento_compile.adapters.aws_lambda import LambdaRuntime
    from tests.support.helpers import SHARED

    work, bento = image_example
    event = json.loads((SHARED / "fixtures" / "events" / "sqs-event.json").read_text())
    good, bad = (dict(event["Records"][0]) for _ in range(2))
    jpeg = base64.b64encode((work / "images" / "rocket.jpg").read_bytes()).decode()
    good.update(messageId="good", body=json.dumps({"inputs": {"image": [jpeg]}}))
    bad.update(messageId="bad", body=json.dumps({"inputs": {"image": ["%%%"]}}))
    answer = LambdaRuntime(bento).handle({"Records": [good, bad]}, None)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    delivered = [line for line in lines if line.get("messageId") == "good" and "predictions" in line]
    assert delivered and delivered[0]["predictions"][0]["label"] in (work / "labels.txt").read_text().splitlines()


def test_edge_runner_predicts_an_image_file(image_example):
    import argparse
    import json

    from bento_compile.adapters.edge_runner import EXIT_INPUT, EXIT_OK, cmd_predict

    work, bento = image_example
    layout = argparse.Namespace(bento=bento)
    out = io.StringIO()
    code = cmd_predict(layout, argparse.Namespace(image=str(work / "images" / "rocket.jpg"), input=None),
                       io.StringIO(), out)
    assert code == EXIT_OK, out.getvalue()
    label = _reference_answer(work, bento, work / "images" / "rocket.jpg")[0]
    assert json.loads(out.getvalue())["predictions"][0]["label"] == label
    (work / "broken.jpg").write_bytes((work / "images" / "rocket.jpg").read_bytes()[:500])
    out = io.StringIO()
    assert cmd_predict(layout, argparse.Namespace(image=str(work / "broken.jpg"), input=None), io.StringIO(),
                       out) == EXIT_INPUT
    assert "inputs.image" in json.loads(out.getvalue())["error"]


def test_openapi_describes_image_bodies_form_fields_and_predictions(client):
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"image/jpeg", "image/png", "image/webp", "multipart/form-data", "application/json"} <= set(body)
    assert "image/gif" not in body
    assert set(body["multipart/form-data"]["schema"]["properties"]) == {"image"}
    answer = schema["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["properties"]["predictions"]["items"]["properties"]["top_k"]["type"] == "array"
