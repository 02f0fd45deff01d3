"""The ONNX Runtime backend: one InferenceSession, created with deliberate settings.

Thread settings (the whole plan is in runtimes/threads.py): one intra-op thread by default.
A serving process gets its parallelism from concurrent requests and batching, and on small
machines ONNX Runtime's default of one spinning thread per core fights the HTTP server for
the same cores (measured on 2 cores: scikit-learn-sized models lose nothing with one
thread). Raise `runtime.intra_op_threads` in bento.yaml for large models (0 = all CPUs but
the event loop's). Spinning is off: an idle server must not burn a core waiting for work.

Providers: `device` picks them (runtimes/providers.py); `providers` reports the ones the
session really uses, never the ones the wheel merely lists.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bento_compile.runtimes.errors import InputError
from bento_compile.runtimes.providers import device_in_use, requested_providers

log = logging.getLogger("bento_compile.runtime")


class OnnxBackend:
    """Runs an ONNX (or .ort) model with ONNX Runtime on the requested providers."""

    def __init__(self, model_path: Path, intra_op_threads: int = 1, providers: list[str] | None = None,
                 device: str = "auto"):
        import onnxruntime as ort  # imported here: the import itself is part of the measured load time

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, intra_op_threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.requested_providers = providers or requested_providers(device, ort.get_available_providers())
        if self.requested_providers[0] != "CPUExecutionProvider":
            _preload_cuda_libraries(ort)
        self.session = ort.InferenceSession(str(model_path), sess_options=options,
                                            providers=self.requested_providers)
        self.output_names = [o.name for o in self.session.get_outputs()]
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        # What ONNX Runtime raises when the feeds are wrong for the graph (an index out of range, a whole
        # tensor whose size does not fit the batch): the client's mistake, answered 422 with its message.
        self._input_faults = (state.InvalidArgument, state.Fail, state.RuntimeException)
        self.runtime_versions = {"onnxruntime_runtime": ort.__version__}
        self.intra_op_threads = intra_op_threads
        used = self.providers
        if self.requested_providers[0] not in used:
            log.warning("asked ONNX Runtime for %s but the session runs on %s (missing CUDA/cuDNN libraries, "
                        "or no GPU): serving on the CPU", self.requested_providers[0], ",".join(used))

    @property
    def providers(self) -> list[str]:
        """The providers the session really uses (not the ones the wheel merely lists)."""
        return list(self.session.get_providers())

    @property
    def device(self) -> str:
        return device_in_use(self.providers)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(self.output_names, feeds)
        except self._input_faults as exc:
            raise InputError(f"the model cannot run on these inputs: {_engine_message(exc)}") from None
        return dict(zip(self.output_names, values, strict=True))


def _engine_message(exc: Exception) -> str:
    """ONNX Runtime's message without its status prefix and source paths, bounded."""
    text = str(exc).split(" : ", 2)[-1].strip()
    return text[:500]


def _preload_cuda_libraries(ort) -> None:
    """Load CUDA / cuDNN from pip's nvidia-* packages when they are installed (onnxruntime-gpu >= 1.21
    looks for them there only when asked): images that install CUDA with pip, not in /usr/lib, then work
    without LD_LIBRARY_PATH. Harmless when the libraries come from the system instead."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload(cuda=True, cudnn=True, msvc=False)
    except Exception as exc:  # the session will fall back to the CPU and say so
        log.warning("could not preload the CUDA libraries from pip packages: %s", exc)
