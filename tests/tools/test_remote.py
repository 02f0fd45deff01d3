"""The remote store against a real S3-compatible server (moto's server mode on 127.0.0.1).

Covers push/pull/list/tag through the real CLI and boto3, a multipart upload
interrupted and resumed, and corrupted objects that pull must refuse without
touching the local store.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bento_compile.core.errors import BentoCompileError
from bento_compile.core.signing import generate_keypair, load_private_key, sign_bento
from bento_compile.core.store import BentoStore
from bento_compile.tools.remote import MiB, RemoteStore
from tests.support.helpers import free_port, run_cli

pytestmark = pytest.mark.slow

def stored_copy(bento: Path, home: Path) -> Path:
    manifest = json.loads((bento / "manifest.json").read_text())
    target = home / "bentos" / manifest["name"] / manifest["version"]
    shutil.copytree(bento, target)
    return target


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} \
        if root.exists() else {}


@pytest.fixture(scope="session")
def big_bento(tmp_path_factory) -> Path:
    """A real Bento whose model is ~12 MiB (an ONNX MatMul with a large weight): three 5 MiB parts."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import load_config

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 750_000)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]),
         helper.make_node("ReduceSum", ["h", "axes"], ["y"], keepdims=1)],
        "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path_factory.mktemp("big")
    onnx.save(model, folder / "big.onnx")
    config, config_dir = load_config(None)
    store = BentoStore(tmp_path_factory.mktemp("big-store"))
    result = build(BuildRequest(folder / "big.onnx", config, config_dir, name="big", tolerance=1e-2), store)
    assert (result.path / "model.onnx").stat().st_size > 10 * MiB
    return result.path


def test_push_pull_list_through_the_cli(s3, built_example, store_home, tmp_path, moto_endpoint):
    client, bucket = s3
    bento = stored_copy(built_example, store_home)
    tag = "cancer:" + bento.name
    url = f"s3://{bucket}/team/models"
    out = run_cli("push", tag, url, "--endpoint-url", moto_endpoint)
    assert out.stdout.strip() == f"{url}/{tag}"
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"team/models/bentos/cancer/{bento.name}/manifest.json" in keys
    assert f"team/models/bentos/cancer/{bento.name}/model.onnx" in keys
    head = client.head_object(Bucket=bucket, Key=f"team/models/bentos/cancer/{bento.name}/model.onnx")
    assert head["Metadata"]["sha256"] == hashlib.sha256((bento / "model.onnx").read_bytes()).hexdigest()

    again = run_cli("push", tag, url)  # endpoint from $AWS_ENDPOINT_URL; nothing to upload
    assert "0 bytes uploaded" in again.stderr

    listed = json.loads(run_cli("list", "--remote", url, "--json").stdout)
    assert [(e["tag"], e["signed"], e["stages"]) for e in listed] == [(tag, False, ["latest"])]
    assert "cancer" in run_cli("list", "--remote", url).stdout

    other_home = tmp_path / "other-store"
    pulled = run_cli("pull", f"{url}/cancer:{bento.name[:8]}", env={"BENTO_COMPILE_HOME": str(other_home)})
    assert pulled.stdout.strip() == tag
    assert tree(other_home / "bentos" / "cancer" / bento.name) == tree(bento)
    # The pulled Bento serves.
    from bento_compile.runtimes.model import BentoModel

    assert BentoModel.load(other_home / "bentos" / "cancer" / bento.name).predict({"inputs": [[0.1] * 30]})


def test_stage_tags_are_pointer_objects(s3, built_example, big_bento, store_home, tmp_path):
    client, bucket = s3
    url = f"s3://{bucket}/p"
    small = stored_copy(built_example, store_home)
    run_cli("push", "cancer:latest", url)
    out = run_cli("tag", f"cancer:{small.name}", "prod", "--remote", url)
    assert out.stdout.strip() == f"cancer:{small.name}"
    pointer = json.loads(client.get_object(Bucket=bucket, Key="p/stages/cancer/prod.json")["Body"].read())
    assert pointer["version"] == small.name
    assert pointer["manifest_sha256"] == hashlib.sha256((small / "manifest.json").read_bytes()).hexdigest()

    home = tmp_path / "h"
    assert run_cli("pull", f"{url}/cancer:prod", env={"BENTO_COMPILE_HOME": str(home)}).stdout.strip() == \
        f"cancer:{small.name}"
    listed = json.loads(run_cli("list", "--remote", url, "--json").stdout)
    assert listed[0]["stages"] == ["latest", "prod"]

    bad = run_cli("tag", "cancer:ffffffff", "prod", "--remote", url, check=False)
    assert bad.returncode == 1 and "not in the remote store" in bad.stderr
    bad = run_cli("tag", "cancer:latest", "0abc123", "--remote", url, check=False)
    assert bad.returncode == 1 and "not a stage name" in bad.stderr

    # A pointer whose digest does not match the manifest is refused.
    pointer["manifest_sha256"] = "0" * 64
    client.put_object(Bucket=bucket, Key="p/stages/cancer/prod.json", Body=json.dumps(pointer).encode())
    refused = run_cli("pull", f"{url}/cancer:prod", check=False, env={"BENTO_COMPILE_HOME": str(tmp_path / "h2")})
    assert refused.returncode == 1 and "stage 'prod'" in refused.stderr


