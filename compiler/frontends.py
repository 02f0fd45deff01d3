"""Frontends: which module reads which model file, as one table.

Each `*_frontend.py` declares the suffixes it reads (its own `*_SUFFIXES`
constants) and returns a `compiler/source.py` Source or NativeSource; this
dispatcher only looks them up. Frontend modules import their heavy package
(torch, tensorflow, lightgbm ...) inside their load function, so reading the
table costs nothing. Unpickling a user's file happens in a frontend, at
compile time, and nowhere at serving time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bento_compile.compiler import (
    gbm_frontend,
    native_frontend,
    onnx_frontend,
    sklearn_frontend,
    tf_frontend,
    torch_frontend,
)
from bento_compile.compiler.source import AnySource
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import TensorSpec

Loader = Callable[[Path, "list[TensorSpec] | None", "Path | None"], AnySource]


@dataclass(frozen=True)
class Frontend:
    suffixes: tuple[str, ...]
    load: Loader  # (path, bento.yaml inputs, sample path)
    supports: str  # for the "unsupported file" error
    accepts: Callable[[Path], bool] = lambda _path: True  # a second look where a suffix is shared (.json, .txt)


FRONTENDS: tuple[Frontend, ...] = (
    Frontend(sklearn_frontend.PICKLE_SUFFIXES, lambda p, o, _s: sklearn_frontend.load_sklearn(p, o),
             "a scikit-learn estimator or Pipeline saved with joblib/pickle (.joblib, .pkl; LightGBM and "
             "XGBoost scikit-learn models too)"),
    Frontend(onnx_frontend.ONNX_SUFFIXES, lambda p, o, _s: onnx_frontend.load_onnx(p, o), "an ONNX model (.onnx)"),
    Frontend(torch_frontend.TORCH_SUFFIXES, torch_frontend.load_torch, "a PyTorch module or TorchScript (.pt, .pth)"),
    Frontend(gbm_frontend.LIGHTGBM_SUFFIXES + gbm_frontend.XGBOOST_SUFFIXES,
             lambda p, o, _s: gbm_frontend.load_booster(p, o),
             "a LightGBM (.txt) or XGBoost (.json, .ubj) booster", accepts=gbm_frontend.is_booster_file),
    Frontend(tf_frontend.KERAS_SUFFIXES, lambda p, o, _s: tf_frontend.load_keras(p, o),
             "a Keras model (.keras, .h5) or a SavedModel folder"),
    Frontend(native_frontend.TFLITE_SUFFIXES, lambda p, o, _s: native_frontend.load_tflite(p, o),
             "a ready .tflite file"),
    Frontend(native_frontend.ORT_SUFFIXES, lambda p, o, _s: native_frontend.load_ort(p, o), "a ready .ort file"),
)


def load_source(path: Path, input_override: list[TensorSpec] | None, sample_path: Path | None = None) -> AnySource:
    """Dispatch on the file type, with an error listing the supported ones.

    `sample_path` lets a frontend that cannot read its input signature from the file (PyTorch)
    take it from the sample's shape when bento.yaml declares none.
    """
    path = Path(path)
    if tf_frontend.is_saved_model(path):
        return tf_frontend.load_keras(path, input_override)
    if not path.is_file():
        raise BentoCompileError(f"The model file {path} does not exist.", "Check the path (relative paths in "
                                "bento.yaml are relative to the bento.yaml's folder).")
    suffix = path.suffix.lower()
    for frontend in FRONTENDS:
        if suffix in frontend.suffixes and frontend.accepts(path):
            return frontend.load(path, input_override, sample_path)
    raise BentoCompileError(
        f"Unsupported model file type '{suffix}' ({path.name}).",
        "Supported: " + ", ".join(f.supports for f in FRONTENDS) + ".")
