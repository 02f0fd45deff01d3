"""`build`: model file + bento.yaml → a Bento in the store.

convert (frontend) → check + infer shapes → opset check → optimize → parity
→ manifest → atomic commit. The version is the hash of what the Bento holds,
so building the same inputs twice gives the same version and no duplicate.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bento_compile.compiler import parity, passes
from bento_compile.compiler.baseline import build_monitoring
from bento_compile.compiler.batch_probe import probe_batching
from bento_compile.compiler.bento_writer import BuildResult, manifest_draft, write_bento
from bento_compile.compiler.frontends import load_source
from bento_compile.compiler.missing_values import missing_values_policy
from bento_compile.compiler.parity import ParityError
from bento_compile.compiler.pipeline import declared, declared_model_inputs, describe_plan, plan_pipeline
from bento_compile.compiler.request import BuildRequest, resolve_path
from bento_compile.compiler.samples import (
    example_payload,
    load_sample,
    require_row_inputs,
    sample_rows,
    whole_names,
)
from bento_compile.compiler.signature import has_free_batch_axis, model_signature
from bento_compile.compiler.source import NativeSource
from bento_compile.compiler.synthetic import synthesize
from bento_compile.core.config import BentoConfig
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.manifest import ModelInfo, TensorSpec
from bento_compile.runtimes.names import is_bento_name

MODEL_FILE = "model.onnx"
Progress = Callable[[str], None]


# BuildRequest, BuildResult and ParityError are imported here so callers keep one entry point.
__all__ = ["BuildRequest", "BuildResult", "ParityError", "build"]


def build(request: BuildRequest, store: BentoStore, progress: Progress = lambda _msg: None) -> BuildResult:
    config = request.config
    model_path = resolve_path(request.model_path, config.model, request.config_dir)
    if model_path is None:
        raise BentoCompileError("No model given.", "Pass the model file: bento-compile build model.joblib.")
    name = request.name or config.name or _name_from(model_path)
    if not is_bento_name(name):
        raise BentoCompileError(f"'{name}' is not a valid Bento name.",
                                "Use lowercase letters, digits, '.', '_' or '-' (e.g. --name churn).")
    tolerance = config.parity.tolerance if request.tolerance is None else request.tolerance
    override = declared_model_inputs(config)  # tensors as given; images and text as the tensors they become

    if request.quantize or request.format:
        config = _with_overrides(config, request)
    progress(f"Converting {model_path.name}")
    source = load_source(model_path, override, resolve_path(request.sample_path, config.sample, request.config_dir))
    if isinstance(source, NativeSource):  # .tflite / .ort inputs, Keras → TFLite
        from bento_compile.compiler.formats_build import build_native

        return build_native(request, config, source, name, store, progress)
    progress(f"Checking and optimizing the ONNX graph ({source.description})")
    checked = passes.check_and_infer(source.model)
    opsets = passes.check_opsets(checked)
    optimized = passes.optimize(checked)
    _, outputs = model_signature(onnx.load_from_string(optimized))
    inputs = [replace(s, batch=s.batched) for s in source.inputs]  # recorded either way in the manifest

    sample_path = resolve_path(request.sample_path, config.sample, request.config_dir)
    if sample_path is not None:
        feeds, sample_source = load_sample(sample_path, inputs), f"file:{sample_path.name}"
    else:
        feeds, sample_source = synthesize(inputs, source.model), "synthetic"
        progress("No --sample given: checking parity on synthetic inputs derived from the graph's shapes and "
                 "types (pass real inputs with --sample for a meaningful check)")
    progress(f"Checking parity on {_rows(feeds, inputs)} rows")
    report = _parity(source, optimized, feeds, outputs, tolerance, config.parity.label_agreement, sample_source,
                     inputs)
    compiled = report.pop("_compiled")
    if not report["passed"]:
        raise ParityError(report)
    config = missing_values_policy(config, source.reference, feeds, inputs, [o.name for o in outputs], progress)
    verdict = probe_batching(_session_runner(optimized, outputs), feeds, inputs, outputs, compiled)
    outputs = verdict.outputs
    progress(f"Batching: {verdict.reason}")

    shipped, quantization = optimized, None
    if config.quantize.method != "none":
        require_row_inputs(inputs, config.quantize.method)
        from bento_compile.compiler.quantize import quantize_onnx

        calibration = resolve_path(None, config.quantize.calibration, request.config_dir)
        shipped, quantization, report = quantize_onnx(config, source, optimized, feeds, outputs, inputs,
                                                      calibration, report, sample_source, progress)
    plan = None
    if declared(config):
        progress("Planning images / text / labels / handler around the model")
        plan = plan_pipeline(config, request.config_dir, shipped, inputs, outputs, feeds, compiled,
                             getattr(source, "class_labels", None),
                             example_payload(feeds, whole=whole_names(inputs)))
        shipped = plan.model or shipped
        for line in describe_plan(plan):
            progress(line)
    shipped_outputs = plan.outputs if plan is not None else outputs
    files = {MODEL_FILE: shipped}
    if config.format == "ort":
        from bento_compile.compiler.model_formats import to_ort_checked

        progress("Converting to the ONNX Runtime format (.ort) with its operator config")
        files = to_ort_checked(shipped, feeds, shipped_outputs)

    progress("Recording the drift baseline")
    monitoring = build_monitoring(config, request.config_dir, feeds, compiled, inputs, outputs,
                                  source.feature_names, _session_runner(optimized, outputs), sample_source)
    progress("Writing the Bento")
    draft = _draft(name, source, inputs, shipped_outputs, opsets, files, report, feeds, config,
                   quantization=quantization, batchable=verdict.batchable)
    if plan is not None:  # handler.py, labels and tokenizer files are hashed and signed like the model
        files = {**files, **plan.files}
        draft = replace(draft, pipeline=plan.info)
    return write_bento(store, replace(draft, monitoring=monitoring), files)


def _name_from(path: Path) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower()).strip("-._")
    return name or "model"


def _rows(feeds: dict[str, np.ndarray], inputs: list[TensorSpec] | None = None) -> int:
    return sample_rows(feeds, inputs if inputs is not None else
                       [TensorSpec(name, str(v.dtype), v.shape, batch=v.ndim > 0) for name, v in feeds.items()])


def _session_runner(model: bytes, outputs: list[TensorSpec]):
    import onnxruntime as ort

    names = [o.name for o in outputs]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return lambda feeds: dict(zip(names, session.run(names, feeds), strict=True))


def _parity(source, optimized: bytes, feeds, outputs: list[TensorSpec], tolerance: float,
            label_agreement: float, sample_source: str, inputs: list[TensorSpec] | None = None) -> dict[str, Any]:
    """The parity report, with the compiled model's answer under "_compiled" (for the batching probe)."""
    names = [o.name for o in outputs]
    try:
        compiled = _session_runner(optimized, outputs)(feeds)
    except Exception as exc:
        fix = ("Check the sample's columns and dtypes match the model's inputs." if sample_source != "synthetic"
               else "Inputs synthesized from the graph's shapes do not suit this model: give a sample with "
               "--sample (an .npz with one array per input: "
               f"{', '.join(feeds) or 'none'}, or a .json request body).")
        raise BentoCompileError(f"The compiled model fails on the {sample_source} sample: {exc}", fix) from None
    try:
        reference = source.reference(feeds, names)
    except Exception as exc:
        raise BentoCompileError(f"The original model fails on the sample: {type(exc).__name__}: {exc}",
                                "Check the sample holds rows like the training data.") from None
    report = parity.compare(reference, compiled, tolerance, label_agreement, _rows(feeds, inputs), sample_source)
    return {**report, "_compiled": compiled}


def _with_overrides(config: BentoConfig, request: BuildRequest) -> BentoConfig:
    """CLI --quantize / --format win over bento.yaml (validated by the same schema)."""
    data = config.model_dump()
    if request.quantize:
        data["quantize"]["method"] = request.quantize
    if request.format:
        data["format"] = request.format
    return BentoConfig.model_validate(data)


def _draft(name: str, source, inputs: list[TensorSpec], outputs: list[TensorSpec], opsets: dict[str, int] | None,
           files: dict[str, bytes], report: dict[str, Any], feeds, config: BentoConfig,
           quantization: dict[str, Any] | None = None, batchable: bool | None = None):
    """The manifest of an ONNX-path Bento; the first of `files` is the model (.onnx or .ort)."""
    model_file = next(iter(files))
    verdict = has_free_batch_axis(inputs) if batchable is None else batchable
    model = ModelInfo(file=model_file, format=Path(model_file).suffix.lstrip("."), inputs=tuple(inputs),
                      outputs=tuple(outputs), opsets=opsets, batchable=verdict,
                      feature_names=source.feature_names or None)
    return manifest_draft(name=name, source=source, model=model, parity=report,
                          example=example_payload(feeds, whole=whole_names(inputs)), config=config,
                          quantization=quantization)
