"""The daemonless builder's edges: base images pulled over the registry HTTP API, arm64 images,
image references, and bases that cannot work (no libstdc++, wrong architecture)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from bento_compile.core.errors import BentoCompileError
from bento_compile.targets.registry import Reference
from tests.support import container_infra as infra

TOOLS = ("docker-registry", "skopeo", "umoci")


def test_references_are_normalised_like_docker():
    assert Reference.parse("python:3.12-slim") == Reference("docker.io", "library/python", "3.12-slim")
    ref = Reference.parse("127.0.0.1:5000/ml/churn:1.4@sha256:" + "b" * 64)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == ("127.0.0.1:5000", "ml/churn", "1.4",
                                                                   "sha256:" + "b" * 64)
    assert ref.plain_http and not Reference.parse("ghcr.io/x/y").plain_http
    assert Reference.parse("localhost:5000/a").registry == "localhost:5000"
    with pytest.raises(BentoCompileError, match="invalid digest"):
        Reference.parse("127.0.0.1:5000/a@sha256:xyz")
    with pytest.raises(BentoCompileError, match="not valid"):
        Reference.parse("127.0.0.1:5000/Upper")


def fake_rootfs(path: Path, machine: str, libstdcxx: bool = True) -> Path:
    """A tiny root file system with the files the planner looks for (python3.11, libstdc++)."""
    with tarfile.open(path, "w") as tar:
        names = ["usr/bin/python3.11"]
        if libstdcxx:
            names.append(f"usr/lib/{machine}-linux-gnu/libstdc++.so.6")
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"stub"))
    return path


def test_arm64_image_has_aarch64_wheels_and_an_arm64_config(built_example, tmp_path):
    if infra.missing("skopeo", "umoci"):
        pytest.skip("needs skopeo and umoci (apt-get install skopeo umoci)")
    from bento_compile.targets.images import plan_http_image
    from bento_compile.targets.oci_builder import OciBuilder
    from bento_compile.targets.oci_layout import layout_from_rootfs_tar

    layout_from_rootfs_tar(fake_rootfs(tmp_path / "root.tar", "aarch64"), tmp_path / "base", "arm64", "py")
    plan = plan_http_image(built_example, f"{tmp_path / 'base'}:py", arch="arm64")
    assert plan.python == "3.11"
    binary = [w for w in plan.wheels if not w.filename.endswith("-none-any.whl")]
    assert binary and all("aarch64" in w.filename for w in binary), [w.filename for w in binary]
    built = OciBuilder().build(plan, tmp_path / "out", "127.0.0.1:5000/cancer:arm64")
    index = json.loads((built.layout / "index.json").read_text())
    assert index["manifests"][0]["platform"] == {"architecture": "arm64", "os": "linux"}
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{built.layout}:arm64", str(tmp_path / "b")],
                   check=True, capture_output=True)
    so = next((tmp_path / "b/rootfs/opt/bento-compile/site-packages/onnxruntime/capi").glob(
        "onnxruntime_pybind11_state*.so"))
    assert so.read_bytes()[18:20] == (183).to_bytes(2, "little")  # ELF e_machine: EM_AARCH64


def test_bases_that_cannot_work_are_refused_with_the_fix(built_example, tmp_path):
    from bento_compile.targets.images import plan_http_image
    from bento_compile.targets.oci_layout import layout_from_rootfs_tar

    layout_from_rootfs_tar(fake_rootfs(tmp_path / "a.tar", "x86_64", libstdcxx=False), tmp_path / "nolib",
                           "x86_64", "py")
    with pytest.raises(BentoCompileError, match="libstdc") as info:
        plan_http_image(built_example, f"{tmp_path / 'nolib'}:py")
    assert "libstdc++6" in info.value.fix
    layout_from_rootfs_tar(fake_rootfs(tmp_path / "b.tar", "aarch64"), tmp_path / "arm", "arm64", "py")
    with pytest.raises(BentoCompileError, match="is for arm64, not amd64"):
        plan_http_image(built_example, f"{tmp_path / 'arm'}:py", arch="x86_64")
    with pytest.raises(BentoCompileError, match="no image tagged 'nope'"):
        plan_http_image(built_example, f"{tmp_path / 'arm'}:nope", arch="arm64")


@pytest.mark.slow
@pytest.mark.containers
def test_base_pulled_from_a_registry_gives_the_same_layers(built_example, tmp_path):
    if infra.missing(*TOOLS, "mmdebstrap") or os.geteuid() != 0:
        pytest.skip("needs root, mmdebstrap, docker-registry, skopeo, umoci")
    from bento_compile.targets.images import plan_http_image
    from bento_compile.targets.oci_builder import OciBuilder
    from bento_compile.targets.oci_layout import load_base, push_layout

    base = infra.make_base_layout(tmp_path / "base")
    with infra.registry(tmp_path / "registry") as address:
        digest = push_layout(base, "python", f"{address}/python:3.11")
        pulled = load_base(f"{address}/python:3.11", "x86_64", tmp_path / "cache")
        assert pulled.manifest_digest == digest
        # --manifest-only asks the registry for the digest a tag points to
        from bento_compile.cli.containers import pinned_existing

        assert pinned_existing(f"{address}/python:3.11") == f"{address}/python@{digest}"
        with pytest.raises(BentoCompileError, match="does not exist"):
            pinned_existing(f"{address}/python:9.9")
        from_layout = load_base(f"{base}:python", "x86_64", tmp_path / "unused")
        assert pulled.layers == from_layout.layers and pulled.config == from_layout.config
        built = OciBuilder().build(plan_http_image(built_example, f"{address}/python:3.11"), tmp_path / "o",
                                   f"{address}/cancer:1")
        reference = OciBuilder().build(plan_http_image(built_example, f"{base}:python"), tmp_path / "r",
                                       f"{address}/cancer:1")
        assert built.layer_digests == reference.layer_digests
        # and what the daemonless push sent, skopeo reads back intact
        pushed = OciBuilder().push(built)
        subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{pushed.pinned}",
                        f"dir:{tmp_path / 'back'}"], check=True)


def test_lambda_image_cli_writes_a_context_and_the_image(built_example, tmp_path):
    """`target lambda-image` from the command line, daemonless: build context + OCI layout + image.json."""
    import shutil
    import sys

    from bento_compile.core.store import BentoStore
    from bento_compile.runtimes.manifest import read_manifest
    from bento_compile.targets.oci_layout import layout_from_rootfs_tar

    manifest = read_manifest(built_example)
    shutil.copytree(built_example, tmp_path / "staged")
    BentoStore().commit(tmp_path / "staged", manifest.name, manifest.version)
    layout_from_rootfs_tar(fake_rootfs(tmp_path / "root.tar", "x86_64"), tmp_path / "base", "x86_64", "py")
    out = tmp_path / "dist"
    result = subprocess.run([str(Path(sys.executable).parent / "bento-compile"), "target", "lambda-image",
                             "cancer:latest", "--image", "127.0.0.1:5000/cancer-fn", "--base-image",
                             f"{tmp_path / 'base'}:py", "--builder", "oci", "-o", str(out)],
                            capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "lambda-image" / "image.json").read_text())
    assert {"awslambdaric", "mangum", "onnxruntime"} <= {w["name"] for w in summary["wheels"]}
    assert "uvicorn" not in {w["name"] for w in summary["wheels"]}
    dockerfile = (out / "lambda-image" / "context" / "Dockerfile").read_text()
    assert "FROM --platform=linux/amd64 bento-compile-base" in dockerfile
    assert 'ENTRYPOINT ["python3", "-m", "awslambdaric"]' in dockerfile
    assert 'CMD ["bento_compile.adapters.aws_lambda.handler"]' in dockerfile
    assert result.stdout.strip().splitlines()[-1] == f"127.0.0.1:5000/cancer-fn@{summary['digest']}"
