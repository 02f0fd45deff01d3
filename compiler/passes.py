"""Graph passes: check, infer shapes, check opsets, and optimize offline with ONNX Runtime.

The optimized model is saved at ORT_ENABLE_BASIC: constant folding and
redundant-node elimination, which are valid on every execution provider.
The higher levels fuse nodes for the CPU provider specifically (ONNX Runtime's
docs warn against saving those), so they run online at load time instead.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import onnx

from bento_compile.core.errors import BentoCompileError

# The newest default-domain opset the oldest supported onnxruntime (1.20) runs.
MAX_DEFAULT_OPSET = 22


def check_and_infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx.checker plus shape inference; a broken graph fails here, not at serving time."""
    model = portable_locales(_dedupe_opsets(model))
    try:
        onnx.checker.check_model(model)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=False)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise BentoCompileError(f"The ONNX graph is invalid: {exc}",
                                "Re-export the model with a current converter.") from None


# ONNX Runtime builds a C++ std::locale for StringNormalizer, "en_US.UTF-8" unless the node names one, and
# refuses to load the model where that locale is not installed: slim container images, Lambda and most
# boards have only C.UTF-8 (whose case mapping is the same Unicode one). skl2onnx names en_US for every
# text vectorizer, so such a Bento would build on a laptop and fail to load where it is served.
PORTABLE_LOCALE = "C.UTF-8"


def portable_locales(model: onnx.ModelProto) -> onnx.ModelProto:
    """StringNormalizer nodes with no locale or an en_US one use C.UTF-8 (when it works here), so the model
    loads wherever it is served; another locale is the author's choice and stays."""
    nodes = [n for n in model.graph.node if n.op_type == "StringNormalizer"]
    if not nodes or not _locale_works(PORTABLE_LOCALE):
        return model
    for node in nodes:
        named = [a for a in node.attribute if a.name == "locale"]
        if named and not named[0].s.decode("utf-8", "replace").startswith(("en_US", "en-US")):
            continue
        for attribute in named:
            node.attribute.remove(attribute)
        node.attribute.append(onnx.helper.make_attribute("locale", PORTABLE_LOCALE))
    return model


@functools.cache
def _locale_works(name: str) -> bool:
    """Whether ONNX Runtime can construct `name` on this machine (a one-node StringNormalizer loads)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="LOWER", locale=name)
    graph = helper.make_graph([node], "locale", [helper.make_tensor_value_info("x", TensorProto.STRING, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.STRING, [1])])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    try:
        ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises its own Fail type
        return False
    return True


def _dedupe_opsets(model: onnx.ModelProto) -> onnx.ModelProto:
    """skl2onnx can list the default domain twice; keep the highest version of each domain."""
    best: dict[str, int] = {}
    for entry in model.opset_import:
        best[entry.domain] = max(best.get(entry.domain, 0), entry.version)
    if len(best) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in sorted(best.items()))
    return model


def opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {(entry.domain or "ai.onnx"): entry.version for entry in model.opset_import}


def check_opsets(model: onnx.ModelProto) -> dict[str, int]:
    found = opsets(model)
    default = found.get("ai.onnx", 0)
    if default > MAX_DEFAULT_OPSET:
        raise BentoCompileError(
            f"The model uses ONNX opset {default}; the serving runtime supports up to {MAX_DEFAULT_OPSET}.",
            f"Re-export with opset_version={MAX_DEFAULT_OPSET} or lower.")
    return found


def optimize(model: onnx.ModelProto) -> bytes:
    """Run ONNX Runtime's portable offline optimizations and return the saved model's bytes."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="bento-opt-") as tmp:
        out = Path(tmp) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(out)
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BentoCompileError(f"ONNX Runtime cannot load the model: {exc}",
                                    "Check the operators are supported by onnxruntime's CPU provider.") from None
        return _canonical(out.read_bytes())


def _canonical(saved: bytes) -> bytes:
    """The same bytes for the same graph: ONNX Runtime writes opset_import (and metadata_props) from a hash map,
    so their order changes from one process to the next, and with it the Bento's content version."""
    model = onnx.load_from_string(saved)
    opset_entries = sorted((entry.domain, entry.version) for entry in model.opset_import)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(domain, version) for domain, version in opset_entries)
    props = sorted((prop.key, prop.value) for prop in model.metadata_props)
    del model.metadata_props[:]
    for key, value in props:
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()