class FlakyClient:
    """The real boto3 client, except that `upload_part` fails after `fail_after` parts (a dropped connection)."""

    def __init__(self, client, fail_after: int | None = None):
        self._client, self.fail_after, self.parts_sent = client, fail_after, []

    def upload_part(self, **kwargs):
        if self.fail_after is not None and len(self.parts_sent) >= self.fail_after:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="interrupted by the test")
        self.parts_sent.append(kwargs["PartNumber"])
        return self._client.upload_part(**kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_an_interrupted_multipart_upload_resumes_where_it_stopped(s3, big_bento, tmp_path):
    client, bucket = s3
    size = (big_bento / "model.onnx").stat().st_size
    flaky = FlakyClient(client, fail_after=2)
    remote = RemoteStore(bucket, "m", flaky, part_size=5 * MiB, multipart_threshold=5 * MiB)
    with pytest.raises(BentoCompileError, match="re-run the command: it resumes"):
        remote.push(big_bento)
    assert flaky.parts_sent == [1, 2]
    version = big_bento.name
    manifest_key = f"m/bentos/big/{version}/manifest.json"
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix=manifest_key)  # not visible yet
    pending = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert len(pending) == 1

    resumed = FlakyClient(client)
    result = RemoteStore(bucket, "m", resumed, part_size=5 * MiB, multipart_threshold=5 * MiB).push(big_bento)
    assert resumed.parts_sent == [3]  # parts 1 and 2 were checked (MD5) and kept
    assert result.reused_bytes == 10 * MiB and result.uploaded_bytes >= size - 10 * MiB
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)
    stored = client.get_object(Bucket=bucket, Key=f"m/bentos/big/{version}/model.onnx")["Body"].read()
    assert hashlib.sha256(stored).digest() == hashlib.sha256((big_bento / "model.onnx").read_bytes()).digest()

    home = tmp_path / "pulled"
    pulled = RemoteStore(bucket, "m", client).pull("big", "latest", BentoStore(home))
    assert (pulled.path / "model.onnx").read_bytes() == (big_bento / "model.onnx").read_bytes()


def test_cli_push_uses_multipart_for_large_files(s3, big_bento, store_home, tmp_path):
    client, bucket = s3
    stored_copy(big_bento, store_home)
    run_cli("push", "big:latest", f"s3://{bucket}/cli", "--part-size", "5")
    head = client.head_object(Bucket=bucket, Key=f"cli/bentos/big/{big_bento.name}/model.onnx")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of three parts
    home = tmp_path / "h"
    run_cli("pull", f"s3://{bucket}/cli/big:{big_bento.name}", env={"BENTO_COMPILE_HOME": str(home)})
    assert (home / "bentos/big" / big_bento.name / "model.onnx").read_bytes() == \
        (big_bento / "model.onnx").read_bytes()


def test_a_resumed_upload_replaces_a_corrupted_part(s3, big_bento):
    client, bucket = s3
    flaky = FlakyClient(client, fail_after=2)
    remote = RemoteStore(bucket, "c", flaky, part_size=5 * MiB, multipart_threshold=5 * MiB)
    with pytest.raises(BentoCompileError):
        remote.push(big_bento)
    key = f"c/bentos/big/{big_bento.name}/model.onnx"
    upload_id = client.list_multipart_uploads(Bucket=bucket)["Uploads"][0]["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=2, Body=b"\0" * (5 * MiB))
    resumed = FlakyClient(client)
    RemoteStore(bucket, "c", resumed, part_size=5 * MiB, multipart_threshold=5 * MiB).push(big_bento)
    assert resumed.parts_sent == [2, 3]
    stored = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert stored == (big_bento / "model.onnx").read_bytes()


def _corrupt_model(client, bucket, key_prefix, _bento):
    key = f"{key_prefix}/model.onnx"
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[1234] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    return "model.onnx has sha256"


def _truncate_model(client, bucket, key_prefix, _bento):
    key = f"{key_prefix}/model.onnx"
    data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=data[:-1])
    return "bytes but the manifest says"


def _rewrite_manifest(client, bucket, key_prefix, bento):
    # The manifest's hash for the model no longer matches the model object.
    manifest = json.loads((bento / "manifest.json").read_text())
    manifest["files"]["model.onnx"]["sha256"] = "0" * 64
    client.put_object(Bucket=bucket, Key=f"{key_prefix}/manifest.json", Body=json.dumps(manifest).encode())
    return "model.onnx has sha256"


