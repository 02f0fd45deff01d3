"""Inputs for a build without a sample, derived from the model's own contract.

Shapes come from the graph: batched inputs get rows along their batch axis (many for small rows, 2
for large ones), fixed axes their declared size, other free axes 2 (the same size for every free
axis, so inputs that share a symbol still agree), scalars stay scalars. Values: standard-normal
floats, small integers, random bools, for strings the categories the graph encodes them with (else
"a"); an integer input the graph uses as indices gets values inside the axis it indexes when the
graph states that size. An input the graph uses as a shape, a count, an axis or a size (Reshape's
`shape`, TopK's `k`, Slice's `starts`...) has no safe synthetic value: the build asks for a sample
naming it rather than guess.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx

from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import TensorSpec

SYNTHETIC_ROWS = 64
LARGE_ROW_VALUES = 4096  # a row with more values than this is synthesized as 2 rows
LARGE_ROWS = 2
FREE_AXIS = 2

# (op type, input position) → what that input means; integers there are sizes, shapes or axes.
_SHAPE_LIKE = {
    ("Reshape", 1): "shape", ("Expand", 1): "shape", ("Tile", 1): "repeats", ("ConstantOfShape", 0): "shape",
    ("Slice", 1): "starts", ("Slice", 2): "ends", ("Slice", 3): "axes", ("Slice", 4): "steps",
    ("Pad", 1): "pads", ("Pad", 3): "axes", ("TopK", 1): "k", ("OneHot", 1): "depth",
    ("Range", 0): "start", ("Range", 1): "limit", ("Range", 2): "delta", ("Resize", 1): "roi",
    ("Resize", 2): "scales", ("Resize", 3): "sizes", ("Upsample", 1): "scales", ("Squeeze", 1): "axes",
    ("Unsqueeze", 1): "axes", ("Split", 1): "split", ("CumSum", 1): "axis", ("ReduceSum", 1): "axes",
    ("ReduceMean", 1): "axes", ("ReduceMax", 1): "axes", ("ReduceMin", 1): "axes", ("ReduceProd", 1): "axes",
    ("ReduceL1", 1): "axes", ("ReduceL2", 1): "axes", ("ReduceLogSum", 1): "axes",
    ("ReduceLogSumExp", 1): "axes", ("ReduceSumSquare", 1): "axes", ("NonMaxSuppression", 2): "max boxes",
    ("MaxUnpool", 2): "output_shape", ("CenterCropPad", 1): "shape", ("Col2Im", 1): "image_shape",
    ("Col2Im", 2): "block_shape", ("DFT", 1): "dft_length", ("DFT", 2): "axis", ("STFT", 1): "frame_step",
    ("STFT", 3): "frame_length", ("Loop", 0): "trip count", ("ReverseSequence", 1): "sequence lengths",
    ("HannWindow", 0): "size", ("HammingWindow", 0): "size", ("BlackmanWindow", 0): "size",
    ("MelWeightMatrix", 0): "num_mel_bins", ("MelWeightMatrix", 1): "dft_length",
    ("MelWeightMatrix", 2): "sample_rate", ("RoiAlign", 2): "batch indices", ("SplitToSequence", 1): "split",
    ("AffineGrid", 1): "size", ("Dropout", 1): "ratio", ("LSTM", 4): "sequence_lens", ("GRU", 4): "sequence_lens",
    ("RNN", 4): "sequence_lens",
}
# Of those, the ones whose meaning does not depend on being an integer (a float ratio, scales or depth).
_ANY_TYPE = {("Resize", 1), ("Resize", 2), ("Upsample", 1), ("Dropout", 1), ("OneHot", 1)}
_INDEX_LIKE = {("Gather", 1), ("GatherElements", 1), ("GatherND", 1), ("ScatterElements", 1),
               ("Scatter", 1), ("ScatterND", 1), ("OneHot", 0)}
_DIVISOR = {("Div", 1), ("Mod", 1)}


def synthesize(specs: list[TensorSpec], model: onnx.ModelProto | None = None, rows: int | None = None,
               seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds for every input in `specs`; BentoCompileError naming an input that has no safe value."""
    rng = np.random.default_rng(seed)
    uses = _uses(model) if model is not None else {}
    rows = rows if rows is not None else _default_rows(specs)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = _shape(spec, rows)
        feeds[spec.name] = _values(spec, shape, uses.get(spec.name, []), model, rng, specs, rows)
    return feeds


def _default_rows(specs: list[TensorSpec]) -> int:
    per_row = sum(int(np.prod([_size(d) for d in s.shape[1:]])) for s in specs if s.batched)
    return SYNTHETIC_ROWS if per_row <= LARGE_ROW_VALUES else LARGE_ROWS


def _shape(spec: TensorSpec, rows: int) -> tuple[int, ...]:
    if spec.batched:
        return (rows, *[_size(d) for d in spec.shape[1:]])
    return tuple(_size(d) for d in spec.shape)


