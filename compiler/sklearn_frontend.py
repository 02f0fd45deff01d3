"""scikit-learn → ONNX through skl2onnx, with the original estimator as the parity reference.

Classifiers are converted with ZipMap disabled, so they answer `label` and
`probabilities` as plain tensors (a 2-D list in JSON), never a list of dicts.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from bento_compile.compiler.category_columns import (
    category_frame,
    category_inputs,
    pandas_categories,
    with_category_codes,
)
from bento_compile.compiler.classifier_outputs import decision_scores, finish_classifier_outputs
from bento_compile.compiler.function_steps import register_function_transformer
from bento_compile.compiler.gbm_frontend import without_xgboost_feature_names
from bento_compile.compiler.passes import MAX_DEFAULT_OPSET
from bento_compile.compiler.source import Feeds, Source, describe
from bento_compile.compiler.target_transform import append_inverse, inner_regressor, is_target_transformed
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import TensorSpec, sha256_file

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
SUPPORTED_FAMILIES = (
    "linear models (LogisticRegression, LinearRegression, Ridge, SGD*), trees and forests, "
    "GradientBoosting and HistGradientBoosting, MLP, SVC/SVR, k-NN, and Pipelines of StandardScaler, "
    "OneHotEncoder, SimpleImputer and ColumnTransformer"
)


def load_sklearn(path: Path, input_override: list[TensorSpec] | None) -> Source:
    estimator = _unpickle(path)
    if not hasattr(estimator, "predict"):
        raise BentoCompileError(
            f"{path.name} holds a {type(estimator).__name__}, which has no predict(): bento-compile serves "
            "predictors.", "Save the fitted estimator or Pipeline whose last step predicts.")
    _refuse_categorical_histgb(estimator)
    categories = None if input_override else pandas_categories(estimator)
    if categories:  # gradient boosting on pandas category columns: the names in, their codes into the trees
        inputs = category_inputs(estimator, categories)
        matrix = TensorSpec(name="category_matrix", dtype="float32", shape=(None, len(inputs)))
        model = with_category_codes(_convert(without_xgboost_feature_names(estimator), [matrix]), matrix.name,
                                    inputs, categories)
    elif is_target_transformed(estimator):  # no converter: its regressor, then the target's inverse in the graph
        inner = inner_regressor(estimator)
        inputs = input_override or _default_inputs(inner, path)
        model = append_inverse(_convert(convertible_copy(without_xgboost_feature_names(
            float32_exact_thresholds(inner))), inputs), estimator)
    else:
        inputs = input_override or _default_inputs(estimator, path)
        model = _convert(convertible_copy(without_xgboost_feature_names(float32_exact_thresholds(estimator))),
                         inputs)
    model = finish_classifier_outputs(model, estimator)
    import skl2onnx
    import sklearn

    from bento_compile.compiler.gbm_frontend import versions_for

    return Source(
        kind="sklearn",
        model=model,
        inputs=inputs,
        reference=lambda feeds, names: _reference(estimator, feeds, names, inputs, categories),
        description=_pipeline_text(estimator),
        file_sha256=sha256_file(path),
        converter_versions={"skl2onnx": skl2onnx.__version__, "scikit-learn": sklearn.__version__,
                            **versions_for(estimator)},
        feature_names=None if input_override else _feature_names(estimator, inputs),
        class_labels=_class_labels(estimator),
    )


def _refuse_categorical_histgb(estimator: Any) -> None:
    """skl2onnx converts HistGradientBoosting's categorical splits (bitsets over category codes) as if they were
    thresholds: the ONNX model answers differently (measured: 35 % label agreement). Said before converting,
    instead of as a parity failure, or as a wrong model when no sample shows it."""
    for step in _walk(estimator):
        categorical = getattr(step, "is_categorical_", None)
        if categorical is not None and np.any(categorical):
            raise BentoCompileError(
                f"{type(step).__name__} uses native categorical splits (categorical_features, or pandas category "
                "columns), which skl2onnx does not convert correctly.",
                "Fit it with categorical_features=None on encoded columns (a OneHotEncoder in a ColumnTransformer "
                "before it), or use LightGBM, whose categorical splits convert.")


def _class_labels(estimator: Any) -> list[str] | None:
    """The classifier's classes_ as names, in the order of its probability columns."""
    classes = getattr(estimator, "classes_", None)
    return None if classes is None else [str(c) for c in classes]


