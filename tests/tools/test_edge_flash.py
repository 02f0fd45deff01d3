"""`bento-compile flash`: into a local root folder for real, and over ssh against a real sshd on 127.0.0.1
(Debian openssh-server, a throwaway key, a non-standard port); unreachable hosts and read-only targets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bento_compile.core.errors import BentoCompileError
from bento_compile.tools.flash import SshDestination, flash, inspect_bundle, parse_destination
from tests.support import edge_support as es
from tests.support.helpers import free_port, run_cli, stop_process

SSHD = Path("/usr/sbin/sshd")
PY = es.system_python_version()


@pytest.fixture(scope="module")
def x86_bundle() -> Path:
    return es.bundle("x86_64", PY or "3.11")


def fake_root(path: Path) -> Path:
    for folder in ("etc", "usr/bin", "opt"):
        (path / folder).mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def read_only_dir(tmp_path):
    """A real read-only file system: a read-only bind mount (EROFS), as a write-protected card gives."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    source = fake_root(tmp_path / "src")
    target = tmp_path / "ro"
    target.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True)
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)


# ----------------------------------------------------------------------------- destinations

@pytest.mark.parametrize("text, expected", [
    ("ssh://pi@raspberrypi.local:/opt/churn", SshDestination("pi", "raspberrypi.local", None, "/opt/churn")),
    ("ssh://pi@10.0.0.5:2222:/opt/churn/", SshDestination("pi", "10.0.0.5", 2222, "/opt/churn")),
    ("ssh://host/srv/app", SshDestination(None, "host", None, "/srv/app")),
    ("ssh://root@[::1]:2200:/x", SshDestination("root", "[::1]", 2200, "/x")),
])
def test_parse_ssh_destinations(text, expected):
    assert parse_destination(text) == expected


def test_bad_destinations_and_bundles_are_named(tmp_path, x86_bundle):
    with pytest.raises(BentoCompileError, match="not an ssh destination"):
        parse_destination("ssh://pi@host:relative/path")
    with pytest.raises(BentoCompileError, match="only ssh://"):
        parse_destination("ftp://host/x")
    with pytest.raises(BentoCompileError, match="does not exist"):
        inspect_bundle(tmp_path / "missing.tar.gz")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar")
    with pytest.raises(BentoCompileError, match=r"cannot be read as a tar\.gz"):
        inspect_bundle(junk)
    copy = tmp_path / x86_bundle.name
    shutil.copy(x86_bundle, copy)
    (tmp_path / (copy.name + ".sha256")).write_text("0" * 64 + f"  {copy.name}\n")
    with pytest.raises(BentoCompileError, match="changed or truncated"):
        inspect_bundle(copy)


# ----------------------------------------------------------------------------- local root file system

def test_flash_into_a_local_root_folder(x86_bundle, tmp_path):
    root = fake_root(tmp_path / "rootfs")
    result = run_cli("flash", str(x86_bundle), "--to", str(root))
    prefix = root / "opt" / "tiny"
    current = prefix / "current"
    assert current.is_symlink() and not os.readlink(current).startswith("/"), "relative: valid on the device"
    release = current.resolve()
    assert result.stdout.strip().endswith(os.readlink(current))
    assert (release / ".pending").is_file() and not (release / "venv").exists(), "venv made on first boot"
    assert (release / "bento" / "manifest.json").is_file() and (release / "install.sh").is_file()
    assert (prefix / "config.env").is_file()
    unit = (root / "etc/systemd/system/bento-tiny.service").read_text()
    assert "ExecStart=/opt/tiny/current/run serve" in unit and "@PREFIX@" not in unit
    assert "ExecStartPre=+/opt/tiny/current/install.sh --finish" in unit
    wants = root / "etc/systemd/system/multi-user.target.wants/bento-tiny.service"
    assert os.readlink(wants) == "/etc/systemd/system/bento-tiny.service"
    # The release holds exactly the bundle's files (it verifies again on the device).
    check = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=release, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    if shutil.which("systemd-analyze"):  # systemd's own checker: every key known, every section right
        verify = subprocess.run(["systemd-analyze", "verify", str(root / "etc/systemd/system/bento-tiny.service")],
                                capture_output=True, text=True)
        complaints = [line for line in (verify.stdout + verify.stderr).splitlines()
                      if line.strip() and "is not executable" not in line]  # /opt/tiny is under ROOT here
        assert complaints == []

    # Flashing the same bundle again changes nothing; a custom prefix goes where asked.
    again = flash(x86_bundle, str(root))
    assert again.release == result.stdout.strip()
    flash(x86_bundle, str(root), prefix="/srv/models/tiny", service=False)
    assert (root / "srv/models/tiny/current").is_symlink()


@pytest.mark.skipif(PY is None, reason="/usr/bin/python3 with venv is needed (apt-get install python3-venv)")
def test_first_boot_finishes_a_flashed_release(x86_bundle, tmp_path):
    """What the unit's ExecStartPre does on the device's first start, here natively (x86_64)."""
    root = fake_root(tmp_path / "rootfs")
    flash(x86_bundle, str(root), service=False)
    current = root / "opt" / "tiny" / "current"
    not_yet = subprocess.run([str(current / "run"), "predict"], input="{}", capture_output=True, text=True)
    assert not_yet.returncode == 1 and "not installed yet" in not_yet.stderr
    finish = subprocess.run([str(current / "install.sh"), "--finish"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "BENTO_EDGE_PYTHON": str(es.SYSTEM_PYTHON)})
    assert finish.returncode == 0, finish.stderr
    assert (current / ".installed").is_file() and not (current / ".pending").exists()
    answer = subprocess.run([str(current / "run"), "predict"], input=json.dumps(es.REQUEST), capture_output=True,
                            text=True, timeout=60)
    es.assert_outputs_close(json.loads(answer.stdout)["outputs"], es.expected_outputs())


