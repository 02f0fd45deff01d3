"""Train the example: a breast-cancer classifier Pipeline with a ColumnTransformer.

Writes model.joblib and sample.npy (held-out rows, some values blanked to show
missing-value handling) next to this file. Deterministic: same files every run.
"""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent


def make_pipeline() -> Pipeline:
    # The first ten columns are "mean" measurements: scale them for the linear model;
    # the remaining twenty go through an imputer only.
    preprocess = ColumnTransformer([
        ("mean", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
         list(range(10))),
        ("rest", SimpleImputer(strategy="median"), list(range(10, 30))),
    ])
    return Pipeline([("preprocess", preprocess), ("classify", LogisticRegression(max_iter=5000))])


def main(out_dir: Path = HERE) -> None:
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    model = make_pipeline().fit(X_train, y_train)
    joblib.dump(model, out_dir / "model.joblib")
    sample = X_test[:64].astype(np.float32)
    sample[::7, 3] = np.nan  # a few missing values: the imputer fills them, in ONNX as in sklearn
    np.save(out_dir / "sample.npy", sample)
    print(f"test accuracy {model.score(X_test, y_test):.3f}; wrote {out_dir / 'model.joblib'} and sample.npy")


__all__ = ["main", "make_pipeline"]

if __name__ == "__main__":
    main()