def _unpickle(path: Path) -> Any:
    """Compile time only: the user's own file, loaded once to convert it."""
    try:
        import joblib

        return joblib.load(path)
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError) as exc:
        raise BentoCompileError(f"{path} cannot be unpickled ({type(exc).__name__}: {exc}).",
                                "Save the fitted model with joblib.dump(model, path).") from None
    except (ModuleNotFoundError, AttributeError) as exc:
        raise BentoCompileError(
            f"{path} needs code that is not importable here ({exc}).",
            "Install the packages (and versions) the model was trained with, in this environment.") from None


def _default_inputs(estimator: Any, path: Path) -> list[TensorSpec]:
    named = named_column_inputs(estimator)
    if named is not None:
        return named
    if _takes_text(estimator):  # a vectorizer first: one string per row (vectorizers record no n_features_in_)
        return [TensorSpec(name="input", dtype="string", shape=(None, 1))]
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is None:
        raise BentoCompileError(
            f"Cannot tell how many features {type(estimator).__name__} in {path.name} takes.",
            "Declare them in bento.yaml: inputs: [{name: input, dtype: float32, shape: [null, N]}].")
    return [TensorSpec(name="input", dtype="float32", shape=(None, int(n_features)))]


def named_column_inputs(estimator: Any) -> list[TensorSpec] | None:
    """One [N, 1] input per DataFrame column, for a model whose ColumnTransformer picks columns by name.

    Such a model cannot take one float matrix (skl2onnx looks its columns up by name), and a mixed table
    is the usual scikit-learn model in production. Each column's type comes from what the fitted model
    learned of it: a text vectorizer, or categories (or an imputer's fill values) that are strings make a string input,
    integer categories an int64 one, anything else float32. None when the model does not select by name."""
    names = getattr(estimator, "feature_names_in_", None)
    transformer = _column_transformer(estimator)
    if names is None or transformer is None:
        return None
    names = [str(name) for name in names]
    selected = [(step, _column_names(columns, names)) for _label, step, columns in transformer.transformers_]
    if not any(isinstance(columns, str) or (isinstance(columns, list | tuple) and columns
                                            and all(isinstance(c, str) for c in columns))
               for _label, _step, columns in transformer.transformers_):
        return None
    dtypes = dict.fromkeys(names, "float32")
    for step, columns in selected:
        for position, column in enumerate(columns):
            learned = _learned_kind(step, position)
            if learned is not None:
                dtypes[column] = learned
    return [TensorSpec(name=name, dtype=dtypes[name], shape=(None, 1)) for name in names]


def _column_transformer(estimator: Any) -> Any:
    """The ColumnTransformer that first sees the DataFrame: the model itself or its Pipeline's first step."""
    from sklearn.compose import ColumnTransformer

    first = estimator.steps[0][1] if getattr(estimator, "steps", None) else estimator
    return first if isinstance(first, ColumnTransformer) else None


def _column_names(columns: Any, names: list[str]) -> list[str]:
    """A ColumnTransformer's column selection (a name, names, indices, a slice or a mask) as names."""
    if isinstance(columns, str):
        return [columns]
    if isinstance(columns, slice):
        return names[columns]
    picked = list(np.asarray(columns).reshape(-1)) if not isinstance(columns, list | tuple) else list(columns)
    if picked and all(isinstance(c, bool | np.bool_) for c in picked):
        return [name for name, keep in zip(names, picked, strict=False) if keep]
    return [names[int(c)] if isinstance(c, int | np.integer) else str(c) for c in picked]


def _learned_kind(step: Any, position: int) -> str | None:
    """'string' or 'int64' when a fitted step recorded the column's values as such; None: no evidence."""
    for part in _walk(step) if hasattr(step, "fit") else ():
        if _is_text_vectorizer(part):
            return "string"
        categories = getattr(part, "categories_", None)
        values = None
        if isinstance(categories, list) and position < len(categories):
            values = np.asarray(categories[position])
        elif getattr(part, "statistics_", None) is not None and position < len(part.statistics_):
            values = np.asarray(part.statistics_[position : position + 1])
        if values is None or not values.size:
            continue
        if values.dtype.kind in "OUS":
            return "string" if any(isinstance(v, str) for v in values.reshape(-1)) else None
        if values.dtype.kind in "iu":
            return "int64"
    return None


def _is_text_vectorizer(step: Any) -> bool:
    return hasattr(step, "vocabulary_") and hasattr(step, "build_analyzer")  # Count/Tfidf vectorizers


def _takes_text(estimator: Any) -> bool:
    """Whether the model's first step is a text vectorizer, which takes a 1-D sequence of documents."""
    first = estimator.steps[0][1] if getattr(estimator, "steps", None) else estimator
    return _is_text_vectorizer(first)


