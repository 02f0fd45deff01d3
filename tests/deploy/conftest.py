"""Real Bento servers for the Cloud Run and Knative smoke checks (tests/support/smoke_servers.py): the
example Bento, and another Bento of the same inputs whose answers differ (trained on flipped labels)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.helpers import load_example_script
from tests.support.smoke_servers import bento_server


@pytest.fixture(scope="session")
def example_server(built_example, tmp_path_factory) -> str:
    with bento_server(built_example, tmp_path_factory.mktemp("example-server") / "server.log") as url:
        yield url


@pytest.fixture(scope="session")
def other_bento(example_model, cancer_data, tmp_path_factory) -> Path:
    """A Bento with the example's inputs and outputs but other answers: the model learnt 1 - y."""
    import joblib

    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import load_config
    from bento_compile.core.store import BentoStore

    folder = tmp_path_factory.mktemp("other-bento")
    X, y = cancer_data
    joblib.dump(load_example_script("breast_cancer").make_pipeline().fit(X, 1 - y), folder / "model.joblib")
    (folder / "sample.npy").write_bytes((example_model / "sample.npy").read_bytes())
    (folder / "bento.yaml").write_text((example_model / "bento.yaml").read_text())
    config, config_dir = load_config(folder / "bento.yaml")
    return build(BuildRequest(None, config, config_dir), BentoStore(folder / "store")).path


@pytest.fixture(scope="session")
def other_server(other_bento, tmp_path_factory) -> str:
    with bento_server(other_bento, tmp_path_factory.mktemp("other-server") / "server.log") as url:
        yield url
