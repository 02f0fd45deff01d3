"""ONNX → ONNX Runtime format (`.ort`) with the operator configuration a reduced build needs.

Runs onnxruntime's own converter (`python -m onnxruntime.tools.convert_onnx_models_to_ort`)
in a subprocess, in the "Runtime" optimization style: basic (portable)
optimizations are applied now, the platform-specific ones are saved to be
replayed on the device, so the same `.ort` is valid on x86_64 and arm64.
`--enable_type_reduction` makes the config list the types each operator needs,
which lets a reduced ONNX Runtime build (`build.sh --minimal_build
--include_ops_by_config required_operators.config`) drop the rest.

The converter writes absolute temporary paths into the config's comment lines;
we replace them with a fixed header so the Bento stays content-addressed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bento_compile.core.errors import BentoCompileError

ORT_FILE = "model.ort"
OPS_CONFIG_FILE = "required_operators.config"


def to_ort(onnx_bytes: bytes, timeout_s: float = 300) -> dict[str, bytes]:
    """Convert; return {"model.ort": ..., "required_operators.config": ...}."""
    with tempfile.TemporaryDirectory(prefix="bento-ort-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "model.onnx").write_bytes(onnx_bytes)
        out = tmp / "out"
        # Relative paths, a fixed environment and no address randomization: see _fixed_address_space.
        cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", "--optimization_style",
               "Runtime", "--enable_type_reduction", "--output_dir", "out", "model.onnx"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=tmp,
                                env=_converter_env(), preexec_fn=_fixed_address_space)
        models = sorted(out.glob("*.ort")) if out.is_dir() else []
        configs = sorted(out.glob("*.with_runtime_opt.config")) or (sorted(out.glob("*.config")) if models else [])
        if result.returncode != 0 or not models or not configs:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise BentoCompileError(
                "onnxruntime could not convert the model to the .ort format: " + " ".join(tail),
                "Keep format: onnx (the ONNX Runtime backend serves .onnx everywhere), or check that every "
                "operator is one ONNX Runtime's CPU provider implements.")
        config = _deterministic_config(configs[0].read_text(encoding="utf-8"))
        return {ORT_FILE: models[0].read_bytes(), OPS_CONFIG_FILE: config.encode()}


def _converter_env() -> dict[str, str]:
    """The converter's whole environment: the same on every build (its size moves the heap, see below)."""
    keep = ("LD_LIBRARY_PATH", "SYSTEMROOT")  # what a Python may need to start at all
    return {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
            **{key: os.environ[key] for key in keep if key in os.environ}}


def _fixed_address_space() -> None:
    """In the converter's process, before exec: turn address-space randomization off.

    ONNX Runtime's serializer writes some maps (a kernel's type-constraint names, e.g. T1/T2/Z) in the
    order of an abseil hash table, and abseil seeds its hash with an address: under ASLR every
    conversion ordered them differently, so the same model gave a new .ort (and a new Bento version)
    each build. With randomization off (the personality survives exec), the same argv and the same
    environment, the same installation gives the same bytes; another installation (other paths,
    other versions) may order them differently, as it may optimize differently. Where the call is
    refused (a seccomp profile), the conversion still runs, only not byte-reproducibly.
    """
    if sys.platform != "linux":
        return
    import ctypes

    addr_no_randomize = 0x0040000
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        current = libc.personality(0xFFFFFFFF)
        if current != -1:
            libc.personality(current | addr_no_randomize)
    except (OSError, AttributeError):
        pass


def ops_config_for_ort(data: bytes) -> bytes | None:
    """required_operators.config for an existing .ort file (onnxruntime's own ORT-format model reader)."""
    try:
        from onnxruntime.tools.ort_format_model.utils import create_config_from_models
    except ImportError:  # an onnxruntime wheel without the tools
        return None
    with tempfile.TemporaryDirectory(prefix="bento-ort-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / ORT_FILE).write_bytes(data)
        try:
            create_config_from_models([tmp / ORT_FILE], tmp / OPS_CONFIG_FILE, enable_type_reduction=True)
        except Exception:  # an .ort from an older schema: serve it, just without the config
            return None
        text = (tmp / OPS_CONFIG_FILE).read_text(encoding="utf-8")
        return _deterministic_config(text, "read from the .ort file").encode()


def _deterministic_config(text: str, how: str = "optimization style: Runtime") -> str:
    body = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    header = ["# Operators (and types) this model needs; build a reduced ONNX Runtime with",
              "#   ./build.sh --minimal_build --include_ops_by_config required_operators.config "
              "--enable_reduced_operator_type_support",
              f"# Generated by bento-compile with onnxruntime's tools ({how})."]
    return "\n".join(header + body) + "\n"


def ort_signature(data: bytes):
    """Inputs and outputs of an .ort model, read through an ONNX Runtime session."""
    import onnxruntime as ort

    from bento_compile.runtimes.manifest import TensorSpec

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])

    def spec(value) -> TensorSpec:
        dtype = _ORT_TYPES.get(value.type)
        if dtype is None:
            raise BentoCompileError(f"The .ort model's '{value.name}' has type {value.type}, which the runtime "
                                    "does not serve.", "Serve tensors of float, int or string types.")
        return TensorSpec(value.name, dtype, tuple(d if isinstance(d, int) and d >= 0 else None
                                                   for d in value.shape))

    return [spec(v) for v in session.get_inputs()], [spec(v) for v in session.get_outputs()]


_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
              "tensor(uint64)": "uint64", "tensor(uint32)": "uint32", "tensor(uint16)": "uint16",
              "tensor(uint8)": "uint8", "tensor(bool)": "bool", "tensor(string)": "string"}


def to_ort_checked(onnx_bytes: bytes, feeds, outputs) -> dict[str, bytes]:
    """Convert, then prove the .ort answers like the .onnx it came from on the sample."""
    import numpy as np
    import onnxruntime as ort

    files = to_ort(onnx_bytes)
    names = [o.name for o in outputs]
    before = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]).run(names, feeds)
    after = ort.InferenceSession(files[ORT_FILE], providers=["CPUExecutionProvider"]).run(names, feeds)
    for name, a, b in zip(names, before, after, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        same = np.array_equal(a, b) if a.dtype.kind in "OUSbiu" else np.allclose(a, b, rtol=1e-5, atol=1e-5,
                                                                                  equal_nan=True)
        if not same:
            raise BentoCompileError(f"The .ort model answers differently from the .onnx on output '{name}'.",
                                    "Keep format: onnx and report the model to the bento-compile team.")
    return files
