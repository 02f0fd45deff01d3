"""Models and Bentos the batch tests share (this folder only): built once per session, never modified.

They live here rather than in tests/support/fixtures.py because only tests/batch uses them and they
need pyarrow, which the rest of the suite does not; the plain helpers are in tests/support/batch_data.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from tests.support.batch_data import Built, build_bento


@pytest.fixture(scope="session")
def cancer_frame() -> tuple[pd.DataFrame, pd.Series]:
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X, y


@pytest.fixture(scope="session")
def frame_bento(cancer_frame, tmp_path_factory) -> Built:
    """A Pipeline fitted on a DataFrame: its Bento records the 30 feature names."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = cancer_frame
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X, y)
    tmp = tmp_path_factory.mktemp("frame-bento")
    path = build_bento(model, "frame", tmp / "store", tmp, sample=X.to_numpy(np.float32)[:64])
    return Built(path, model, X)


@pytest.fixture(scope="session")
def strict_bento(cancer_frame, tmp_path_factory) -> Built:
    """Fitted on a plain array (no feature names), and built with runtime.allow_missing: false."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = cancer_frame
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X.to_numpy(), y)
    tmp = tmp_path_factory.mktemp("strict-bento")
    path = build_bento(model, "strict", tmp / "store", tmp, {"runtime": {"allow_missing": False}},
                       sample=X.to_numpy(np.float32)[:64])
    return Built(path, model, X)


IRIS_SPECIES = ("setosa", "versicolor", "virginica")
IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@pytest.fixture(scope="session")
def labelled_bento(tmp_path_factory) -> Built:
    """Fitted on integer classes (no feature names); bento.yaml names the classes and folds top-2 into the graph."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    model = LogisticRegression(max_iter=500).fit(x, y)
    tmp = tmp_path_factory.mktemp("labelled-bento")
    path = build_bento(model, "iris-labels", tmp / "store", tmp,
                       {"outputs": {"probabilities": {"labels": list(IRIS_SPECIES), "top_k": 2}}}, sample=x[::5])
    return Built(path, model, pd.DataFrame(x, columns=list(IRIS_FEATURES)))
