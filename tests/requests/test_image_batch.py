"""Batch scoring an image Bento: a column of image bytes or file paths; a bad image is a row error."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="batch scoring needs pyarrow ([batch] extra)")

from bento_compile.batch.scorer import ScoreOptions, Scorer  # noqa: E402
from bento_compile.runtimes.model import BentoModel  # noqa: E402


def test_image_bytes_and_paths_columns(image_example):
    work, bento = image_example
    images = sorted((work / "images").iterdir())[:3]
    model = BentoModel.load(bento)
    answers = [model.predict({"inputs": {"image": [p.read_bytes()]}}) for p in images]
    expected = [answer["outputs"]["output"][0] for answer in answers]
    scorer = Scorer(bento, ScoreOptions(on_error="skip"))
    as_bytes = scorer.score(pa.table({"image": pa.array([p.read_bytes() for p in images] + [b"GIF89a..."])}))
    assert as_bytes.column("error").to_pylist()[:3] == [None, None, None]
    assert "GIF" in as_bytes.column("error").to_pylist()[3]
    got = as_bytes.column("output").to_pylist()[:3]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the labels file's class names, as the HTTP answer names them (null for the bad image)
    assert as_bytes.column("label").to_pylist() == [answer["predictions"][0]["label"] for answer in answers] + [None]
    assert as_bytes.column("label").to_pylist()[0] in (work / "labels.txt").read_text().splitlines()
    as_paths = scorer.score(pa.table({"image": [str(p) for p in images] + [str(work / "missing.jpg")]}))
    np.testing.assert_allclose(as_paths.column("output").to_pylist()[:3], expected, atol=1e-5)
    assert "missing.jpg" in as_paths.column("error").to_pylist()[3]
