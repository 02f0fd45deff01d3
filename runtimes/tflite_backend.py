"""The TFLite backend: LiteRT's interpreter behind the same Backend interface as ONNX Runtime.

`ai_edge_litert` (the maintained successor, py3.11+, numpy 2) is tried first,
then `tflite_runtime` (2.14 is its last release: py ≤ 3.11, numpy < 2), so a
device image can carry whichever wheel exists for its Python and CPU.

Batching: a TFLite model has a fixed batch size unless its shape signature
marks the batch axis -1. With a free axis the input is resized to the request's
rows and run once; with a batch axis of 1 the rows are run one by one. Either
way the HTTP contract is the one ONNX models have: rows in, rows out. A model
whose inputs are neither (a fixed first axis other than 1, a scalar) takes whole
tensors: each input exactly as the model declares it, one invocation a request.

Quantized tensors (int8/uint8 with a scale and zero point) are converted at
the edges, so clients always send and receive real numbers.

An interpreter is not thread-safe: one lock serializes invocations.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from bento_compile.runtimes.errors import IntegrityError


def interpreter_class() -> tuple[Any, str, str]:
    """(Interpreter class, package name, version): ai_edge_litert first, tflite_runtime as the fallback."""
    try:
        from ai_edge_litert import interpreter as litert

        return litert.Interpreter, "ai_edge_litert", _version("ai-edge-litert")
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as tflite

        return tflite.Interpreter, "tflite_runtime", _version("tflite-runtime")
    except ImportError:
        raise IntegrityError(
            "this Bento holds a .tflite model but neither ai-edge-litert nor tflite-runtime is installed: "
            "pip install ai-edge-litert (Python 3.11-3.13) or tflite-runtime (Python <= 3.11, numpy < 2)"
        ) from None


def _version(distribution: str) -> str:
    try:
        from importlib.metadata import version

        return version(distribution)
    except Exception:
        return "unknown"


class TFLiteBackend:
    """Runs a .tflite model; input and output names come from its signature when it has one."""

    def __init__(self, model_path: Path | None = None, threads: int = 1, model_content: bytes | None = None):
        cls, package, version = interpreter_class()
        kwargs: dict[str, Any] = {"num_threads": max(1, threads)}
        if model_content is not None:
            kwargs["model_content"] = model_content
        else:
            kwargs["model_path"] = str(model_path)
        self.interpreter = cls(**kwargs)
        self.interpreter.allocate_tensors()
        self._lock = threading.Lock()
        self.runtime_versions = {package: version}
        self._inputs, self._outputs = self._tensor_names()
        self.input_names = [name for name, _ in self._inputs]
        self.output_names = [name for name, _ in self._outputs]
        self._batch_rows = {d["index"]: int(d["shape"][0]) if len(d["shape"]) else 1 for _, d in self._inputs}
        self.free_batch = bool(self._inputs) and all(
            len(d["shape_signature"]) and d["shape_signature"][0] == -1 for _, d in self._inputs)

    def _tensor_names(self) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
        """Pairs of (public name, tensor details), from the first signature or else the tensors' own names."""
        by_index_in = {d["index"]: d for d in self.interpreter.get_input_details()}
        by_index_out = {d["index"]: d for d in self.interpreter.get_output_details()}
        signatures = self.interpreter.get_signature_list()
        if signatures:
            key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
            runner = self.interpreter.get_signature_runner(key)
            ins = runner.get_input_details()
            outs = runner.get_output_details()
            if all(d["index"] in by_index_in for d in ins.values()) and all(
                    d["index"] in by_index_out for d in outs.values()):
                return ([(n, by_index_in[d["index"]]) for n, d in ins.items()],
                        [(n, by_index_out[d["index"]]) for n, d in sorted(outs.items())])
        return ([(d["name"], d) for d in self.interpreter.get_input_details()],
                [(d["name"], d) for d in self.interpreter.get_output_details()])

    def specs(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The signature as the manifest records it (batch axis free when rows can be stacked or looped)."""

        rows = self.free_batch or self._loopable()

        def spec(name: str, d: dict) -> dict[str, Any]:
            shape = [None if s == -1 else int(s) for s in d["shape_signature"]] or [int(s) for s in d["shape"]]
            batch = bool(rows and shape and shape[0] in (1, None))
            if batch:
                shape[0] = None
            return {"name": name, "dtype": _public_dtype(d), "shape": shape, "batch": batch}

        return [spec(n, d) for n, d in self._inputs], [spec(n, d) for n, d in self._outputs]

    def _loopable(self) -> bool:
        return bool(self._inputs) and all(len(d["shape"]) and rows == 1 for (_, d), rows in
                                          zip(self._inputs, self._batch_rows.values(), strict=True)) and all(
            len(d["shape"]) and d["shape"][0] == 1 for _, d in self._outputs)

    @property
    def providers(self) -> list[str]:
        return [f"{next(iter(self.runtime_versions))} (CPU)"]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self.free_batch or not self._loopable():
                return self._invoke(feeds, resize=self.free_batch)
            rows = len(next(iter(feeds.values())))
            parts = [self._invoke({k: v[i : i + 1] for k, v in feeds.items()}, resize=False) for i in range(rows)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def _invoke(self, feeds: dict[str, np.ndarray], resize: bool) -> dict[str, np.ndarray]:
        interp = self.interpreter
        if resize:
            changed = False
            for name, d in self._inputs:
                shape = list(feeds[name].shape)
                if list(interp.get_input_details()[self._position(d)]["shape"]) != shape:
                    interp.resize_tensor_input(d["index"], shape, strict=False)
                    changed = True
            if changed:
                interp.allocate_tensors()
        for name, d in self._inputs:
            interp.set_tensor(d["index"], _to_tensor(feeds[name], d))
        interp.invoke()
        return {name: _from_tensor(interp.get_tensor(d["index"]), d) for name, d in self._outputs}

    def _position(self, detail: dict) -> int:
        for i, d in enumerate(self.interpreter.get_input_details()):
            if d["index"] == detail["index"]:
                return i
        raise KeyError(detail["index"])


def _public_dtype(detail: dict) -> str:
    """What clients send/receive: real numbers for quantized tensors."""
    dtype = np.dtype(detail["dtype"])
    scale, _zero = detail.get("quantization", (0.0, 0))
    if dtype.kind in "iu" and scale:
        return "float32"
    return dtype.name


def _to_tensor(value: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(value.astype(np.float32) / scale + zero), info.min, info.max).astype(dtype)
    return np.ascontiguousarray(value, dtype=dtype)


def _from_tensor(value: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return ((value.astype(np.float32) - zero) * scale).astype(np.float32)
    return value.copy()
