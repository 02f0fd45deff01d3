"""LightGBM and XGBoost → ONNX through onnxmltools (extra `bento-compile[gbm]`).

Two ways in, one parity gate:

- the scikit-learn API (`LGBMClassifier`, `XGBRegressor`, ..., alone or as the
  last step of a Pipeline) saved with joblib: we register onnxmltools'
  converters with skl2onnx, so the scikit-learn frontend converts the whole
  pipeline and checks it against the original `predict` / `predict_proba`;
- a native booster file: LightGBM's text model (`.txt`, `booster.save_model`) or
  XGBoost's JSON / UBJSON model (`.json`, `.ubj`); the reference is the booster's
  own `predict`.

Tree ensembles do not shrink under int8 (the quantization step says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bento_compile.compiler.source import Feeds, Source
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import TensorSpec, sha256_file

LIGHTGBM_SUFFIXES = (".txt", ".lgb")
XGBOOST_SUFFIXES = (".json", ".ubj", ".xgb")
# onnxmltools' LightGBM/XGBoost converters support the default domain up to this opset.
GBM_OPSET = 15
EXTRA_HINT = "pip install 'bento-compile[gbm]' (lightgbm, xgboost-cpu, onnxmltools)"
_registered = False


def register_converters() -> None:
    """Teach skl2onnx the scikit-learn API wrappers of LightGBM and XGBoost (idempotent; no-op without them)."""
    global _registered
    if _registered:
        return
    _registered = True
    try:
        from skl2onnx import update_registered_converter
        from skl2onnx.common.shape_calculator import (
            calculate_linear_classifier_output_shapes,
            calculate_linear_regressor_output_shapes,
        )
    except ImportError:  # pragma: no cover - skl2onnx is a core dependency
        return
    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    try:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        update_registered_converter(LGBMClassifier, "LightGbmLGBMClassifier",
                                    calculate_linear_classifier_output_shapes, convert_lightgbm, options=options)
        update_registered_converter(LGBMRegressor, "LightGbmLGBMRegressor",
                                    calculate_linear_regressor_output_shapes, convert_lightgbm)
    except ImportError:
        pass
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor

        update_registered_converter(XGBClassifier, "XGBoostXGBClassifier",
                                    calculate_linear_classifier_output_shapes, convert_xgboost, options=options)
        update_registered_converter(XGBRegressor, "XGBoostXGBRegressor",
                                    calculate_linear_regressor_output_shapes, convert_xgboost)
    except ImportError:
        pass


def without_xgboost_feature_names(estimator: Any) -> Any:
    """A copy whose XGBoost boosters forget the DataFrame column names they were fitted with: onnxmltools
    reads the trees from a dump that must name features f0, f1, ... (it refuses others); the input is
    the same matrix in the same column order either way. The estimator itself when nothing needs it."""
    import copy

    def named(step: Any) -> bool:
        return type(step).__module__.split(".")[0] == "xgboost" and bool(
            getattr(step.get_booster(), "feature_names", None))

    if not any(named(step) for step in _walk(estimator)):
        return estimator
    estimator = copy.deepcopy(estimator)
    for step in _walk(estimator):
        if named(step):
            step.get_booster().feature_names = None
    return estimator


def target_opset_for(estimator: Any) -> dict[str, int] | None:
    """The opsets skl2onnx must use when the model holds a LightGBM/XGBoost step, else None (its default)."""
    names = {type(step).__module__.split(".")[0] for step in _walk(estimator)}
    if names & {"lightgbm", "xgboost"}:
        return {"": GBM_OPSET, "ai.onnx.ml": 3}
    return None


def versions_for(estimator: Any) -> dict[str, str]:
    """onnxmltools and lightgbm / xgboost versions when the model holds one of their estimators."""
    packages = {type(step).__module__.split(".")[0] for step in _walk(estimator)} & {"lightgbm", "xgboost"}
    if not packages:
        return {}
    import onnxmltools

    return {"onnxmltools": onnxmltools.__version__, **{p: __import__(p).__version__ for p in sorted(packages)}}


def missing_extra(estimator: Any) -> str | None:
    """The estimator's package when it is LightGBM/XGBoost but onnxmltools is not installed."""
    for step in _walk(estimator):
        package = type(step).__module__.split(".")[0]
        if package in ("lightgbm", "xgboost"):
            try:
                import onnxmltools  # noqa: F401
            except ImportError:
                return f"{type(step).__name__} ({package})"
    return None


def _walk(estimator: Any):
    yield estimator
    for attr in ("steps", "transformers", "transformers_"):
        for item in getattr(estimator, attr, []) or []:
            if hasattr(item[1], "fit"):
                yield from _walk(item[1])


