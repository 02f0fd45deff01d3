"""What happens around the model run, decided at build time: `inputs:` of kind image/text, `outputs:`
with labels/softmax/top_k, and `handler: handler.py` → the manifest's `pipeline` and the files it needs.

Where each step runs is the compiler's decision, recorded per output as `where`:
- softmax and top-k are folded into the ONNX graph (plain Softmax and TopK nodes) when the output is a
  rank-2 float tensor of an ONNX model at opset 11 or later, so every runtime (Lambda, a board, batch)
  gives the same scores from the same file; the fold is checked against numpy on the sample;
- otherwise (native .tflite/.ort models) they run in the runtime, in numpy;
- image decoding and resizing cannot be plain ONNX ops over encoded bytes, so they run in the runtime
  with Pillow (the smallest dependency), and the build checks them against torchvision's definitions
  on real images (compiler/image_reference.py); text is tokenized with `tokenizers` and the Bento's
  own tokenizer.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bento_compile.core.config import BentoConfig, InputSpec
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import OutputLabels, RequestInput, RequestPipeline, TensorSpec

HANDLER_FILE = "handler.py"
LABELS_FILE = "labels-{}.txt"
TOKENIZER_FILE = "tokenizer-{}.json"
_MAX_LABELS = 100_000
_FOLD_TOLERANCE = 1e-5


@dataclass
class PipelinePlan:
    model: bytes | None  # the ONNX model with softmax/top-k folded in (None: unchanged)
    outputs: list[TensorSpec]  # the shipped model's outputs (the folded ones added)
    info: RequestPipeline | None
    files: dict[str, bytes] = field(default_factory=dict)


def declared_model_inputs(config: BentoConfig) -> list[TensorSpec] | None:
    """bento.yaml `inputs:` as the model's input signature: tensors as given, an image as the [N, C, H, W]
    (or NHWC) float batch it becomes, a text input as its [N, L] int64 ids (and mask)."""
    specs: list[TensorSpec] = []
    for spec in config.inputs or []:
        if spec.kind == "tensor" and spec.shape is not None:
            specs.append(TensorSpec(spec.name, spec.dtype, tuple(spec.shape), batch=spec.batch))
        elif spec.kind == "image" and spec.size is not None:
            channels = 1 if spec.color == "L" else 3
            height, width = spec.size
            dims = (channels, height, width) if spec.layout == "NCHW" else (height, width, channels)
            dtype = spec.dtype if spec.dtype.startswith("float") else "float32"
            specs.append(TensorSpec(spec.name, dtype, (None, *dims), batch=True))
        elif spec.kind == "text":
            specs += [TensorSpec(n, "int64", (None, spec.max_length), batch=True) for n in (spec.ids, spec.mask) if n]
    return specs or None


def declared(config: BentoConfig) -> bool:
    return bool(config.outputs or config.handler or any(s.kind != "tensor" for s in config.inputs or []))


def plan_pipeline(config: BentoConfig, config_dir: Path | None, model: bytes | None, inputs: list[TensorSpec],
                  outputs: list[TensorSpec], feeds: dict[str, np.ndarray], compiled: dict[str, np.ndarray],
                  class_labels: list[str] | None, example: Any) -> PipelinePlan:
    """The manifest's `pipeline`, the files it ships and the (folded) model, or no change when nothing
    is declared. `model` is ONNX bytes, or None for a native-format Bento (steps then run in the runtime)."""
    if not declared(config):
        return PipelinePlan(None, outputs, None)
    root = config_dir or Path.cwd()
    files: dict[str, bytes] = {}
    requires: set[str] = set()
    request_inputs = []
    by_name = {s.name: s for s in inputs}
    for spec in config.inputs or []:
        if spec.kind == "image":
            request_inputs.append(_image_input(spec, by_name))
            requires.add("pillow")
        elif spec.kind == "text":
            entry, data = _text_input(spec, by_name, root)
            files[entry.tokenizer or ""] = data
            request_inputs.append(entry)
            requires.add("tokenizers")
    labelled = [_output_labels(name, out, outputs, root, class_labels, files)
                for name, out in config.outputs.items()]
    folded_model, shipped_outputs = model, list(outputs)
    fold_report: dict[str, Any] = {}
    if model is not None and labelled:
        folded_model, shipped_outputs, labelled, fold_report = _fold(model, outputs, labelled, feeds, compiled)
    parity: dict[str, Any] = {}
    if fold_report:
        parity["folded"] = fold_report
    images = [(spec, entry) for spec, entry in zip(config.inputs or [], request_inputs, strict=False)
              if spec.kind == "image"]
    image_specs = [s for s in config.inputs or [] if s.kind == "image"]
    if image_specs:
        from bento_compile.compiler.image_reference import check_image_parity

        entries = {e.name: e for e in request_inputs if e.kind == "image"}
        shipped = folded_model or model
        runner = _runner(shipped) if shipped is not None else None
        parity["images"] = {s.name: check_image_parity(s, entries[s.name], root, runner, feeds)
                            for s in image_specs}
    del images
    handler = None
    if config.handler:
        data = _check_handler(root / config.handler, requires, example, compiled, labelled)
        files[HANDLER_FILE] = data
        handler = HANDLER_FILE
    info = RequestPipeline(inputs=request_inputs, outputs=labelled, handler=handler, parity=parity,
                           requires=sorted(requires))
    return PipelinePlan(folded_model if folded_model is not model else None, shipped_outputs, info, files)


def describe_plan(plan: PipelinePlan) -> list[str]:
    """One line per decision, for the build's progress output."""
    if plan.info is None:
        return []
    lines = []
    for out in plan.info.outputs:
        steps = ", ".join(s for s in ("softmax" if out.softmax else "", f"top-{out.top_k}") if s)
        where = "folded into the ONNX graph" if out.where == "onnx" else "in the runtime (numpy)"
        lines.append(f"Output '{out.name}': {len(out.labels)} labels ({out.labels_source or 'indices'}); {steps} "
                     f"{where}")
    for name, report in plan.info.parity.get("images", {}).items():
        if report.get("checked"):
            lines.append(f"Image '{name}': runtime preprocessing (Pillow) vs {report['reference']} on "
                         f"{report['images']} real images: max |Δ| {report['tensor_max_abs_diff']:.2e}, label "
                         f"agreement {report.get('label_agreement', 1.0):.0%}")
        else:
            lines.append(f"Image '{name}': {report['note']}")
    for spec in plan.info.inputs:
        if spec.kind == "text":
            lines.append(f"Text '{spec.name}': {spec.tokenizer} (tokenizers), max_length {spec.max_length}, "
                         f"{spec.truncation}")
    if plan.info.handler:
        lines.append("handler.py: imports checked against the runtime's packages; ran on the example and sample")
    return lines


