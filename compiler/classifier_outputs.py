"""What a converted scikit-learn classifier answers, made to say what scikit-learn's does.

skl2onnx encodes bool classes as int64 0/1, and for a classifier with no predict_proba (LinearSVC,
SVC(probability=False), SGD's hinge loss, Perceptron, Ridge) it writes the decision_function as its
`probabilities` output, in a layout that differs between converters. The Bento answers `true`/`false`
labels, and `scores` with column k scoring class k ([-d, d] for two classes; `d` alone where the
converter computes one column), which the gate compares with decision_function.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from bento_compile.compiler.graph_edits import divert_output, rename_value

# The classifiers whose converted `scores` are known to be their decision_function (measured); others
# (e.g. OneVsRestClassifier) keep them, but they are reported as not compared.
_DECISION_SCORES = frozenset({"LinearSVC", "SVC", "SGDClassifier", "Perceptron", "RidgeClassifier"})
_ONE_COLUMN = frozenset({"LinearSVC", "RidgeClassifier", "RidgeClassifierCV"})  # two classes: d, not [-d, d]
_LIBSVM = frozenset({"SVC", "NuSVC"})  # two classes converted as [d, -d]


def finish_classifier_outputs(model: onnx.ModelProto, estimator: Any) -> onnx.ModelProto:
    """The converted model with its labels and scores as described above (unchanged for other models)."""
    from onnx import TensorProto, helper

    graph = model.graph
    label = next((o for o in graph.output if o.name == "label"), None)
    if _classes_are_bool(estimator) and label is not None and label.type.tensor_type.elem_type == TensorProto.INT64:
        encoded = divert_output(graph, "label")
        graph.node.append(helper.make_node("Cast", [encoded], ["label"], to=TensorProto.BOOL, name="label_as_bool"))
        label.type.tensor_type.elem_type = TensorProto.BOOL
    if not scores_not_probabilities(estimator):
        return model
    names = {o.name for o in graph.output}
    if "probabilities" not in names or "scores" in names:
        return model
    rename_value(graph, "probabilities", "scores")
    output = next(o for o in graph.output if o.name == "probabilities")
    output.name = "scores"
    final = _final_step(estimator)
    two_classes = len(getattr(final, "classes_", ())) == 2
    if two_classes and type(final).__name__ in _LIBSVM:
        raw = divert_output(graph, "scores")
        graph.node.append(helper.make_node("Neg", [raw], ["scores"], name="scores_per_class"))
    dims = output.type.tensor_type.shape.dim
    if two_classes and type(final).__name__ in _ONE_COLUMN and len(dims) == 2:
        dims[1].ClearField("dim_param")  # skl2onnx declares 2 columns and computes 1
        dims[1].dim_value = 1
    return model


def scores_not_probabilities(estimator: Any) -> bool:
    """A classifier with no predict_proba but a decision_function: its second output is scores."""
    from sklearn.base import is_classifier

    return is_classifier(estimator) and not hasattr(estimator, "predict_proba") and hasattr(
        estimator, "decision_function")


def decision_scores(estimator: Any, X: Any) -> np.ndarray | None:
    """decision_function laid out as the Bento serves `scores`; None where that layout is not known."""
    if not scores_not_probabilities(estimator) or type(_final_step(estimator)).__name__ not in _DECISION_SCORES:
        return None
    scores = np.asarray(estimator.decision_function(X))
    if scores.ndim == 1:  # two classes: one value per row
        return scores.reshape(-1, 1) if type(_final_step(estimator)).__name__ in _ONE_COLUMN else np.c_[-scores,
                                                                                                         scores]
    return scores


def _classes_are_bool(estimator: Any) -> bool:
    classes = getattr(estimator, "classes_", None)
    return classes is not None and np.asarray(classes).dtype.kind == "b"


def _final_step(estimator: Any) -> Any:
    return estimator.steps[-1][1] if getattr(estimator, "steps", None) else estimator
