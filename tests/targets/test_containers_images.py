"""Container images with real parts: dockerd (no bridge), a registry on 127.0.0.1, skopeo, umoci, awslambdaric.

Built on a Debian bookworm + python3 base made with mmdebstrap (no base image
can be pulled here; see tests/support/container_infra.py). Each image is built both
ways (daemonless OCI layout and Docker engine), verified with skopeo/umoci,
pushed, run with `--network host`, and sent real requests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from bento_compile.runtimes.manifest import read_manifest
from tests.support import container_infra as infra
from tests.support.knative_schema import assert_valid

pytestmark = [pytest.mark.slow, pytest.mark.containers]

TOOLS = ("dockerd", "docker", "docker-registry", "skopeo", "umoci", "mmdebstrap")
if infra.missing(*TOOLS) or os.geteuid() != 0:
    pytest.skip(f"needs root and {', '.join(infra.missing(*TOOLS)) or 'root'} "
                "(apt-get install docker.io docker-registry skopeo umoci mmdebstrap)", allow_module_level=True)


@pytest.fixture(scope="module")
def base_layout(tmp_path_factory) -> str:
    return f"{infra.make_base_layout(tmp_path_factory.mktemp('base') / 'python')}:python"


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory):
    root = Path(tempfile_short())
    try:
        with infra.dockerd(root) as host:
            yield host
    finally:
        shutil.rmtree(root, ignore_errors=True)


def tempfile_short() -> str:
    """dockerd's socket path must stay under 108 bytes: a short folder in /tmp."""
    import tempfile

    return tempfile.mkdtemp(prefix="bcd-", dir="/tmp")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with infra.registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


