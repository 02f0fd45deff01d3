"""Bentos whose model is not ONNX: `.tflite` and `.ort` inputs as they are, and Keras/TF → TFLite.

Same stages as the ONNX build (sample → parity → quantization gate → manifest
→ atomic commit), with the model run through the runtime's own backend (LiteRT
for `.tflite`, ONNX Runtime for `.ort`), so what is checked is what serves.

A `.tflite` or `.ort` file given as input has no original to compare with:
the report says "passthrough", the sample is still run through it (a model
that cannot run the sample is refused), and quantization is refused with an
explanation (quantize with the tool that made it, or build the original).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bento_compile.compiler import gate as gates
from bento_compile.compiler import parity
from bento_compile.compiler.quantize import LIMITS, TFLITE_LIMITS, Runner, Variant, run_rows, select, split_rows
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import MANIFEST_NAME, TensorSpec, sha256_file

EXAMPLE_MAX_VALUES = 4096


@dataclass
class EdgeSource:
    """A model that ships in its own format (the ONNX path's `Source`, for .tflite / .ort)."""

    kind: str
    artifact_format: str  # "tflite" | "ort"
    data: bytes
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    runner_factory: Callable[[bytes], Runner]
    description: str
    file_sha256: str
    reference: Callable[[dict[str, np.ndarray], list[str]], dict[str, np.ndarray]] | None = None
    variant_factory: Callable[[Any, dict[str, np.ndarray]], list[Variant]] | None = None
    converter_versions: dict[str, str] = field(default_factory=dict)
    extra_files: dict[str, bytes] = field(default_factory=dict)  # shipped beside the model
    keep_alive: Any = None  # e.g. the temporary folder a converter wrote into


def tflite_runner(data: bytes) -> Runner:
    from bento_compile.runtimes.tflite_backend import TFLiteBackend

    return TFLiteBackend(model_content=data).run


def ort_runner(data: bytes) -> Runner:
    from bento_compile.compiler.quantize import onnx_runner

    return onnx_runner(data)


def load_tflite(path: Path, input_override: list[TensorSpec] | None) -> EdgeSource:
    from bento_compile.runtimes.errors import IntegrityError
    from bento_compile.runtimes.tflite_backend import TFLiteBackend

    data = path.read_bytes()
    try:
        backend = TFLiteBackend(model_content=data)
    except IntegrityError as exc:
        raise BentoCompileError(str(exc), "pip install ai-edge-litert") from None
    except Exception as exc:
        raise BentoCompileError(f"{path.name} is not a loadable TFLite model ({type(exc).__name__}: {exc}).",
                                "Convert it again with TensorFlow's TFLiteConverter.") from None
    ins, outs = backend.specs()
    inputs = [TensorSpec.from_dict(s) for s in ins]
    _check_override(input_override, inputs, path)
    return EdgeSource(kind="tflite", artifact_format="tflite", data=data, inputs=inputs,
                      outputs=[TensorSpec.from_dict(s) for s in outs], runner_factory=tflite_runner,
                      description=f"TFLite model as it is ({path.name})", file_sha256=sha256_file(path),
                      converter_versions=dict(backend.runtime_versions))


def load_ort(path: Path, input_override: list[TensorSpec] | None) -> EdgeSource:
    from bento_compile.compiler.model_formats import OPS_CONFIG_FILE, ops_config_for_ort, ort_signature

    data = path.read_bytes()
    try:
        inputs, outputs = ort_signature(data)
    except BentoCompileError:
        raise
    except Exception as exc:
        raise BentoCompileError(f"{path.name} is not a loadable ONNX Runtime (.ort) model ({exc}).",
                                "Convert it again with python -m onnxruntime.tools.convert_onnx_models_to_ort."
                                ) from None
    _check_override(input_override, inputs, path)
    config = ops_config_for_ort(data)
    return EdgeSource(kind="ort", artifact_format="ort", data=data, inputs=inputs, outputs=outputs,
                      runner_factory=ort_runner, description=f"ONNX Runtime format model as it is ({path.name})",
                      file_sha256=sha256_file(path), extra_files={OPS_CONFIG_FILE: config} if config else {})


def _check_override(override: list[TensorSpec] | None, actual: list[TensorSpec], path: Path) -> None:
    if not override:
        return
    if [(s.name, s.dtype) for s in override] != [(s.name, s.dtype) for s in actual]:
        have = ", ".join(f"{s.name} ({s.dtype}, {list(s.shape)})" for s in actual)
        raise BentoCompileError(f"bento.yaml `inputs:` does not match {path.name}, which takes: {have}.",
                                "Remove `inputs:` (the file's own signature is used) or make it match.")


def build_edge(request, config, source: EdgeSource, name: str, store, progress):
    """The non-ONNX build: check on the sample, gate variants, write the Bento."""
    from bento_compile.compiler import build as build_module
    from bento_compile.compiler.samples import load_sample, synthesize
    from bento_compile.compiler.signature import has_free_batch_axis
    from bento_compile.core.store import write_json_atomic

    if config.format == "ort" and source.artifact_format != "ort":
        raise BentoCompileError(
            f"format: ort converts ONNX models; this model ships as .{source.artifact_format}.",
            "Drop format: ort (or --format ort), or build an ONNX model (export it to .onnx first).")
    inputs, outputs = source.inputs, source.outputs
    names = [o.name for o in outputs]
    batchable = has_free_batch_axis(inputs)
    sample_path = build_module._resolve(request.sample_path, config.sample, request.config_dir, "sample")
    if sample_path is not None:
        feeds, sample_source = load_sample(sample_path, inputs), f"file:{sample_path.name}"
    else:
        feeds, sample_source = synthesize(inputs, rows=16), "synthetic"
        progress("No --sample given: running synthetic standard-normal rows derived from the input signature "
                 "(pass real rows with --sample for a meaningful check)")
    rows = len(next(iter(feeds.values())))
    progress(f"Running {rows} sample rows through the {source.artifact_format} model")
    try:
        compiled = run_rows(source.runner_factory(source.data), feeds, batchable)
    except Exception as exc:
        raise BentoCompileError(f"The {source.artifact_format} model fails on the sample: {type(exc).__name__}: "
                                f"{exc}", "Check the sample's shape and dtype match the model's inputs.") from None
    reference_all = None
    if source.reference is not None:
        progress(f"Checking parity against the original on {rows} rows")
        reference_all = source.reference(feeds, names)
        tolerance = config.parity.tolerance if request.tolerance is None else request.tolerance
        report = parity.compare(reference_all, compiled, tolerance, config.parity.label_agreement, rows,
                                sample_source)
        if not report["passed"]:
            raise build_module.ParityError(report)
    else:
        report = {"passed": True, "rows": rows, "sample": sample_source, "outputs": {}, "not_compared": names,
                  "passthrough": True}

    data, quantization = source.data, None
    if config.quantize.method != "none":
        if source.variant_factory is None or reference_all is None:
            raise BentoCompileError(
                f"quantize.method '{config.quantize.method}' applies to models bento-compile converts; this is a "
                f".{source.artifact_format} file served as it is, with no original to gate the variants against.",
                "Quantize it with the tool that produced it, or build the original model (.onnx, .keras, "
                "SavedModel, .joblib, .pt) with --quantize.")
        data, quantization, report = _quantize(config, source, feeds, reference_all, report, batchable,
                                               sample_source, request, progress)

    model_file = f"model.{source.artifact_format}"
    progress("Writing the Bento")
    files = {model_file: data, **source.extra_files}
    with store.staging() as staged:
        for file_name, content in files.items():
            (staged / file_name).write_bytes(content)
        manifest = build_module._manifest(name, source, inputs, outputs, None, files, report, feeds, config,
                                          quantization=quantization, model_file=model_file,
                                          model_format=source.artifact_format)
        if _values_per_row(feeds) > EXAMPLE_MAX_VALUES:
            manifest["example"] = None  # too large to embed; /docs shows the signature instead
        write_json_atomic(staged / MANIFEST_NAME, manifest)
        path, created_new = store.commit(staged, name, manifest["version"])
    stored = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
    return build_module.BuildResult(tag=f"{name}:{manifest['version']}", path=path, created_new=created_new,
                                    manifest=stored)


def _values_per_row(feeds: dict[str, np.ndarray]) -> int:
    return sum(int(np.prod(v.shape[1:])) for v in feeds.values())


def _quantize(config, source: EdgeSource, feeds, reference_all, fp32_report, batchable, sample_source, request,
              progress) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    from bento_compile.compiler import build as build_module
    from bento_compile.compiler.samples import load_sample

    qconfig = config.quantize
    calibration_path = build_module._resolve(None, qconfig.calibration, request.config_dir, "calibration")
    calibration = load_sample(calibration_path, source.inputs) if calibration_path is not None else None
    calib, held_out = split_rows(feeds, calibration)
    rows = len(next(iter(feeds.values())))
    held_rows = len(next(iter(held_out.values())))
    reference = {k: v[rows - held_rows:] for k, v in reference_all.items()}
    gates.check_gate_applies(qconfig.gate, reference)
    progress(f"Quantizing ({qconfig.method}): converting variants")
    variants = [Variant("fp32", source.data, source.runner_factory, note="the converted model, unquantized")]
    assert source.variant_factory is not None, "build_edge quantizes only a source that can make variants"
    variants += source.variant_factory(qconfig, calib)
    if qconfig.method != "auto":
        variants = [v for v in variants if v.name == qconfig.method]
    text = sample_source + (" (calibration file)" if calibration is not None else ", second half")
    chosen, result = select(qconfig, variants, held_out, reference, batchable, len(next(iter(calib.values()))),
                            text, progress, limits=TFLITE_LIMITS if source.artifact_format == "tflite" else LIMITS)
    result["fp32_parity"] = fp32_report
    if chosen.name == "fp32":
        return source.data, result, fp32_report
    assert chosen.data is not None and chosen.runner_factory is not None
    full = run_rows(chosen.runner_factory(chosen.data), feeds, batchable)
    report = gates.evaluate(qconfig.gate, reference_all, full, rows, sample_source)
    report["variant"] = chosen.name
    return chosen.data, result, report
