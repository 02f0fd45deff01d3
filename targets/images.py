"""The image plan: what goes in a container image, for every container target (Cloud Run, Knative,
Lambda image).

A target describes WHAT goes in the image as an `ImagePlan`: the base, three
layers of our own, and the runtime config. A builder decides HOW it is made
(`targets.image_builders.choose_builder` picks one; each takes a plan and gives
back a `BuiltImage`):

- `OciBuilder` (daemonless, `targets.oci_builder`) writes an OCI image layout
  itself, reproducibly, and pushes over the registry HTTP API;
- `DockerBuilder` (`targets.docker_builder`) hands a build context (a
  Dockerfile of COPY/ENV/LABEL lines, nothing is RUN) to a Docker engine
  through the `docker` Python SDK.

The layers, bottom to top, are chosen so a new model version reuses
everything but the last one:

1. `deps`: the runtime's wheels, resolved for the TARGET platform and Python
   (`targets.wheels`), unpacked into site-packages here; no installer and no
   code of theirs runs on the build machine;
2. `runtime`: our runtime and adapters (`targets.runtime_files`);
3. `bento`: the whole Bento folder, every file in it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from bento_compile.core.errors import BentoCompileError
from bento_compile.core.files import cache_root, cached_folder
from bento_compile.core.sbom import sbom_json
from bento_compile.runtimes.manifest import Manifest, read_manifest
from bento_compile.runtimes.model_format import model_format_of
from bento_compile.targets.oci_layout import (
    BaseImage,
    FileEntry,
    ImageConfig,
    LayerSpec,
    is_layout_reference,
    load_base,
)
from bento_compile.targets.pipeline_wheels import pipeline_requirements
from bento_compile.targets.registry import parse_image_reference
from bento_compile.targets.runtime_files import runtime_package_files
from bento_compile.targets.wheel_install import unpacked_wheel
from bento_compile.targets.wheels import TargetPlatform, Wheel, resolve_wheels

APP_ROOT = "/opt/bento-compile"
SITE_PACKAGES = f"{APP_ROOT}/site-packages"
CODE_DIR = f"{APP_ROOT}/app"
BENTO_DIR = f"{APP_ROOT}/bento"
NONROOT_USER = "65532:65532"
HTTP_PORT = 8080
LABEL_PREFIX = "dev.bento-compile"
# File times in the layers that must not change with the model (deps, runtime): 2000-01-01.
FIXED_MTIME = 946684800
# What the HTTP adapter imports at serving time (README "The runtime"): nothing else ships.
# uvloop + httptools: the server's fast path; prometheus-client: /metrics (see runtimes/metrics.py).
HTTP_REQUIREMENTS = ["numpy>=1.26", "onnxruntime>=1.20", "fastapi>=0.110", "uvicorn>=0.29", "orjson>=3.9",
                     "uvloop>=0.19", "httptools>=0.6", "prometheus-client>=0.20"]


# -- the plan ---------------------------------------------------------------------------------
@dataclass
class ImagePlan:
    """Everything a builder needs; built the same way for every builder."""

    kind: str  # "http" or "lambda"
    arch: str
    python: str
    base_reference: str
    base: BaseImage
    layers: list[LayerSpec]
    config: ImageConfig
    epoch: int
    annotations: dict[str, str]
    wheels: list[Wheel] = field(default_factory=list)
    bytecode: str = ""


@dataclass
class BuiltImage:
    """The result of a build: where it is, and the digest the service manifest should pin."""

    builder: str
    reference: str  # repository:tag the image was given
    digest: str | None  # manifest digest (registry digest); None until a Docker-built image is pushed
    layout: Path | None = None  # the OCI layout folder, for the daemonless builder
    layer_digests: list[str] = field(default_factory=list)
    size: int = 0
    pushed: bool = False

    @property
    def pinned(self) -> str:
        """`repository@sha256:…` when the digest is known, else the tag reference."""
        if not self.digest:
            return self.reference
        return f"{parse_image_reference(self.reference).name}@{self.digest}"


class ImageBuilder(Protocol):
    name: str

    def build(self, plan: ImagePlan, out_dir: Path, reference: str) -> BuiltImage: ...

    def push(self, image: BuiltImage) -> BuiltImage: ...


# -- the layers -------------------------------------------------------------------------------
def tree_entries(folder: Path, prefix: str) -> list[FileEntry]:
    entries = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            entries.append(FileEntry(f"{prefix}/{path.relative_to(folder).as_posix()}", link=os.readlink(path)))
        elif path.is_file():
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            entries.append(FileEntry(f"{prefix}/{path.relative_to(folder).as_posix()}", source=path, mode=mode))
    return entries


def with_bytecode(tree: Path, key: str, install_prefix: str, python: str, cache: Path) -> tuple[Path, bool]:
    """A copy of `tree` with `.pyc` for the TARGET Python (cached by `key`), or `tree` itself when no
    interpreter of that version is here or a file does not compile for it.

    The image's site-packages is read-only for its non-root user, so without
    these every cold start compiles every module again. `unchecked-hash` pycs
    (targets.bytecode) depend only on the source, and are never re-validated.
    """
    from bento_compile.targets.bytecode import compile_tree, find_interpreter

    interpreter = find_interpreter(python)
    if interpreter is None:
        return tree, False
    def fill(work: Path) -> None:
        shutil.copytree(tree, work, copy_function=_link_or_copy, symlinks=True, dirs_exist_ok=True)
        compile_tree(work, interpreter, install_prefix)

    try:
        return cached_folder(cache / "compiled" / f"{key}-py{python}", fill, ".compile-"), True
    except BentoCompileError:  # a file that does not compile for that Python: ship the sources alone
        return tree, False


def _link_or_copy(source: str, dest: str) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def deps_layer(requirements: list[str], target: TargetPlatform, bytecode: bool = True
               ) -> tuple[LayerSpec, list[Wheel], int]:
    """Resolve `requirements` for `target` (cached by the exact request) and lay the wheels out.

    Returns the layer, the wheels, and how many of them carry precompiled bytecode.
    """
    cache = cache_root()
    key = hashlib.sha256(json.dumps([sorted(requirements), target.machine, target.python,
                                     list(target.glibc)]).encode()).hexdigest()[:16]
    wheels = resolve_wheels(requirements, target, cache / "wheels" / key)
    entries: dict[str, FileEntry] = {}
    compiled = 0
    for wheel in wheels:
        tree = unpacked_wheel(wheel, cache)
        if bytecode:
            tree, done = with_bytecode(tree, wheel.sha256, SITE_PACKAGES, target.python, cache)
            compiled += done
        for entry in tree_entries(tree, SITE_PACKAGES):
            entries[entry.path] = entry
    content_key = json.dumps([[w.sha256 for w in wheels], target.python, bytecode, compiled])
    return LayerSpec("dependencies: " + ", ".join(f"{w.name}=={w.version}" for w in wheels),
                     list(entries.values()), mtime=FIXED_MTIME, cache_key=f"deps-v1:{content_key}"), wheels, compiled


def runtime_layer(python: str | None = None) -> LayerSpec:
    """Our runtime and adapters, with bytecode for `python` when an interpreter of it is here."""
    files = runtime_package_files()
    if python is None:
        return LayerSpec("bento-compile runtime and adapters",
                         [FileEntry(f"{CODE_DIR}/{arcname}", source=path) for arcname, path in files],
                         mtime=FIXED_MTIME)
    cache = cache_root()
    digest = hashlib.sha256()
    for arcname, path in files:
        digest.update(arcname.encode() + b"\0" + path.read_bytes() + b"\0")
    key = "runtime-" + digest.hexdigest()[:24]

    def fill(work: Path) -> None:
        for arcname, path in files:
            (work / arcname).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, work / arcname)
            (work / arcname).chmod(0o644)

    staged = cached_folder(cache / "runtime" / key, fill, ".runtime-")
    tree, _done = with_bytecode(staged, key, CODE_DIR, python, cache)
    return LayerSpec("bento-compile runtime and adapters", tree_entries(tree, CODE_DIR), mtime=FIXED_MTIME)


def bento_layer(bento_dir: Path, manifest: Manifest, dest: str = BENTO_DIR) -> LayerSpec:
    """The WHOLE Bento folder (signatures and later files travel too), hashes checked first."""
    from bento_compile.runtimes.manifest import verify_files

    try:
        verify_files(bento_dir, manifest)
    except Exception as exc:
        raise BentoCompileError(f"The Bento {manifest.tag} at {bento_dir} is damaged: {exc}",
                                "Rebuild it with `bento-compile build`.") from None
    entries = [entry for entry in tree_entries(bento_dir, dest) if "/__pycache__/" not in entry.path]
    return LayerSpec(f"Bento {manifest.tag}", entries)


# -- labels and metadata ----------------------------------------------------------------------
def bento_epoch(manifest: Manifest) -> int:
    """The image's timestamp: SOURCE_DATE_EPOCH, else the Bento's creation time (so rebuilds match)."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    created = (manifest.created or "1970-01-01T00:00:00Z").replace("Z", "+00:00")
    moment = datetime.fromisoformat(created)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


