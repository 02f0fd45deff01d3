"""What a frontend returns: the contract between the `*_frontend.py` modules and the two builds.

A frontend reads a user's model file and returns one of:
- `Source`: an ONNX model plus a `reference` callable that runs the ORIGINAL
  model on the same feeds, so the parity check compares the compiled artifact
  with what the user trained, not with itself (compiler/build.py);
- `NativeSource`: a model that ships in its own format (.tflite, .ort), run
  through the runtime's own backend for the checks (compiler/formats_build.py).

Frontends import this module, never the dispatcher (compiler/frontends.py),
which imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import TensorSpec

if TYPE_CHECKING:
    import onnx

    from bento_compile.compiler.quantize import Variant

Feeds = dict[str, np.ndarray]
Reference = Callable[[Feeds, list[str]], dict[str, np.ndarray]]
Runner = Callable[[Feeds], dict[str, np.ndarray]]


@dataclass
class Source:
    """A model converted to ONNX, with the original kept to check it against."""

    kind: str  # recorded as source.kind: sklearn | onnx | torch | lightgbm | xgboost ...
    model: onnx.ModelProto
    inputs: list[TensorSpec]
    reference: Reference
    description: str
    file_sha256: str
    converter_versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # The column names a model fitted on a DataFrame learned (`feature_names_in_`), in input order: batch
    # scoring takes a table's columns by these names. None when the model was fitted on a plain array.
    feature_names: list[str] | None = None
    artifact_format: str = "onnx"  # what build.py dispatches on; a NativeSource says tflite or ort
    class_labels: list[str] | None = None  # a classifier's classes_ (names for `outputs:` labels)


@dataclass
class NativeSource:
    """A model that ships in its own format (.tflite / .ort): the ONNX path's `Source` for formats_build."""

    kind: str
    artifact_format: str  # "tflite" | "ort"
    data: bytes
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    runner_factory: Callable[[bytes], Runner]
    description: str
    file_sha256: str
    reference: Reference | None = None  # None: served as given, nothing to compare with
    variant_factory: Callable[[Any, Feeds], list[Variant]] | None = None  # quantized variants to gate
    converter_versions: dict[str, str] = field(default_factory=dict)
    extra_files: dict[str, bytes] = field(default_factory=dict)  # shipped beside the model
    keep_alive: Any = None  # e.g. the temporary folder a converter wrote into
    feature_names: list[str] | None = None


AnySource = Source | NativeSource


def describe(obj: Any) -> str:
    """A short, stable description of an estimator for the manifest."""
    return type(obj).__module__.split(".")[0] + "." + type(obj).__name__


def check_signature_override(override: list[TensorSpec] | None, actual: list[TensorSpec], path: Path) -> None:
    """bento.yaml `inputs:` for a file that carries its own signature must name the same inputs and dtypes."""
    if not override:
        return
    if [(s.name, s.dtype) for s in override] != [(s.name, s.dtype) for s in actual]:
        have = ", ".join(f"{s.name} ({s.dtype}, {list(s.shape)})" for s in actual)
        raise BentoCompileError(f"bento.yaml `inputs:` does not match {path.name}, which takes: {have}.",
                                "Remove `inputs:` (the file's own signature is used) or make it match.")
