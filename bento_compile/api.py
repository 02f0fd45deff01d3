"""The public Python API: build a Bento, load it, turn it into artifacts, run a Lambda zip locally.

Notebooks, Airflow tasks and other tools call these four functions (reached as
`bento_compile.build`, `.load`, `.target`, `.invoke`), not the modules behind them,
which move as the project grows. The `bento-compile` command line is one client.

    import bento_compile
    bento = bento_compile.build("model.joblib", name="churn", sample="sample.npy")
    model = bento_compile.load(bento.tag)
    model.predict({"inputs": [[...]]})             # {"outputs": {...}}, as POST /predict answers
    files = bento_compile.target("lambda-zip", bento.tag, output="dist")
    answer = bento_compile.invoke(files[0], {"inputs": [[...]]})

Bad arguments raise `BentoCompileError` (`.problem`, `.fix`). This module imports only
the standard library and the error type at import time: the compiler, the runtime and
the targets load when a function first needs them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bento_compile.core.errors import BentoCompileError

if TYPE_CHECKING:
    from bento_compile.core.config import BentoConfig
    from bento_compile.core.store import BentoStore
    from bento_compile.runtimes.model import BentoModel

__all__ = ["TARGET_KINDS", "Answer", "Bento", "BentoCompileError", "Model", "build", "invoke", "load", "target"]

PathLike = str | os.PathLike[str]
Progress = Callable[[str], None]

# What a build's model argument may be on disk; anything else is taken as a fitted estimator.
_MODEL_TYPES = "a model file or folder (.joblib, .pkl, .onnx, .pt, .keras, a SavedModel, .tflite, .ort)"


# ------------------------------------------------------------------------------------------- build

@dataclass(frozen=True)
class Bento:
    """A stored Bento: its tag (NAME:VERSION), its folder, and the parity report that let it in."""

    tag: str
    path: Path
    parity: dict[str, Any]
    created_new: bool = True  # False: the same content was already stored (same version)
    quantization: dict[str, Any] | None = None  # the variants table, when the build quantized

    @property
    def name(self) -> str:
        return self.tag.split(":", 1)[0]

    @property
    def version(self) -> str:
        return self.tag.split(":", 1)[1]


def build(model: PathLike | Any = None, *, name: str | None = None, sample: PathLike | Any = None,
          config: PathLike | Mapping[str, Any] | BentoConfig | None = None, tolerance: float | None = None,
          quantize: str | None = None, format: str | None = None, progress: Progress | None = None) -> Bento:
    """Compile a model into a Bento in the store ($BENTO_COMPILE_HOME) and return it.

    model: a model file or folder; or a fitted scikit-learn estimator / Pipeline (also a LightGBM or
        XGBoost scikit-learn model), saved with joblib for the build; or None for bento.yaml's `model:`.
    sample: an .npy / .csv file, or rows (anything numpy.asarray takes), for the parity check.
    config: a bento.yaml path, a mapping of the same keys, or a BentoConfig.
    tolerance, quantize, format: override parity.tolerance, quantize.method and format.
    progress: called with one line per step.
    A build whose compiled model disagrees with the original raises ParityError (a BentoCompileError
    with `.report`) and stores nothing.
    """
    from bento_compile.compiler.build import BuildRequest
    from bento_compile.compiler.build import build as run_build
    from bento_compile.core.store import BentoStore

    bento_config, config_dir = _config(config)
    if name is not None and not isinstance(name, str):
        raise BentoCompileError(f"name must be a string, not {type(name).__name__}.", "Pass e.g. name='churn'.")
    with tempfile.TemporaryDirectory(prefix="bento-compile-api-") as scratch:
        model_path = _model_path(model, name or bento_config.name, Path(scratch))
        sample_path = _sample_path(sample, Path(scratch))
        request = BuildRequest(model_path=model_path, config=bento_config, config_dir=config_dir, name=name,
                               sample_path=sample_path, tolerance=tolerance, quantize=quantize, format=format)
        result = run_build(request, BentoStore(), progress or (lambda _message: None))
    return Bento(tag=result.tag, path=result.path, parity=result.parity, created_new=result.created_new,
                 quantization=result.manifest.get("quantization"))


def _config(config: PathLike | Mapping[str, Any] | BentoConfig | None) -> tuple[BentoConfig, Path | None]:
    from pydantic import ValidationError

    from bento_compile.core.config import BentoConfig, describe_validation_error, load_config

    if config is None or isinstance(config, (str, os.PathLike)):
        return load_config(Path(config) if config is not None else None)
    if isinstance(config, BentoConfig):
        return config, None
    if isinstance(config, Mapping):
        try:  # paths in a mapping are relative to the current folder, as a bento.yaml's are to its own
            return BentoConfig.model_validate(dict(config)), None
        except ValidationError as exc:
            raise BentoCompileError(f"config is not valid: {describe_validation_error(exc)}",
                                    "See the bento.yaml reference in the README.") from None
    raise BentoCompileError(f"config must be a bento.yaml path, a mapping or a BentoConfig, not "
                            f"{type(config).__name__}.", "Pass e.g. config='bento.yaml' or config={'name': 'churn'}.")


def _model_path(model: Any, name: str | None, scratch: Path) -> Path | None:
    if model is None or isinstance(model, (str, os.PathLike)):  # the compiler says what is missing, and why
        return Path(model) if model is not None else None
    if not callable(getattr(model, "predict", None)):
        raise BentoCompileError(f"model is a {type(model).__name__}: neither a path nor a fitted estimator.",
                                f"Pass {_MODEL_TYPES}, or a fitted scikit-learn estimator or Pipeline.")
    if not name:  # the Bento's name would otherwise come from the temporary file's
        raise BentoCompileError("An in-memory model needs a name.", "Pass name='churn' (or `name:` in config).")
    import joblib

    path = scratch / f"{name}.joblib"
    joblib.dump(model, path)  # read back by the compiler only, as a .joblib file given on the CLI is
    return path


def _sample_path(sample: Any, scratch: Path) -> Path | None:
    if sample is None or isinstance(sample, (str, os.PathLike)):
        return Path(sample) if sample is not None else None
    import numpy as np

    try:
        rows = np.asarray(sample)
    except (TypeError, ValueError) as exc:
        raise BentoCompileError(f"sample cannot be read as rows: {exc}",
                                "Pass an .npy / .csv file, or a 2-D array / list of rows.") from None
    if rows.dtype == object or rows.ndim < 2:
        raise BentoCompileError(f"sample must be rows of numbers (a 2-D array), got shape {rows.shape} "
                                f"of {rows.dtype}.", "Pass e.g. X_test[:64], or an .npy / .csv file.")
    path = scratch / "sample.npy"
    np.save(path, rows, allow_pickle=False)
    return path


# -------------------------------------------------------------------------------------------- load

class Model:
    """A loaded Bento, answering the JSON contract of POST /predict and GET /metadata."""

    def __init__(self, model: BentoModel):
        self._model = model

    @property
    def tag(self) -> str:
        return self._model.manifest.tag

    def predict(self, payload: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
        """`{"inputs": ...}` (a mapping, or its JSON text) → `{"outputs": {...}}` of JSON-ready lists.

        Raises the runtime's InputError (what HTTP answers with 422) naming what is wrong and where,
        or PayloadTooLarge (413) past the Bento's runtime limits."""
        from bento_compile.runtimes.errors import InputError, PayloadTooLarge

        if isinstance(payload, (str, bytes)):
            limit = self._model.manifest.runtime.max_body_bytes
            size = len(payload.encode() if isinstance(payload, str) else payload)
            if size > limit:
                raise PayloadTooLarge(f"the body is {size} bytes, over this Bento's max_body_bytes of {limit}")
            try:
                payload = json.loads(payload)
            except ValueError as exc:
                raise InputError(f"the body is not valid JSON: {exc}") from None
        return self._model.predict(payload)

    def metadata(self) -> dict[str, Any]:
        """Tag, signature, versions, execution providers and the device in use, as GET /metadata."""
        from bento_compile.runtimes.providers import device_in_use

        return {**self._model.metadata(), "device": device_in_use(self._model.backend.providers)}

    def __repr__(self) -> str:
        return f"<bento_compile.Model {self.tag}>"