# ---- inputs ---------------------------------------------------------------------------------------


def _image_input(spec: InputSpec, by_name: dict[str, TensorSpec]) -> RequestInput:
    model_input = by_name.get(spec.name)
    if model_input is None:
        raise BentoCompileError(f"bento.yaml inputs: image '{spec.name}' is not an input of the model "
                                f"(it takes: {', '.join(by_name)}).", "Name the model input the image becomes.")
    assert spec.size is not None
    channels = 1 if spec.color == "L" else 3
    height, width = spec.size
    expect = (channels, height, width) if spec.layout == "NCHW" else (height, width, channels)
    got = tuple(model_input.shape[1:])
    if len(got) != 3 or any(d is not None and d != e for d, e in zip(got, expect, strict=True)):
        raise BentoCompileError(
            f"bento.yaml inputs: image '{spec.name}' makes [N, {', '.join(map(str, expect))}] ({spec.layout}, "
            f"{spec.color}, size {spec.size}) but the model takes {list(model_input.shape)}.",
            "Set size, layout and color to what the model was trained on.")
    if not model_input.dtype.startswith("float"):
        raise BentoCompileError(f"bento.yaml inputs: image '{spec.name}': the model input is "
                                f"{model_input.dtype}; images become float tensors.",
                                "Export the model with a float image input.")
    return RequestInput(name=spec.name, kind="image", dtype=model_input.dtype, size=list(spec.size),
                        layout=spec.layout, color=spec.color, scale=spec.scale, mean=list(spec.mean or []),
                        std=list(spec.std or []), resize=spec.resize, resize_to=spec.resize_to, crop=spec.crop,
                        formats=list(spec.formats), max_pixels=spec.max_pixels)


