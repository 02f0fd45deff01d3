"""The image classifier as a Lambda zip, run by the real awslambdaric on a clean Python (`bento-compile
invoke`): a JPEG as a function URL's base64 body, a GIF refused, a direct event with a base64 image;
and a tabular Bento's zip gets no Pillow."""

from __future__ import annotations

import base64
import copy
import json
import zipfile

import pytest

from bento_compile.runtimes.manifest import read_manifest
from bento_compile.targets.bytecode import find_interpreter
from bento_compile.targets.lambda_zip import build_lambda_zip
from bento_compile.targets.pipeline_wheels import pipeline_requirements
from tests.support.helpers import SHARED, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.lambda_zip]
PYTHON = next((v for v in ("3.12", "3.13") if find_interpreter(v)), "3.12")


def _answers(stdout: str) -> list:
    decoder, answers, at = json.JSONDecoder(), [], 0
    while (at := stdout.find("{", at)) != -1:
        value, end = decoder.raw_decode(stdout, at)
        answers.append(value)
        at = end
    return answers


def test_tabular_bento_adds_no_image_wheels(built_example):
    assert pipeline_requirements(read_manifest(built_example)) == []


def test_image_zip_answers_function_url_and_direct_events(image_example, tmp_path):
    if find_interpreter(PYTHON) is None:
        pytest.skip("no Python 3.12 or 3.13 interpreter here to build and run Lambda zips with")
    work, bento = image_example
    built = build_lambda_zip(bento, "x86_64", PYTHON, tmp_path / "dist", template=False)
    with zipfile.ZipFile(built.path) as archive:
        assert any(n.startswith("PIL/") for n in archive.namelist())
    jpeg = (work / "images" / "rocket.jpg").read_bytes()
    url = json.loads((SHARED / "fixtures" / "events" / "lambda-urls-request.json").read_text())
    url.update(rawPath="/predict", rawQueryString="", body=base64.b64encode(jpeg).decode(), isBase64Encoded=True,
               headers={"content-type": "image/jpeg", "content-length": str(len(jpeg))})
    url.pop("queryStringParameters", None)
    url["requestContext"]["http"]["path"] = "/predict"
    gif = copy.deepcopy(url)
    gif["headers"]["content-type"] = "image/gif"
    gif["body"] = base64.b64encode(b"GIF89a" + b"\0" * 32).decode()
    direct = {"inputs": {"image": [base64.b64encode(jpeg).decode()]}}
    events = []
    for i, event in enumerate((url, gif, direct)):
        events += ["--event", str(tmp_path / f"event{i}.json")]
        (tmp_path / f"event{i}.json").write_text(json.dumps(event))
    result = run_cli("invoke", str(built.path), *events, "--no-logs", check=False)
    answers = _answers(result.stdout)
    assert len(answers) == 3, result.stdout + result.stderr
    ok, refused, plain = answers
    assert ok["statusCode"] == 200, ok
    body = json.loads(ok["body"])
    labels = (work / "labels.txt").read_text().splitlines()
    assert body["predictions"][0]["label"] in labels and len(body["predictions"][0]["top_k"]) == 5
    assert refused["statusCode"] == 422 and "GIF" in json.loads(refused["body"])["error"]
    assert plain["predictions"] == body["predictions"]
