"""Frontends: read a user's model file and produce ONNX plus a reference to check against.

Each frontend returns a `Source`: the ONNX model, the input signature, and a
`reference` callable that runs the ORIGINAL model on the same feeds, so the
parity check compares the compiled artifact with what the user trained, not
with itself. Unpickling a user's file happens here, at compile time, and
nowhere at serving time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bento_compile.compiler.signature import model_signature
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import TensorSpec, sha256_file

Feeds = dict[str, np.ndarray]
Reference = Callable[[Feeds, list[str]], dict[str, np.ndarray]]

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
ONNX_SUFFIXES = (".onnx",)


@dataclass
class Source:
    kind: str
    model: onnx.ModelProto
    inputs: list[TensorSpec]
    reference: Reference
    description: str
    file_sha256: str
    converter_versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def load_source(path: Path, input_override: list[TensorSpec] | None, sample_path: Path | None = None) -> Source:
    """Dispatch on the file type, with an error listing the supported ones.

    `sample_path` lets a frontend that cannot read its input signature from the file (PyTorch)
    take it from the sample's shape when bento.yaml declares none.
    """
    path = Path(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        from bento_compile.compiler.tf_frontend import load_keras

        return load_keras(path, input_override)
    if not path.is_file():
        raise BentoCompileError(f"The model file {path} does not exist.", "Check the path (relative paths in "
                                "bento.yaml are relative to the bento.yaml's folder).")
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        from bento_compile.compiler.sklearn_frontend import load_sklearn

        return load_sklearn(path, input_override)
    if suffix in ONNX_SUFFIXES:
        return load_onnx(path, input_override)
    other = _other_frontends(path, suffix, input_override, sample_path)
    if other is not None:
        return other
    raise BentoCompileError(
        f"Unsupported model file type '{suffix}' ({path.name}).",
        "Supported: a scikit-learn estimator or Pipeline saved with joblib/pickle (.joblib, .pkl; LightGBM and "
        "XGBoost scikit-learn models too), an ONNX model (.onnx), a PyTorch module or TorchScript (.pt, .pth), "
        "a LightGBM (.txt) or XGBoost (.json, .ubj) booster, a Keras model (.keras, .h5) or a SavedModel "
        "folder, or a ready .tflite / .ort file.",
    )


def _other_frontends(path: Path, suffix: str, input_override: list[TensorSpec] | None,
                     sample_path: Path | None = None) -> Any:
    """The optional frontends (issue 6): each imports its heavy package only when its file type is given."""
    if suffix in (".pt", ".pth"):
        from bento_compile.compiler.torch_frontend import load_torch

        return load_torch(path, input_override, sample_path)
    if suffix in (".keras", ".h5"):
        from bento_compile.compiler.tf_frontend import load_keras

        return load_keras(path, input_override)
    if suffix == ".tflite":
        from bento_compile.compiler.formats_build import load_tflite

        return load_tflite(path, input_override)
    if suffix == ".ort":
        from bento_compile.compiler.formats_build import load_ort

        return load_ort(path, input_override)
    if suffix in (".txt", ".lgb", ".json", ".ubj", ".xgb"):
        from bento_compile.compiler.gbm_frontend import is_booster_file, load_booster

        if is_booster_file(path):
            return load_booster(path, input_override)
    return None


def load_onnx(path: Path, input_override: list[TensorSpec] | None) -> Source:
    """An ONNX file as it is; its reference is the file itself run without graph optimizations."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise BentoCompileError(f"{path} is not a readable ONNX model ({exc}).",
                                "Export the model again with onnx.save / torch.onnx.export.") from None
    try:
        inputs, _ = model_signature(model)
    except ValueError as exc:
        raise BentoCompileError(f"{path}: {exc}", "") from None
    if input_override:
        _check_override_names(input_override, inputs, path)
        inputs = input_override
    raw = model.SerializeToString()

    def reference(feeds: Feeds, output_names: list[str]) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(raw, options, providers=["CPUExecutionProvider"])
        return dict(zip(output_names, session.run(output_names, feeds), strict=True))

    return Source(kind="onnx", model=model, inputs=inputs, reference=reference,
                  description=f"ONNX model (producer: {model.producer_name or 'unknown'} "
                  f"{model.producer_version}".rstrip() + ")",
                  file_sha256=sha256_file(path))


def _check_override_names(override: list[TensorSpec], actual: list[TensorSpec], path: Path) -> None:
    names = {s.name for s in actual}
    unknown = [s.name for s in override if s.name not in names]
    if unknown:
        raise BentoCompileError(
            f"bento.yaml declares input '{unknown[0]}' but {path.name} has inputs: {', '.join(sorted(names))}.",
            "Use the model's input names in `inputs:`.")


def describe(obj: Any) -> str:
    """A short, stable description of an estimator for the manifest."""
    return type(obj).__module__.split(".")[0] + "." + type(obj).__name__
