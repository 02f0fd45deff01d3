"""Small edits of a converted ONNX graph, shared by the frontends that finish what a converter wrote."""

from __future__ import annotations

import onnx


def rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Call the value `old` `new` wherever a node makes or reads it."""
    for node in graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
        node.input[:] = [new if name == old else name for name in node.input]


def divert_output(graph: onnx.GraphProto, name: str) -> str:
    """Make the graph output `name` an inner value, returned under a new name, for nodes appended after it
    to produce `name` again (the graph's outputs keep their names)."""
    inner = f"{name}_before_{len(graph.node)}"
    rename_value(graph, name, inner)
    return inner
