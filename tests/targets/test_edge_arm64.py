"""The arm64 bundle on an arm64 Debian root file system under qemu-user: real parts end to end.

`flash` lays the bundle into the root folder for real (as onto a mounted SD card);
then, inside the emulated system and with NO network (a fresh network namespace),
the bundle's own install.sh makes the venv from the bundled wheels (what the unit's
ExecStartPre does on first boot), and `install.sh` run from the unpacked bundle
verifies and switches. Predictions (one-shot, JSON lines, HTTP) must equal the
x86_64 answers. The small model keeps this to a few minutes: emulation is 25–270×
slower than native. The root file system is built once and cached (tests/support/edge_rootfs.py).

At the end, the arm64 Lambda zip (Graviton) runs in the same root file system with the
real awslambdaric against the tests' Runtime API server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from bento_compile.tools.flash import flash
from tests.support import edge_rootfs
from tests.support import edge_support as es
from tests.support.helpers import free_port, wait_http
from tests.support.lambda_support import old_ir_bento

pytestmark = [pytest.mark.edge_arm64, pytest.mark.slow]
DEVICE_PYTHON = "3.11"  # Debian bookworm's python3


@pytest.fixture(scope="module")
def chroot(tmp_path_factory):
    missing = edge_rootfs.missing_tools()
    if missing:
        pytest.skip("arm64 emulation needs: " + ", ".join(missing)
                    + " (apt-get install mmdebstrap qemu-user-static binfmt-support; run as root)")
    with edge_rootfs.arm64_chroot(tmp_path_factory.mktemp("arm64")) as ch:
        yield ch


@pytest.fixture(scope="module")
def arm_bundle() -> Path:
    return es.bundle("arm64", DEVICE_PYTHON)


@pytest.fixture(scope="module")
def flashed(chroot, arm_bundle):
    """Flash to the root folder, then the device's first start: install.sh --finish, offline."""
    result = flash(arm_bundle, str(chroot.root))
    release = chroot.root / "opt/tiny" / Path(result.release).relative_to("/opt/tiny")
    assert (release / ".pending").is_file()
    started = time.monotonic()
    finish = chroot.run("/opt/tiny/current/install.sh --finish", offline=True, timeout=900)
    assert finish.returncode == 0, finish.stderr[-3000:]
    return {"release": release, "log": finish.stderr, "seconds": time.monotonic() - started}


def test_first_boot_installs_offline_from_the_bundled_wheels(flashed, chroot):
    release = flashed["release"]
    assert "installing" in flashed["log"] and "check passed" in flashed["log"]
    assert (release / ".installed").is_file() and not (release / ".pending").exists()
    arch = chroot.run("/opt/tiny/current/venv/bin/python -c 'import platform, onnxruntime, numpy;"
                      " print(platform.machine(), onnxruntime.__version__)'")
    assert arch.returncode == 0, arch.stderr
    assert arch.stdout.split()[0] == "aarch64"
    # Idempotent: a second start does nothing (and fast).
    again = chroot.run("/opt/tiny/current/install.sh --finish", offline=True)
    assert again.returncode == 0 and again.stderr == ""
    unit = (chroot.root / "etc/systemd/system/bento-tiny.service").read_text()
    assert "ExecStart=/opt/tiny/current/run serve" in unit


def test_one_shot_predict_equals_x86(flashed, chroot):
    result = chroot.run("/opt/tiny/current/run predict", input=json.dumps(es.REQUEST), offline=True)
    assert result.returncode == 0, result.stderr[-2000:]
    es.assert_outputs_close(json.loads(result.stdout)["outputs"], es.expected_outputs())


def test_json_lines_equal_x86(flashed, chroot):
    requests = [{"id": i, "inputs": [row]} for i, row in enumerate(es.REQUEST["inputs"])]
    lines = "\n".join(json.dumps(r) for r in requests) + '\n{"id": "bad", "inputs": [[1.0]]}\n'
    result = chroot.run("/opt/tiny/current/run lines", input=lines, offline=True)
    assert result.returncode == 0, result.stderr[-2000:]
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    expected = es.expected_outputs()
    assert [a["id"] for a in answers] == [0, 1, 2, "bad"]
    for i, answer in enumerate(answers[:3]):
        es.assert_outputs_close(answer["outputs"], {k: [v[i]] for k, v in expected.items()})
    assert answers[3]["status"] == 422