def convertible_copy(estimator: Any) -> Any:
    """The estimator, or a copy with settings that change nothing its predictions depend on but that
    skl2onnx refuses: VotingClassifier's flatten_transform shapes only transform()'s output."""
    from sklearn.ensemble import VotingClassifier

    if not any(isinstance(step, VotingClassifier) and step.flatten_transform for step in _walk(estimator)):
        return estimator
    estimator = copy.deepcopy(estimator)
    for step in _walk(estimator):
        if isinstance(step, VotingClassifier):
            step.flatten_transform = False
    return estimator


def _feature_names(estimator: Any, inputs: list[TensorSpec]) -> list[str] | None:
    """The DataFrame columns the estimator was fitted on, when they match its one [N, F] input."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is None or len(inputs) != 1 or len(inputs[0].shape) != 2 or inputs[0].shape[1] != len(names):
        return None
    return [str(name) for name in names]


def float32_exact_thresholds(estimator: Any) -> Any:
    """A copy of the estimator whose HistGradientBoosting thresholds are exact in float32.

    HistGradientBoosting splits on float64 thresholds; ONNX tree ensembles hold
    float32 ones. When a threshold t rounds UP to float32 T, a float32 input
    equal to T goes left in ONNX but right in scikit-learn (measured: 0.09 on a
    probability). Replacing t by the largest float32 <= t changes nothing for
    float32 inputs (x <= t  <=>  x <= floor32(t)), which is all the served
    model ever receives, and makes the converted thresholds exact.
    """
    if not any(hasattr(step, "_predictors") for step in _walk(estimator)):
        return estimator
    estimator = copy.deepcopy(estimator)
    for step in _walk(estimator):
        for predictors in getattr(step, "_predictors", None) or []:
            for predictor in predictors:
                thresholds = predictor.nodes["num_threshold"]
                as32 = thresholds.astype(np.float32)
                rounded_up = as32.astype(np.float64) > thresholds
                as32[rounded_up] = np.nextafter(as32[rounded_up], np.float32(-np.inf))
                predictor.nodes["num_threshold"] = as32.astype(np.float64)
    return estimator


def _initial_types(inputs: list[TensorSpec]) -> list[tuple[str, Any]]:
    from skl2onnx.common import data_types as t

    by_dtype = {"float32": t.FloatTensorType, "float64": t.DoubleTensorType, "int64": t.Int64TensorType,
                "int32": t.Int32TensorType, "string": t.StringTensorType, "bool": t.BooleanTensorType}
    return [(s.name, by_dtype[s.dtype](list(s.shape))) for s in inputs]


def _convert(estimator: Any, inputs: list[TensorSpec]) -> Any:
    from skl2onnx import to_onnx
    from skl2onnx.common.exceptions import MissingConverter, MissingShapeCalculator
    from sklearn.base import is_classifier

    from bento_compile.compiler.gbm_frontend import EXTRA_HINT, missing_extra, register_converters, target_opset_for

    register_converters()  # LightGBM / XGBoost scikit-learn API steps, through onnxmltools
    register_function_transformer()  # FunctionTransformer(np.log1p) and the other element-wise functions
    options = {"zipmap": False} if is_classifier(estimator) else None
    target_opset = target_opset_for(estimator)
    try:
        try:
            try:
                return to_onnx(estimator, initial_types=_initial_types(inputs), options=options,
                               target_opset=target_opset)
            except NameError as exc:
                # Classifiers with no probabilities (LinearSVC, RidgeClassifier) have no ZipMap to disable.
                if "'zipmap'" not in str(exc):
                    raise
                options = None
                return to_onnx(estimator, initial_types=_initial_types(inputs), target_opset=target_opset)
        except RuntimeError as exc:
            # A converter written for an older ai.onnx.ml (IsolationForest's) names the version it needs.
            needed = _NEEDED_ML_OPSET.search(str(exc))
            if needed is None:
                raise
            from skl2onnx import get_latest_tested_opset_version

            default = min(MAX_DEFAULT_OPSET, get_latest_tested_opset_version())
            target_opset = {"": default, **(target_opset or {}), "ai.onnx.ml": int(needed[1])}
            return to_onnx(estimator, initial_types=_initial_types(inputs), options=options, target_opset=target_opset)
    except (MissingShapeCalculator, MissingConverter) as exc:
        gbm = missing_extra(estimator)
        if gbm:
            raise BentoCompileError(f"{gbm} needs onnxmltools to be converted.", EXTRA_HINT) from None
        culprit = _unsupported_step(estimator, str(exc))
        raise BentoCompileError(
            f"skl2onnx cannot convert {culprit} (in {_pipeline_text(estimator)}).",
            f"Replace it with a supported estimator: {SUPPORTED_FAMILIES}; the full list is "
            "skl2onnx.supported_converters(). Or export the model to ONNX yourself and build the .onnx file.",
        ) from None
    except Exception as exc:
        culprit = _unsupported_step(estimator, str(exc))
        fix = ("If the model takes named or non-numeric columns, declare them under `inputs:` in bento.yaml; "
               "otherwise export it to ONNX yourself and build the .onnx file.")
        if culprit != _NO_CULPRIT:  # the converter named the step it refuses, as it is configured
            fix = (f"Change or replace the {culprit} step (e.g. apply a custom function to the data before the "
                   f"model, or use a built-in transformer: {SUPPORTED_FAMILIES}), or export the model to ONNX "
                   "yourself and build the .onnx file.")
        raise BentoCompileError(
            f"skl2onnx failed on {_pipeline_text(estimator)}: {type(exc).__name__}: {exc}", fix) from None


_NEEDED_ML_OPSET = re.compile(r"target_opset=\{'ai\.onnx\.ml': (\d+)\}")


_NO_CULPRIT = "an estimator in this model"


def _unsupported_step(estimator: Any, message: str) -> str:
    for step in _walk(estimator):
        if type(step).__name__ in message:
            return type(step).__name__
    return _NO_CULPRIT


def _walk(estimator: Any):
    yield estimator
    for attr in ("steps", "transformers", "transformers_"):
        for item in getattr(estimator, attr, []) or []:
            child = item[1]
            if hasattr(child, "fit"):
                yield from _walk(child)


def _pipeline_text(estimator: Any) -> str:
    steps = getattr(estimator, "steps", None)
    if steps:
        return "Pipeline(" + " → ".join(type(s).__name__ for _, s in steps) + ")"
    return type(estimator).__name__


def _reference(estimator: Any, feeds: Feeds, output_names: list[str], inputs: list[TensorSpec],
               categories: dict[str, list[str]] | None = None) -> dict[str, np.ndarray]:
    """Run the original estimator on exactly the values the ONNX model sees."""
    if categories:
        return _predictions(estimator, category_frame(dict(feeds), inputs, categories), output_names)
    X = _estimator_input(feeds, inputs, _takes_text(estimator))
    try:
        return _predictions(estimator, X, output_names)
    except ValueError as exc:
        # A model fitted on float32 (e.g. KMeans) may refuse float64 ("Buffer dtype mismatch"): give it
        # the float32 values themselves, which the float64 ones only widened.
        if len(inputs) != 1 or "dtype mismatch" not in str(exc) or feeds[inputs[0].name].dtype.kind != "f":
            raise
        return _predictions(estimator, feeds[inputs[0].name], output_names)


def _predictions(estimator: Any, X: Any, output_names: list[str]) -> dict[str, np.ndarray]:
    outputs: dict[str, np.ndarray] = {}
    if "label" in output_names:
        outputs["label"] = np.asarray(estimator.predict(X))
        if "probabilities" in output_names and hasattr(estimator, "predict_proba"):
            # e.g. SVC(probability=False) has no predict_proba: only labels are comparable.
            with contextlib.suppress(AttributeError):
                outputs["probabilities"] = np.asarray(estimator.predict_proba(X))
        if "scores" in output_names:
            scores = _scores(estimator, X)
            if scores is not None:
                outputs["scores"] = scores
    else:
        prediction = np.asarray(estimator.predict(X))
        outputs[output_names[0]] = prediction
    return outputs


def _scores(estimator: Any, X: Any) -> np.ndarray | None:
    """What skl2onnx's `scores` output is, where it is known: an outlier detector's decision_function (one
    column), a k-means model's distances to each centre, a classifier's decision_function when it has no
    probabilities. None: nothing in scikit-learn to compare it with."""
    final = estimator.steps[-1][1] if getattr(estimator, "steps", None) else estimator
    if hasattr(final, "cluster_centers_") and hasattr(estimator, "transform"):
        return np.asarray(estimator.transform(X))
    if hasattr(final, "offset_") and hasattr(estimator, "decision_function"):
        return np.asarray(estimator.decision_function(X)).reshape(-1, 1)
    return decision_scores(estimator, X)


def _estimator_input(feeds: Feeds, inputs: list[TensorSpec], text: bool = False) -> Any:
    if len(inputs) == 1:
        array = feeds[inputs[0].name]
        if text:  # a vectorizer takes the documents as a 1-D sequence
            return array.reshape(-1)
        return array.astype(np.float64) if array.dtype.kind == "f" else array
    import pandas as pd  # named columns: the estimator was fitted on a DataFrame

    return pd.DataFrame({s.name: feeds[s.name].reshape(-1) for s in inputs})


__all__ = ["describe", "load_sklearn"]