def openapi_schema(bento_dir: Path) -> dict:
    """The OpenAPI document the running image serves (the app is built without loading the model)."""
    from bento_compile.adapters.http_app import create_app

    return create_app(bento_dir, load_mode="lazy").openapi()


def bento_labels(bento_dir: Path, manifest: Manifest, epoch: int) -> dict[str, str]:
    entry = manifest.files.get(manifest.model_file)
    model_sha = entry.sha256 if entry is not None else ""
    return {
        "org.opencontainers.image.title": manifest.name,
        "org.opencontainers.image.version": manifest.version,
        "org.opencontainers.image.created": datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.description": f"Bento {manifest.tag} served by bento-compile",
        f"{LABEL_PREFIX}.bento.tag": manifest.tag,
        f"{LABEL_PREFIX}.model.sha256": model_sha,
        f"{LABEL_PREFIX}.openapi": json.dumps(openapi_schema(bento_dir), sort_keys=True, separators=(",", ":")),
    }


# -- base and python --------------------------------------------------------------------------
def python_from_reference(reference: str) -> str | None:
    """`python:3.12-slim`, `public.ecr.aws/lambda/python:3.12` → "3.12"; layouts and others → None."""
    if is_layout_reference(reference):
        return None
    match = re.search(r"python[^/:]*:(3\.\d+)", reference)
    return match.group(1) if match else None


