"""Reading an ONNX model's input/output contract as the manifest records it.

Per tensor: name, element type, shape (None = a free axis), and whether its first
axis is THE batch axis. The batch axis is a free or symbolic first dimension that
the batched inputs share; an input whose first axis is fixed (`[1, 3, 224, 224]`,
`[3]`), a scalar, or one whose first axis has a symbol of its own (Gather's
`indices` beside `data`) is a whole tensor: sent and checked as it is, never
split into rows or stacked with other requests. Outputs follow the batch axis
when their first dimension is the batch symbol (or free, in a model with batched
inputs); the build's batching probe (compiler/batch_probe.py) then confirms it by
running the model.
"""

from __future__ import annotations

from collections import Counter

import onnx

from bento_compile.runtimes.manifest import TensorSpec

_ELEM_TYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.UINT64: "uint64",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.STRING: "string",
}
SERVED_TYPES = tuple(_ELEM_TYPES.values())

# What one first dimension is: ("fixed", n), ("symbol", name), ("free", "") or ("scalar", "").
_Dim = tuple[str, object]


def element_type_name(elem_type: int) -> str:
    """ONNX's own name for an element type number ("BFLOAT16" for 16), for error messages."""
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"unknown ({elem_type})"


def _tensor(value: onnx.ValueInfoProto, where: str) -> onnx.TypeProto.Tensor:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise ValueError(
            f"{where} '{value.name}' is a {kind}, not a tensor; JSON cannot carry it. "
            "For scikit-learn classifiers this is the ZipMap output: convert with zipmap disabled."
        )
    tensor = value.type.tensor_type
    if tensor.elem_type not in _ELEM_TYPES:
        raise ValueError(
            f"{where} '{value.name}' has element type {element_type_name(tensor.elem_type)}, which JSON requests "
            f"cannot carry; the runtime serves {', '.join(SERVED_TYPES)} (cast it in the graph, or re-export)")
    if not tensor.HasField("shape"):
        raise ValueError(
            f"{where} '{value.name}' declares no shape (not even its rank); declare it in bento.yaml, e.g. "
            f"inputs: [{{name: {value.name}, dtype: {_ELEM_TYPES[tensor.elem_type]}, shape: [null, 4]}}]")
    return tensor


def _shape(tensor: onnx.TypeProto.Tensor) -> tuple[int | None, ...]:
    # A declared 0 is a size (an empty `axes`), not an unknown; a negative or absent value is free.
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None for d in tensor.shape.dim)


def _first_dim(tensor: onnx.TypeProto.Tensor) -> _Dim:
    dims = tensor.shape.dim
    if not dims:
        return ("scalar", "")
    first = dims[0]
    if first.HasField("dim_value") and first.dim_value >= 0:
        return ("fixed", first.dim_value)
    if first.HasField("dim_param") and first.dim_param:
        return ("symbol", first.dim_param)
    return ("free", "")


def batch_symbol(firsts: list[_Dim]) -> str | None:
    """The symbol most inputs' first axis carries (the first input's on a tie), or None."""
    counts = Counter(str(value) for kind, value in firsts if kind == "symbol")
    if not counts:
        return None
    best = max(counts.values())
    return next(str(value) for kind, value in firsts if kind == "symbol" and counts[str(value)] == best)


def _follows(first: _Dim, symbol: str | None) -> bool:
    kind, value = first
    return kind == "free" or (kind == "symbol" and value == symbol)


def model_signature(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs (excluding initializers that old exporters list as inputs) and outputs, with batch flags."""
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in initializers]
    in_tensors = [(v, _tensor(v, "input")) for v in graph_inputs]
    out_tensors = [(v, _tensor(v, "output")) for v in model.graph.output]
    firsts = [_first_dim(t) for _, t in in_tensors]
    symbol = batch_symbol(firsts)
    inputs = [TensorSpec(v.name, _ELEM_TYPES[t.elem_type], _shape(t), batch=_follows(first, symbol))
              for (v, t), first in zip(in_tensors, firsts, strict=True)]
    any_batched = any(s.batched for s in inputs)
    outputs = [TensorSpec(v.name, _ELEM_TYPES[t.elem_type], _shape(t),
                          batch=any_batched and _follows(_first_dim(t), symbol))
               for v, t in out_tensors]
    return inputs, outputs


def with_overrides(inputs: list[TensorSpec], overrides: list[TensorSpec]) -> list[TensorSpec]:
    """The graph's inputs with those bento.yaml `inputs:` names replaced, in the graph's order."""
    by_name = {s.name: s for s in overrides}
    return [by_name.get(s.name, s) for s in inputs]


def has_free_batch_axis(inputs: list[TensorSpec]) -> bool:
    """True when the inputs can go to the model in one run as they are: every batched input's first
    axis is free (a fixed-batch TFLite model, whose batch axis is recorded free, loops inside its backend)."""
    return all(spec.shape and spec.shape[0] is None for spec in inputs if spec.batched)