def load(tag_or_path: PathLike) -> Model:
    """Load a Bento by store tag (NAME, NAME:latest, NAME:VERSION or a unique version prefix) or folder.

    The files' sha256 (and the signature, when BENTO_COMPILE_PUBLIC_KEY is set) are checked first,
    exactly as at serving time; a damaged Bento raises BentoCompileError and loads nothing."""
    from bento_compile.runtimes.errors import RuntimeFault
    from bento_compile.runtimes.model import BentoModel

    folder = _bento_folder(tag_or_path)
    try:
        return Model(BentoModel.load(folder))
    except RuntimeFault as exc:
        raise BentoCompileError(f"The Bento at {folder} cannot be loaded: {exc}",
                                "Rebuild it (bento-compile build) or pull it again.") from exc


def _bento_folder(tag_or_path: PathLike) -> Path:
    from bento_compile.runtimes.manifest import MANIFEST_NAME

    if not isinstance(tag_or_path, (str, os.PathLike)):
        raise BentoCompileError(f"Expected a Bento tag or folder, not {type(tag_or_path).__name__}.",
                                "Pass e.g. 'churn:latest', a Bento's .tag, or its folder.")
    path = Path(tag_or_path)
    if (path / MANIFEST_NAME).is_file():
        return path
    if isinstance(tag_or_path, os.PathLike) or path.is_dir():
        raise BentoCompileError(f"{path} is not a Bento folder (no {MANIFEST_NAME}).",
                                "Pass a stored tag such as 'churn:latest', or the folder a build printed.")
    return _store().resolve(str(tag_or_path)).path


