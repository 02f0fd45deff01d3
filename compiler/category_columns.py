"""Gradient boosting fitted on a DataFrame with pandas category columns: the served model takes the names.

LightGBM and XGBoost (3.1+, which records the categories) see such a column as its category codes (the
position in the categories it was fitted with; a value it never saw is missing), and the converted tree
ensemble compares those codes. A request, though, holds the names ("red"), as the DataFrame did. So each
column becomes its own `[N, 1]` input, a string one for a category column, and the graph starts with what
pandas did for the model: a LabelEncoder from the fitted categories to their codes (unknown: NaN, the
models' missing), then one Concat into the matrix the trees were converted for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import TensorSpec

_ML_DOMAIN = "ai.onnx.ml"
_LABEL_ENCODER_ML_OPSET = 2  # keys_strings → values_floats


def pandas_categories(estimator: Any) -> dict[str, list[str]] | None:
    """Column name → fitted categories, for a LightGBM or XGBoost scikit-learn model fitted on category
    columns; None for any other model."""
    if type(estimator).__module__.split(".")[0] == "xgboost":
        return _xgboost_categories(estimator)
    booster = getattr(estimator, "booster_", None)
    fitted = getattr(booster, "pandas_categorical", None)
    names = getattr(estimator, "feature_names_in_", None)
    if booster is None or not fitted or names is None:
        return None
    positions = list(booster.params.get("categorical_column") or [])
    if len(positions) != len(fitted):
        raise BentoCompileError(
            f"{type(estimator).__name__} was fitted on {len(fitted)} pandas category columns, but its booster "
            f"names {len(positions)} categorical columns: which column holds which categories is not known.",
            "Fit it with the category columns' codes (df[col].cat.codes) and declare `inputs:` in bento.yaml.")
    categories: dict[str, list[str]] = {}
    for position, values in zip(positions, fitted, strict=True):
        if not all(isinstance(value, str) for value in values):
            raise BentoCompileError(
                f"Column {names[int(position)]!r} is a pandas category column whose categories are not all "
                "strings; the served model takes category names as strings.",
                "Make its categories strings (df[col].cat.rename_categories(str)) and fit again.")
        categories[str(names[int(position)])] = list(values)
    return categories


def _xgboost_categories(estimator: Any) -> dict[str, list[str]] | None:
    try:
        booster = estimator.get_booster()
    except Exception:  # not fitted
        return None
    if "c" not in (booster.feature_types or []):
        return None
    if not hasattr(booster, "get_categories"):
        raise BentoCompileError(
            f"{type(estimator).__name__} was fitted on pandas category columns with an XGBoost that does not "
            "record their categories, so the names cannot be mapped to its codes.",
            "Fit it with XGBoost 3.1 or newer, or on the columns' codes (df[col].cat.codes).")
    categories: dict[str, list[str]] = {}
    for name, values in booster.get_categories(export_to_arrow=True).to_arrow():
        if values is None:
            continue
        listed = values.to_pylist()
        if not all(isinstance(value, str) for value in listed):
            raise BentoCompileError(
                f"Column {name!r} is a pandas category column whose categories are not all strings; the served "
                "model takes category names as strings.",
                "Make its categories strings (df[col].cat.rename_categories(str)) and fit again.")
        categories[str(name)] = listed
    return categories or None


def category_inputs(estimator: Any, categories: dict[str, list[str]]) -> list[TensorSpec]:
    """One [N, 1] input per fitted column, in order: strings for the category columns, float32 otherwise."""
    return [TensorSpec(name=str(name), dtype="string" if str(name) in categories else "float32", shape=(None, 1))
            for name in estimator.feature_names_in_]


def with_category_codes(model: onnx.ModelProto, matrix: str, inputs: list[TensorSpec],
                        categories: dict[str, list[str]]) -> onnx.ModelProto:
    """The converted model with its matrix input `matrix` built from the per-column inputs."""
    from onnx import TensorProto, helper

    graph = model.graph
    taken = {value for node in graph.node for value in (*node.input, *node.output)} | {i.name for i in graph.input}
    clash = sorted({spec.name for spec in inputs} & (taken - {matrix}))
    if clash:
        raise BentoCompileError(f"Column {clash[0]!r} has the name of a value inside the converted model.",
                                "Rename the column and fit again.")
    prefix: list[onnx.NodeProto] = []
    parts: list[str] = []
    for index, spec in enumerate(inputs):
        if spec.name not in categories:
            parts.append(spec.name)
            continue
        codes = f"category_codes_{index}"
        values = categories[spec.name]
        prefix.append(helper.make_node(
            "LabelEncoder", [spec.name], [codes], domain=_ML_DOMAIN, name=f"category_codes_{index}",
            keys_strings=values, values_floats=[float(code) for code in range(len(values))],
            default_float=float("nan")))
        parts.append(codes)
    prefix.append(helper.make_node("Concat", parts, [matrix], axis=1, name="category_matrix"))
    old_inputs = [value for value in graph.input if value.name != matrix]
    del graph.input[:]
    graph.input.extend([helper.make_tensor_value_info(
        spec.name, TensorProto.STRING if spec.dtype == "string" else TensorProto.FLOAT, ["N", 1]) for spec in inputs])
    graph.input.extend(old_inputs)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(prefix + nodes)
    for opset in model.opset_import:
        if opset.domain == _ML_DOMAIN:
            opset.version = max(opset.version, _LABEL_ENCODER_ML_OPSET)
            break
    else:
        model.opset_import.append(helper.make_opsetid(_ML_DOMAIN, _LABEL_ENCODER_ML_OPSET))
    return model


def category_frame(feeds: dict[str, np.ndarray], inputs: list[TensorSpec], categories: dict[str, list[str]]) -> Any:
    """The DataFrame the original model takes for these feeds: category columns with the fitted categories
    (a value outside them becomes missing, as LightGBM's own predict makes it)."""
    import pandas as pd

    columns: dict[str, Any] = {}
    for spec in inputs:
        values = feeds[spec.name].reshape(-1)
        if spec.name in categories:
            columns[spec.name] = pd.Categorical(values.astype(object), categories=categories[spec.name])
        else:
            columns[spec.name] = values.astype(np.float64)
    return pd.DataFrame(columns)
