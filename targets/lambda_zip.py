"""The `lambda-zip` target: a Bento as an AWS Lambda deployment package (.zip) + SAM template.

Layout of the zip (its root is Lambda's /var/task, first on sys.path):

    bento_compile/            our runtime + adapters only (runtime_package_files)
    bento/                    the WHOLE Bento folder (manifest, model, signature, ...)
    numpy/, onnxruntime/, fastapi/, mangum/, ...   wheels for the TARGET platform, slimmed
    bento-lambda.json         what was built: platform, wheels with sha256, removals, bytecode
    handler: bento_compile.adapters.aws_lambda.handler

Steps: resolve binary wheels for the target (never this machine's site-packages)
→ unpack → slim (targets/slim.py) → add our runtime and the Bento → precompile
bytecode with an interpreter of the target's Python version (unchecked-hash)
→ check the unzipped budget → write a deterministic zip → check the zipped
budget → write template.yaml (targets/sam.py).

Lambda's Python 3.10 and 3.11 runtimes run on Amazon Linux 2 (glibc 2.26),
3.12 and 3.13 on Amazon Linux 2023 (glibc 2.34): wheels are resolved for the
glibc the runtime really has, or the function would fail to import at init.

`lambda_requirements(arch, python)` and `lambda_platform(arch, python)` are the
single source of what the Lambda runtime needs; the lambda-image target uses them too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bento_compile.core.errors import BentoCompileError
from bento_compile.core.sbom import write_sbom
from bento_compile.runtimes.manifest import Manifest, read_manifest
from bento_compile.runtimes.model_format import ONNX_RUNTIME_FORMATS, model_format_of
from bento_compile.targets.bytecode import Interpreter, compile_tree, find_interpreter
from bento_compile.targets.pipeline_wheels import pipeline_requirements
from bento_compile.targets.reproducible_zip import tree_files, write_zip
from bento_compile.targets.runtime_files import runtime_package_files
from bento_compile.targets.size_budget import MIB, check_budget, contributors_in_tree, contributors_in_zip
from bento_compile.targets.slim import Removal, onnx_serving_rules, slim
from bento_compile.targets.wheel_install import unpack_wheels
from bento_compile.targets.wheels import TargetPlatform, Wheel, resolve_wheels

HANDLER = "bento_compile.adapters.aws_lambda.handler"
ZIPPED_LIMIT = 50 * MIB  # direct upload (52,428,800 bytes)
UNZIPPED_LIMIT = 250 * MIB  # function + layers (262,144,000 bytes)
AMAZON_LINUX_2_PYTHONS = ("3.10", "3.11")  # glibc 2.26; 3.12+ run on Amazon Linux 2023 (glibc 2.34)
# onnxruntime releases that still have manylinux2014 wheels stop at 1.16, which reads ONNX IR <= 9, opset <= 19.
_OLD_ORT_LIMITS = {"1.16": {"ir": 9, "ai.onnx": 19, "ai.onnx.ml": 3}}

Progress = Callable[[str], None]


def lambda_platform(arch: str, python: str) -> TargetPlatform:
    """The platform a Lambda function runs on: architecture, Python, and that runtime's glibc."""
    glibc = (2, 26) if python in AMAZON_LINUX_2_PYTHONS else (2, 34)
    return TargetPlatform(arch=arch, python=python, glibc=glibc)


def lambda_requirements(arch: str, python: str, model_format: str = "onnx", signed: bool = False) -> list[str]:
    """pip requirements the handler needs on Lambda, besides what the managed runtime provides.

    The Lambda Python runtime (and the AWS Lambda base images) already provide
    `awslambdaric` and `boto3`; an image on another base must add `awslambdaric`.
    Not listed on purpose: protobuf, flatbuffers, packaging (see targets/slim.py),
    prometheus-client (Lambda reports metrics as CloudWatch EMF lines instead).
    """
    lambda_platform(arch, python)  # validates arch / python
    old_glibc = python in AMAZON_LINUX_2_PYTHONS
    requirements = ["fastapi>=0.110", "mangum>=0.17", "orjson>=3.9"]
    if model_format in ONNX_RUNTIME_FORMATS:
        # On Amazon Linux 2 the newest onnxruntime is 1.16, built against numpy 1.x.
        requirements += ["onnxruntime>=1.16", "numpy>=1.24,<2"] if old_glibc else ["onnxruntime>=1.20", "numpy>=1.26"]
    elif model_format == "tflite":
        requirements += ["ai-edge-litert", "numpy>=1.26"]
    else:
        raise BentoCompileError(f"The lambda targets do not support model format '{model_format}'.",
                                "Build the Bento as ONNX (the default) or TFLite.")
    if signed:
        requirements.append("cryptography>=42")  # only to verify signature.json when a public key is configured
    return sorted(requirements)


