"""Fixtures of the request-pipeline tests: the image classifier example, built once per session."""

from __future__ import annotations

import shutil

import pytest

from bento_compile.compiler.build import BuildRequest, build
from bento_compile.core.config import load_config
from bento_compile.core.store import BentoStore
from tests.support.helpers import REPO, load_example_script


@pytest.fixture(scope="session")
def image_example(tmp_path_factory):
    """(work folder with model.pt, labels.txt, images/ and bento.yaml; the built Bento's folder)."""
    pytest.importorskip("torch", reason="the image example exports a torch CNN")
    pytest.importorskip("PIL", reason="image requests need Pillow")
    pytest.importorskip("skimage", reason="the example's real photographs come from scikit-image")
    work = tmp_path_factory.mktemp("image_classifier")
    load_example_script("image_classifier").main(work)
    shutil.copyfile(REPO / "examples" / "image_classifier" / "bento.yaml", work / "bento.yaml")
    config, config_dir = load_config(work / "bento.yaml")
    store = BentoStore(tmp_path_factory.mktemp("image_store"))
    result = build(BuildRequest(None, config, config_dir), store)
    return work, result.path
