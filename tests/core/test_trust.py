"""Signed Bentos: keygen, sign, verify (CLI and artifacts), and the runtime refusing what does not verify."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bento_compile.core.signing import generate_keypair, load_private_key, sign_bento
from bento_compile.runtimes.errors import IntegrityError
from bento_compile.runtimes.model import BentoModel
from bento_compile.runtimes.trust import PUBLIC_KEY_ENV, SIGNATURE_NAME, load_public_key, parse_public_key
from tests.support.helpers import run_cli


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two independent key pairs: `a` signs, `b` is someone else."""
    root = tmp_path_factory.mktemp("keys")
    return {"a": generate_keypair(root / "a"), "b": generate_keypair(root / "b")}


def stored_copy(built_example: Path, store_home: Path) -> Path:
    """The session's example Bento copied into this test's store (tests may modify it)."""
    manifest = json.loads((built_example / "manifest.json").read_text())
    target = store_home / "bentos" / manifest["name"] / manifest["version"]
    shutil.copytree(built_example, target)
    return target


@pytest.fixture
def signed(built_example, store_home, keys) -> Path:
    bento = stored_copy(built_example, store_home)
    sign_bento(bento, load_private_key(keys["a"].private_path))
    return bento


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# -- keys ------------------------------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_reads_and_a_pub_file(tmp_path):
    result = run_cli("keygen", "-o", str(tmp_path / "k"))
    private, public = tmp_path / "k" / "bento-signing.key", tmp_path / "k" / "bento-signing.pub.pem"
    assert result.stdout.strip() == str(public) and "pub" in public.name
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert "sha256:" in result.stderr
    again = run_cli("keygen", "-o", str(tmp_path / "k"), check=False)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_public_key_forms_all_parse_to_the_same_key(keys, tmp_path):
    from cryptography.hazmat.primitives import serialization

    pem = keys["a"].public_path.read_text()
    raw = parse_public_key(pem)
    key = serialization.load_pem_public_key(pem.encode())
    ssh = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    assert len(raw) == 32
    assert load_public_key(str(keys["a"].public_path)) == raw
    assert parse_public_key(base64.b64encode(raw).decode()) == raw
    assert parse_public_key(raw.hex()) == raw
    assert parse_public_key(ssh) == raw
    with pytest.raises(IntegrityError, match="PRIVATE key was given"):
        parse_public_key(keys["a"].private_path.read_text())
    with pytest.raises(IntegrityError, match="neither a public key file nor"):
        load_public_key(str(tmp_path / "nope.pub.pem"))


def test_signing_key_from_the_environment(keys, monkeypatch, signed):
    monkeypatch.setenv("BENTO_COMPILE_SIGNING_KEY", keys["a"].private_path.read_text())
    before = (signed / SIGNATURE_NAME).read_bytes()
    sign_bento(signed, load_private_key())
    assert (signed / SIGNATURE_NAME).read_bytes() == before  # Ed25519 is deterministic: same bytes
    monkeypatch.setenv("BENTO_COMPILE_SIGNING_KEY", str(keys["a"].private_path))
    assert load_private_key() is not None


# -- sign / verify ----------------------------------------------------------------------------------------------


def test_sign_keeps_the_version_and_verify_accepts(built_example, store_home, keys):
    bento = stored_copy(built_example, store_home)
    manifest_before = (bento / "manifest.json").read_bytes()
    tag = json.loads(manifest_before)["name"] + ":latest"
    assert "signed: no" in run_cli("show", tag).stdout
    out = run_cli("sign", tag, "--key", str(keys["a"].private_path))
    assert Path(out.stdout.strip()) == bento / SIGNATURE_NAME
    assert (bento / "manifest.json").read_bytes() == manifest_before  # content-addressed version unchanged
    record = json.loads((bento / SIGNATURE_NAME).read_text())
    assert record["algorithm"] == "ed25519" and record["public_key_fingerprint"] == keys["a"].fingerprint
    assert "PRIVATE" not in (bento / SIGNATURE_NAME).read_text()
    ok = run_cli("verify", tag, "--pub", str(keys["a"].public_path), "--json")
    report = json.loads(ok.stdout)
    assert report["ok"] and report["key"] == keys["a"].fingerprint and report["files"] == ["model.onnx"]
    assert f"signed: by {keys['a'].fingerprint}" in run_cli("show", tag).stdout


def test_sign_refuses_a_bento_that_was_already_changed(built_example, store_home, keys):
    bento = stored_copy(built_example, store_home)
    flip_byte(bento / "model.onnx", 50)
    result = run_cli("sign", "cancer:latest", "--key", str(keys["a"].private_path), check=False)
    assert result.returncode == 1 and "Refusing to sign" in result.stderr and "model.onnx" in result.stderr
    assert not (bento / SIGNATURE_NAME).exists()