def _size(declared: int | None) -> int:
    return FREE_AXIS if declared is None else declared


def _uses(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    """For each graph input: the (node, input position) pairs of the top-level nodes that read it."""
    found: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            found.setdefault(name, []).append((node, position))
    return found


def _values(spec: TensorSpec, shape: tuple[int, ...], uses: list[tuple[onnx.NodeProto, int]],
            model: onnx.ModelProto | None, rng: np.random.Generator, specs: list[TensorSpec],
            rows: int) -> np.ndarray:
    if spec.dtype == "string":
        vocabulary = _vocabulary(spec.name, model) if model is not None else []
        if not vocabulary:
            return np.full(shape, "a", dtype=object)
        return rng.choice(np.asarray(vocabulary, dtype=object), size=shape)
    if spec.dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    kind = np.dtype(spec.dtype).kind
    for node, position in uses:
        role = _SHAPE_LIKE.get((node.op_type, position))
        if role is not None and (kind in "iu" or (node.op_type, position) in _ANY_TYPE):
            raise BentoCompileError(
                f"No safe synthetic value exists for input '{spec.name}': the graph uses it as the "
                f"{role} of {node.op_type} node '{node.name or node.output[0]}'.",
                f"Give a sample for {spec.name}: --sample sample.npz with one array per input "
                f"({', '.join(s.name for s in specs)}), or a .json request body {{\"inputs\": {{...}}}}.")
    if kind in "iu":
        low, bounds = 0, []
        for node, position in uses:
            if (node.op_type, position) in _INDEX_LIKE:
                size = _indexed_size(node, model, specs, rows)
                if size is not None:
                    bounds.append(size)
            elif (node.op_type, position) in _DIVISOR:
                low = 1
        high = max(min(bounds) if bounds else 3, low + 1)
        return rng.integers(low, high, size=shape).astype(spec.dtype)
    values = rng.standard_normal(shape)
    if model is not None and _reaches_a_positive_domain(spec.name, model):
        values = np.abs(values)  # log/sqrt of a negative is NaN, which the original model may refuse
    return values.astype(spec.dtype)


_POSITIVE_DOMAIN_OPS = frozenset({"Log", "Sqrt"})


def _reaches_a_positive_domain(name: str, model: onnx.ModelProto) -> bool:
    """Whether the input reaches a Log or Sqrt within a few nodes (e.g. FunctionTransformer(np.log1p) first)."""
    return any(node.op_type in _POSITIVE_DOMAIN_OPS for node in _nearby(name, model))


# String attributes that list the values a string input is compared with (categories, lookup keys).
_VOCABULARY_ATTRIBUTES = ("cats_strings", "keys_strings", "classes_strings")
_VOCABULARY_DEPTH = 4  # nodes between the input and its encoder (Cast, Identity, Reshape, Imputer ...)


def _vocabulary(name: str, model: onnx.ModelProto) -> list[str]:
    """The categories a string input is encoded with (e.g. a OneHotEncoder's), found within a few nodes
    downstream, so that synthetic rows hit real categories instead of only the unknown-value branch."""
    for node in _nearby(name, model):
        for attribute in node.attribute:
            if attribute.name in _VOCABULARY_ATTRIBUTES and attribute.strings:
                return [value.decode("utf-8", "replace") for value in attribute.strings]
    return []


def _nearby(name: str, model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    """The nodes within _VOCABULARY_DEPTH steps downstream of the value `name`, nearest first."""
    frontier, seen = {name}, set()
    for _ in range(_VOCABULARY_DEPTH):
        following: set[str] = set()
        for node in model.graph.node:
            if not frontier.intersection(node.input) or id(node) in seen:
                continue
            seen.add(id(node))
            yield node
            following.update(node.output)
        if not following:
            return
        frontier = following


def _indexed_size(node: onnx.NodeProto, model: onnx.ModelProto | None, specs: list[TensorSpec],
                  rows: int) -> int | None:
    """The size of the axis `node`'s indices index, when the graph states it (an initializer or a
    graph input's shape); OneHot's indices are bounded by its depth when that is a constant."""
    if model is None:
        return None
    source = node.input[1] if node.op_type == "OneHot" else node.input[0]
    shape = _static_shape(source, model, specs, rows)
    if node.op_type == "OneHot":
        depth = _constant(source, model)
        return int(depth.reshape(-1)[0]) if depth is not None and depth.size else None
    if shape is None or not shape:
        return None
    if node.op_type == "GatherND":
        return min(shape)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return shape[axis] if -len(shape) <= axis < len(shape) else None


def _static_shape(name: str, model: onnx.ModelProto, specs: list[TensorSpec], rows: int) -> tuple[int, ...] | None:
    for init in model.graph.initializer:
        if init.name == name:
            return tuple(int(d) for d in init.dims)
    for spec in specs:
        if spec.name == name:
            return _shape(spec, rows)
    return None


def _constant(name: str, model: onnx.ModelProto) -> np.ndarray | None:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    return None
