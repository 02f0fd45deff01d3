"""Helpers for the batch tests: building a Bento from an estimator, writing and reading tables, comparing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TOLERANCE = 1e-4  # the parity tolerance the Bentos are built with


@dataclass
class Built:
    path: Path  # the Bento folder
    model: Any  # the original scikit-learn estimator
    frame: pd.DataFrame  # the rows it was fitted on (features only)


def build_bento(model, name: str, store: Path, tmp: Path, config: dict | None = None,
                sample: np.ndarray | None = None) -> Path:
    import joblib

    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import BentoConfig
    from bento_compile.core.store import BentoStore

    joblib.dump(model, tmp / f"{name}.joblib")
    sample_path = None
    if sample is not None:
        sample_path = tmp / f"{name}-sample.npy"
        np.save(sample_path, sample)
    request = BuildRequest(model_path=tmp / f"{name}.joblib", config=BentoConfig.model_validate(config or {}),
                           name=name, sample_path=sample_path)
    return build(request, BentoStore(store)).path


def write_parquet(frame: pd.DataFrame, path: Path, row_group_size: int = 10_000) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size)
    return path


def read_output(path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas()


def assert_matches(model, features: pd.DataFrame, out: pd.DataFrame) -> None:
    """Labels exactly, probabilities within the parity tolerance, row for row."""
    assert len(out) == len(features)
    np.testing.assert_array_equal(out["label"].to_numpy(), model.predict(features.to_numpy(np.float32)
                                                                         if not hasattr(model, "feature_names_in_")
                                                                         else features.astype(np.float32)))
    probabilities = np.stack(out["probabilities"].to_numpy())
    reference = model.predict_proba(features.astype(np.float32) if hasattr(model, "feature_names_in_")
                                    else features.to_numpy(np.float32))
    assert np.abs(probabilities - reference).max() <= TOLERANCE


def assert_labels_match(model, x: np.ndarray, out: pd.DataFrame, names) -> None:
    """A labelled Bento's output: `label` is the class name of the original model's prediction, row for row;
    `score` and the first of `top_k` are its probability; the raw probabilities within the parity tolerance."""
    names = np.asarray(names)
    assert out["label"].tolist() == names[model.predict(x)].tolist()
    reference = model.predict_proba(x)
    assert np.abs(out["score"].to_numpy() - reference.max(axis=1)).max() <= TOLERANCE
    assert [ranked[0]["label"] for ranked in out["top_k"]] == out["label"].tolist()
    assert np.abs(np.stack(out["probabilities"].to_numpy()) - reference).max() <= TOLERANCE