def _tamper_model(bento: Path, _keys) -> str:
    flip_byte(bento / "model.onnx", 100)
    return "model.onnx"


def _tamper_manifest(bento: Path, _keys) -> str:
    # One byte of the build time: the hashes still match, only the signature can tell.
    path = bento / "manifest.json"
    text = path.read_text()
    created = json.loads(text)["created"]
    changed = created[:3] + ("1" if created[3] != "1" else "2") + created[4:]
    path.write_text(text.replace(created, changed))
    return "manifest.json"


def _tamper_signature(bento: Path, _keys) -> str:
    path = bento / SIGNATURE_NAME
    record = json.loads(path.read_text())
    raw = bytearray(base64.b64decode(record["signature"]))
    raw[10] ^= 0x01
    record["signature"] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return SIGNATURE_NAME


def _swapped_key(bento: Path, keys) -> str:
    sign_bento(bento, load_private_key(keys["b"].private_path))  # someone else's signature
    return SIGNATURE_NAME


def _consistent_forgery(bento: Path, _keys) -> str:
    # The attacker changes the model AND rewrites its hash in the manifest: hashes agree, the signature does not.
    import hashlib

    flip_byte(bento / "model.onnx", 100)
    path = bento / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"]["model.onnx"]["sha256"] = hashlib.sha256((bento / "model.onnx").read_bytes()).hexdigest()
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return "manifest.json"


def _unsigned(bento: Path, _keys) -> str:
    (bento / SIGNATURE_NAME).unlink()
    return SIGNATURE_NAME


def _unlisted_file(bento: Path, _keys) -> str:
    (bento / "model.onnx.data").write_bytes(b"\0" * 64)
    return "model.onnx.data"


TAMPERS = {
    "model-byte": _tamper_model,
    "manifest-byte": _tamper_manifest,
    "signature-byte": _tamper_signature,
    "swapped-key": _swapped_key,
    "forged-hashes": _consistent_forgery,
    "unsigned": _unsigned,
    "unlisted-file": _unlisted_file,
}


@pytest.mark.parametrize("tamper", TAMPERS.values(), ids=TAMPERS.keys())
def test_every_tampering_is_refused_by_verify_and_by_the_runtime(signed, keys, tamper, monkeypatch):
    culprit = tamper(signed, keys)
    pub = str(keys["a"].public_path)

    result = run_cli("verify", str(signed), "--pub", pub, check=False)
    assert result.returncode == 1, result.stdout
    assert "does not verify" in result.stderr and culprit in result.stderr

    result = run_cli("verify", "cancer:latest", "--pub", pub, check=False)
    assert result.returncode == 1 and culprit in result.stderr

    monkeypatch.setenv(PUBLIC_KEY_ENV, pub)
    with pytest.raises(IntegrityError, match=culprit.replace(".", r"\.")):
        BentoModel.load(signed)

    from bento_compile.adapters.http_app import create_app

    with TestClient(create_app(signed, load_mode="eager")) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and culprit in ready.json()["error"]
        assert client.post("/predict", json={"inputs": [[0.1] * 30]}).status_code == 503


def test_the_runtime_accepts_a_good_signature_with_the_key_in_any_form(signed, keys, monkeypatch):
    raw = parse_public_key(keys["a"].public_path.read_text())
    for value in (str(keys["a"].public_path), keys["a"].public_path.read_text(), base64.b64encode(raw).decode()):
        monkeypatch.setenv(PUBLIC_KEY_ENV, value)
        model = BentoModel.load(signed)
        assert model.predict({"inputs": [[0.1] * 30]})["outputs"]
    from bento_compile.adapters.http_app import create_app

    with TestClient(create_app(signed, load_mode="eager")) as client:
        assert client.get("/readyz").status_code == 200


def test_without_a_key_unsigned_bentos_still_load(built_example, monkeypatch):
    monkeypatch.delenv(PUBLIC_KEY_ENV, raising=False)
    assert BentoModel.load(built_example).manifest.name == "cancer"


def test_a_bad_key_in_the_environment_refuses_rather_than_skipping(signed, monkeypatch):
    monkeypatch.setenv(PUBLIC_KEY_ENV, "not-a-key")
    with pytest.raises(IntegrityError, match=PUBLIC_KEY_ENV):
        BentoModel.load(signed)