def open_base(reference: str, arch: str) -> BaseImage:
    return load_base(reference, arch, cache_root() / "base-images")


def resolve_python(base: BaseImage, reference: str, python: str | None) -> str:
    found = python or python_from_reference(reference) or base.python_version()
    if not found:
        raise BentoCompileError(f"Cannot tell which Python the base image {reference} has.",
                                "Pass --python 3.X (the version of python3 in the base image).")
    return found


# -- plans for the two kinds of image ---------------------------------------------------------
def plan_image(kind: str, bento_dir: Path, base_reference: str, arch: str, python: str | None,
               requirements: list[str], env: dict[str, str], entrypoint: list[str], cmd: list[str],
               exposed_ports: list[int], workdir: str = APP_ROOT, bento_dest: str = BENTO_DIR,
               bytecode: bool = True) -> ImagePlan:
    """Common to every image: base, deps/runtime/bento layers, labels, reproducible time."""
    manifest = read_manifest(bento_dir)
    base = open_base(base_reference, arch)
    python = resolve_python(base, base_reference, python)
    if not base.scan()["libstdcxx"]:
        raise BentoCompileError(f"The base image {base_reference} has no libstdc++.so.6, which the numpy and "
                                "onnxruntime wheels need.",
                                "Use a base that has it (python:3.X-slim does; with mmdebstrap add "
                                "--include=python3,libstdc++6).")
    target = TargetPlatform(arch=arch, python=python)
    # A signed Bento ships the verifier, so the container can check it when a public key is configured.
    if (bento_dir / "signature.json").is_file():
        requirements = [*requirements, "cryptography>=42"]
    requirements = [*requirements, *pipeline_requirements(manifest)]  # Pillow / tokenizers when declared
    deps, wheels, compiled = deps_layer(requirements, target, bytecode)
    runtime = runtime_layer(python if bytecode else None)
    model = bento_layer(bento_dir, manifest, bento_dest)
    # The SBOM lists the Bento's files, so it changes with the model: it goes in the model's (last) layer,
    # never in the runtime layer, or a new model version would re-upload that layer too.
    model.entries.append(FileEntry(f"{APP_ROOT}/sbom.cdx.json", data=sbom_json(  # CycloneDX SBOM: what the image holds
        artifact=f"{manifest.name}-{kind}-image", target=f"{kind}-image", bento_dir=bento_dir, wheels=wheels,
        runtime_files=runtime_package_files(), bento_prefix=f"{bento_dest}/").encode()))
    epoch = bento_epoch(manifest)
    labels = bento_labels(bento_dir, manifest, epoch)
    config = ImageConfig(
        env={"PYTHONPATH": f"{CODE_DIR}:{SITE_PACKAGES}", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
             "HOME": "/tmp", "BENTO_COMPILE_BENTO": bento_dest, **env},
        entrypoint=entrypoint, cmd=cmd, workdir=workdir, user=NONROOT_USER, labels=labels,
        exposed_ports=exposed_ports)
    annotations = {"org.opencontainers.image.title": manifest.name,
                   "org.opencontainers.image.version": manifest.version,
                   "org.opencontainers.image.base.name": base_reference if not is_layout_reference(base_reference)
                   else Path(base_reference.split(":")[0]).name,
                   "org.opencontainers.image.base.digest": base.manifest_digest}
    note = (f"bytecode for Python {python} in {compiled} of {len(wheels)} wheels" if compiled
            else f"no bytecode (no Python {python} interpreter here; set BENTO_COMPILE_PYTHON_"
                 f"{python.replace('.', '_')}): every cold start compiles the modules it imports")
    return ImagePlan(kind, arch, python, base_reference, base,
                     [deps, runtime, model],
                     config, epoch, annotations, wheels, note)


