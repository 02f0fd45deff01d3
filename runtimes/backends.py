"""Choosing the inference backend from the manifest's model format.

One place decides, so every adapter gets the same backend for the same Bento:
ONNX Runtime for `.onnx` / `.ort`; other formats register here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from bento_compile.runtimes.errors import IntegrityError
from bento_compile.runtimes.manifest import Manifest, effective_settings
from bento_compile.runtimes.model_format import ONNX_RUNTIME_FORMATS, model_format_of
from bento_compile.runtimes.monitoring import monitored
from bento_compile.runtimes.threads import ThreadPlan, plan_threads


class Backend(Protocol):
    output_names: list[str]

    @property
    def providers(self) -> list[str]: ...

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def device_setting(manifest: Manifest) -> str:
    """`runtime.device`, overridden by env BENTO_COMPILE_DEVICE (run one artifact on CPU or GPU nodes)."""
    return os.environ.get("BENTO_COMPILE_DEVICE") or manifest.runtime.device


def thread_plan(manifest: Manifest) -> ThreadPlan:
    """Intra-op threads and inference workers for this Bento on this machine (see runtimes/threads.py)."""

    batching = effective_settings(manifest.runtime.batching).mode != "off" and manifest.batchable
    return plan_threads(manifest.runtime.intra_op_threads, batching)


def open_backend(bento_dir: Path, manifest: Manifest, intra_op_threads: int | None = None) -> Backend:
    """The session for this Bento's model format. `intra_op_threads` overrides the serving plan: batch
    scoring runs several worker processes and gives each its share of the CPUs."""
    # Every adapter and the batch engine open their session here, so drift monitoring wraps it here
    # (the bare session when monitoring is off: runtimes/monitoring.py).
    return monitored(_open_session(bento_dir, manifest, intra_op_threads), manifest)


def _open_session(bento_dir: Path, manifest: Manifest, intra_op_threads: int | None) -> Backend:
    kind = model_format_of(manifest)
    path = Path(bento_dir) / manifest.model_file
    threads = intra_op_threads if intra_op_threads is not None else thread_plan(manifest).intra_op_threads
    if kind in ONNX_RUNTIME_FORMATS:
        from bento_compile.runtimes.onnx_backend import OnnxBackend

        return OnnxBackend(path, threads, device=device_setting(manifest))
    if kind == "tflite":
        from bento_compile.runtimes.tflite_backend import TFLiteBackend

        return TFLiteBackend(path, threads)
    raise IntegrityError(f"model format '{kind}' is not served by this runtime version")
