"""Writing a Bento: the one place both builds (ONNX and native formats) end.

`manifest_draft` puts together what every Bento records (source, parity,
example, runtime settings, provenance) as a typed `Manifest`; `write_bento`
hashes the files, names the version after the content, and commits files +
manifest.json to the store in one atomic step (a failed build leaves nothing).

The version is the hash of what the Bento holds, so building the same inputs
twice gives the same version and no duplicate. Measured latencies in the
quantization table vary run to run and are left out of that hash; so is
`created` (which SOURCE_DATE_EPOCH pins for reproducible builds).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bento_compile import __version__
from bento_compile.compiler.source import AnySource
from bento_compile.core.config import BentoConfig
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    ModelInfo,
    MonitoringInfo,
    ParityReport,
    QuantizationReport,
    RuntimeSettings,
    SourceInfo,
)

VERSION_LENGTH = 16  # hex digits of the content hash kept as the Bento version


@dataclass
class BuildResult:
    tag: str
    path: Path
    created_new: bool
    manifest: dict[str, Any]  # manifest.json as stored, parsed (JSON-ready for `build --json`)

    @property
    def parity(self) -> dict[str, Any]:
        return self.manifest["parity"]


def manifest_draft(*, name: str, source: AnySource, model: ModelInfo, parity: dict[str, Any], example: Any,
                   config: BentoConfig, quantization: dict[str, Any] | None = None,
                   monitoring: MonitoringInfo | None = None) -> Manifest:
    """The manifest of a Bento before its files are hashed (no files, version or created yet)."""
    import onnx
    import onnxruntime

    table = None if quantization is None else QuantizationReport.from_dict(quantization, where="quantization")
    return Manifest(
        name=name,
        version="",
        model=model,
        files={},
        source=SourceInfo(kind=source.kind, description=source.description, sha256=source.file_sha256),
        parity=ParityReport.from_dict(parity, where="parity"),
        example=example,
        runtime=RuntimeSettings.from_dict(config.runtime.model_dump(), where="runtime"),
        targets=config.targets,  # per-target settings (e.g. targets.lambda) travel with the Bento
        config_sha256=hashlib.sha256(config.model_dump_json().encode()).hexdigest(),
        versions={
            "bento_compile": __version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
            **source.converter_versions,
        },
        quantization=table,
        monitoring=monitoring,
    )


def write_bento(store: BentoStore, draft: Manifest, files: dict[str, bytes]) -> BuildResult:
    """Hash `files`, finish the manifest (files, version, created) and commit the Bento atomically."""
    entries = {file_name: FileEntry(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
               for file_name, data in sorted(files.items())}
    manifest = replace(draft, files=entries)
    manifest = replace(manifest, version=content_version(manifest), created=created_now())
    with store.staging() as staged:
        for file_name, data in files.items():
            (staged / file_name).write_bytes(data)
        (staged / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        path, created_new = store.commit(staged, manifest.name, manifest.version)
    # When the version existed already, the stored manifest is the one to report (its `created` is older).
    stored = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
    return BuildResult(tag=manifest.tag, path=path, created_new=created_new, manifest=stored)


def content_version(manifest: Manifest) -> str:
    """The Bento version: sha256 over the manifest's content, without `version`, `created` and latencies."""
    canonical = json.dumps(_without_latencies(manifest.content()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:VERSION_LENGTH]


def _without_latencies(content: dict[str, Any]) -> dict[str, Any]:
    """Measured latencies vary run to run; the Bento's content does not."""
    if "quantization" not in content:
        return content
    variants = [{k: v for k, v in row.items() if not k.startswith("latency_")}
                for row in content["quantization"]["variants"]]
    return {**content, "quantization": {**content["quantization"], "variants": variants}}


def created_now() -> str:
    """Build time, or SOURCE_DATE_EPOCH for reproducible builds."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (_dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch
              else _dt.datetime.now(_dt.timezone.utc))
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")