def docker(host: str, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", "-H", host, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result


@pytest.fixture(scope="module")
def oci_cli_build(built_example, base_layout, registry, tmp_path_factory):
    """`bento-compile target knative ... --builder oci --push`: the daemonless path, from the CLI."""
    home = tmp_path_factory.mktemp("store")
    env = {"BENTO_COMPILE_HOME": str(home)}
    manifest = read_manifest(built_example)
    staged = tmp_path_factory.mktemp("staged") / "b"
    shutil.copytree(built_example, staged)
    from bento_compile.core.store import BentoStore

    BentoStore(home).commit(staged, manifest.name, manifest.version)
    out = tmp_path_factory.mktemp("dist")
    result = run_cli("target", "knative", "cancer:latest", "--image", f"{registry}/cancer", "--base-image",
                     base_layout, "--builder", "oci", "--push", "-o", str(out), env=env)
    return out, json.loads((out / "image" / "image.json").read_text()), result, manifest


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The installed `bento-compile` entry point, as a user runs it."""
    import sys

    command = Path(sys.executable).parent / "bento-compile"
    result = subprocess.run([str(command), *args], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200", **env})
    if result.returncode != 0:
        raise AssertionError(f"bento-compile {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def http(url: str, body: bytes | None = None, timeout: float = 10) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, data=body, headers={"Connection": "close",
                                                               "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


def wait_ready(port: int, host: str, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http(f"http://127.0.0.1:{port}/readyz", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    logs = docker(host, "logs", name, check=False)
    raise AssertionError(f"container not ready: {logs.stdout[-2000:]}{logs.stderr[-2000:]}")


def run_container(host: str, image: str, name: str, env: dict[str, str]) -> int:
    port = infra.free_port()
    args = ["run", "-d", "--name", name, "--network", "host", "-e", f"PORT={port}"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    docker(host, *args, image)
    wait_ready(port, host, name)
    return port


# -- the daemonless builder -------------------------------------------------------------------
def test_oci_image_is_reproducible_and_verified_by_skopeo_and_umoci(oci_cli_build, built_example, base_layout,
                                                                     tmp_path):
    _out, summary, _result, manifest = oci_cli_build
    layout = Path(summary["layout"])
    tag = summary["reference"].rsplit(":", 1)[1]
    assert tag == manifest.version
    # same inputs, same digest: build again into another folder
    from bento_compile.targets.images import plan_http_image
    from bento_compile.targets.oci_builder import OciBuilder

    first, again = (OciBuilder().build(plan_http_image(built_example, base_layout, max_concurrency=16),
                                       tmp_path / name, summary["reference"]) for name in ("first", "again"))
    assert again.digest == first.digest and again.layer_digests == first.layer_digests
    # the CLI's build too (base and dependencies at least: the runtime layer follows the source tree, which
    # a shared checkout may edit between the fixture's build and this one)
    assert first.layer_digests[:2] == summary["layers"][:2]
    # skopeo and umoci both verify every digest
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:{tag}", f"dir:{tmp_path / 'copied'}"], check=True)
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:{tag}", str(tmp_path / "bundle")],
                   check=True, capture_output=True)
    rootfs = tmp_path / "bundle" / "rootfs"
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert config["process"]["user"]["uid"] == 65532  # non-root
    assert config["process"]["args"] == ["python3", "-m", "bento_compile.adapters.server"]
    assert "BENTO_COMPILE_MAX_CONCURRENCY=16" in config["process"]["env"]
    for name in manifest.files:  # the whole Bento, byte for byte
        assert (rootfs / "opt/bento-compile/bento" / name).read_bytes() == (built_example / name).read_bytes()
    assert (rootfs / "opt/bento-compile/site-packages/onnxruntime").is_dir()
    assert not list((rootfs / "opt/bento-compile/site-packages").glob("sklearn*"))  # runtime only
    # labels: Bento tag, model sha256, the OpenAPI schema
    oci_manifest = json.loads((layout / "blobs/sha256" / summary["digest"].split(":")[1]).read_text())
    image_config = json.loads((layout / "blobs/sha256" / oci_manifest["config"]["digest"].split(":")[1]).read_text())
    labels = image_config["config"]["Labels"]
    assert labels["dev.bento-compile.bento.tag"] == manifest.tag
    assert labels["dev.bento-compile.model.sha256"] == manifest.files[manifest.model_file].sha256
    assert json.loads(labels["dev.bento-compile.openapi"])["paths"]["/predict"]
    assert all("created" in h for h in image_config["history"])
    # the model is the last layer, alone
    last = oci_manifest["layers"][-1]["digest"].split(":")[1]
    names = subprocess.run(["tar", "-tzf", str(layout / "blobs/sha256" / last)], capture_output=True, text=True,
                           check=True).stdout.split()
    assert all(n.startswith("opt/bento-compile/bento") or "opt/bento-compile/bento".startswith(n.rstrip("/"))
               or n == "opt/bento-compile/sbom.cdx.json" for n in names), names


def test_new_model_version_reuses_the_dependency_layers(oci_cli_build, built_example, base_layout, tmp_path):
    _out, summary, _result, _manifest = oci_cli_build
    # a second model version: same Bento files, one extra file travels (signatures and later files do)
    other = tmp_path / "bento"
    shutil.copytree(built_example, other)
    (other / "extra.txt").write_text("a later stage's file\n")
    raw = json.loads((other / "manifest.json").read_text())
    raw["created"] = "2031-01-02T03:04:05Z"  # built at another time: the image time moves, deps must not
    (other / "manifest.json").write_text(json.dumps(raw))
    from bento_compile.targets.images import plan_http_image
    from bento_compile.targets.oci_builder import OciBuilder

    v1, v2 = (OciBuilder().build(plan_http_image(bento, base_layout, max_concurrency=16), tmp_path / name,
                                 summary["reference"]) for bento, name in ((built_example, "v1"), (other, "v2")))
    assert v2.layer_digests[:-1] == v1.layer_digests[:-1]  # base, deps, runtime reused
    assert v2.layer_digests[-1] != v1.layer_digests[-1]


def test_pushed_oci_image_runs_and_serves_the_http_contract(oci_cli_build, docker_host, registry, crd_schema):
    out, summary, result, manifest = oci_cli_build
    assert summary["pushed"] and summary["builder"] == "oci"
    pinned = summary["pinned"]
    assert result.stdout.strip().splitlines()[-1] == pinned
    # the manifest names exactly the pushed digest, and is valid
    service = yaml.safe_load((out / "knative.yaml").read_text())
    assert_valid(service, crd_schema)
    assert service["spec"]["template"]["spec"]["containers"][0]["image"] == pinned
    inspected = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{summary['reference']}"],
                               capture_output=True, text=True, check=True)
    assert json.loads(inspected.stdout)["Digest"] == summary["digest"]
    docker(docker_host, "pull", pinned)
    port = run_container(docker_host, pinned, "oci-http", {})
    try:
        assert http(f"http://127.0.0.1:{port}/healthz")[0] == 200
        status, _headers, body = http(f"http://127.0.0.1:{port}/predict",
                                      json.dumps(manifest.example).encode())
        assert status == 200 and "label" in body["outputs"]
        status, _headers, body = http(f"http://127.0.0.1:{port}/predict", b'{"inputs": [[1, 2]]}')
        assert status == 422 and "error" in body
        uid = docker(docker_host, "exec", "oci-http", "python3", "-c", "import os; print(os.getuid())")
        assert uid.stdout.strip() == "65532"
    finally:
        docker(docker_host, "rm", "-f", "oci-http", check=False)


def test_sigterm_during_load_loses_no_accepted_request(oci_cli_build, docker_host):
    _out, summary, _result, manifest = oci_cli_build
    name = "drain"
    port = run_container(docker_host, summary["pinned"], name, {"BENTO_COMPILE_GRACE_SECONDS": "20"})
    body = json.dumps(manifest.example).encode()
    outcomes: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                status, _h, _b = http(f"http://127.0.0.1:{port}/predict", body, timeout=30)
                outcomes.append(f"http{status}")
            except ConnectionRefusedError:
                outcomes.append("refused")  # never accepted: the server had stopped listening
                time.sleep(0.01)
            except urllib.error.URLError as exc:
                outcomes.append("refused" if isinstance(exc.reason, ConnectionRefusedError) else f"lost:{exc}")
                time.sleep(0.01)
            except Exception as exc:  # reset, disconnected, timed out: an accepted request was lost
                outcomes.append(f"lost:{type(exc).__name__}:{exc}")

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    docker(docker_host, "kill", "--signal", "TERM", name)
    exit_code = docker(docker_host, "wait", name, timeout=60).stdout.strip()
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(30)
    docker(docker_host, "rm", "-f", name, check=False)
    lost = [o for o in outcomes if o.startswith("lost")]
    assert outcomes.count("http200") > 20, outcomes[:20]
    assert lost == [], lost[:5]
    assert set(outcomes) <= {"http200", "refused", "http503"}, set(outcomes)
    assert exit_code == "0"


def test_in_flight_limit_answers_503_with_retry_after(oci_cli_build, docker_host):
    """containerConcurrency's twin in the container: past BENTO_COMPILE_MAX_CONCURRENCY, 503 + Retry-After."""
    _out, summary, _result, manifest = oci_cli_build
    rows = manifest.example["inputs"]
    body = json.dumps({"inputs": (rows * 200)[:200]}).encode()  # slow enough to overlap
    port = run_container(docker_host, summary["pinned"], "limit", {"BENTO_COMPILE_MAX_CONCURRENCY": "1",
                                                                   "BENTO_COMPILE_BATCHING": "off"})
    answers: list[tuple[int, str | None]] = []

    def client() -> None:
        for _ in range(6):
            status, headers, _b = http(f"http://127.0.0.1:{port}/predict", body, timeout=60)
            answers.append((status, {k.lower(): v for k, v in headers.items()}.get("retry-after")))

    try:
        threads = [threading.Thread(target=client) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        docker(docker_host, "rm", "-f", "limit", check=False)
    statuses = {status for status, _ in answers}
    assert statuses <= {200, 503}, answers
    assert 200 in statuses and 503 in statuses, answers
    assert all(retry for status, retry in answers if status == 503)


# -- the Docker engine builder ----------------------------------------------------------------
def test_docker_builder_image_is_verified_pushed_and_runs(built_example, base_layout, docker_host, registry,
                                                          tmp_path):
    import docker as docker_sdk

    from bento_compile.targets.docker_builder import DockerBuilder
    from bento_compile.targets.images import plan_http_image

    manifest = read_manifest(built_example)
    builder = DockerBuilder(docker_sdk.DockerClient(base_url=docker_host))
    reference = f"{registry}/cancer-docker:{manifest.version}"
    built = builder.build(plan_http_image(built_example, base_layout, max_concurrency=4), tmp_path, reference)
    assert built.digest is None  # no registry digest before a push
    dockerfile = (tmp_path / "context" / "Dockerfile").read_text()
    assert "RUN" not in dockerfile.split("ENTRYPOINT")[0].replace("# Nothing is RUN", "")
    built = builder.push(built)
    assert built.digest and built.digest.startswith("sha256:")
    # verify what the registry holds with skopeo + umoci
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{built.pinned}",
                    f"oci:{tmp_path / 'layout'}:x"], check=True)
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{tmp_path / 'layout'}:x",
                    str(tmp_path / "bundle")], check=True, capture_output=True)
    bundle_config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert bundle_config["process"]["user"]["uid"] == 65532
    labels = builder.client.images.get(reference).labels
    assert labels["dev.bento-compile.bento.tag"] == manifest.tag
    assert json.loads(labels["dev.bento-compile.openapi"])["info"]["title"].startswith(manifest.name)
    port = run_container(docker_host, built.pinned, "docker-http", {})
    try:
        status, _h, body = http(f"http://127.0.0.1:{port}/predict", json.dumps(manifest.example).encode())
        assert status == 200 and "label" in body["outputs"]
    finally:
        docker(docker_host, "rm", "-f", "docker-http", check=False)