def _load_in_subprocess(bento: Path, env: dict[str, str], block: str | None = None) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import sys, json
        BLOCK = {block!r}
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if BLOCK and (name == BLOCK or name.startswith(BLOCK + ".")):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Blocker())
        from bento_compile.runtimes.model import BentoModel
        try:
            BentoModel.load({str(bento)!r})
            status = "loaded"
        except Exception as exc:
            status = type(exc).__name__ + ": " + str(exc)
        print(json.dumps({{"status": status, "cryptography": "cryptography" in sys.modules}}))
    """)
    clean = {k: v for k, v in os.environ.items() if k != PUBLIC_KEY_ENV}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**clean, **env},
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cryptography_is_imported_only_when_a_key_is_configured(signed, keys):
    assert _load_in_subprocess(signed, {}) == {"status": "loaded", "cryptography": False}
    assert _load_in_subprocess(signed, {PUBLIC_KEY_ENV: str(keys["a"].public_path)}) == {
        "status": "loaded", "cryptography": True}


def test_a_key_without_cryptography_installed_fails_closed(signed, keys):
    out = _load_in_subprocess(signed, {PUBLIC_KEY_ENV: str(keys["a"].public_path)}, block="cryptography")
    assert out["status"].startswith("IntegrityError") and "cryptography" in out["status"]


# -- artifacts --------------------------------------------------------------------------------------------------


def _zip_artifact(bento: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as archive:
        archive.writestr("handler.py", "print('hi')\n")
        archive.writestr("bento_compile/__init__.py", "")
        for path in sorted(bento.iterdir()):
            archive.write(path, f"bento/{path.name}")
    return dest


def _tar_artifact(bento: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as archive:
        archive.add(bento, arcname="edge-bundle/bento")
        info = tarfile.TarInfo("edge-bundle/run.sh")
        data = b"#!/bin/sh\n"
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return dest


def _oci_artifact(bento: Path, dest: Path) -> Path:
    """A minimal OCI image layout: two layers (an app layer, then the Bento under /app/bento)."""
    import gzip
    import hashlib

    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    def layer(build) -> dict:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            build(archive)
        return {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(gzip.compress(buffer.getvalue()))}

    def app_layer(archive):
        info = tarfile.TarInfo("app/server.py")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"#!\n"))

    layers = [layer(app_layer), layer(lambda archive: archive.add(bento, arcname="app/bento"))]
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", **put(b'{"architecture":"amd64","os":"linux"}')}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config, "layers": layers}).encode()
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                **put(manifest)}]}
    (dest / "index.json").write_text(json.dumps(index))
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return dest


ARTIFACTS = {"zip": (_zip_artifact, "function.zip"), "tar.gz": (_tar_artifact, "bundle.tar.gz"),
             "oci-layout": (_oci_artifact, "image")}


@pytest.mark.parametrize("kind", ARTIFACTS)
def test_verify_finds_the_bento_inside_each_artifact_kind(signed, keys, tmp_path, kind):
    make, name = ARTIFACTS[kind]
    artifact = make(signed, tmp_path / name)
    ok = run_cli("verify", str(artifact), "--pub", str(keys["a"].public_path), "--json")
    assert json.loads(ok.stdout)["tag"].startswith("cancer:")
    wrong_key = run_cli("verify", str(artifact), "--pub", str(keys["b"].public_path), check=False)
    assert wrong_key.returncode == 1 and SIGNATURE_NAME in wrong_key.stderr

    tampered = tmp_path / "tampered"
    shutil.copytree(signed, tampered)
    flip_byte(tampered / "model.onnx", 200)
    bad = make(tampered, tmp_path / f"bad-{name}")
    refused = run_cli("verify", str(bad), "--pub", str(keys["a"].public_path), check=False)
    assert refused.returncode == 1 and "model.onnx" in refused.stderr


def test_verify_explains_what_it_cannot_read(tmp_path, keys):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    result = run_cli("verify", str(junk), "--pub", str(keys["a"].public_path), check=False)
    assert result.returncode == 1 and "not a Bento folder, a zip" in result.stderr
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("x.txt", "x")
    result = run_cli("verify", str(empty), "--pub", str(keys["a"].public_path), check=False)
    assert result.returncode == 1 and "No Bento" in result.stderr
    result = run_cli("verify", str(empty), check=False, env={PUBLIC_KEY_ENV: ""})
    assert result.returncode == 1 and "No public key given" in result.stderr


def test_zip_entries_cannot_escape_the_extraction_folder(signed, keys, tmp_path):
    artifact = _zip_artifact(signed, tmp_path / "evil.zip")
    with zipfile.ZipFile(artifact, "a") as archive:
        archive.writestr("bento/../../escaped.txt", "x")
    run_cli("verify", str(artifact), "--pub", str(keys["a"].public_path), check=False)
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/escaped.txt").exists()