def _safe_file(root: Path, relative: str, what: str) -> Path:
    path = (root / relative).resolve()
    if not path.is_file():
        raise BentoCompileError(f"bento.yaml {what}: {relative} does not exist (relative to {root}).",
                                "Give the path of the file, relative to bento.yaml.")
    return path


def _text_input(spec: InputSpec, by_name: dict[str, TensorSpec], root: Path) -> tuple[RequestInput, bytes]:
    assert spec.tokenizer is not None
    path = _safe_file(root, spec.tokenizer, f"inputs: text '{spec.name}' tokenizer")
    for model_name in (spec.ids, spec.mask):
        if model_name is not None and model_name not in by_name:
            raise BentoCompileError(f"bento.yaml inputs: text '{spec.name}' feeds '{model_name}', which is not "
                                    f"an input of the model (it takes: {', '.join(by_name)}).",
                                    "Set ids: and mask: to the model's input names (mask: null if none).")
    data = path.read_bytes()
    entry = RequestInput(name=spec.name, kind="text", dtype="int64", tokenizer=TOKENIZER_FILE.format(spec.name),
                         max_length=spec.max_length, truncation=spec.truncation, ids=spec.ids, mask=spec.mask)
    try:
        from tokenizers import Tokenizer

        Tokenizer.from_str(data.decode("utf-8")).encode("a check sentence")
    except ImportError:
        raise BentoCompileError("inputs: kind: text needs the `tokenizers` package at build time.",
                                "pip install tokenizers") from None
    except Exception as exc:
        raise BentoCompileError(f"{spec.tokenizer} is not a tokenizer.json the tokenizers library reads: {exc}",
                                "Save it with tokenizer.save('tokenizer.json').") from None
    return entry, data


# ---- outputs --------------------------------------------------------------------------------------


def _output_labels(name: str, out: Any, outputs: list[TensorSpec], root: Path, class_labels: list[str] | None,
                   files: dict[str, bytes]) -> OutputLabels:
    spec = next((o for o in outputs if o.name == name), None)
    if spec is None:
        raise BentoCompileError(f"bento.yaml outputs: '{name}' is not an output of the model "
                                f"(it has: {', '.join(o.name for o in outputs)}).", "Name one of its outputs.")
    if not spec.dtype.startswith("float"):
        raise BentoCompileError(f"bento.yaml outputs: '{name}' is {spec.dtype}; labels, softmax and top_k read "
                                "a float score per class.", "Name the scores (probabilities or logits) output.")
    if isinstance(out.labels, str):
        path = _safe_file(root, out.labels, f"outputs.{name}.labels")
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        while labels and not labels[-1]:
            labels.pop()
        source = f"file:{Path(out.labels).name}"
    elif isinstance(out.labels, list):
        labels, source = [str(v) for v in out.labels], "list"
    elif class_labels:
        labels, source = class_labels, "classes_"
    else:
        labels, source = [], ""
    if len(labels) > _MAX_LABELS:
        raise BentoCompileError(f"outputs.{name}.labels has {len(labels)} names, over {_MAX_LABELS}.",
                                "Give one name per class.")
    classes = spec.shape[-1] if spec.shape else None
    if labels and classes is not None and classes != len(labels):
        raise BentoCompileError(f"outputs.{name}: {len(labels)} labels but the output has {classes} classes.",
                                "Give exactly one label per class, in the model's order.")
    if source.startswith("file:"):
        files[LABELS_FILE.format(name)] = ("\n".join(labels) + "\n").encode()
    return OutputLabels(name=name, labels=labels, labels_source=source, softmax=out.softmax, top_k=out.top_k,
                        scores=name)