def _store() -> BentoStore:
    from bento_compile.core.store import BentoStore

    return BentoStore()


# ------------------------------------------------------------------------------------------ target

TARGET_KINDS = ("lambda-zip", "lambda-image", "cloudrun", "knative", "edge")


def target(kind: str, tag: PathLike, *, progress: Progress | None = None, **options: Any) -> list[Path]:
    """Turn a Bento (tag or folder) into the deployable files of `kind`; returns the paths written.

    lambda-zip: output="dist", arch, python, require_bytecode → the zip and template.yaml.
    edge: output="dist", arch="arm64", python="3.11", format, glibc="2.34", http=True, tflite_runtime,
        prefix, host, port, memory_max, cpu_quota → the bundle and its .sha256.
    cloudrun, knative: image (required), output="dist", builder="auto", push=False, arch="x86_64", python,
        base_image, manifest_only=False, canary, current_revision, config (a bento.yaml for its targets:
        section) → the service YAML (with promote / rollback for a canary), image.json and the OCI layout.
    lambda-image: image (required), output="dist", builder, push, arch, python, base_image, load="eager"
        → image.json, the OCI layout (or Docker build context).
    The option names are the CLI's (`bento-compile target KIND --help`), with '_' for '-'.
    """
    if kind not in _TARGETS:
        raise BentoCompileError(f"Unknown target kind {kind!r}.", f"Use one of: {', '.join(TARGET_KINDS)}.")
    spec = _TARGETS[kind]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise BentoCompileError(f"{kind} takes no option {', '.join(map(repr, unknown))}.",
                                f"Its options: {', '.join(sorted(spec.options))}.")
    missing = sorted(set(spec.required) - set(options))
    if missing:
        raise BentoCompileError(f"{kind} needs {', '.join(map(repr, missing))}.",
                                f"Pass e.g. {missing[0]}={spec.options[missing[0]]!r}.")
    folder = _bento_folder(tag)
    return spec.run(folder, progress or (lambda _message: None), {**spec.options, **options})


@dataclass(frozen=True)
class _Kind:
    options: dict[str, Any]  # every option with its default
    run: Callable[[Path, Progress, dict[str, Any]], list[Path]]
    required: tuple[str, ...] = ()


def _lambda_zip(folder: Path, progress: Progress, o: dict[str, Any]) -> list[Path]:
    from bento_compile.adapters.lambda_events import lambda_settings
    from bento_compile.runtimes.manifest import read_manifest
    from bento_compile.targets.lambda_zip import build_lambda_zip

    settings = lambda_settings(read_manifest(folder))
    result = build_lambda_zip(folder, o["arch"] or settings.get("arch") or "x86_64",
                              o["python"] or settings.get("python") or "3.12", Path(o["output"]), settings,
                              progress=progress, require_bytecode=o["require_bytecode"])
    return [result.path] + ([result.template] if result.template else [])


def _edge(folder: Path, progress: Progress, o: dict[str, Any]) -> list[Path]:
    from bento_compile.targets.edge import EdgeOptions, build_edge_bundle

    glibc = o["glibc"]
    if isinstance(glibc, str):
        try:
            major, minor = (int(part) for part in glibc.split("."))
        except ValueError:
            raise BentoCompileError(f"glibc {glibc!r} is not MAJOR.MINOR.",
                                    "e.g. glibc='2.31' (ldd --version).") from None
        glibc = (major, minor)
    options = EdgeOptions(arch=o["arch"], python=o["python"], format=o["format"], glibc=tuple(glibc),
                          http=o["http"], tflite_runtime=o["tflite_runtime"], prefix=o["prefix"], host=o["host"],
                          port=o["port"], memory_max=o["memory_max"], cpu_quota=o["cpu_quota"])
    bundle = build_edge_bundle(folder, options, Path(o["output"]), progress)
    return [bundle.path, bundle.path.with_name(bundle.path.name + ".sha256")]


def _image_files(out_dir: Path, built: Any) -> list[Path]:
    return [out_dir / "image.json"] + ([Path(built.layout)] if built.layout else [])