@dataclass
class LambdaZip:
    """What `build_lambda_zip` produced."""

    path: Path
    template: Path | None
    sha256: str
    zipped_bytes: int
    unzipped_bytes: int
    files: int
    platform: TargetPlatform
    wheels: list[Wheel]
    removed: list[Removal]
    bytecode: Interpreter | None
    pyc_files: int
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "zip": str(self.path), "template": str(self.template) if self.template else None,
            "sha256": self.sha256, "zipped_bytes": self.zipped_bytes, "unzipped_bytes": self.unzipped_bytes,
            "files": self.files, "arch": self.platform.arch, "python": self.platform.python,
            "bytecode": self.bytecode.version if self.bytecode else None, "notes": self.notes,
        }


def build_lambda_zip(bento_dir: Path, arch: str = "x86_64", python: str = "3.12", out_dir: Path = Path("dist"),
                     settings: dict[str, Any] | None = None, progress: Progress = lambda _m: None,
                     template: bool = True, require_bytecode: bool = False) -> LambdaZip:
    """Build `<name>-lambda.zip` (and `template.yaml`) for the Bento in `bento_dir`."""
    bento_dir = Path(bento_dir)
    manifest = read_manifest(bento_dir)
    platform = lambda_platform(arch, python)
    model_format = model_format_of(manifest)
    signed = (bento_dir / "signature.json").is_file()
    # Pillow / tokenizers only when the Bento's pipeline declares images / text (targets/pipeline_wheels.py).
    requirements = sorted([*lambda_requirements(arch, python, model_format, signed), *pipeline_requirements(manifest)])
    notes: list[str] = []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".lambda-zip-", dir=out_dir) as work:
        work_dir = Path(work)
        progress(f"Resolving wheels for {platform.machine} / Python {python} (glibc "
                 f"{platform.glibc[0]}.{platform.glibc[1]}): {', '.join(requirements)}")
        wheels = resolve_wheels(requirements, platform, work_dir / "wheels")
        _check_old_onnxruntime(wheels, bento_dir, manifest, python)
        package = work_dir / "package"
        progress(f"Unpacking {len(wheels)} wheels")
        unpack_wheels(wheels, package)
        removed = slim(package, keep=frozenset({"cryptography", "cffi", "pycparser"}) if signed else frozenset(),
                       extra_rules=onnx_serving_rules(_version_of(wheels, "numpy"))
                       if model_format in ONNX_RUNTIME_FORMATS else ())
        progress(f"Slimmed {len(removed)} paths ({sum(r.bytes for r in removed) / MIB:.1f} MiB): "
                 "tests, headers, tools, unused distributions, libonnxruntime.so")
        for arcname, source in runtime_package_files():
            target = package / arcname
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        shutil.copytree(bento_dir, package / "bento")  # the WHOLE Bento: signatures and later files travel

        interpreter = find_interpreter(python)
        pyc_files = 0
        if interpreter is None:
            message = (f"No Python {python} interpreter found on this machine: the zip ships WITHOUT bytecode, "
                       "so every cold start compiles it again (about +0.1 s). Install Python "
                       f"{python} (pyenv/uv) or set BENTO_COMPILE_PYTHON_{python.replace('.', '_')}.")
            if require_bytecode:
                raise BentoCompileError(message, f"Install Python {python}, or drop --require-bytecode.")
            notes.append(message)
            progress(message)
        else:
            progress(f"Precompiling bytecode with Python {interpreter.version} ({interpreter.path}), unchecked-hash")
            pyc_files = compile_tree(package, interpreter)

        build_info = _build_info(manifest, platform, wheels, removed, interpreter, requirements)
        (package / "bento-lambda.json").write_text(json.dumps(build_info, indent=2, sort_keys=True) + "\n")
        write_sbom(package, artifact=f"{manifest.name}-lambda.zip", target="lambda-zip", bento_dir=bento_dir,
                   wheels=wheels, runtime_files=runtime_package_files())  # sbom.cdx.json: what went in, for audits

        entries = tree_files(package)
        unzipped = sum(path.stat().st_size for _, path in entries)
        check_budget("unzipped", unzipped, UNZIPPED_LIMIT, contributors_in_tree(package),
                     "Lambda allows 250 MiB unzipped (function and layers together). Quantize the model "
                     "(quantize: dynamic in bento.yaml), or use `bento-compile target lambda-image` (10 GB).")
        zip_path = out_dir / f"{manifest.name}-lambda.zip"
        progress(f"Writing {zip_path} ({len(entries)} files, deterministic)")
        zipped = write_zip(entries, zip_path)
        try:
            check_budget("zipped", zipped, ZIPPED_LIMIT, contributors_in_zip(zip_path),
                         "Lambda accepts at most 50 MiB zipped for a direct upload. Quantize the model, upload "
                         "through S3 (still 250 MiB unzipped), or use `bento-compile target lambda-image`.")
        except BentoCompileError:
            zip_path.unlink(missing_ok=True)
            raise
    template_path = None
    if template:
        from bento_compile.targets.sam import write_sam_template

        template_path = write_sam_template(manifest, zip_path, out_dir / "template.yaml", arch, python, settings)
    return LambdaZip(zip_path, template_path, _sha256(zip_path), zipped, unzipped, len(entries), platform,
                     wheels, removed, interpreter, pyc_files, notes)


