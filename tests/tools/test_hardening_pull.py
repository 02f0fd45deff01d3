"""`pull` against crafted remote objects on a real S3 server (moto_server on 127.0.0.1): a stage pointer
or a manifest whose names would become paths outside the store is refused with one clear line, and
nothing is written anywhere."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore
from bento_compile.tools.remote import RemoteStore
from tests.support.helpers import run_cli

pytestmark = pytest.mark.slow


def _pushed(client, bucket: str, built_example: Path, home: Path) -> tuple[str, dict]:
    """Push the example Bento under prefix x/; returns (version, manifest)."""
    manifest = json.loads((built_example / "manifest.json").read_text())
    target = home / "bentos" / manifest["name"] / manifest["version"]
    shutil.copytree(built_example, target)
    RemoteStore(bucket, "x", client).push(target)
    return manifest["version"], manifest


def _plant(client, bucket: str, version: str, manifest: dict, built_example: Path) -> bytes:
    """Upload a whole, self-consistent Bento under an attacker-chosen version key, as a bucket writer can."""
    for relative in manifest["files"]:
        client.put_object(Bucket=bucket, Key=f"x/bentos/cancer/{version}/{relative}",
                          Body=(built_example / "model.onnx").read_bytes())
    body = json.dumps(manifest).encode()
    client.put_object(Bucket=bucket, Key=f"x/bentos/cancer/{version}/manifest.json", Body=body)
    return body


def _point(client, bucket: str, stage: str, body: bytes | str) -> None:
    client.put_object(Bucket=bucket, Key=f"x/stages/cancer/{stage}.json",
                      Body=body if isinstance(body, bytes) else body.encode())


def test_a_stage_pointer_with_an_absolute_or_climbing_version_is_refused(s3, built_example, store_home, tmp_path):
    client, bucket = s3
    _version, manifest = _pushed(client, bucket, built_example, store_home)
    victim = tmp_path / "victim-home" / ".ssh"  # where the old code renamed the staged Bento to
    for hostile in (str(victim), "../../../../" + str(victim).lstrip("/")):
        evil = {**manifest, "version": hostile}
        body = _plant(client, bucket, hostile, evil, built_example)
        _point(client, bucket, "prod", json.dumps(
            {"name": "cancer", "stage": "prod", "version": hostile,
             "manifest_sha256": hashlib.sha256(body).hexdigest()}))
        home = tmp_path / "local"
        result = run_cli("pull", f"s3://{bucket}/x/cancer:prod", check=False, env={"BENTO_COMPILE_HOME": str(home)})
        assert result.returncode == 1, result.stdout
        assert "Traceback" not in result.stderr
        assert "'version'" in result.stderr and "not allowed" in result.stderr
        assert not victim.exists() and not victim.parent.exists()
        assert not (home / "bentos").exists() or not any((home / "bentos").rglob("*"))


@pytest.mark.parametrize("files, model_file, rule", [
    ({"../../../../tmp/planted": None}, "model.onnx", "inside the Bento folder"),
    ({"/etc/planted": None}, "model.onnx", "no absolute paths"),
    ({"": None}, "model.onnx", "non-empty"),
    ({"model.onnx": None}, "unhashed.onnx", "must be one of the files the manifest hashes"),
])
def test_a_manifest_naming_files_outside_the_bento_is_refused_before_any_download(
        s3, built_example, store_home, tmp_path, files, model_file, rule):
    client, bucket = s3
    version, manifest = _pushed(client, bucket, built_example, store_home)
    meta = manifest["files"]["model.onnx"]
    evil = {**manifest, "files": {name: meta for name in files}, "model": {**manifest["model"], "file": model_file}}
    client.put_object(Bucket=bucket, Key=f"x/bentos/cancer/{version}/manifest.json", Body=json.dumps(evil).encode())
    home = BentoStore(tmp_path / "local")
    with pytest.raises(BentoCompileError, match="Refusing to pull") as exc:
        RemoteStore(bucket, "x", client).pull("cancer", version, home)
    assert rule in str(exc.value)
    assert not Path("/etc/planted").exists() and not Path("/tmp/planted").exists()
    assert not (home.root / "cancer").exists()


@pytest.mark.parametrize("body, detail", [
    (b"42", "a JSON int, not an object"),
    (b"[1, 2]", "a JSON list, not an object"),
    (b"{not json", "it is not JSON"),
    (b'{"name": "cancer", "stage": "prod"}', "'version' is missing"),
    (b'{"version": 7, "manifest_sha256": "x"}', "'version' is missing or not a string"),
    (b'{"version": "abc", "manifest_sha256": "nothex"}', "'manifest_sha256' is not 64"),
])
def test_malformed_stage_pointers_get_one_line_errors(s3, built_example, store_home, tmp_path, body, detail):
    client, bucket = s3
    _pushed(client, bucket, built_example, store_home)
    _point(client, bucket, "prod", body)
    result = run_cli("pull", f"s3://{bucket}/x/cancer:prod", check=False,
                     env={"BENTO_COMPILE_HOME": str(tmp_path / "local")})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Refusing the stage pointer" in result.stderr and detail in result.stderr.replace("\n", " ")
    # `list --remote` still lists the good Bento beside the damaged pointer.
    listed = json.loads(run_cli("list", "--remote", f"s3://{bucket}/x", "--json").stdout)
    assert [entry["name"] for entry in listed] == ["cancer"]


def test_the_store_itself_refuses_a_version_that_is_a_path(tmp_path):
    store = BentoStore(tmp_path / "home")
    with store.staging() as staged, pytest.raises(BentoCompileError, match="Bento version"):
        store.commit(staged, "cancer", str(tmp_path / "elsewhere"))
    assert not (tmp_path / "elsewhere").exists()