def test_http_server_on_arm64(flashed, chroot):
    port = free_port()
    proc = chroot.popen("exec /opt/tiny/current/run serve", env={"PORT": str(port), "BENTO_COMPILE_LOAD": "eager"},
                        stdout=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=180, proc=proc)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps(es.REQUEST).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            es.assert_outputs_close(json.loads(response.read())["outputs"], es.expected_outputs())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metadata", timeout=60) as response:
            assert json.loads(response.read())["providers"] == ["CPUExecutionProvider"]
    finally:
        _stop(proc)


def test_install_sh_from_the_unpacked_bundle_inside_the_device(flashed, chroot, arm_bundle):
    """What `flash ssh://` runs on a device: unpack, verify every file, then install. The release is
    already there (first boot made it), so it switches to it without a second emulated pip run; the
    whole path with pip runs natively in test_edge_bundle.py and over ssh in test_edge_flash.py."""
    shutil.copy(arm_bundle, chroot.root / "root" / arm_bundle.name)
    result = chroot.run(f"cd /root && tar -xzf {arm_bundle.name} && sh tiny-edge-arm64/install.sh --no-service",
                        offline=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verified" in result.stderr and "already there" in result.stderr
    assert result.stdout.strip() == f"/opt/tiny/releases/{flashed['release'].name}"
    # A damaged copy is refused inside the device too, before anything changes.
    damaged = chroot.run("cd /root/tiny-edge-arm64 && printf x >> bento/manifest.json && "
                         "sh install.sh --prefix /srv/other --no-service", offline=True)
    assert damaged.returncode == 4 and "bento/manifest.json" in damaged.stderr
    assert not (chroot.root / "srv" / "other").exists()


# ----------------------------------------------------------------------------- the Lambda zip (Graviton)

def _stop(proc: subprocess.Popen) -> None:
    """Stop the process group we started (the chroot and what runs in it)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_arm64_lambda_zip_runs_in_the_root_file_system(chroot, tmp_path):
    pytest.importorskip("awslambdaric")
    from bento_compile.runtimes.model import BentoModel
    from bento_compile.targets.lambda_zip import build_lambda_zip, lambda_platform
    from bento_compile.targets.wheel_install import unpack_wheels
    from bento_compile.targets.wheels import resolve_wheels
    from tests.support.lambda_rapi import RuntimeAPI

    bento = old_ir_bento(tmp_path, "tinylambda")
    built = build_lambda_zip(bento, arch="arm64", python=DEVICE_PYTHON, out_dir=tmp_path / "dist", template=False)
    task = chroot.root / "var" / "task"
    shutil.rmtree(task, ignore_errors=True)
    task.mkdir(parents=True)
    subprocess.run(["unzip", "-q", str(built.path), "-d", str(task)], check=True)
    # What Lambda's managed runtime provides: awslambdaric, for aarch64 / Python 3.11.
    ric = resolve_wheels(["awslambdaric"], lambda_platform("arm64", DEVICE_PYTHON), tmp_path / "ric")
    unpack_wheels(ric, chroot.root / "opt" / "lambda-runtime")

    with RuntimeAPI() as api:
        env = {"AWS_LAMBDA_RUNTIME_API": api.address, "LAMBDA_TASK_ROOT": "/var/task",
               "PYTHONPATH": "/var/task:/opt/lambda-runtime", "AWS_LAMBDA_FUNCTION_NAME": "bento-edge-test",
               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
               "AWS_REGION": "us-east-1", "PYTHONDONTWRITEBYTECODE": "1"}
        proc = chroot.popen("cd /var/task && exec python3 -m awslambdaric bento_compile.adapters.aws_lambda.handler",
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            api.wait_ready(timeout=240, proc=proc)
            result = api.invoke({"inputs": es.REQUEST["inputs"]}, timeout=240, proc=proc)
            assert result.ok, result.body
            expected = BentoModel.load(bento).predict({"inputs": es.REQUEST["inputs"]})["outputs"]
            es.assert_outputs_close(result.body["outputs"], expected)
            machine = chroot.run("python3 -c 'import platform; print(platform.machine())'")
            assert machine.stdout.strip() == "aarch64"
        finally:
            _stop(proc)
