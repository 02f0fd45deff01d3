"""The frontend for ONNX files: the model as it is, checked against itself run without optimizations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from bento_compile.compiler.signature import model_signature, with_overrides
from bento_compile.compiler.source import Feeds, Source
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import TensorSpec, sha256_file

ONNX_SUFFIXES = (".onnx",)


def load_onnx(path: Path, input_override: list[TensorSpec] | None) -> Source:
    """An ONNX file as it is; its reference is the file itself run without graph optimizations."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise BentoCompileError(f"{path} is not a readable ONNX model ({exc}).",
                                "Export the model again with onnx.save / torch.onnx.export.") from None
    try:
        inputs, _ = model_signature(model)
    except ValueError as exc:
        raise BentoCompileError(f"{path}: {exc}", "") from None
    if input_override:  # bento.yaml `inputs:` replaces the entries it names; the graph's others stay
        _check_override_names(input_override, inputs, path)
        inputs = with_overrides(inputs, input_override)
    raw = model.SerializeToString()

    def reference(feeds: Feeds, output_names: list[str]) -> dict[str, np.ndarray]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(raw, options, providers=["CPUExecutionProvider"])
        return dict(zip(output_names, session.run(output_names, feeds), strict=True))

    return Source(kind="onnx", model=model, inputs=inputs, reference=reference,
                  description=f"ONNX model (producer: {model.producer_name or 'unknown'} "
                  f"{model.producer_version}".rstrip() + ")",
                  file_sha256=sha256_file(path))


def _check_override_names(override: list[TensorSpec], actual: list[TensorSpec], path: Path) -> None:
    names = {s.name for s in actual}
    unknown = [s.name for s in override if s.name not in names]
    if unknown:
        raise BentoCompileError(
            f"bento.yaml declares input '{unknown[0]}' but {path.name} has inputs: {', '.join(sorted(names))}.",
            "Use the model's input names in `inputs:`.")

