"""`deploy lambda --image REPO@sha256:…`: an image already pushed is checked for the function's architecture
(read from its config in the registry) and deployed by digest.

The registry is a real `docker-registry` on 127.0.0.1 holding a small image pushed by the
registry client (its config names the architecture; the layer is a tiny tar); the Lambda
side is the session's moto_server, which records ImageUri but cannot run an image, so these
runs pass --no-smoke. (Building and pushing the full Lambda image is `target lambda-image`'s
own test; moto's ECR cannot take a push.)
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile

import pytest

from tests.support import container_infra as infra
from tests.support.deploy_support import aws_environment, boto_client
from tests.support.helpers import run_cli

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    if infra.missing("docker-registry"):
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    with infra.registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


def push_image(registry: str, repository: str, architecture: str, tmp_path) -> str:
    """A one-layer image for `architecture`; its digest reference."""
    from bento_compile.targets.registry import OCI_MANIFEST, Reference, RegistryClient

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        data = f"image for {architecture}\n".encode()
        info = tarfile.TarInfo("etc/bento-test")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    blobs = {"layer": layer.getvalue()}
    diff_id = "sha256:" + hashlib.sha256(blobs["layer"]).hexdigest()
    blobs["config"] = json.dumps({"architecture": architecture, "os": "linux",
                                  "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {}}).encode()
    client = RegistryClient(Reference.parse(f"{registry}/{repository}:{architecture}"))
    digests = {}
    for key, data in blobs.items():
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = tmp_path / f"{key}.blob"
        path.write_bytes(data)
        client.upload_blob(digest, path)
        digests[key] = (digest, len(data))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digests["config"][0],
                   "size": digests["config"][1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digests["layer"][0],
                    "size": digests["layer"][1]}]}).encode()
    digest = client.put_manifest(architecture, manifest, OCI_MANIFEST)
    return f"{registry}/{repository}@{digest}"


@pytest.fixture
def stored_bento(built_example, store_home):
    manifest = json.loads((built_example / "manifest.json").read_text())
    target = store_home / "bentos" / manifest["name"] / manifest["version"]
    shutil.copytree(built_example, target)
    (target.parent / "latest").write_text(manifest["version"] + "\n")
    return f"{manifest['name']}:latest"


def test_an_image_of_another_architecture_is_refused_before_anything(registry, stored_bento, moto_endpoint,
                                                                     tmp_path):
    arm = push_image(registry, "cancer", "arm64", tmp_path)
    result = run_cli("deploy", "lambda", stored_bento, "--function", "img-wrong-arch", "--image", arm,
                     "--arch", "x86_64", "--no-smoke", env=aws_environment(moto_endpoint), check=False)
    assert result.returncode == 1 and "is an image for arm64, but the function runs on x86_64" in result.stderr
    assert "Traceback" not in result.stderr
    lam = boto_client("lambda", moto_endpoint)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName="img-wrong-arch")


def test_an_image_is_deployed_by_digest(registry, stored_bento, moto_endpoint, tmp_path):
    image = push_image(registry, "cancer", "amd64", tmp_path)
    result = run_cli("deploy", "lambda", stored_bento, "--function", "img-by-digest", "--image", image,
                     "--no-smoke", "--url", "none", "--json", env=aws_environment(moto_endpoint))
    summary = json.loads(result.stdout)
    assert summary["version"] == "1" and summary["routing"] == {"1": 1.0}
    assert summary["code_sha256"] == image.rsplit("@", 1)[1]
    lam = boto_client("lambda", moto_endpoint)
    function = lam.get_function(FunctionName="img-by-digest", Qualifier="1")
    assert function["Configuration"]["PackageType"] == "Image"
    assert function["Code"]["ImageUri"] == image  # by digest, not by a tag that can move
    assert "Runtime" not in function["Configuration"] or not function["Configuration"].get("Runtime")

    # the same digest again: unchanged, nothing published
    again = run_cli("deploy", "lambda", stored_bento, "--function", "img-by-digest", "--image", image,
                    "--no-smoke", "--url", "none", "--json", env=aws_environment(moto_endpoint))
    assert json.loads(again.stdout)["skipped"] is True



@pytest.mark.containers
def test_image_is_built_pushed_and_deployed_by_the_digest_the_registry_holds(registry, stored_bento, moto_endpoint,
                                                                            tmp_path):
    """`--image REPO` without a digest: the Lambda image is built as `target lambda-image` builds it
    (daemonless OCI builder on a Debian base made with mmdebstrap, since no base can be pulled here),
    pushed to the real registry, and the function is given REPO@DIGEST, the digest the registry answers."""
    if infra.missing("mmdebstrap", "skopeo"):
        pytest.skip("mmdebstrap and skopeo are needed for a base image here (apt-get install mmdebstrap skopeo)")
    import subprocess

    base = f"{infra.make_base_layout(tmp_path / 'base' / 'python')}:python"
    result = run_cli("deploy", "lambda", stored_bento, "--function", "img-built", "--image", f"{registry}/built",
                     "--base-image", base, "--builder", "oci", "--python", "3.11", "--no-smoke", "--url", "none",
                     "--json", env=aws_environment(moto_endpoint))
    summary = json.loads(result.stdout)
    image_uri = boto_client("lambda", moto_endpoint).get_function(FunctionName="img-built")["Code"]["ImageUri"]
    assert image_uri.startswith(f"{registry}/built@sha256:") and summary["code_sha256"] == image_uri.split("@")[1]
    version = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw",
                                         f"docker://{registry}/built@{summary['code_sha256']}"],
                                        capture_output=True, text=True, check=True).stdout)
    assert version["config"]["digest"].startswith("sha256:")  # the registry holds the image by that digest
