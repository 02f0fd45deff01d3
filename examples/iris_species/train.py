"""Make the iris-species example: a scikit-learn classifier fitted on string class names, so the Bento
answers `"label": "virginica"` with the estimator's own classes_ (no labels file needed).

    python examples/iris_species/train.py           # writes model.joblib and sample.npy beside itself
    bento-compile build -f examples/iris_species/bento.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(out: Path) -> None:
    import joblib
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    data = load_iris()
    species = np.asarray(data.target_names)[data.target]  # "setosa", "versicolor", "virginica"
    x = data.data.astype(np.float32)
    model = RandomForestClassifier(n_estimators=50, max_depth=4, random_state=0).fit(x, species)
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out / "model.joblib")
    np.save(out / "sample.npy", x[::3])
    print(f"wrote {out / 'model.joblib'} (classes {list(model.classes_)}) and sample.npy")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
