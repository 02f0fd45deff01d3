"""Signed Bentos through the real targets: the artifact carries the signature, an SBOM and the verifier,
`verify` accepts it and refuses a tampered copy, and the function itself refuses to start on one."""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from bento_compile.core.signing import generate_keypair, load_private_key, sign_bento
from bento_compile.runtimes.trust import PUBLIC_KEY_ENV
from bento_compile.targets.bytecode import find_interpreter
from tests.support.helpers import run_cli

pytestmark = pytest.mark.slow

LAMBDA_PYTHON = "3.12"


@pytest.fixture(scope="module")
def signed_home(built_example, tmp_path_factory):
    """A store holding the example Bento, signed; the key pair beside it."""
    home = tmp_path_factory.mktemp("signed-home")
    manifest = json.loads((built_example / "manifest.json").read_text())
    bento = home / "bentos" / manifest["name"] / manifest["version"]
    shutil.copytree(built_example, bento)
    keys = generate_keypair(tmp_path_factory.mktemp("target-keys"))
    sign_bento(bento, load_private_key(keys.private_path))
    return {"home": home, "keys": keys, "bento": bento, "manifest": manifest}


def _retamper_zip(source: Path, dest: Path) -> None:
    """Copy a zip, changing one byte of the Bento's build time (the file hashes still match)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == "bento/manifest.json":
                manifest = json.loads(data)
                created = manifest["created"]
                data = data.replace(created.encode(), (created[:3] + ("1" if created[3] != "1" else "2")
                                                      + created[4:]).encode())
            new.writestr(info, data)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _sbom_wheels(sbom: dict) -> set[tuple[str, str, str]]:
    return {(_normal(c["name"]), c["version"], c["hashes"][0]["content"]) for c in sbom["components"]
            if c.get("purl", "").startswith("pkg:pypi/")}


def test_signed_lambda_zip_verifies_and_its_function_refuses_a_tampered_copy(signed_home, tmp_path):
    env = {"BENTO_COMPILE_HOME": str(signed_home["home"])}
    built = run_cli("target", "lambda-zip", "cancer:latest", "--python", LAMBDA_PYTHON, "-o", str(tmp_path / "d"),
                    env=env)
    zip_path = Path(built.stdout.strip().splitlines()[-1])
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
        assert {"bento/signature.json", "bento/manifest.json", "sbom.cdx.json"} <= names
        assert any(n.startswith("cryptography/") for n in names), "a signed Bento needs its verifier in the zip"
        assert not any("PRIVATE KEY" in archive.read(n).decode("latin-1") for n in names if n.startswith("bento/"))
        sbom = json.loads(archive.read("sbom.cdx.json"))
        info = json.loads(archive.read("bento-lambda.json"))
    assert _sbom_wheels(sbom) == {(_normal(w["name"]), w["version"], w["sha256"]) for w in info["wheels"]}
    pub = str(signed_home["keys"].public_path)
    assert json.loads(run_cli("verify", str(zip_path), "--pub", pub, "--json").stdout)["ok"]

    tampered = tmp_path / "tampered.zip"
    _retamper_zip(zip_path, tampered)
    refused = run_cli("verify", str(tampered), "--pub", pub, check=False)
    assert refused.returncode == 1 and "manifest.json" in refused.stderr

    if find_interpreter(LAMBDA_PYTHON) is None:
        pytest.skip(f"no Python {LAMBDA_PYTHON} interpreter here to run the function with")
    event = tmp_path / "event.json"
    event.write_text(json.dumps(signed_home["manifest"]["example"]))
    key_env = f"{PUBLIC_KEY_ENV}={signed_home['keys'].public_path.read_text().strip().splitlines()[1]}"
    # The PEM body line alone is base64 of the DER key: one of the accepted one-line forms.
    ok = run_cli("invoke", str(zip_path), "--event", str(event), "--env", key_env, "--no-logs", env=env)
    assert "outputs" in json.loads(ok.stdout)
    bad = run_cli("invoke", str(tampered), "--event", str(event), "--env", key_env, check=False, env=env)
    assert bad.returncode == 1 and "manifest.json" in (bad.stdout + bad.stderr)
    # Without a key the same tampered zip still serves: it is the signature check that refused it.
    unchecked = run_cli("invoke", str(tampered), "--event", str(event), "--no-logs", env=env)
    assert "outputs" in json.loads(unchecked.stdout)


def test_signed_edge_bundle_carries_signature_sbom_and_verifier_reproducibly(signed_home, tmp_path):
    env = {"BENTO_COMPILE_HOME": str(signed_home["home"])}
    args = ["target", "edge", "cancer:latest", "--arch", "x86_64", "--python", "3.11"]
    first = Path(run_cli(*args, "-o", str(tmp_path / "a"), env=env).stdout.strip().splitlines()[-1])
    second = Path(run_cli(*args, "-o", str(tmp_path / "b"), env=env).stdout.strip().splitlines()[-1])
    assert first.read_bytes() == second.read_bytes()  # signed, with an SBOM: still byte-identical
    with tarfile.open(first) as archive:
        names = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name}
        top = archive.getmembers()[0].name.split("/")[0]
        sums = archive.extractfile(f"{top}/SHA256SUMS").read().decode()
        sbom = json.loads(archive.extractfile(f"{top}/sbom.cdx.json").read())
    assert {"bento/signature.json", "sbom.cdx.json"} <= names
    assert "sbom.cdx.json" in sums  # the installer checks it like every other file
    wheels = {n for n in names if n.startswith("wheels/")}
    assert any(n.startswith("wheels/cryptography-") for n in wheels)
    assert {c["purl"].split("file_name=")[1] for c in sbom["components"] if "purl" in c} == \
        {n.split("/", 1)[1] for n in wheels}
    pub = str(signed_home["keys"].public_path)
    assert json.loads(run_cli("verify", str(first), "--pub", pub, "--json").stdout)["ok"]
    other = generate_keypair(tmp_path / "other")
    wrong = run_cli("verify", str(first), "--pub", str(other.public_path), check=False)
    assert wrong.returncode == 1 and "signature.json" in wrong.stderr


@pytest.fixture(scope="module")
def base_layout(tmp_path_factory) -> str:
    """The cached mmdebstrap bookworm + python3 root file system as an OCI layout (no registry pull)."""
    from tests.support import container_infra as infra

    if infra.missing("mmdebstrap") or os.geteuid() != 0:
        pytest.skip("needs root and mmdebstrap (apt-get install mmdebstrap) for the base image")
    return f"{infra.make_base_layout(tmp_path_factory.mktemp('base') / 'python')}:python"


def test_signed_lambda_image_is_reproducible_and_verifies(signed_home, base_layout, tmp_path):
    from bento_compile.targets.lambda_image import plan_lambda_image
    from bento_compile.targets.oci_builder import OciBuilder

    reference = f"127.0.0.1:5000/cancer-lambda:{signed_home['manifest']['version']}"
    first = OciBuilder().build(plan_lambda_image(signed_home["bento"], base_layout), tmp_path / "a", reference)
    second = OciBuilder().build(plan_lambda_image(signed_home["bento"], base_layout), tmp_path / "b", reference)
    assert first.digest == second.digest and first.layer_digests == second.layer_digests
    pub = str(signed_home["keys"].public_path)
    assert json.loads(run_cli("verify", str(first.layout), "--pub", pub, "--json").stdout)["ok"]


def test_signed_oci_image_verifies_and_carries_sbom_and_verifier(signed_home, base_layout, tmp_path):
    """The daemonless OCI builder on the cached mmdebstrap base; `verify` walks the layout's layers."""
    from bento_compile.targets.images import plan_http_image
    from bento_compile.targets.oci_builder import OciBuilder

    built = OciBuilder().build(plan_http_image(signed_home["bento"], base_layout), tmp_path / "image",
                               f"127.0.0.1:5000/cancer:{signed_home['manifest']['version']}")
    layout = Path(built.layout)
    pub = str(signed_home["keys"].public_path)
    assert json.loads(run_cli("verify", str(layout), "--pub", pub, "--json").stdout)["ok"]
    other = generate_keypair(tmp_path / "other")
    assert run_cli("verify", str(layout), "--pub", str(other.public_path), check=False).returncode == 1

    from bento_compile.tools.artifact_bento import _oci_layers, _open_layer

    found: dict[str, bytes] = {}
    for layer in _oci_layers(layout):
        with _open_layer(layer) as handle, tarfile.open(fileobj=handle, mode="r:*") as archive:
            for member in archive:
                if member.name in ("opt/bento-compile/sbom.cdx.json",) or \
                        member.name.startswith("opt/bento-compile/site-packages/cryptography/__init__"):
                    found[member.name] = archive.extractfile(member).read()
    assert "opt/bento-compile/site-packages/cryptography/__init__.py" in found
    sbom = json.loads(found["opt/bento-compile/sbom.cdx.json"])
    names = {c["name"] for c in sbom["components"]}
    assert "/opt/bento-compile/bento/model.onnx" in names and "cryptography" in names