def is_booster_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".lgb", ".ubj", ".xgb"):
        return True
    head = path.read_bytes()[:4096]
    if suffix == ".txt":
        return head.startswith(b"tree\n") or b"\nversion=v" in head[:200]
    if suffix == ".json":
        return b'"learner"' in head
    return False


def load_booster(path: Path, input_override: list[TensorSpec] | None) -> Source:
    """A native LightGBM / XGBoost model file."""
    try:
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType
    except ImportError:
        raise BentoCompileError(f"{path.name} is a gradient-boosting model file, and converting it needs "
                                "onnxmltools.", EXTRA_HINT) from None
    if path.suffix.lower() in LIGHTGBM_SUFFIXES:
        booster, family, n_features, classifier = _lightgbm(path)
    else:
        booster, family, n_features, classifier = _xgboost(path)
    inputs = input_override or [TensorSpec("input", "float32", (None, n_features))]
    if len(inputs) != 1 or inputs[0].dtype != "float32":
        raise BentoCompileError(f"{path.name}: a {family} booster takes one float32 matrix input.",
                                f"Declare inputs: [{{name: input, dtype: float32, shape: [null, {n_features}]}}].")
    initial = [(inputs[0].name, FloatTensorType([None, n_features]))]
    try:
        if family == "LightGBM":
            model = onnxmltools.convert_lightgbm(booster, initial_types=initial, zipmap=False,
                                                 target_opset=GBM_OPSET)
        else:
            model = onnxmltools.convert_xgboost(booster, initial_types=initial, target_opset=GBM_OPSET)
    except Exception as exc:
        raise BentoCompileError(f"onnxmltools cannot convert this {family} booster ({path.name}): "
                                f"{type(exc).__name__}: {exc}",
                                "Supported: binary/multiclass classification and regression objectives; "
                                "export other objectives to ONNX yourself.") from None
    free_batch_axis(model)
    import onnxmltools as omt

    return Source(kind=family.lower(), model=model, inputs=inputs,
                  reference=lambda feeds, names: _booster_reference(family, booster, classifier, feeds, names,
                                                                    inputs[0].name),
                  description=f"{family} booster ({'classifier' if classifier else 'regressor'}, "
                              f"{n_features} features)",
                  file_sha256=sha256_file(path),
                  converter_versions={"onnxmltools": omt.__version__, family.lower(): _version(family)})


def _version(family: str) -> str:
    module = __import__("lightgbm" if family == "LightGBM" else "xgboost")
    return module.__version__


def _lightgbm(path: Path):
    try:
        import lightgbm
    except ImportError:
        raise BentoCompileError(f"{path.name} is a LightGBM model, but lightgbm is not installed.",
                                EXTRA_HINT) from None
    try:
        booster = lightgbm.Booster(model_file=str(path))
    except Exception as exc:
        raise BentoCompileError(f"{path.name} is not a LightGBM model file ({exc}).",
                                "Save it with booster.save_model('model.txt').") from None
    objective = str(booster.dump_model().get("objective", ""))
    classifier = objective.startswith(("binary", "multiclass", "cross_entropy"))
    return booster, "LightGBM", booster.num_feature(), classifier


def _xgboost(path: Path):
    try:
        import xgboost
    except ImportError:
        raise BentoCompileError(f"{path.name} is an XGBoost model, but xgboost is not installed.",
                                EXTRA_HINT) from None
    try:
        booster = xgboost.Booster(model_file=str(path))
    except Exception as exc:
        raise BentoCompileError(f"{path.name} is not an XGBoost model file ({exc}).",
                                "Save it with booster.save_model('model.json').") from None
    import json

    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    classifier = objective.startswith(("binary:", "multi:"))
    return booster, "XGBoost", booster.num_features(), classifier


def _booster_reference(family: str, booster: Any, classifier: bool, feeds: Feeds, names: list[str],
                       input_name: str) -> dict[str, np.ndarray]:
    X = feeds[input_name].astype(np.float32)
    if family == "LightGBM":
        raw = np.asarray(booster.predict(X))
    else:
        import xgboost

        raw = np.asarray(booster.predict(xgboost.DMatrix(X)))
    if not classifier:
        return {names[0]: raw}
    probabilities = np.column_stack([1 - raw, raw]) if raw.ndim == 1 else raw
    return {"label": probabilities.argmax(axis=1), "probabilities": probabilities}


def free_batch_axis(model: onnx.ModelProto) -> None:
    """onnxmltools declares some outputs with a batch of 1; the rows are really free."""
    for value in list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) and dims[0].HasField("dim_value"):
            dims[0].dim_param = "N"