def plan_http_image(bento_dir: Path, base_reference: str, arch: str = "x86_64", python: str | None = None,
                    max_concurrency: int = 0, grace_seconds: int = 25, bytecode: bool = True) -> ImagePlan:
    """The HTTP image for Cloud Run and Knative: uvicorn serving the adapters' app on $PORT."""
    manifest = read_manifest(bento_dir)
    requirements = list(HTTP_REQUIREMENTS)
    ort = manifest.versions.get("onnxruntime")
    if model_format_of(manifest) == "tflite":  # LiteRT serves .tflite; no ONNX Runtime
        requirements = [r if not r.startswith("onnxruntime") else "ai-edge-litert" for r in requirements]
    elif ort:  # serve with the ONNX Runtime the parity check ran on, when the target has a wheel for it
        requirements = [r if not r.startswith("onnxruntime") else f"onnxruntime>={ort}" for r in requirements]
    env = {"HOST": "0.0.0.0", "PORT": str(HTTP_PORT), "BENTO_COMPILE_LOAD": "background",
           "BENTO_COMPILE_MAX_CONCURRENCY": str(max_concurrency),
           "BENTO_COMPILE_GRACE_SECONDS": str(grace_seconds)}
    return plan_image("http", bento_dir, base_reference, arch, python, requirements, env,
                      ["python3", "-m", "bento_compile.adapters.server"], [], [HTTP_PORT], bytecode=bytecode)


def wheel_summary(wheels: list[Wheel]) -> list[dict[str, str]]:
    return [{"name": w.name, "version": w.version, "file": w.filename, "sha256": w.sha256} for w in wheels]
