"""`build`: model file + bento.yaml → a Bento in the store.

convert (frontend) → check + infer shapes → opset check → optimize → parity
→ manifest → atomic commit. The version is the hash of what the Bento holds,
so building the same inputs twice gives the same version and no duplicate.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bento_compile import __version__
from bento_compile.compiler import parity, passes
from bento_compile.compiler.frontends import load_source
from bento_compile.compiler.samples import example_payload, load_sample, synthesize
from bento_compile.compiler.signature import has_free_batch_axis, model_signature
from bento_compile.core.config import BentoConfig
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore, write_json_atomic
from bento_compile.runtimes.manifest import MANIFEST_NAME, SCHEMA_VERSION, TensorSpec
from bento_compile.runtimes.names import is_bento_name

MODEL_FILE = "model.onnx"
Progress = Callable[[str], None]


class ParityError(BentoCompileError):
    """The compiled model disagrees with the original past the tolerance."""

    def __init__(self, report: dict[str, Any]):
        failing = [name for name, entry in report["outputs"].items() if not entry["passed"]]
        super().__init__(
            f"Parity check failed on {', '.join(failing)}: the compiled model does not agree with the original "
            f"on the {report['rows']} sample rows; nothing was stored.",
            "Check the sample is representative; if the difference is acceptable, raise --tolerance "
            "(or parity.tolerance / parity.label_agreement in bento.yaml).")
        self.report = report


@dataclass
class BuildRequest:
    model_path: Path | None
    config: BentoConfig
    config_dir: Path | None = None
    name: str | None = None
    sample_path: Path | None = None
    tolerance: float | None = None
    quantize: str | None = None  # overrides quantize.method (CLI --quantize)
    format: str | None = None  # overrides format (CLI --format)


@dataclass
class BuildResult:
    tag: str
    path: Path
    created_new: bool
    manifest: dict[str, Any]

    @property
    def parity(self) -> dict[str, Any]:
        return self.manifest["parity"]


def build(request: BuildRequest, store: BentoStore, progress: Progress = lambda _msg: None) -> BuildResult:
    config = request.config
    model_path = _resolve(request.model_path, config.model, request.config_dir, "model")
    if model_path is None:
        raise BentoCompileError("No model given.", "Pass the model file: bento-compile build model.joblib.")
    name = request.name or config.name or _name_from(model_path)
    if not is_bento_name(name):
        raise BentoCompileError(f"'{name}' is not a valid Bento name.",
                                "Use lowercase letters, digits, '.', '_' or '-' (e.g. --name churn).")
    tolerance = config.parity.tolerance if request.tolerance is None else request.tolerance
    override = [TensorSpec(s.name, s.dtype, tuple(s.shape)) for s in config.inputs] if config.inputs else None

    if request.quantize or request.format:
        config = _with_overrides(config, request)
    progress(f"Converting {model_path.name}")
    source = load_source(model_path, override, _resolve(request.sample_path, config.sample, request.config_dir,
                                                        "sample"))
    if getattr(source, "artifact_format", "onnx") != "onnx":  # .tflite / .ort inputs, Keras → TFLite
        from bento_compile.compiler.formats_build import build_edge

        return build_edge(request, config, source, name, store, progress)
    progress(f"Checking and optimizing the ONNX graph ({source.description})")
    checked = passes.check_and_infer(source.model)
    opsets = passes.check_opsets(checked)
    optimized = passes.optimize(checked)
    _, outputs = model_signature(onnx.load_from_string(optimized))
    inputs = source.inputs

    sample_path = _resolve(request.sample_path, config.sample, request.config_dir, "sample")
    if sample_path is not None:
        feeds, sample_source = load_sample(sample_path, inputs), f"file:{sample_path.name}"
    else:
        feeds, sample_source = synthesize(inputs), "synthetic"
        progress("No --sample given: checking parity on synthetic standard-normal rows derived from the "
                 "input signature (pass real rows with --sample for a meaningful check)")
    progress(f"Checking parity on {_rows(feeds)} rows")
    report = _parity(source, optimized, feeds, outputs, tolerance, config.parity.label_agreement, sample_source)
    if not report["passed"]:
        raise ParityError(report)

    shipped, quantization = optimized, None
    if config.quantize.method != "none":
        from bento_compile.compiler.quantize import quantize_onnx

        calibration = _resolve(None, config.quantize.calibration, request.config_dir, "calibration")
        shipped, quantization, report = quantize_onnx(config, source, optimized, feeds, outputs, inputs,
                                                      calibration, report, sample_source, progress)
    files = {MODEL_FILE: shipped}
    if config.format == "ort":
        from bento_compile.compiler.model_formats import to_ort_checked

        progress("Converting to the ONNX Runtime format (.ort) with its operator config")
        files = to_ort_checked(shipped, feeds, outputs)

    progress("Writing the Bento")
    with store.staging() as staged:
        for file_name, data in files.items():
            (staged / file_name).write_bytes(data)
        manifest = _manifest(name, source, inputs, outputs, opsets, files, report, feeds, config,
                             quantization=quantization)
        write_json_atomic(staged / MANIFEST_NAME, manifest)
        path, created_new = store.commit(staged, name, manifest["version"])
    stored = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
    return BuildResult(tag=f"{name}:{manifest['version']}", path=path, created_new=created_new, manifest=stored)


def _resolve(cli: Path | None, from_config: str | None, config_dir: Path | None, what: str) -> Path | None:
    if cli is not None:
        return Path(cli)
    if from_config:
        return (config_dir or Path.cwd()) / from_config
    return None


def _name_from(path: Path) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower()).strip("-._")
    return name or "model"


def _rows(feeds: dict[str, np.ndarray]) -> int:
    return len(next(iter(feeds.values())))


def _parity(source, optimized: bytes, feeds, outputs: list[TensorSpec], tolerance: float,
            label_agreement: float, sample_source: str) -> dict[str, Any]:
    import onnxruntime as ort

    names = [o.name for o in outputs]
    session = ort.InferenceSession(optimized, providers=["CPUExecutionProvider"])
    try:
        compiled = dict(zip(names, session.run(names, feeds), strict=True))
    except Exception as exc:
        raise BentoCompileError(f"The compiled model fails on the sample: {exc}",
                                "Check the sample's columns and dtypes match the model's inputs.") from None
    try:
        reference = source.reference(feeds, names)
    except Exception as exc:
        raise BentoCompileError(f"The original model fails on the sample: {type(exc).__name__}: {exc}",
                                "Check the sample holds rows like the training data.") from None
    return parity.compare(reference, compiled, tolerance, label_agreement, _rows(feeds), sample_source)


def _with_overrides(config: BentoConfig, request: BuildRequest) -> BentoConfig:
    """CLI --quantize / --format win over bento.yaml (validated by the same schema)."""
    data = config.model_dump()
    if request.quantize:
        data["quantize"]["method"] = request.quantize
    if request.format:
        data["format"] = request.format
    return BentoConfig.model_validate(data)


def _manifest(name: str, source, inputs: list[TensorSpec], outputs: list[TensorSpec], opsets: dict[str, int] | None,
              files: dict[str, bytes], report: dict[str, Any], feeds, config: BentoConfig,
              quantization: dict[str, Any] | None = None, model_file: str | None = None,
              model_format: str | None = None) -> dict[str, Any]:
    import onnxruntime

    model_file = model_file or next(iter(files))
    model_format = model_format or Path(model_file).suffix.lstrip(".")
    content: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "name": name,
        "model": {
            "file": model_file,
            "format": model_format,
            "inputs": [s.to_dict() for s in inputs],
            "outputs": [s.to_dict() for s in outputs],
            "opsets": opsets,
            "batchable": has_free_batch_axis(inputs),
        },
        "files": {file_name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                  for file_name, data in sorted(files.items())},
        "source": {"kind": source.kind, "description": source.description, "sha256": source.file_sha256},
        "parity": report,
        "example": example_payload(feeds),
        "runtime": config.runtime.model_dump(),
        "targets": config.targets,  # per-target settings (e.g. targets.lambda) travel with the Bento
        "config_sha256": hashlib.sha256(config.model_dump_json().encode()).hexdigest(),
        "versions": {
            "bento_compile": __version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
            **source.converter_versions,
        },
    }
    if quantization is not None:
        content["quantization"] = quantization
    if opsets is None:
        del content["model"]["opsets"]
    digest = hashlib.sha256(json.dumps(_hashable(content), sort_keys=True, separators=(",", ":")).encode()
                            ).hexdigest()
    return {**content, "version": digest[:16], "created": _created()}


def _hashable(content: dict[str, Any]) -> dict[str, Any]:
    """The manifest without measured latencies: they vary run to run, the Bento's content does not."""
    if "quantization" not in content:
        return content
    variants = [{k: v for k, v in row.items() if not k.startswith("latency_")}
                for row in content["quantization"]["variants"]]
    return {**content, "quantization": {**content["quantization"], "variants": variants}}


def _created() -> str:
    """Build time, or SOURCE_DATE_EPOCH for reproducible builds."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (_dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch
              else _dt.datetime.now(_dt.timezone.utc))
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")
