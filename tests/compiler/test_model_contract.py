"""The contract read from an ONNX graph, samples for several inputs, and builds without a sample.

Small real ONNX graphs made with onnx.helper (one or two operators), built by the real compiler
and run by ONNX Runtime; nothing is mocked.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bento_compile.compiler.build import BuildRequest, build
from bento_compile.compiler.samples import example_payload, load_sample
from bento_compile.compiler.signature import model_signature
from bento_compile.compiler.synthetic import synthesize
from bento_compile.core.config import BentoConfig
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.manifest import TensorSpec
from bento_compile.runtimes.model import BentoModel


def graph_model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def save(model: onnx.ModelProto, tmp_path, name="model.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def gemm_with_bias() -> onnx.ModelProto:
    """y = x @ W + bias: x has a symbolic batch axis, bias is a whole tensor of its own."""
    weight = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "W")
    return graph_model([helper.make_node("Gemm", ["x", "W", "bias"], ["y"])],
                       [vi("x", TensorProto.FLOAT, ["batch", 3]), vi("bias", TensorProto.FLOAT, [2])],
                       [vi("y", TensorProto.FLOAT, ["batch", 2])], [weight])


def test_the_batch_axis_is_the_symbol_the_inputs_share():
    model = graph_model([helper.make_node("Gather", ["data", "idx"], ["out"])],
                        [vi("data", TensorProto.FLOAT, ["N", 4]), vi("idx", TensorProto.INT64, ["M"]),
                         vi("extra", TensorProto.FLOAT, ["N", 2]), vi("k", TensorProto.INT64, []),
                         vi("fixed", TensorProto.FLOAT, [1, 3])],
                        [vi("out", TensorProto.FLOAT, ["M", 4])])
    inputs, outputs = model_signature(model)
    assert [(s.name, s.batch) for s in inputs] == [("data", True), ("idx", False), ("extra", True), ("k", False),
                                                   ("fixed", False)]
    assert inputs[3].shape == () and inputs[4].shape == (1, 3)
    assert [(s.name, s.batch) for s in outputs] == [("out", False)]  # its first axis is idx's, not the batch


def test_a_declared_zero_is_a_size_and_element_types_are_named():
    model = graph_model([helper.make_node("Identity", ["axes"], ["y"])], [vi("axes", TensorProto.INT64, [0])],
                        [vi("y", TensorProto.INT64, [0])])
    inputs, _ = model_signature(model)
    assert inputs[0].shape == (0,) and inputs[0].batch is False
    bf16 = graph_model([helper.make_node("Identity", ["x"], ["y"])], [vi("x", TensorProto.BFLOAT16, [2])],
                       [vi("y", TensorProto.BFLOAT16, [2])])
    with pytest.raises(ValueError, match="input 'x' has element type BFLOAT16, which JSON requests cannot carry"):
        model_signature(bf16)


def test_npz_and_json_samples_carry_several_inputs_scalars_included(tmp_path):
    specs = [TensorSpec("input", "float32", (None, 4), batch=True), TensorSpec("state", "float32", (2, 3), batch=False),
             TensorSpec("sr", "int64", (), batch=False)]
    np.savez(tmp_path / "s.npz", input=np.ones((5, 4)), state=np.zeros((2, 3)), sr=np.array(16000))
    feeds = load_sample(tmp_path / "s.npz", specs)
    assert feeds["input"].dtype == np.float32 and feeds["sr"].shape == () and feeds["sr"].dtype == np.int64
    example = example_payload(feeds, whole=frozenset({"state", "sr"}))
    assert example["inputs"]["sr"] == 16000 and len(example["inputs"]["input"]) == 2
    assert np.asarray(example["inputs"]["state"]).shape == (2, 3)  # whole tensors are shown entire

    (tmp_path / "s.json").write_text(json.dumps({"inputs": {"input": [[1, 2, 3, 4]], "state": [[0] * 3] * 2,
                                                            "sr": 8000}}))
    feeds = load_sample(tmp_path / "s.json", specs)
    assert feeds["input"].shape == (1, 4) and int(feeds["sr"]) == 8000

    np.savez(tmp_path / "missing.npz", input=np.ones((5, 4)), state=np.zeros((2, 3)))
    with pytest.raises(BentoCompileError, match="has no array for input 'sr'"):
        load_sample(tmp_path / "missing.npz", specs)
    np.savez(tmp_path / "shape.npz", input=np.ones((5, 4)), state=np.zeros((3, 3)), sr=np.array(1))
    with pytest.raises(BentoCompileError, match=r"gives input 'state' shape \(3, 3\), but the model takes it whole"):
        load_sample(tmp_path / "shape.npz", specs)
    np.save(tmp_path / "scalar.npy", np.array(3.5, dtype=np.float32))  # was a TypeError traceback
    assert load_sample(tmp_path / "scalar.npy", [TensorSpec("t", "float32", (), batch=False)])["t"].shape == ()


def test_synthesis_follows_the_graph_and_refuses_where_no_value_is_safe():
    gather = graph_model([helper.make_node("Gather", ["table", "ids"], ["rows"])],
                         [vi("ids", TensorProto.INT64, ["N", 7])], [vi("rows", TensorProto.FLOAT, ["N", 7, 2])],
                         [numpy_helper.from_array(np.zeros((5, 2), np.float32), "table")])
    inputs, _ = model_signature(gather)
    feeds = synthesize(inputs, gather)
    assert feeds["ids"].shape == (64, 7) and feeds["ids"].max() < 5 and feeds["ids"].min() >= 0
    reshape = graph_model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                          [vi("x", TensorProto.FLOAT, [2, 3]), vi("shape", TensorProto.INT64, [2])],
                          [vi("y", TensorProto.FLOAT, [3, 2])])
    inputs, _ = model_signature(reshape)
    with pytest.raises(BentoCompileError, match="input 'shape': the graph uses it as the shape of Reshape") as err:
        synthesize(inputs, reshape)
    assert "Give a sample for shape" in err.value.fix and "(x, shape)" in err.value.fix
    fixed = synthesize([TensorSpec("x", "float32", (1, 3, 2), batch=False), TensorSpec("s", "int8", (), batch=False)])
    assert fixed["x"].shape == (1, 3, 2) and fixed["s"].shape == () and fixed["s"].dtype == np.int8


def test_a_fixed_batch_model_builds_without_a_sample_and_takes_its_exact_shape(tmp_path):
    model = graph_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", TensorProto.FLOAT, [1, 3])],
                        [vi("y", TensorProto.FLOAT, [1, 3])])
    built = build(BuildRequest(save(model, tmp_path), BentoConfig(), name="relu"), BentoStore(tmp_path / "s"))
    assert built.manifest["model"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": [1, 3], "batch": False}]
    assert built.manifest["model"]["batchable"] is False
    answer = BentoModel.load(built.path).predict({"inputs": [[-1.0, 0.5, 2.0]]})
    assert answer["outputs"]["y"] == [[0.0, 0.5, 2.0]]


def test_whole_tensor_inputs_batch_only_beside_rows_that_the_outputs_follow(tmp_path):
    built = build(BuildRequest(save(gemm_with_bias(), tmp_path), BentoConfig(), name="gemm"),
                  BentoStore(tmp_path / "s"))
    model = built.manifest["model"]
    assert [(s["name"], s["batch"]) for s in model["inputs"]] == [("x", True), ("bias", False)]
    assert model["outputs"][0]["batch"] is True and model["batchable"] is True
    assert built.manifest["parity"]["sample"] == "synthetic"
    bento = BentoModel.load(built.path)
    answer = bento.predict({"inputs": {"x": [[1, 0, 0], [0, 0, 1]], "bias": [10, 20]}})
    assert answer["outputs"]["y"] == [[10.0, 21.0], [14.0, 25.0]]
    assert bento.manifest.whole_inputs == {"bias"}


def test_outputs_that_do_not_follow_the_rows_make_the_model_run_per_request(tmp_path):
    model = graph_model([helper.make_node("ReduceSum", ["x"], ["total"], keepdims=1, axes=[0])],
                        [vi("x", TensorProto.FLOAT, ["N", 3])], [vi("total", TensorProto.FLOAT, [None, 3])], opset=11)
    built = build(BuildRequest(save(model, tmp_path), BentoConfig(), name="sum"), BentoStore(tmp_path / "s"))
    assert built.manifest["model"]["batchable"] is False
    assert built.manifest["model"]["outputs"][0]["batch"] is False


def test_a_model_without_inputs_builds_and_answers(tmp_path):
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array([1.5, 2.5], np.float32)))
    model = graph_model([const], [], [vi("c", TensorProto.FLOAT, [2])])
    built = build(BuildRequest(save(model, tmp_path), BentoConfig(), name="const"), BentoStore(tmp_path / "s"))
    assert built.manifest["example"] == {"inputs": {}}
    assert BentoModel.load(built.path).predict({"inputs": {}}) == {"outputs": {"c": [1.5, 2.5]}}


def test_bento_yaml_inputs_override_the_batch_flag_of_the_inputs_it_names(tmp_path):
    config = BentoConfig.model_validate({"inputs": [{"name": "bias", "dtype": "float32", "shape": [None],
                                                     "batch": False}]})
    built = build(BuildRequest(save(gemm_with_bias(), tmp_path), config, name="gemm2"), BentoStore(tmp_path / "s"))
    inputs = built.manifest["model"]["inputs"]
    assert [(s["name"], s["shape"], s["batch"]) for s in inputs] == [("x", [None, 3], True),
                                                                     ("bias", [None], False)]
    with pytest.raises(ValueError, match="batch: true needs a free first axis"):
        BentoConfig.model_validate({"inputs": [{"name": "k", "dtype": "int64", "shape": [], "batch": True}]})


def test_quantization_refuses_whole_tensor_inputs_by_name(tmp_path):
    config = BentoConfig.model_validate({"quantize": "dynamic"})
    with pytest.raises(BentoCompileError, match=r"input\(s\) bias are whole tensors, not rows"):
        build(BuildRequest(save(gemm_with_bias(), tmp_path), config, name="gq"), BentoStore(tmp_path / "s"))


def test_a_one_row_sample_still_shows_whether_outputs_follow_the_rows(tmp_path):
    from bento_compile.compiler.batch_probe import probe_batching

    x = TensorSpec("x", "float32", (None, 3), batch=True)
    y = TensorSpec("y", "float32", (None, 3), batch=True)
    one = {"x": np.array([[1.0, 2.0, 3.0]], np.float32)}
    per_row = probe_batching(lambda f: {"y": f["x"] * 2}, one, [x], [y], {"y": one["x"] * 2})
    assert per_row.batchable and per_row.outputs[0].batch
    mixed = probe_batching(lambda f: {"y": f["x"] / f["x"].sum(axis=0, keepdims=True)}, one, [x], [y],
                           {"y": np.ones((1, 3), np.float32)})
    assert not mixed.batchable and not mixed.outputs[0].batch