def _misplaced_manifest(client, bucket, key_prefix, bento):
    # Another version's manifest copied under this version's key.
    manifest = json.loads((bento / "manifest.json").read_text())
    manifest["version"] = "f" * 16
    client.put_object(Bucket=bucket, Key=f"{key_prefix}/manifest.json", Body=json.dumps(manifest).encode())
    return "manifest.json is for cancer:" + "f" * 16


def _damaged_manifest(client, bucket, key_prefix, _bento):
    client.put_object(Bucket=bucket, Key=f"{key_prefix}/manifest.json", Body=b'{"name": "cancer", "files": ')
    return "manifest.json is damaged"


CORRUPTIONS = {"model-byte": _corrupt_model, "model-truncated": _truncate_model,
               "manifest-rewritten": _rewrite_manifest, "manifest-misplaced": _misplaced_manifest,
               "manifest-damaged": _damaged_manifest}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_pull_refuses_a_corrupted_object_and_leaves_the_local_store_untouched(
        s3, built_example, store_home, tmp_path, corrupt):
    client, bucket = s3
    bento = stored_copy(built_example, store_home)
    run_cli("push", "cancer:latest", f"s3://{bucket}/x")
    message = corrupt(client, bucket, f"x/bentos/cancer/{bento.name}", bento)

    home = tmp_path / "local"
    keeper = stored_copy(built_example, home)  # the local store already holds something
    shutil.move(keeper, keeper.with_name("0000000000000000"))
    before = tree(home)
    result = run_cli("pull", f"s3://{bucket}/x/cancer:{bento.name}", check=False,
                     env={"BENTO_COMPILE_HOME": str(home)})
    assert result.returncode == 1
    assert "Refusing to pull" in result.stderr and message in result.stderr.replace("\n", " ")
    assert tree(home) == before  # nothing added, no staging folder left behind
    assert not any(p.name.startswith(".staging") for p in (home / "bentos").iterdir())


def test_signed_pull_requires_the_right_key(s3, built_example, store_home, tmp_path):
    _client, bucket = s3
    keys = generate_keypair(tmp_path / "keys")
    other = generate_keypair(tmp_path / "other")
    bento = stored_copy(built_example, store_home)
    url = f"s3://{bucket}/s"
    run_cli("push", "cancer:latest", url)  # unsigned first
    home = tmp_path / "h"
    refused = run_cli("pull", f"{url}/cancer:latest", "--pub", str(keys.public_path), check=False,
                      env={"BENTO_COMPILE_HOME": str(home)})
    assert refused.returncode == 1 and "signature.json is missing" in refused.stderr
    assert not (home / "bentos" / "cancer").exists()

    sign_bento(bento, load_private_key(keys.private_path))
    run_cli("push", "cancer:latest", url)  # only signature.json (and the manifest check) go up
    assert json.loads(run_cli("list", "--remote", url, "--json").stdout)[0]["signed"] is True
    wrong = run_cli("pull", f"{url}/cancer:latest", "--pub", str(other.public_path), check=False,
                    env={"BENTO_COMPILE_HOME": str(home)})
    assert wrong.returncode == 1 and "signature.json was made with key" in wrong.stderr
    ok = run_cli("pull", f"{url}/cancer:latest", "--pub", str(keys.public_path), env={"BENTO_COMPILE_HOME": str(home)})
    assert ok.stdout.strip() == f"cancer:{bento.name}"
    assert (home / "bentos" / "cancer" / bento.name / "signature.json").read_bytes() == \
        (bento / "signature.json").read_bytes()


def test_clear_errors_for_bad_urls_missing_buckets_and_versions(s3, built_example, store_home):
    _client, bucket = s3
    stored_copy(built_example, store_home)
    bad = run_cli("push", "cancer:latest", "http://example/x", check=False)
    assert bad.returncode == 1 and "is not an S3 URL" in bad.stderr
    missing = run_cli("push", "cancer:latest", "s3://no-such-bucket-here/x", check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    unknown = run_cli("pull", f"s3://{bucket}/x/cancer:deadbeef", check=False)
    assert unknown.returncode == 1 and "not in the remote store" in unknown.stderr
    no_ref = run_cli("pull", "s3://", check=False)
    assert no_ref.returncode == 1
    down = run_cli("list", "--remote", f"s3://{bucket}", "--endpoint-url", f"http://127.0.0.1:{free_port()}",
                   check=False, env={"AWS_MAX_ATTEMPTS": "1"})
    assert down.returncode == 1 and "S3 request failed" in down.stderr


def test_push_refuses_a_damaged_local_bento(s3, built_example, store_home):
    _client, bucket = s3
    bento = stored_copy(built_example, store_home)
    data = bytearray((bento / "model.onnx").read_bytes())
    data[10] ^= 1
    (bento / "model.onnx").write_bytes(bytes(data))
    result = run_cli("push", "cancer:latest", f"s3://{bucket}/x", check=False)
    assert result.returncode == 1 and "Refusing to push" in result.stderr and "model.onnx" in result.stderr

