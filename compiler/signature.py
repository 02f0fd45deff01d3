"""Reading an ONNX model's input/output signature as the manifest records it."""

from __future__ import annotations

import onnx

from bento_compile.runtimes.manifest import TensorSpec

_ELEM_TYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.STRING: "string",
}


def _spec(value: onnx.ValueInfoProto, where: str) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise ValueError(
            f"{where} '{value.name}' is a {kind}, not a tensor; JSON cannot carry it. "
            "For scikit-learn classifiers this is the ZipMap output: convert with zipmap disabled."
        )
    tensor = value.type.tensor_type
    dtype = _ELEM_TYPES.get(tensor.elem_type)
    if dtype is None:
        raise ValueError(
            f"{where} '{value.name}' has element type {tensor.elem_type}, which the runtime does not serve")
    shape = tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim
    )
    return TensorSpec(name=value.name, dtype=dtype, shape=shape)


def model_signature(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs (excluding initializers that old exporters list as inputs) and outputs."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_spec(v, "input") for v in model.graph.input if v.name not in initializers]
    outputs = [_spec(v, "output") for v in model.graph.output]
    return inputs, outputs


def has_free_batch_axis(inputs: list[TensorSpec]) -> bool:
    """True when every input's first axis is free: rows from several requests can be stacked."""
    return all(spec.shape and spec.shape[0] is None for spec in inputs)
