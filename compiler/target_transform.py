"""TransformedTargetRegressor (a regressor fitted on a transformed target, e.g. log(price)): skl2onnx has no
converter for it, so its fitted regressor is converted alone and the inverse transform is appended to the
graph, for the inverse functions and target transformers whose ONNX form is exact. The parity gate then
compares the whole with the original's predict, as for any model.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx

from bento_compile.compiler.function_steps import SUPPORTED_FUNCTIONS, elementwise_steps, emit
from bento_compile.compiler.graph_edits import divert_output
from bento_compile.core.errors import BentoCompileError

_SUPPORTED = f"{SUPPORTED_FUNCTIONS}, or a StandardScaler transformer"


def is_target_transformed(estimator: Any) -> bool:
    return type(estimator).__name__ == "TransformedTargetRegressor" and hasattr(estimator, "regressor_")


def inner_regressor(estimator: Any) -> Any:
    return estimator.regressor_


def append_inverse(model: onnx.ModelProto, estimator: Any) -> onnx.ModelProto:
    """The converted regressor's model with the target's inverse transform after its one output."""
    from onnx import helper, numpy_helper

    graph = model.graph
    (output,) = graph.output
    raw = divert_output(graph, output.name)
    nodes: list[onnx.NodeProto] = []
    constants: list[onnx.TensorProto] = []

    def constant(name: str, value: Any) -> str:
        constants.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32).reshape(1, -1), name))
        return name

    if estimator.transformer is not None:
        transformer = estimator.transformer_
        if type(transformer).__name__ != "StandardScaler":
            raise _unsupported(f"its target transformer is {type(transformer).__name__}")
        scale = transformer.scale_ if transformer.scale_ is not None else np.ones(1)
        mean = transformer.mean_ if transformer.mean_ is not None else np.zeros(1)
        nodes.append(helper.make_node("Mul", [raw, constant("target_scale", scale)], ["target_scaled"]))
        nodes.append(helper.make_node("Add", ["target_scaled", constant("target_mean", mean)], [output.name]))
    else:
        steps = elementwise_steps(estimator.inverse_func)
        if steps is None:
            raise _unsupported(f"its inverse_func is {getattr(estimator.inverse_func, '__name__', 'a function')}")
        counter = itertools.count()

        def add_node(op: str, inputs: list[str], target: str) -> None:
            nodes.append(helper.make_node(op, inputs, [target], name=f"target_inverse_{len(nodes)}"))

        emit(steps, raw, output.name, add_node, lambda value: constant(f"target_operand_{next(counter)}", value),
             lambda prefix: f"target_{prefix}_{next(counter)}")
    graph.initializer.extend(constants)
    graph.node.extend(nodes)
    return model


def _unsupported(what: str) -> BentoCompileError:
    return BentoCompileError(
        f"TransformedTargetRegressor cannot be converted: {what}.",
        f"Use an inverse the graph can express ({_SUPPORTED}), or export the model to ONNX yourself.")
