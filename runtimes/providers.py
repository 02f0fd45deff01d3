"""Execution providers: what `runtime.device` asks for, and what the session really got.

`onnxruntime-gpu` lists CUDA in `get_available_providers()` even on a machine without a
GPU or without the CUDA libraries, and a CUDA session then silently runs on the CPU. So we
ask for a provider list with the CPU last (ONNX Runtime's fallback), and always report
`session.get_providers()` afterwards: that is what serves the requests.
"""

from __future__ import annotations

import logging

log = logging.getLogger("bento_compile.runtime")

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


def requested_providers(device: str, available: list[str]) -> list[str]:
    """The provider list to open a session with, CPU always last as the fallback.

    auto: TensorRT is not tried (its engine build takes minutes on first load); CUDA when the
    wheel has it. cuda / tensorrt on a CPU-only wheel: warn and serve on the CPU rather than
    refuse, so one artifact runs on both kinds of node; /metadata tells which one it got.
    """
    if device not in DEVICES:
        raise ValueError(f"runtime.device must be one of {DEVICES}, got {device!r}")
    wanted: list[str] = []
    if device == "tensorrt":
        wanted = [TENSORRT, CUDA]
    elif device in ("cuda", "auto"):
        wanted = [CUDA]
    chosen = [p for p in wanted if p in available]
    if device in ("cuda", "tensorrt") and not chosen:
        log.warning("runtime.device is %s but this onnxruntime has no %s (available: %s); serving on the CPU. "
                    "Install onnxruntime-gpu (instead of onnxruntime) on a machine with CUDA.",
                    device, " or ".join(wanted), ", ".join(available))
    return [*chosen, CPU]


def device_in_use(providers: list[str]) -> str:
    """The device the session's first provider runs on, for logs and metrics labels."""
    first = providers[0] if providers else CPU
    return {CUDA: "cuda", TENSORRT: "tensorrt"}.get(first, "cpu")