def test_flash_refuses_a_root_of_another_architecture(tmp_path):
    root = fake_root(tmp_path / "rootfs")
    shutil.copy("/usr/bin/ls", root / "usr/bin/ls")  # a real x86_64 binary: this root is for x86_64
    with pytest.raises(BentoCompileError, match="root file system for x86_64, but the bundle is for aarch64") as exc:
        flash(es.bundle("arm64", "3.11"), str(root))
    assert "--arch x86_64" in exc.value.fix
    assert not (root / "opt" / "tiny").exists()


def test_flash_refuses_what_is_not_a_root_file_system(x86_bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BentoCompileError, match="does not look like a root file system"):
        flash(x86_bundle, str(tmp_path / "empty"))
    with pytest.raises(BentoCompileError, match="is not a folder"):
        flash(x86_bundle, str(tmp_path / "nowhere"))


def test_flash_to_a_read_only_root_fails_clearly_and_writes_nothing(x86_bundle, read_only_dir):
    before = sorted(p.relative_to(read_only_dir) for p in read_only_dir.rglob("*"))
    result = run_cli("flash", str(x86_bundle), "--to", str(read_only_dir), check=False)
    assert result.returncode == 1
    assert "read-only" in result.stderr and "remount" in result.stderr.lower()
    assert sorted(p.relative_to(read_only_dir) for p in read_only_dir.rglob("*")) == before


# ----------------------------------------------------------------------------- ssh

@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 with a throwaway key; yields (port, key path)."""
    if not SSHD.is_file() or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server / openssh-client are not installed (apt-get install openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("the test sshd logs in as root into a temporary folder")
    work = tmp_path_factory.mktemp("sshd")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "client_key")], check=True)
    shutil.copy(work / "client_key.pub", work / "authorized_keys")
    port = free_port()
    (work / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work / 'host_key'}\n"
        f"AuthorizedKeysFile {work / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PidFile {work / 'sshd.pid'}\nLogLevel ERROR\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation folder
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(work / "sshd_config")], stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {proc.stderr.read()}")
        probe = subprocess.run(["ssh", *ssh_args(port, work / "client_key"), "root@127.0.0.1", "true"],
                               capture_output=True, timeout=20)
        if probe.returncode == 0:
            break
        time.sleep(0.2)
    else:
        pytest.fail("sshd did not accept the test key")
    yield port, work / "client_key"
    stop_process(proc)


def ssh_args(port: int, key: Path) -> list[str]:
    return ["-p", str(port), "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]


def flash_cli_ssh(bundle: Path, port: int, key: Path, path: Path, *extra: str):
    return run_cli("flash", str(bundle), "--to", f"ssh://root@127.0.0.1:{port}:{path}", "--identity", str(key),
                   "--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", "UserKnownHostsFile=/dev/null",
                   *extra, check=False)


@pytest.mark.skipif(PY is None, reason="/usr/bin/python3 with venv is needed on the ssh 'device' "
                    "(apt-get install python3 python3-venv)")
def test_flash_over_ssh_installs_and_runs(x86_bundle, sshd, tmp_path):
    port, key = sshd
    prefix = tmp_path / "device" / "opt" / "tiny"
    # No systemd here: install.sh says so and leaves the unit file; --no-service keeps this machine's /etc clean.
    result = flash_cli_ssh(x86_bundle, port, key, prefix, "--no-service", "--python", str(es.SYSTEM_PYTHON))
    assert result.returncode == 0, result.stderr
    assert "check passed" in result.stderr and "Installed" in result.stderr
    release = (prefix / "current").resolve()
    assert result.stdout.strip() == str(release)
    assert (release / ".installed").is_file()
    # It runs there: the same answer as in process.
    answer = subprocess.run(["ssh", *ssh_args(port, key), "root@127.0.0.1", f"{prefix}/current/run predict"],
                            input=json.dumps(es.REQUEST), capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stderr
    es.assert_outputs_close(json.loads(answer.stdout)["outputs"], es.expected_outputs())
    # The temporary upload folder is gone.
    leftovers = subprocess.run(["ssh", *ssh_args(port, key), "root@127.0.0.1", "ls -d ${TMPDIR:-/tmp}/bento-flash.*"],
                               capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""


def test_flash_over_ssh_to_a_read_only_path_fails_clearly(x86_bundle, sshd, read_only_dir):
    port, key = sshd
    before = sorted(read_only_dir.rglob("*"))
    result = flash_cli_ssh(x86_bundle, port, key, read_only_dir / "opt" / "tiny", "--no-service")
    assert result.returncode == 1
    assert "read-only" in result.stderr and "fix:" in result.stderr
    assert sorted(read_only_dir.rglob("*")) == before


def test_flash_to_an_unreachable_host_names_it(x86_bundle, tmp_path):
    closed = free_port()  # nothing listens there
    result = run_cli("flash", str(x86_bundle), "--to", f"ssh://pi@127.0.0.1:{closed}:/opt/tiny",
                     "--ssh-option", "ConnectTimeout=5", check=False)
    assert result.returncode == 1
    assert f"Cannot reach pi@127.0.0.1 on port {closed}" in result.stderr
    assert "sshd" in result.stderr


def test_flash_over_ssh_refuses_another_architecture(sshd, tmp_path):
    port, key = sshd
    result = flash_cli_ssh(es.bundle("arm64", "3.11"), port, key, tmp_path / "opt")
    assert result.returncode == 1
    assert "is a x86_64 device but the bundle is for aarch64" in result.stderr
    assert not (tmp_path / "opt").exists()
