"""CycloneDX SBOM for an artifact: the exact wheels, the model files, our runtime code.

Targets call `write_sbom(...)` once, writing `sbom.cdx.json` into the
artifact. Built with `cyclonedx-python-lib` (the CycloneDX project's own
library, which also validates it against the official schema), never by
hand. Every wheel carries name, version, purl, sha256 of the exact file that
went in, and its licence as the wheel's own metadata declares it (PEP 639
License-Expression, else the License field, else the trove classifiers).
The model files carry their sha256 from the Bento manifest.

Reproducible: the serial number is derived from the content (uuid5), and the
timestamp is the Bento's `created` time (itself pinned by SOURCE_DATE_EPOCH),
so building the same Bento and target twice gives the same SBOM bytes.
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import uuid
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bento_compile import __version__
from bento_compile.core.files import write_atomic
from bento_compile.runtimes.manifest import MANIFEST_NAME, read_manifest, sha256_file
from bento_compile.runtimes.model_format import model_format_of
from bento_compile.runtimes.trust import SIGNATURE_NAME

SBOM_NAME = "sbom.cdx.json"
_NAMESPACE = uuid.UUID("5f0c6d1e-2b7a-4c8e-9a51-8e0f3b7d2c41")  # bento-compile's uuid5 namespace for SBOMs


def _license_factory():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from cyclonedx.contrib.license.factories import LicenseFactory
        except ImportError:  # cyclonedx-python-lib < 11
            from cyclonedx.factory.license import LicenseFactory
    return LicenseFactory()


def wheel_metadata(path: Path) -> dict[str, Any]:
    """Name, version, licence and summary from the wheel's own `*.dist-info/METADATA` (no install)."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1]
        if not names:
            return {}
        message = email.parser.BytesParser().parsebytes(archive.read(names[0]), headersonly=True)
    classifiers = [c.split(" :: ")[-1] for c in message.get_all("Classifier", []) if c.startswith("License ::")]
    license_field = (message.get("License") or "").strip()
    return {
        "name": message.get("Name"),
        "version": message.get("Version"),
        "summary": message.get("Summary"),
        "license_expression": (message.get("License-Expression") or "").strip() or None,
        # The free-text field sometimes holds the whole licence text: keep it only when it is a name.
        "license": license_field if license_field and "\n" not in license_field and len(license_field) < 100
        else None,
        "license_classifiers": classifiers,
    }


def _licenses(meta: dict[str, Any]) -> list[Any]:
    factory = _license_factory()
    if meta.get("license_expression"):
        return [factory.make_from_string(meta["license_expression"])]
    if meta.get("license") and meta["license"].upper() not in ("UNKNOWN", "NONE"):
        return [factory.make_from_string(meta["license"])]
    return [factory.make_from_string(name) for name in sorted(set(meta.get("license_classifiers", [])))]


def _file_component(name: str, sha256: str, kind: Any, description: str, props: dict[str, str] | None = None):
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.component import Component

    return Component(
        name=name, type=kind, bom_ref=f"file:{name}", description=description,
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=sha256)],
        properties=[Property(name=k, value=v) for k, v in sorted((props or {}).items())],
    )


