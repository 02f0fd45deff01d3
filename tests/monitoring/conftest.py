"""A Bento of the breast-cancer example with monitoring on, its training rows as the baseline, and real
traffic: the held-out rows as they are (no drift) and every row with one feature scaled (drift)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

SHIFTED = 3  # the feature scaled: input[3], "mean area"


@pytest.fixture(scope="session")
def cancer_split(cancer_data):
    X, y = cancer_data
    X_train, X_test, _, _ = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    return X_train.astype(np.float32), X_test.astype(np.float32)


@pytest.fixture(scope="session")
def shifted_rows(cancer_data) -> np.ndarray:
    X = cancer_data[0].astype(np.float32).copy()
    X[:, SHIFTED] *= 3
    return X


def build_monitored(example_model: Path, folder: Path, baseline: np.ndarray, monitoring: str) -> Path:
    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import load_config
    from bento_compile.core.store import BentoStore

    for name in ("model.joblib", "sample.npy"):
        (folder / name).write_bytes((example_model / name).read_bytes())
    np.save(folder / "baseline.npy", baseline)
    (folder / "bento.yaml").write_text((example_model / "bento.yaml").read_text() + monitoring)
    config, config_dir = load_config(folder / "bento.yaml")
    return build(BuildRequest(None, config, config_dir), BentoStore(folder / "store")).path


@pytest.fixture(scope="session")
def monitored_bento(example_model, cancer_split, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("monitored")
    return build_monitored(example_model, folder, cancer_split[0],
                           "\nmonitoring:\n  window: 100000\n  baseline: baseline.npy\n  psi_alert: 0.2\n")
