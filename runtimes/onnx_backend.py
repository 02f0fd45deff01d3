"""The ONNX Runtime backend: one InferenceSession, created with deliberate settings.

Thread settings: one intra-op thread by default. A serving process gets its
parallelism from concurrent requests (and batching), and on small machines
ONNX Runtime's default of one spinning thread per core fights the HTTP server
for the same cores (measured on 2 cores: scikit-learn-sized models lose nothing
with one thread). Raise `runtime.intra_op_threads` in bento.yaml for large models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class OnnxBackend:
    """Runs an ONNX (or .ort) model with ONNX Runtime on the requested providers."""

    def __init__(self, model_path: Path, intra_op_threads: int = 1, providers: list[str] | None = None):
        import onnxruntime as ort  # imported here: the import itself is part of the measured load time

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, intra_op_threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No spinning: an idle server should not burn a core waiting for work.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.runtime_versions = {"onnxruntime_runtime": ort.__version__}

    @property
    def providers(self) -> list[str]:
        """The providers the session really uses (not the ones the wheel merely lists)."""
        return list(self.session.get_providers())

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, values, strict=True))
