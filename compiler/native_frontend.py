"""The frontend for models that ship as they are: a ready `.tflite` or `.ort` file.

There is no original to compare with: formats_build runs the sample through the
file (a model that cannot run it is refused) and reports "passthrough".
"""

from __future__ import annotations

from pathlib import Path

from bento_compile.compiler.source import NativeSource, Runner, check_signature_override
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import TensorSpec, sha256_file

TFLITE_SUFFIXES = (".tflite",)
ORT_SUFFIXES = (".ort",)


def tflite_runner(data: bytes) -> Runner:
    from bento_compile.runtimes.tflite_backend import TFLiteBackend

    return TFLiteBackend(model_content=data).run


def ort_runner(data: bytes) -> Runner:
    from bento_compile.compiler.quantize import onnx_runner

    return onnx_runner(data)


def load_tflite(path: Path, input_override: list[TensorSpec] | None) -> NativeSource:
    from bento_compile.runtimes.errors import IntegrityError
    from bento_compile.runtimes.tflite_backend import TFLiteBackend

    data = path.read_bytes()
    try:
        backend = TFLiteBackend(model_content=data)
    except IntegrityError as exc:
        raise BentoCompileError(str(exc), "pip install ai-edge-litert") from None
    except Exception as exc:
        raise BentoCompileError(f"{path.name} is not a loadable TFLite model ({type(exc).__name__}: {exc}).",
                                "Convert it again with TensorFlow's TFLiteConverter.") from None
    ins, outs = backend.specs()
    inputs = [TensorSpec.from_dict(s) for s in ins]
    check_signature_override(input_override, inputs, path)
    return NativeSource(kind="tflite", artifact_format="tflite", data=data, inputs=inputs,
                        outputs=[TensorSpec.from_dict(s) for s in outs], runner_factory=tflite_runner,
                        description=f"TFLite model as it is ({path.name})", file_sha256=sha256_file(path),
                        converter_versions=dict(backend.runtime_versions))


def load_ort(path: Path, input_override: list[TensorSpec] | None) -> NativeSource:
    from bento_compile.compiler.model_formats import OPS_CONFIG_FILE, ops_config_for_ort, ort_signature

    data = path.read_bytes()
    try:
        inputs, outputs = ort_signature(data)
    except BentoCompileError:
        raise
    except Exception as exc:
        raise BentoCompileError(f"{path.name} is not a loadable ONNX Runtime (.ort) model ({exc}).",
                                "Convert it again with python -m onnxruntime.tools.convert_onnx_models_to_ort."
                                ) from None
    check_signature_override(input_override, inputs, path)
    config = ops_config_for_ort(data)
    return NativeSource(kind="ort", artifact_format="ort", data=data, inputs=inputs, outputs=outputs,
                        runner_factory=ort_runner, description=f"ONNX Runtime format model as it is ({path.name})",
                        file_sha256=sha256_file(path), extra_files={OPS_CONFIG_FILE: config} if config else {})