def build_bom(*, artifact: str, target: str, bento_dir: Path, wheels: Sequence[Any] = (),
              runtime_files: Iterable[tuple[str, Path]] | None = None, bento_prefix: str = "bento/") -> Any:
    """The Bom object (see `write_sbom`); `wheels` are `targets.wheels.Wheel`s (name, version, path, sha256)."""
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from packageurl import PackageURL

    bento_dir = Path(bento_dir)
    manifest = read_manifest(bento_dir)
    components = []
    for wheel in sorted(wheels, key=lambda w: (w.name.lower(), w.version)):
        meta = wheel_metadata(Path(wheel.path))
        filename = Path(wheel.path).name
        components.append(Component(
            name=meta.get("name") or wheel.name, version=str(wheel.version), type=ComponentType.LIBRARY,
            bom_ref=f"wheel:{filename}", description=meta.get("summary"),
            purl=PackageURL(type="pypi", name=wheel.name.lower().replace("_", "-"), version=str(wheel.version),
                            qualifiers={"file_name": filename}),
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=wheel.sha256)],
            licenses=_licenses(meta),
        ))
    model_format = model_format_of(manifest)
    for relative, entry in sorted(manifest.files.items()):
        is_model = relative == manifest.model_file
        components.append(_file_component(
            f"{bento_prefix}{relative}", entry.sha256,
            ComponentType.MACHINE_LEARNING_MODEL if is_model else ComponentType.DATA,
            f"{manifest.tag} model ({model_format})" if is_model else f"{manifest.tag} file",
            {"bento-compile:size": str(entry.size)}))
    for extra in (MANIFEST_NAME, SIGNATURE_NAME):
        if (bento_dir / extra).is_file():
            components.append(_file_component(f"{bento_prefix}{extra}", sha256_file(bento_dir / extra),
                                              ComponentType.DATA, f"{manifest.tag} {extra.split('.')[0]}"))
    if runtime_files is not None:
        listing = sorted((name, sha256_file(Path(path))) for name, path in runtime_files)
        digest = hashlib.sha256("".join(f"{sha}  {name}\n" for name, sha in listing).encode()).hexdigest()
        components.append(Component(
            name="bento-compile-runtime", version=__version__, type=ComponentType.LIBRARY,
            bom_ref="bento-compile-runtime", description="bento-compile runtime and adapters (the only code of ours "
            "in the artifact); hash over the sha256sum-style listing of its files",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest)],
            properties=[Property(name="bento-compile:files", value=str(len(listing)))],
            licenses=[_license_factory().make_from_string("Apache-2.0")],
        ))
    properties = {
        "bento-compile:target": target,
        "bento-compile:bento": manifest.tag,
        "bento-compile:source-sha256": manifest.source.sha256,
        "bento-compile:config-sha256": manifest.config_sha256,
        **{f"bento-compile:version:{k}": str(v) for k, v in sorted(manifest.versions.items())},
    }
    created = manifest.created or "1970-01-01T00:00:00Z"
    seed = json.dumps([artifact, target, manifest.tag, [(c.bom_ref.value, [h.content for h in c.hashes])
                                                        for c in components]], sort_keys=True)
    metadata = BomMetaData(
        timestamp=datetime.fromisoformat(created.replace("Z", "+00:00")),
        component=Component(name=artifact, version=manifest.version, type=ComponentType.APPLICATION,
                            bom_ref=f"artifact:{artifact}", description=f"{manifest.tag} for {target}"),
        properties=[Property(name=k, value=v) for k, v in properties.items() if v],
    )
    bom = Bom(components=components, metadata=metadata, serial_number=uuid.uuid5(_NAMESPACE, seed))
    bom.metadata.tools.components.add(Component(name="bento-compile", version=__version__,
                                                type=ComponentType.APPLICATION))
    return bom


def render_sbom(bom: Any) -> str:
    """CycloneDX 1.6 JSON, validated against the official schema before it is returned."""
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = JsonV1Dot6(bom).output_as_string(indent=2)
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if errors:
        raise ValueError(f"the SBOM does not validate against CycloneDX 1.6: {errors}")
    # Stable bytes: sorted keys (the library's set ordering is already deterministic).
    return json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def sbom_json(*, artifact: str, target: str, bento_dir: Path, wheels: Sequence[Any] = (),
              runtime_files: Iterable[tuple[str, Path]] | None = None, bento_prefix: str = "bento/") -> str:
    """The SBOM as text, for targets that assemble their artifact from in-memory entries (tar, OCI layers)."""
    return render_sbom(build_bom(artifact=artifact, target=target, bento_dir=bento_dir, wheels=wheels,
                                 runtime_files=runtime_files, bento_prefix=bento_prefix))


def write_sbom(dest: Path, *, artifact: str, target: str, bento_dir: Path, wheels: Sequence[Any] = (),
               runtime_files: Iterable[tuple[str, Path]] | None = None, bento_prefix: str = "bento/") -> Path:
    """Write `sbom.cdx.json` (or `dest` if it names a file) for one artifact; returns its path.

    Call it from a target with the wheels that went in (`resolve_wheels`'s
    result), the Bento folder, and `runtime_package_files()`. If `dest` is a
    folder the file is `dest/sbom.cdx.json`. Written to a temp name, then renamed.
    """
    dest = Path(dest)
    path = dest / SBOM_NAME if dest.is_dir() else dest
    text = sbom_json(artifact=artifact, target=target, bento_dir=bento_dir, wheels=wheels,
                     runtime_files=runtime_files, bento_prefix=bento_prefix)
    return write_atomic(path, text)
