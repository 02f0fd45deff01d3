"""CycloneDX SBOMs: real wheels resolved for a target, the model files, schema-valid and reproducible."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from bento_compile.core.sbom import SBOM_NAME, wheel_metadata, write_sbom
from bento_compile.core.signing import generate_keypair, load_private_key, sign_bento
from bento_compile.targets.runtime_files import runtime_package_files
from bento_compile.targets.wheels import TargetPlatform, Wheel, resolve_wheels


@pytest.fixture(scope="session")
def real_wheels(tmp_path_factory) -> list[Wheel]:
    """Binary wheels for an arm64 device (not the build machine's), resolved once per session."""
    return resolve_wheels(["orjson", "six"], TargetPlatform(arch="arm64", python="3.12"),
                          tmp_path_factory.mktemp("sbom-wheels"))


def components(sbom: dict) -> dict[str, dict]:
    return {c["name"]: c for c in sbom["components"]}


@pytest.mark.slow
def test_sbom_lists_the_exact_wheels_and_model_files(real_wheels, built_example, tmp_path):
    bento = tmp_path / "bento"
    shutil.copytree(built_example, bento)
    keys = generate_keypair(tmp_path / "keys")
    sign_bento(bento, load_private_key(keys.private_path))
    out = tmp_path / "artifact"
    out.mkdir()
    path = write_sbom(out, artifact="cancer-edge.tar.gz", target="edge", bento_dir=bento, wheels=real_wheels,
                      runtime_files=runtime_package_files())
    assert path == out / SBOM_NAME
    sbom = json.loads(path.read_text())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
    found = components(sbom)
    for wheel in real_wheels:
        entry = found[wheel.name]
        assert entry["version"] == wheel.version and entry["type"] == "library"
        assert entry["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(wheel.path.read_bytes()).hexdigest()}]
        assert entry["purl"].startswith(f"pkg:pypi/{wheel.name}@{wheel.version}?file_name=")
        assert "aarch64" in entry["purl"] or "none-any" in entry["purl"]
        assert entry["licenses"], f"{wheel.name} has no licence in the SBOM"
    assert found["six"]["licenses"] == [{"license": {"id": "MIT"}}]
    manifest = json.loads((bento / "manifest.json").read_text())
    model = found["bento/model.onnx"]
    assert model["type"] == "machine-learning-model"
    assert model["hashes"][0]["content"] == manifest["files"]["model.onnx"]["sha256"]
    assert found["bento/signature.json"]["type"] == "data"
    assert found["bento-compile-runtime"]["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    props = {p["name"]: p["value"] for p in sbom["metadata"]["properties"]}
    assert props["bento-compile:source-sha256"] == manifest["source"]["sha256"]
    assert props["bento-compile:config-sha256"] == manifest["config_sha256"]
    assert props["bento-compile:target"] == "edge"
    assert sbom["metadata"]["component"]["version"] == manifest["version"]

    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(path.read_text()) is None

    # Reproducible: same inputs, same bytes (serial number and timestamp come from the content).
    again = write_sbom(tmp_path / "again.cdx.json", artifact="cancer-edge.tar.gz", target="edge", bento_dir=bento,
                       wheels=real_wheels, runtime_files=runtime_package_files())
    assert again.read_bytes() == path.read_bytes()
    other = write_sbom(tmp_path / "other.cdx.json", artifact="cancer-edge.tar.gz", target="edge", bento_dir=bento,
                       wheels=real_wheels[:1], runtime_files=runtime_package_files())
    assert json.loads(other.read_text())["serialNumber"] != sbom["serialNumber"]


def _wheel(tmp_path: Path, name: str, metadata: str) -> Path:
    path = tmp_path / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}-1.0.dist-info/METADATA", metadata)
        archive.writestr(f"{name}/__init__.py", "")
    return path


def test_licence_comes_from_the_wheels_own_metadata(tmp_path, built_example):
    expression = _wheel(tmp_path, "expr", "Metadata-Version: 2.4\nName: expr\nVersion: 1.0\n"
                        "License-Expression: Apache-2.0 OR MIT\n\n")
    long_text = _wheel(tmp_path, "longtext", "Metadata-Version: 2.1\nName: longtext\nVersion: 1.0\n"
                       "License: Copyright (c) someone\n        Permission is hereby granted, free of charge\n"
                       "Classifier: License :: OSI Approved :: BSD License\n\n")
    assert wheel_metadata(expression)["license_expression"] == "Apache-2.0 OR MIT"
    meta = wheel_metadata(long_text)
    assert meta["license"] is None and meta["license_classifiers"] == ["BSD License"]
    wheels = [Wheel("expr", "1.0", expression, hashlib.sha256(expression.read_bytes()).hexdigest()),
              Wheel("longtext", "1.0", long_text, hashlib.sha256(long_text.read_bytes()).hexdigest())]
    sbom = json.loads(write_sbom(tmp_path / "s.json", artifact="a.zip", target="lambda-zip", bento_dir=built_example,
                                 wheels=wheels).read_text())
    found = components(sbom)
    assert found["expr"]["licenses"] == [{"expression": "Apache-2.0 OR MIT"}]
    assert found["longtext"]["licenses"] == [{"license": {"name": "BSD License"}}]
    assert "bento-compile-runtime" not in found  # only when runtime files are given
