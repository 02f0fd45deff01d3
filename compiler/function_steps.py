"""Element-wise numpy functions as ONNX nodes: FunctionTransformer steps, and a transformed target's inverse.

skl2onnx converts FunctionTransformer only as the identity, yet `FunctionTransformer(np.log1p)` before a
model is common. For the functions below the ONNX form computes the same values (in float32, as the rest
of the graph), and the parity gate checks the whole model as usual; any other function is refused, naming
the step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# function → its ONNX nodes in order: (op, constant operand or None). "Square" is Mul(x, x).
_ELEMENTWISE: dict[Any, list[tuple[str, float | None]]] = {
    np.exp: [("Exp", None)], np.expm1: [("Exp", None), ("Sub", 1.0)], np.log: [("Log", None)],
    np.log1p: [("Add", 1.0), ("Log", None)], np.sqrt: [("Sqrt", None)], np.square: [("Square", None)],
    np.abs: [("Abs", None)], np.negative: [("Neg", None)], np.tanh: [("Tanh", None)],
}
SUPPORTED_FUNCTIONS = "np.exp, np.expm1, np.log, np.log1p, np.sqrt, np.square, np.abs, np.negative, np.tanh"


def elementwise_steps(function: Callable | None) -> list[tuple[str, float | None]] | None:
    """The nodes computing `function` element-wise (None: the identity); None when it has no exact form here."""
    if function is None:
        return [("Identity", None)]
    try:
        return _ELEMENTWISE.get(function)
    except TypeError:  # an unhashable callable
        return None


def emit(steps: list[tuple[str, float | None]], source: str, target: str, add_node: Callable[..., None],
         add_constant: Callable[[float], str], unique: Callable[[str], str]) -> None:
    """Add the nodes of `steps` from `source` to `target` through the caller's graph builder."""
    current = source
    for index, (op, operand) in enumerate(steps):
        out = target if index == len(steps) - 1 else unique("elementwise")
        if op == "Square":
            add_node("Mul", [current, current], out)
        else:
            add_node(op, [current] if operand is None else [current, add_constant(operand)], out)
        current = out


def register_function_transformer() -> None:
    """FunctionTransformer with an element-wise function above, in skl2onnx's registry (for this process)."""
    import copy

    from skl2onnx import update_registered_converter
    from skl2onnx.common.data_types import guess_proto_type
    from sklearn.preprocessing import FunctionTransformer

    def shapes(operator: Any) -> None:
        _steps_of(operator.raw_operator, len(operator.inputs))
        operator.outputs[0].type = copy.deepcopy(operator.inputs[0].type)

    def convert(scope: Any, operator: Any, container: Any) -> None:
        steps = _steps_of(operator.raw_operator, len(operator.inputs))
        proto = guess_proto_type(operator.inputs[0].type)

        def add_node(op: str, inputs: list[str], output: str) -> None:
            container.add_node(op, inputs, [output], name=scope.get_unique_operator_name(op))

        def add_constant(value: float) -> str:
            name = scope.get_unique_variable_name("function_operand")
            container.add_initializer(name, proto, [1], [value])
            return name

        emit(steps, operator.inputs[0].full_name, operator.outputs[0].full_name, add_node, add_constant,
             scope.get_unique_variable_name)

    update_registered_converter(FunctionTransformer, "SklearnFunctionTransformer", shapes, convert)


def _steps_of(step: Any, inputs: int) -> list[tuple[str, float | None]]:
    steps = elementwise_steps(step.func)
    if steps is None or step.kw_args or inputs != 1:
        name = getattr(step.func, "__name__", type(step.func).__name__)
        # skl2onnx's own wording names the step, which the build's error turns into a fix
        raise RuntimeError(f"FunctionTransformer({name}{', kw_args' if step.kw_args else ''}) has no ONNX form "
                           f"here; supported functions: {SUPPORTED_FUNCTIONS}")
    return steps
