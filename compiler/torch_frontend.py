"""PyTorch → ONNX with `torch.onnx.export`, the original module as the parity reference (extra `[torch]`).

Accepted files (`.pt`, `.pth`):
- TorchScript (`torch.jit.save(torch.jit.script(m) or torch.jit.trace(m, x), path)`): no pickle involved;
- a whole module (`torch.save(module, path)`) or a checkpoint dict
  `torch.save({"model": module, "example_input": x}, path)`: these ARE pickles,
  loaded here, at compile time only (`weights_only=False`), like a joblib file.
  The served artifact is ONNX; nothing is unpickled at serving time.

The input signature comes from bento.yaml `inputs:` (the batch axis free, the
other axes concrete), or from the checkpoint's `example_input`. The exporter
runs with the TorchScript-based path (`dynamo=False`: it needs no onnxscript
and also exports TorchScript modules) and a dynamic batch axis on every input
and output.

Use the CPU build of torch: `pip install torch==2.13.0` (an unpinned torch pulls
a multi-GB CUDA build).
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bento_compile.compiler.source import Feeds, Source
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import TensorSpec, sha256_file

TORCH_SUFFIXES = (".pt", ".pth")
EXPORT_OPSET = 17
EXTRA_HINT = ("pip install 'bento-compile[torch]' (the CPU build: torch==2.13.0; an unpinned torch pulls a "
              "multi-GB CUDA build)")
_TORCH_DTYPES = {"float32": "float32", "float64": "float64", "int64": "int64", "int32": "int32", "bool": "bool"}


def load_torch(path: Path, input_override: list[TensorSpec] | None, sample_path: Path | None = None) -> Source:
    try:
        import torch
    except ImportError:
        raise BentoCompileError(f"{path.name} is a PyTorch model, and converting it needs torch.",
                                EXTRA_HINT) from None
    module, example, scripted = _load(torch, path)
    if input_override:
        inputs = input_override
        example = tuple(_example_tensor(torch, spec) for spec in inputs)
    elif example is not None:
        example = example if isinstance(example, tuple) else (example,)
        inputs = [_spec_from_tensor(i, t, len(example)) for i, t in enumerate(example)]
    elif sample_path is not None and Path(sample_path).suffix.lower() == ".npy" and Path(sample_path).is_file():
        inputs = [_spec_from_sample(Path(sample_path))]
        example = tuple(_example_tensor(torch, spec) for spec in inputs)
    else:
        raise BentoCompileError(
            f"{path.name} does not say what input the module takes.",
            "Declare it in bento.yaml, e.g. inputs: [{name: input, dtype: float32, shape: [null, 20]}], pass a "
            ".npy --sample (its rows' shape is used), or save torch.save({'model': module, 'example_input': x}, "
            "path).")
    module.eval()
    with torch.no_grad():
        try:
            probe = module(*example)
        except Exception as exc:
            raise BentoCompileError(f"The module fails on an input shaped like the declared inputs "
                                    f"({[tuple(t.shape) for t in example]}): {type(exc).__name__}: {exc}",
                                    "Fix `inputs:` in bento.yaml (shape and dtype) to match forward().") from None
    output_names = _output_names(probe)
    model = _export(torch, module, example, [s.name for s in inputs], output_names)
    return Source(
        kind="torch",
        model=model,
        inputs=inputs,
        reference=lambda feeds, names: _reference(torch, module, feeds, names, inputs, output_names),
        description=f"PyTorch {'TorchScript ' if scripted else ''}{type(module).__name__}",
        file_sha256=sha256_file(path),
        converter_versions={"torch": torch.__version__},
    )


def _load(torch: Any, path: Path) -> tuple[Any, Any, bool]:
    """(module, example input or None, is TorchScript)."""
    if zipfile.is_zipfile(path) and _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu"), None, True
        except Exception as exc:
            raise BentoCompileError(f"{path.name} is not a loadable TorchScript file ({exc}).",
                                    "Save it with torch.jit.save(torch.jit.script(model), path).") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=False)  # compile time only
    except (ModuleNotFoundError, AttributeError) as exc:
        raise BentoCompileError(f"{path} needs code that is not importable here ({exc}).",
                                "Make the module's class importable (install its package, or set PYTHONPATH), "
                                "or save TorchScript instead: torch.jit.save(torch.jit.script(model), path).") from None
    except Exception as exc:
        raise BentoCompileError(f"{path} cannot be loaded by torch.load ({type(exc).__name__}: {exc}).",
                                "Save the module with torch.save(model, path) or as TorchScript.") from None
    example = None
    if isinstance(obj, dict):
        if "model" not in obj:
            keys = ", ".join(sorted(map(str, obj))[:6])
            raise BentoCompileError(
                f"{path.name} holds a dict ({keys}...), probably a state_dict: weights without the module.",
                "Save the module itself: torch.save(model, path), torch.save({'model': model, 'example_input': x}, "
                "path), or TorchScript.")
        obj, example = obj["model"], obj.get("example_input")
    if not isinstance(obj, torch.nn.Module):
        raise BentoCompileError(f"{path.name} holds a {type(obj).__name__}, not a torch.nn.Module.",
                                "Save the module: torch.save(model, path).")
    return obj, example, False


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or name.endswith("/code/__torch__.py") or "/code/" in name
                   for name in archive.namelist())


def _example_tensor(torch: Any, spec: TensorSpec) -> Any:
    if any(d is None for d in spec.shape[1:]):
        raise BentoCompileError(f"Input '{spec.name}' has a free axis other than the batch axis ({list(spec.shape)}).",
                                "Give every axis but the first a size in bento.yaml `inputs:`.")
    shape = (2, *spec.shape[1:])
    if spec.dtype not in _TORCH_DTYPES:
        raise BentoCompileError(f"Input '{spec.name}' has dtype {spec.dtype}, which a torch module cannot take.",
                                "Use float32, float64, int64, int32 or bool.")
    if spec.dtype.startswith("float"):
        return torch.zeros(shape, dtype=getattr(torch, spec.dtype)).normal_()
    return torch.zeros(shape, dtype=getattr(torch, spec.dtype))


def _spec_from_sample(path: Path) -> TensorSpec:
    """One input shaped like the sample's rows; float samples are served as float32 (what modules expect)."""
    array = np.load(path, allow_pickle=False, mmap_mode="r")
    if array.ndim < 2:
        raise BentoCompileError(f"The sample {path.name} has shape {array.shape}: rows of what shape?",
                                "Declare inputs: in bento.yaml, e.g. [{name: input, dtype: float32, "
                                "shape: [null, N]}].")
    dtype = "float32" if array.dtype.kind == "f" else str(array.dtype)
    return TensorSpec("input", dtype, (None, *tuple(int(d) for d in array.shape[1:])))


