"""Quantization benchmark: size, latency and agreement of every variant against the ORIGINAL model.

For each model, in ONE run (read the ratios; the machine is shared and noisy):
  - size of the ONNX file (fp32 as compiled, dynamic int8, static int8 QDQ, fp16);
  - latency with ONNX Runtime as served (one intra-op thread): one row, and a batch of 64;
  - label agreement with the original scikit-learn estimator on held-out rows, and the
    largest probability difference.

Models: the issue's MLP(256, 256) classifier (287 KB as fp32 ONNX), a larger MLP with four
1024-wide layers (where int8 should also be faster per row), and a LightGBM forest (to show
honestly that tree ensembles do not shrink). When TensorFlow is reachable (see
compiler/tf_frontend.py), a Keras MLP (64→512→512→2) → TFLite too, measured with LiteRT against
the Keras model's own output.

Usage: python bench/bench_quantize.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import make_classification
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from bento_compile.compiler import passes
from bento_compile.compiler.frontends import load_source
from bento_compile.compiler.quantize import onnx_runner, onnx_variants
from bento_compile.core.config import QuantizeConfig


def time_ms(run, feeds, seconds: float) -> float:
    for _ in range(5):
        run(feeds)
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 20:
        start = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def models(quick: bool):
    X, y = make_classification(n_samples=4000, n_features=30, n_informative=12, random_state=0)
    train, held = slice(0, 3000), slice(3000, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: irrelevant here
        small = Pipeline([("s", StandardScaler()),
                          ("m", MLPClassifier((256, 256), max_iter=40 if quick else 80, random_state=0))])
        yield "MLP(256,256)", small.fit(X[train], y[train]), X[held]
        Xb, yb = make_classification(n_samples=3000, n_features=256, n_informative=40, random_state=1)
        big = Pipeline([("s", StandardScaler()),
                        ("m", MLPClassifier((1024,) * 4, max_iter=3 if quick else 8, random_state=0))])
        yield "MLP(1024×4)", big.fit(Xb[:2000], yb[:2000]), Xb[2000:]
    try:
        from lightgbm import LGBMClassifier

        yield "LightGBM(100 trees)", LGBMClassifier(n_estimators=100, verbose=-1).fit(X[train], y[train]), X[held]
    except ImportError:
        pass


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="shorter training and timing")
    args = parser.parse_args()
    seconds = 0.5 if args.quick else 2.0
    import onnxruntime
    import sklearn

    print(f"machine: {platform.machine()}, {__import__('os').cpu_count()} cores, {platform.platform()}; "
          f"python {platform.python_version()}; onnxruntime {onnxruntime.__version__}; scikit-learn "
          f"{sklearn.__version__}")
    print()
    print("| model | variant | size | size/fp32 | 1 row | 64 rows | 1 row vs fp32 | label agreement | max |Δ| prob |")
    print("|---|---|---|---|---|---|---|---|---|")
    import joblib

    for name, estimator, held in models(args.quick):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.joblib"
            joblib.dump(estimator, path)
            source = load_source(path, None)
        fp32 = passes.optimize(passes.check_and_infer(source.model))
        held = held.astype(np.float32)
        half = len(held) // 2
        calib, check = {"input": held[:half]}, {"input": held[half:]}
        reference = source.reference(check, ["label", "probabilities"])
        config = QuantizeConfig(method="auto")
        base_row = None
        for variant in onnx_variants(config, fp32, calib):
            if variant.data is None:
                print(f"| {name} | {variant.name} | - | - | - | - | - | - | {variant.note} |")
                continue
            run = onnx_runner(variant.data)
            got = run(check)
            agreement = float(np.mean(got["label"] == reference["label"]))
            diff = float(np.max(np.abs(got["probabilities"] - reference["probabilities"])))
            row = time_ms(run, {"input": check["input"][:1]}, seconds)
            batch = time_ms(run, {"input": np.resize(check["input"], (64, check["input"].shape[1]))}, seconds)
            base_row = base_row or row
            print(f"| {name} | {variant.name} | {len(variant.data) / 1024:.1f} KiB | "
                  f"{len(variant.data) / len(fp32):.0%} | {row * 1000:.0f} µs | {batch * 1000:.0f} µs | "
                  f"{base_row / row:.2f}× | {agreement:.2%} | {diff:.3g} |")
        sys.stdout.flush()
    keras_rows(seconds)
    return 0


KERAS = """
import sys, numpy as np, keras
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
X = rng.standard_normal((3000, 64)).astype("float32")
y = (X[:, :8].sum(axis=1) + 0.5 * X[:, 8:16].prod(axis=1) > 0).astype("int64")
inputs = keras.Input(shape=(64,), name="features")
h = keras.layers.Dense(512, activation="relu")(inputs)
h = keras.layers.Dense(512, activation="relu")(h)
model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(X[:2000], y[:2000], epochs=5, verbose=0)
model.save(sys.argv[1] + "/model.keras")
np.save(sys.argv[1] + "/held.npy", X[2000:])
"""


def keras_rows(seconds: float) -> None:
    """Keras → TFLite variants, if a TensorFlow is reachable; otherwise say why not."""
    import os
    import subprocess

    from bento_compile.compiler import tf_frontend
    from bento_compile.core.errors import BentoCompileError

    try:
        python = tf_frontend.tf_python()
    except BentoCompileError as exc:
        print(f"\n(Keras → TFLite skipped: {exc.problem})")
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "make.py").write_text(KERAS)
        subprocess.run([python, str(Path(tmp) / "make.py"), tmp], check=True, capture_output=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        source = tf_frontend.load_keras(Path(tmp) / "model.keras", None)
        held = np.load(Path(tmp) / "held.npy")
        calib, check = {"features": held[:500]}, {"features": held[500:]}
        (out,) = [o.name for o in source.outputs]
        reference = source.reference(check, [out])[out]
        fp32 = tf_frontend.Variant("fp32", source.data, source.runner_factory)
        variants = [fp32, *source.variant_factory(QuantizeConfig(method="auto"), calib)]
        print()
        print("| model | variant | size | size/fp32 | 1 row | 64 rows | 1 row vs fp32 | argmax agreement | max |Δ| |")
        print("|---|---|---|---|---|---|---|---|---|")
        base_row = None
        for variant in variants:
            if variant.data is None:
                print(f"| Keras MLP → TFLite | {variant.name} | - | - | - | - | - | - | {variant.note} |")
                continue
            run = variant.runner_factory(variant.data)
            got = run(check)[out]
            agreement = float(np.mean(got.argmax(1) == reference.argmax(1)))
            row = time_ms(run, {"features": check["features"][:1]}, seconds)
            batch = time_ms(run, {"features": np.resize(check["features"], (64, 64))}, seconds)
            base_row = base_row or row
            print(f"| Keras MLP → TFLite | {variant.name} | {len(variant.data) / 1024:.1f} KiB | "
                  f"{len(variant.data) / len(source.data):.0%} | {row * 1000:.0f} µs | {batch * 1000:.0f} µs | "
                  f"{base_row / row:.2f}× | {agreement:.2%} | {float(np.max(np.abs(got - reference))):.3g} |")


if __name__ == "__main__":
    sys.exit(main())