def _build_info(manifest: Manifest, platform: TargetPlatform, wheels: list[Wheel], removed: list[Removal],
                interpreter: Interpreter | None, requirements: list[str]) -> dict[str, Any]:
    """A record of the build inside the zip: deterministic (no times, no machine paths)."""
    return {
        "handler": HANDLER,
        "bento": manifest.tag,
        "arch": platform.arch,
        "machine": platform.machine,
        "python": platform.python,
        "glibc": f"{platform.glibc[0]}.{platform.glibc[1]}",
        "requirements": requirements,
        "wheels": [{"name": w.name, "version": w.version, "file": w.filename, "sha256": w.sha256} for w in wheels],
        "removed": [{"path": r.path, "bytes": r.bytes, "reason": r.reason} for r in removed],
        "bytecode": {"python": interpreter.version, "invalidation_mode": "unchecked-hash"} if interpreter else None,
    }


def _model_ir_version(path: Path) -> int | None:
    """The ONNX IR version: field 1 (a varint) at the start of a ModelProto, read without onnx."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if not head or head[0] != 0x08:
        return None
    value, shift = 0, 0
    for byte in head[1:]:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value
    return None


def _check_old_onnxruntime(wheels: list[Wheel], bento_dir: Path, manifest: Manifest, python: str) -> None:
    """On Amazon Linux 2 runtimes only onnxruntime 1.16 installs: refuse a model it cannot read."""
    ort = next((w for w in wheels if w.name == "onnxruntime"), None)
    if ort is None:
        return
    limits = _OLD_ORT_LIMITS.get(".".join(ort.version.split(".")[:2]))
    if limits is None or model_format_of(manifest) != "onnx":
        return
    problems = []
    ir = _model_ir_version(bento_dir / manifest.model_file)
    if ir is not None and ir > limits["ir"]:
        problems.append(f"ONNX IR version {ir} (it reads <= {limits['ir']})")
    for domain, version in (manifest.model.opsets or {}).items():
        if domain in limits and version > limits[domain]:
            problems.append(f"opset {domain} {version} (it supports <= {limits[domain]})")
    if problems:
        raise BentoCompileError(
            f"Lambda's Python {python} runtime runs on Amazon Linux 2 (glibc 2.26), where the newest onnxruntime "
            f"with a wheel is {ort.version}; this model needs {' and '.join(problems)}.",
            "Use --python 3.12 or 3.13 (Amazon Linux 2023), or `bento-compile target lambda-image`.")


def _version_of(wheels: list[Wheel], name: str) -> str | None:
    return next((w.version for w in wheels if w.name == name), None)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