def _runner(model: bytes):
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(names, feeds), strict=True))


def _fold(model: bytes, outputs: list[TensorSpec], labelled: list[OutputLabels], feeds: dict[str, np.ndarray],
          compiled: dict[str, np.ndarray]) -> tuple[bytes, list[TensorSpec], list[OutputLabels], dict[str, Any]]:
    """Softmax and TopK as nodes of the graph, for the outputs where plain ONNX ops can do it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load_from_string(model)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    shipped = list(outputs)
    folded: list[OutputLabels] = []
    report: dict[str, Any] = {}
    by_name = {o.name: o for o in outputs}
    for spec in labelled:
        out = by_name[spec.name]
        if opset < 11 or len(out.shape) != 2 or out.dtype != "float32":
            folded.append(spec)  # numpy in the runtime
            continue
        scores = spec.name
        if spec.softmax:
            scores = f"{spec.name}_scores"
            proto.graph.node.append(helper.make_node("Softmax", [spec.name], [scores], axis=-1,
                                                     name=f"bento_softmax_{spec.name}"))
            proto.graph.output.append(helper.make_tensor_value_info(scores, TensorProto.FLOAT, [None, out.shape[1]]))
            shipped.append(TensorSpec(scores, "float32", (out.shape[0], out.shape[1]), batch=out.batch))
        k = spec.top_k if out.shape[1] is None else min(spec.top_k, out.shape[1])
        k_name, values, indices = f"bento_k_{spec.name}", f"{spec.name}_top_k_scores", f"{spec.name}_top_k_indices"
        proto.graph.initializer.append(numpy_helper.from_array(np.array([k], dtype=np.int64), k_name))
        proto.graph.node.append(helper.make_node("TopK", [scores, k_name], [values, indices], axis=-1,
                                                 name=f"bento_top_k_{spec.name}"))
        proto.graph.output.append(helper.make_tensor_value_info(values, TensorProto.FLOAT, [None, k]))
        proto.graph.output.append(helper.make_tensor_value_info(indices, TensorProto.INT64, [None, k]))
        shipped += [TensorSpec(values, "float32", (out.shape[0], k), batch=out.batch),
                    TensorSpec(indices, "int64", (out.shape[0], k), batch=out.batch)]
        folded.append(replace(spec, scores=scores, top_k_scores=values, top_k_indices=indices, where="onnx"))
    if all(s.where != "onnx" for s in folded):
        return model, outputs, folded, {}
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    ran = _runner(data)(feeds)
    from bento_compile.runtimes.answers import softmax

    for spec in folded:
        if spec.where != "onnx":
            continue
        expected = np.asarray(compiled[spec.name], dtype=np.float64)
        expected = softmax(expected) if spec.softmax else expected
        got = np.asarray(ran[spec.scores], dtype=np.float64)
        diff = float(np.max(np.abs(got - expected))) if expected.size else 0.0
        best = np.take_along_axis(expected, ran[spec.top_k_indices or ""], axis=1)
        top_diff = float(np.max(np.abs(best - ran[spec.top_k_scores or ""]))) if best.size else 0.0
        passed = diff <= _FOLD_TOLERANCE and top_diff <= _FOLD_TOLERANCE
        report[spec.name] = {"softmax": spec.softmax, "top_k": spec.top_k, "max_abs_diff": diff,
                             "top_k_max_abs_diff": top_diff, "passed": passed}
        if not passed:
            raise BentoCompileError(f"softmax/top-k folded into the graph for '{spec.name}' differs from numpy by "
                                    f"{max(diff, top_diff):.2e} on the sample.",
                                    "Report this; as a workaround build the Bento without outputs.softmax.")
    return data, shipped, folded, report


# ---- handler.py -----------------------------------------------------------------------------------

# Run in a fresh interpreter: only the standard library, what the runtime ships (numpy, onnxruntime,
# orjson, bento_compile's runtime) and what this Bento's pipeline adds may be imported.
_IMPORT_CHECK = r"""
import importlib.abc, importlib.util, json, sys
allowed = set(json.loads(sys.argv[2])) | set(sys.stdlib_module_names)
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top not in allowed:
            raise ModuleNotFoundError(f"No module named {top!r} (not in the runtime)", name=top)
        return None
