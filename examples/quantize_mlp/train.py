"""Train the quantization example: an MLP(256, 256) classifier, the issue's size target.

Writes model.joblib and sample.npy (800 held-out rows: the build calibrates static int8 on
the first half and gates every variant on the second) next to this file. Deterministic.

    python examples/quantize_mlp/train.py
    bento-compile build -f examples/quantize_mlp/bento.yaml
    bento-compile show mlp:latest          # the variants table
"""

from __future__ import annotations

import warnings
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent


def main(out_dir: Path = HERE, max_iter: int = 40) -> Pipeline:
    X, y = make_classification(n_samples=2400, n_features=30, n_informative=12, random_state=0)
    model = Pipeline([("scale", StandardScaler()),
                      ("mlp", MLPClassifier((256, 256), max_iter=max_iter, random_state=0))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 40 iterations are enough to show quantization
        model.fit(X[:1600], y[:1600])
    joblib.dump(model, out_dir / "model.joblib")
    np.save(out_dir / "sample.npy", X[1600:].astype(np.float32))
    return model


if __name__ == "__main__":
    main()
    print(f"wrote {HERE / 'model.joblib'} and {HERE / 'sample.npy'}")