def _service(flavour: str) -> Callable[[Path, Progress, dict[str, Any]], list[Path]]:
    def run(folder: Path, progress: Progress, o: dict[str, Any]) -> list[Path]:
        from bento_compile.runtimes.manifest import read_manifest
        from bento_compile.targets.knative import previous_revision
        from bento_compile.targets.services import (
            SERVICES,
            build_image,
            image_reference,
            pinned_existing,
            target_settings,
            write_service,
        )

        manifest = read_manifest(folder)
        section, model, filename = SERVICES[flavour]
        out_dir = Path(o["output"])
        settings = target_settings(section, model, Path(o["config"]) if o["config"] else None, manifest.targets)
        reference = image_reference(o["image"], manifest.version)
        written: list[Path] = []
        if o["manifest_only"]:
            pinned = pinned_existing(reference)
        else:
            _plan, built = build_image("http", folder, reference, o["base_image"], o["arch"], o["python"],
                                       o["builder"], o["push"], out_dir / "image", settings.container_concurrency,
                                       settings.grace_seconds, progress=progress)
            pinned = built.pinned
            written += _image_files(out_dir / "image", built)
        current = o["current_revision"] or previous_revision(out_dir / filename)
        files = write_service(flavour, manifest, pinned, settings, o["canary"], current, out_dir)
        return files.paths + written

    return run


def _lambda_image(folder: Path, progress: Progress, o: dict[str, Any]) -> list[Path]:
    from bento_compile.runtimes.manifest import read_manifest
    from bento_compile.targets.lambda_image import DEFAULT_BASE
    from bento_compile.targets.services import build_image, image_reference

    reference = image_reference(o["image"], read_manifest(folder).version)
    out_dir = Path(o["output"]) / "lambda-image"
    _plan, built = build_image("lambda", folder, reference, o["base_image"] or DEFAULT_BASE, o["arch"], o["python"],
                               o["builder"], o["push"], out_dir, load_mode=o["load"], progress=progress)
    return _image_files(out_dir, built) + ([out_dir / "context"] if (out_dir / "context").is_dir() else [])


_IMAGE_OPTIONS: dict[str, Any] = {"image": None, "output": "dist", "builder": "auto", "push": False,
                                  "arch": "x86_64", "python": None}
_SERVICE_OPTIONS: dict[str, Any] = {**_IMAGE_OPTIONS, "base_image": "docker.io/library/python:3.12-slim",
                                    "manifest_only": False, "canary": None, "current_revision": None,
                                    "config": None}
_TARGETS: dict[str, _Kind] = {
    "lambda-zip": _Kind({"output": "dist", "arch": None, "python": None, "require_bytecode": False}, _lambda_zip),
    "edge": _Kind({"output": "dist", "arch": "arm64", "python": "3.11", "format": None, "glibc": "2.34",
                   "http": True, "tflite_runtime": "auto", "prefix": None, "host": "127.0.0.1", "port": 3000,
                   "memory_max": None, "cpu_quota": "100%"}, _edge),
    "cloudrun": _Kind(_SERVICE_OPTIONS, _service("cloudrun"), ("image",)),
    "knative": _Kind(_SERVICE_OPTIONS, _service("knative"), ("image",)),
    "lambda-image": _Kind({**_IMAGE_OPTIONS, "base_image": None, "load": "eager"}, _lambda_image, ("image",)),
}


# ------------------------------------------------------------------------------------------ invoke

@dataclass(frozen=True)
class Answer:
    """What a Lambda function answered to one event, run locally."""

    body: Any  # the function's JSON answer (Lambda's error document when ok is False)
    ok: bool
    error_type: str | None
    seconds: float  # this event, from invoke to answer
    init_seconds: float  # process start to the end of init


def invoke(zip_path: PathLike, event: Any, *, python: PathLike | None = None, env: Mapping[str, str] | None = None,
           timeout: float = 60.0) -> Answer:
    """Run a Lambda zip as Lambda does and return its answer to `event` (as `bento-compile invoke`).

    The zip is unpacked into an empty folder and run by the real awslambdaric on a clean interpreter of
    the zip's Python version (or `python`), against a Lambda Runtime API on 127.0.0.1. A function that
    fails its init raises BentoCompileError; an error answer comes back with ok=False."""
    from bento_compile.tools.invoke import invoke_zip

    path = Path(zip_path)
    if not path.is_file():
        raise BentoCompileError(f"{path} is not a file.", "Pass the zip `target('lambda-zip', …)` returned.")
    try:  # the event travels as JSON text, which has no NaN or infinity
        json.dumps(event, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BentoCompileError(f"The event is not JSON: {exc}",
                                "Pass dicts, lists, strings and numbers; None for a missing value.") from None
    if env is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise BentoCompileError("env must map strings to strings.", "Pass e.g. env={'BENTO_COMPILE_LOAD': 'lazy'}.")
    answers, init_seconds = invoke_zip(path, [event], Path(python) if python else None, dict(env or {}), timeout)
    result = answers[0].result
    return Answer(body=result.body, ok=result.ok, error_type=result.error_type, seconds=result.seconds,
                  init_seconds=init_seconds)