# -- the Lambda image -------------------------------------------------------------------------
@pytest.mark.parametrize("builder_name", ["oci", "docker"])
def test_lambda_image_answers_through_the_runtime_api(builder_name, built_example, base_layout, docker_host,
                                                      registry, tmp_path):
    import docker as docker_sdk

    from bento_compile.targets.lambda_image import HANDLER, plan_lambda_image
    from tests.support.lambda_rapi import RuntimeAPI

    manifest = read_manifest(built_example)
    plan = plan_lambda_image(built_example, base_layout)
    assert plan.config.entrypoint == ["python3", "-m", "awslambdaric"] and plan.config.cmd == [HANDLER]
    assert any(w.name == "awslambdaric" for w in plan.wheels)
    reference = f"{registry}/cancer-lambda-{builder_name}:{manifest.version}"
    if builder_name == "oci":
        from bento_compile.targets.oci_builder import OciBuilder

        builder = OciBuilder()
    else:
        from bento_compile.targets.docker_builder import DockerBuilder

        builder = DockerBuilder(docker_sdk.DockerClient(base_url=docker_host))
    built = builder.push(builder.build(plan, tmp_path, reference))
    docker(docker_host, "pull", built.pinned)
    name = f"lambda-{builder_name}"
    with RuntimeAPI() as api:
        docker(docker_host, "run", "-d", "--name", name, "--network", "host", "-e",
               f"AWS_LAMBDA_RUNTIME_API={api.address}", "-e", "AWS_LAMBDA_FUNCTION_NAME=cancer",
               "-e", "AWS_REGION=us-east-1", built.pinned)
        try:
            api.wait_ready(timeout=60)
            result = api.invoke(manifest.example, timeout=60)
            assert result.ok, result.body
            assert "label" in result.body["outputs"]
            bad = api.invoke({"inputs": [[1, 2]]}, timeout=30)
            assert not bad.ok or "error" in json.dumps(bad.body).lower()
        finally:
            logs = docker(docker_host, "logs", name, check=False)
            docker(docker_host, "rm", "-f", name, check=False)
            print(logs.stdout[-2000:], logs.stderr[-2000:])
