"""Choosing the inference backend from the manifest's model format.

One place decides, so every adapter gets the same backend for the same Bento:
ONNX Runtime for `.onnx` / `.ort`; other formats register here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import IntegrityError
from .manifest import Manifest


class Backend(Protocol):
    output_names: list[str]

    @property
    def providers(self) -> list[str]: ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def open_backend(bento_dir: Path, manifest: Manifest) -> Backend:
    model_format = manifest.raw.get("model", {}).get("format", "onnx")
    path = Path(bento_dir) / manifest.model_file
    if model_format in ("onnx", "ort"):
        from .onnx_backend import OnnxBackend

        return OnnxBackend(path, manifest.runtime.intra_op_threads)
    raise IntegrityError(f"model format '{model_format}' is not served by this runtime version")