def _spec_from_tensor(i: int, tensor: Any, count: int) -> TensorSpec:
    dtype = str(tensor.dtype).replace("torch.", "")
    if dtype not in _TORCH_DTYPES:
        raise BentoCompileError(f"example_input has dtype {dtype}.", "Use float32, float64, int64, int32 or bool.")
    name = "input" if count == 1 else f"input_{i}"
    return TensorSpec(name, dtype, (None, *tuple(int(d) for d in tensor.shape[1:])))


def _output_names(probe: Any) -> list[str]:
    if hasattr(probe, "shape"):
        return ["output"]
    if isinstance(probe, (tuple, list)) and all(hasattr(p, "shape") for p in probe):
        return [f"output_{i}" for i in range(len(probe))]
    raise BentoCompileError(f"forward() returns a {type(probe).__name__}; the served API needs tensors.",
                            "Return a tensor or a tuple of tensors from forward().")


def _export(torch: Any, module: Any, example: tuple, input_names: list[str], output_names: list[str]
            ) -> onnx.ModelProto:
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example, buffer, input_names=input_names, output_names=output_names,
                              dynamic_axes=axes, opset_version=EXPORT_OPSET, dynamo=False)
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        op = _unsupported_op(message)
        raise BentoCompileError(
            f"torch.onnx.export cannot export this module{f' (operator {op})' if op else ''}: {message}",
            "Replace that operation with one ONNX supports (see torch.onnx's supported operators), or export "
            "the model to ONNX yourself and build the .onnx file.") from None
    return onnx.load_from_string(buffer.getvalue())


def _unsupported_op(message: str) -> str | None:
    import re

    match = re.search(r"(aten::\w+|prim::\w+|onnx::\w+)", message)
    return match.group(1) if match else None


def _reference(torch: Any, module: Any, feeds: Feeds, names: list[str], inputs: list[TensorSpec],
               output_names: list[str]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        result = module(*[torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in inputs])
    values = [result] if hasattr(result, "shape") else list(result)
    by_name = {name: v.detach().cpu().numpy() for name, v in zip(output_names, values, strict=True)}
    return {name: by_name[name] for name in names if name in by_name}