sys.meta_path.insert(0, Refuse())
spec = importlib.util.spec_from_file_location("bento_handler", sys.argv[1])
module = importlib.util.module_from_spec(spec)
try:
    spec.loader.exec_module(module)
except ModuleNotFoundError as exc:
    print(json.dumps({"missing": exc.name})); sys.exit(3)
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"})); sys.exit(4)
print(json.dumps({"ok": [n for n in ("preprocess", "postprocess") if callable(getattr(module, n, None))]}))
"""
_RUNTIME_MODULES = ("numpy", "onnxruntime", "orjson", "bento_compile")
_EXTRA_MODULES = {"pillow": "PIL", "tokenizers": "tokenizers"}


def _check_handler(path: Path, requires: set[str], example: Any, compiled: dict[str, np.ndarray],
                   labelled: list[OutputLabels]) -> bytes:
    if not path.is_file() or path.suffix != ".py":
        raise BentoCompileError(f"bento.yaml handler: {path} is not a .py file.",
                                "Point handler: at a Python file beside bento.yaml (e.g. handler.py).")
    allowed = [*_RUNTIME_MODULES, *(_EXTRA_MODULES[r] for r in requires)]
    result = subprocess.run([sys.executable, "-c", _IMPORT_CHECK, str(path), json.dumps(allowed)],
                            capture_output=True, text=True, timeout=60)
    lines = result.stdout.strip().splitlines()
    verdict = json.loads(lines[-1]) if lines else {"error": result.stderr.strip()[-500:]}
    if "missing" in verdict:
        raise BentoCompileError(
            f"{path.name} imports '{verdict['missing']}', which the artifact does not ship (the runtime has "
            f"the standard library and {', '.join(allowed)}).",
            "Use only those in handler.py, or move that work into the model.")
    if "error" in verdict:
        raise BentoCompileError(f"{path.name} fails to import: {verdict['error']}", "Fix handler.py.")
    if not verdict["ok"]:
        raise BentoCompileError(f"{path.name} defines neither preprocess(request) nor postprocess(outputs, request).",
                                "Define at least one of them.")
    _run_handler_on_sample(path, example, compiled, labelled)
    return path.read_bytes()


def _run_handler_on_sample(path: Path, example: Any, compiled: dict[str, np.ndarray],
                           labelled: list[OutputLabels]) -> None:
    """The hooks on the Bento's example request and the answer the runtime would give to the sample
    (the named predictions computed in numpy here: the same figures as the folded graph's)."""
    from bento_compile.runtimes.answers import label_answers
    from bento_compile.runtimes.handler_hook import load_hooks
    from bento_compile.runtimes.tensors import encode_outputs

    hooks = load_hooks(path)
    request = {"inputs": example}
    if example is not None and hooks.preprocess_fn is not None:
        try:
            hooks.preprocess_fn(request)
        except Exception as exc:
            raise BentoCompileError(f"{path.name} preprocess fails on the example request: "
                                    f"{type(exc).__name__}: {exc}", "Fix handler.py.") from None
    if hooks.postprocess_fn is not None:
        answer: dict[str, Any] = {"outputs": encode_outputs(compiled)}
        plain = [replace(s, where="runtime", scores=s.name, top_k_scores=None, top_k_indices=None) for s in labelled]
        if len(plain) == 1:
            answer["predictions"] = label_answers(plain[0], compiled)
        elif plain:
            answer["predictions"] = {s.name: label_answers(s, compiled) for s in plain}
        try:
            hooks.postprocess_fn(answer, request)
        except Exception as exc:
            raise BentoCompileError(f"{path.name} postprocess fails on the sample's outputs: "
                                    f"{type(exc).__name__}: {exc}", "Fix handler.py.") from None
