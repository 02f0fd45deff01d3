"""Which kind of model file a Bento holds: the one answer every target and the runtime use.

The manifest records `model.format`; Bentos written before that field existed are read by the
model file's suffix, and anything else is ONNX (the first and default format).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from bento_compile.runtimes.manifest import Manifest

MODEL_FORMATS = ("onnx", "ort", "tflite")
ONNX_RUNTIME_FORMATS = ("onnx", "ort")  # served by ONNX Runtime; tflite by LiteRT / tflite-runtime


def model_format_of(manifest: Manifest) -> str:
    """The Bento's model format: `model.format`, else the model file's suffix when it names one, else onnx."""
    recorded = manifest.model.format
    if recorded:
        return str(recorded)
    suffix = PurePosixPath(manifest.model_file).suffix.lstrip(".")
    return suffix if suffix in MODEL_FORMATS else "onnx"
