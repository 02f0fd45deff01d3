"""Bentos whose model is not ONNX: `.tflite` and `.ort` inputs as they are, and Keras/TF → TFLite.

Same stages as the ONNX build (sample → parity → quantization gate → manifest
→ atomic commit), with the model run through the runtime's own backend (LiteRT
for `.tflite`, ONNX Runtime for `.ort`), so what is checked is what serves.
The sources come from compiler/native_frontend.py (ready files) and
compiler/tf_frontend.py (Keras / SavedModel); compiler/bento_writer.py writes
the Bento, as for the ONNX build.

A `.tflite` or `.ort` file given as input has no original to compare with:
the report says "passthrough", the sample is still run through it (a model
that cannot run the sample is refused), and quantization is refused with an
explanation (quantize with the tool that made it, or build the original).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bento_compile.compiler import gate as gates
from bento_compile.compiler import parity
from bento_compile.compiler.baseline import build_monitoring
from bento_compile.compiler.batch_probe import probe_batching
from bento_compile.compiler.bento_writer import BuildResult, manifest_draft, write_bento
from bento_compile.compiler.quantize import LIMITS, TFLITE_LIMITS, Variant, run_rows, select, split_rows
from bento_compile.compiler.request import BuildRequest, resolve_path
from bento_compile.compiler.samples import api_example, load_sample, require_row_inputs, sample_rows
from bento_compile.compiler.signature import has_free_batch_axis
from bento_compile.compiler.source import NativeSource
from bento_compile.compiler.synthetic import synthesize
from bento_compile.core.config import BentoConfig
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.manifest import ModelInfo

Progress = Callable[[str], None]


def build_native(request: BuildRequest, config: BentoConfig, source: NativeSource, name: str, store: BentoStore,
                 progress: Progress) -> BuildResult:
    """The non-ONNX build: check on the sample, gate variants, write the Bento."""
    if config.format == "ort" and source.artifact_format != "ort":
        raise BentoCompileError(
            f"format: ort converts ONNX models; this model ships as .{source.artifact_format}.",
            "Drop format: ort (or --format ort), or build an ONNX model (export it to .onnx first).")
    inputs, outputs = source.inputs, source.outputs
    names = [o.name for o in outputs]
    batchable = has_free_batch_axis(inputs)
    sample_path = resolve_path(request.sample_path, config.sample, request.config_dir)
    if sample_path is not None:
        feeds, sample_source = load_sample(sample_path, inputs), f"file:{sample_path.name}"
    else:
        feeds, sample_source = synthesize(inputs, rows=16), "synthetic"
        progress("No --sample given: running synthetic inputs derived from the model's shapes and types "
                 "(pass real inputs with --sample for a meaningful check)")
    rows = sample_rows(feeds, inputs)
    progress(f"Running {rows} sample rows through the {source.artifact_format} model")
    try:
        compiled = run_rows(source.runner_factory(source.data), feeds, batchable)
    except Exception as exc:
        raise BentoCompileError(f"The {source.artifact_format} model fails on the sample: {type(exc).__name__}: "
                                f"{exc}", "Check the sample's shape and dtype match the model's inputs (an .npz "
                                f"with one array per input: {', '.join(feeds) or 'none'}).") from None
    verdict = probe_batching(source.runner_factory(source.data), feeds, inputs, outputs, compiled)
    outputs = verdict.outputs
    progress(f"Batching: {verdict.reason}")
    reference_all = None
    if source.reference is not None:
        progress(f"Checking parity against the original on {rows} rows")
        reference_all = source.reference(feeds, names)
        tolerance = config.parity.tolerance if request.tolerance is None else request.tolerance
        report = parity.compare(reference_all, compiled, tolerance, config.parity.label_agreement, rows,
                                sample_source)
        if not report["passed"]:
            raise parity.ParityError(report)
    else:
        report = {"passed": True, "rows": rows, "sample": sample_source, "outputs": {}, "not_compared": names,
                  "passthrough": True}

    data, quantization = source.data, None
    if config.quantize.method != "none":
        require_row_inputs(inputs, config.quantize.method)
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
    model = ModelInfo(file=model_file, format=source.artifact_format, inputs=tuple(inputs), outputs=tuple(outputs),
                      batchable=verdict.batchable, feature_names=source.feature_names)
    # Too large to embed: /docs shows the signature instead.
    example = api_example(feeds, inputs)
    runner = source.runner_factory(source.data)
    monitoring = build_monitoring(config, request.config_dir, feeds, compiled, inputs, outputs, source.feature_names,
                                  lambda rows: run_rows(runner, rows, batchable), sample_source)
    draft = manifest_draft(name=name, source=source, model=model, parity=report, example=example, config=config,
                           quantization=quantization, monitoring=monitoring)
    return write_bento(store, draft, {model_file: data, **source.extra_files})


def _quantize(config: BentoConfig, source: NativeSource, feeds, reference_all, fp32_report, batchable: bool,
              sample_source: str, request: BuildRequest, progress: Progress
              ) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    qconfig = config.quantize
    calibration_path = resolve_path(None, qconfig.calibration, request.config_dir)
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
