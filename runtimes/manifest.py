"""Reading a Bento's manifest and proving its files are the ones it names.

The manifest is the contract between the compiler (which writes it) and the
runtime (which trusts nothing else): model files with sha256 and size, the
input/output signature, runtime settings. The runtime checks every hash
before a byte of the model reaches ONNX Runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bento_compile.runtimes.errors import IntegrityError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed so large models do not sit twice in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: its name, numpy dtype name and shape (None = free axis)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(name=data["name"], dtype=data["dtype"], shape=tuple(data["shape"]))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


BATCHING_MODES = ("off", "fixed", "adaptive")


@dataclass(frozen=True)
class BatchingSettings:
    """`runtime.batching` from bento.yaml: how concurrent requests are coalesced (runtimes/batching.py)."""

    mode: str = "adaptive"  # off | fixed | adaptive
    max_batch_size: int = 64  # rows, not requests
    max_latency_ms: float = 5.0
    max_queue_rows: int = 2048
    timeout_ms: float = 2000.0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> BatchingSettings:
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


def effective_settings(settings: BatchingSettings) -> BatchingSettings:
    """`runtime.batching` from the manifest, with env BENTO_COMPILE_BATCHING (off|fixed|adaptive) overriding
    the mode: operators switch batching off (or on) per deployment without rebuilding the Bento."""
    mode = os.environ.get("BENTO_COMPILE_BATCHING", "").strip()
    if not mode:
        return settings
    if mode not in BATCHING_MODES:
        raise ValueError(f"BENTO_COMPILE_BATCHING must be one of {', '.join(BATCHING_MODES)}, got {mode!r}")
    return replace(settings, mode=mode)


@dataclass(frozen=True)
class RuntimeSettings:
    """Serving bounds and behaviour recorded at compile time (from bento.yaml).

    Bentos built before a field existed read its default, so old manifests keep loading.
    """

    allow_missing: bool = True
    max_body_bytes: int = 6 * 1024 * 1024
    max_batch_rows: int = 1024
    intra_op_threads: int = 1
    device: str = "auto"  # auto | cpu | cuda | tensorrt
    max_concurrency: int = 0  # in-flight /predict requests; 0 = unlimited
    batching: BatchingSettings = field(default_factory=BatchingSettings)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RuntimeSettings:
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        if "batching" in known:
            known["batching"] = BatchingSettings.from_dict(known["batching"])
        return cls(**known)


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest.json of one Bento."""

    name: str
    version: str
    model_file: str
    files: dict[str, dict[str, Any]]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    runtime: RuntimeSettings
    raw: dict[str, Any] = field(repr=False)

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def batchable(self) -> bool:
        """Whether rows of several requests may be stacked into one run: the compiler's verdict
        (`model.batchable`), and never when any input or output has a fixed first axis."""
        recorded = self.raw.get("model", {}).get("batchable", True)
        free = all(s.shape and s.shape[0] is None for s in (*self.inputs, *self.outputs))
        return bool(recorded) and free

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        model = data["model"]
        return cls(
            name=data["name"],
            version=data["version"],
            model_file=model["file"],
            files=data["files"],
            inputs=tuple(TensorSpec.from_dict(d) for d in model["inputs"]),
            outputs=tuple(TensorSpec.from_dict(d) for d in model["outputs"]),
            runtime=RuntimeSettings.from_dict(data.get("runtime")),
            raw=data,
        )


def read_manifest(bento_dir: Path) -> Manifest:
    """Parse `manifest.json` in a Bento folder, with an error that names the folder."""
    path = Path(bento_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IntegrityError(f"{path} is missing: this folder is not a Bento") from exc
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{path} cannot be read as JSON: {exc}") from exc
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise IntegrityError(f"{path} lacks the field {exc}: rebuild the Bento") from exc


def verify_files(bento_dir: Path, manifest: Manifest) -> None:
    """Check the size and sha256 of every file the manifest lists; raise on the first mismatch."""
    root = Path(bento_dir)
    for relative, meta in sorted(manifest.files.items()):
        path = root / relative
        if not path.is_file():
            raise IntegrityError(f"{relative} is listed in the manifest but missing from {root}")
        size = path.stat().st_size
        if size != meta["size"]:
            raise IntegrityError(
                f"{relative} is {size} bytes but the manifest says {meta['size']}: "
                "the file was changed after the build; rebuild or re-pull the Bento"
            )
        actual = sha256_file(path)
        if actual != meta["sha256"]:
            raise IntegrityError(
                f"{relative} has sha256 {actual} but the manifest says {meta['sha256']}: "
                "the file was changed after the build; rebuild or re-pull the Bento"
            )
