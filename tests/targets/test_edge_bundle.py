"""The edge bundle: what is in it, that it builds to the same bytes, and that it installs and serves
natively (x86_64), offline, with its own install.sh; the on-device `run` modes; rollback."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bento_compile.core.errors import BentoCompileError
from bento_compile.targets.edge import EdgeOptions, build_edge_bundle, plan_runtime, resolve_plan_wheels
from bento_compile.targets.wheels import TargetPlatform
from tests.support import edge_support as es
from tests.support.helpers import free_port, run_cli, stop_process, wait_http

PY = es.system_python_version()
needs_system_python = pytest.mark.skipif(PY is None, reason="/usr/bin/python3 with venv is needed "
                                         "(apt-get install python3 python3-venv)")


def _offline() -> list[str]:
    """Run a command with no network at all (a fresh network namespace): proves `--no-index`."""
    return es.offline_prefix()


@pytest.fixture(scope="module")
def x86_bundle() -> Path:
    return es.bundle("x86_64", PY or "3.11")


# ----------------------------------------------------------------------------- contents

def test_bundle_layout_manifest_and_checksums(x86_bundle):
    with tarfile.open(x86_bundle) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        top = "tiny-edge-x86_64"
        assert all(n == top or n.startswith(top + "/") for n in names)
        assert names == sorted(names), "entries are sorted"
        assert {m.mtime for m in members} == {members[0].mtime} and all(m.uid == 0 and m.gid == 0 for m in members)
        assert all(m.uname == "" for m in members)
        modes = {m.name.split("/", 1)[-1]: m.mode for m in members if m.isfile()}
        assert modes["install.sh"] == modes["run"] == 0o755 and modes["bento/manifest.json"] == 0o644
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in members if m.isfile()}
    # The whole Bento folder, the runtime and adapters (nothing of the compiler), the wheels.
    bento = es.tiny_bento()
    assert {f"bento/{p.relative_to(bento).as_posix()}" for p in bento.rglob("*") if p.is_file()} <= set(files)
    assert "app/bento_compile/adapters/edge_runner.py" in files and "app/bento_compile/runtimes/model.py" in files
    assert not [n for n in files if n.startswith("app/bento_compile/compiler") or n.startswith("app/bento_compile/cli")]
    wheels = [n for n in files if n.startswith("wheels/")]
    assert any("onnxruntime-" in w and "x86_64" in w for w in wheels)
    assert not [w for w in wheels if "aarch64" in w]
    # SHA256SUMS covers every other file, with the right digests.
    sums = dict(reversed(line.split("  ", 1)) for line in files["SHA256SUMS"].decode().splitlines())
    assert set(sums) == set(files) - {"SHA256SUMS"}
    assert all(hashlib.sha256(files[n]).hexdigest() == digest for n, digest in sums.items())
    info = json.loads(files["bundle.json"])
    assert info["target"]["machine"] == "x86_64" and info["format"] == "onnx"
    assert info["runtime"]["engine"] == "onnxruntime" and info["tag"].startswith("tiny:")
    assert info["estimates"]["memory_bytes"] > 40 * 2**20
    requirements = files["requirements.txt"].decode().splitlines()
    assert len(requirements) == len(wheels) and any(r.startswith("onnxruntime==") for r in requirements)
    unit = files["bento-tiny.service"].decode()
    for line in ("Restart=on-failure", "MemoryMax=256M", "CPUQuota=100%", "ExecStart=@PREFIX@/current/run serve",
                 "EnvironmentFile=-@PREFIX@/config.env", "DynamicUser=yes", "Environment=BENTO_COMPILE_WORKERS=1"):
        assert line in unit
    assert "PORT=3000" in files["config.env"].decode()


def test_two_builds_give_the_same_bytes(x86_bundle, tmp_path):
    again = build_edge_bundle(es.tiny_bento(), EdgeOptions(arch="x86_64", python=PY or "3.11", measure=False),
                              tmp_path)
    assert again.sha256 == hashlib.sha256(x86_bundle.read_bytes()).hexdigest()
    assert again.path.read_bytes() == x86_bundle.read_bytes()
    assert (tmp_path / "tiny-edge-x86_64.tar.gz.sha256").read_text().split()[0] == again.sha256
    header = again.path.read_bytes()[:10]
    assert header[4:8] == b"\0\0\0\0", "gzip mtime is 0"
    with gzip.open(again.path) as gz:
        assert gz.read(1)


def test_runtime_follows_format_and_platform():
    assert plan_runtime("ort", TargetPlatform("arm64", "3.11")).engine == "onnxruntime"
    with pytest.raises(BentoCompileError, match="no armv7 wheels") as exc:
        plan_runtime("onnx", TargetPlatform("armv7", "3.11"))
    assert "tflite" in exc.value.fix
    assert plan_runtime("tflite", TargetPlatform("arm64", "3.12")).engine == "ai-edge-litert"
    small = plan_runtime("tflite", TargetPlatform("arm64", "3.11"), tflite_runtime="tflite-runtime")
    assert small.engine == "tflite-runtime" and "numpy<2" in small.requirements
    with pytest.raises(BentoCompileError, match=r"Python 3\.13"):
        plan_runtime("tflite", TargetPlatform("arm64", "3.13"), tflite_runtime="tflite-runtime")
    lean = plan_runtime("onnx", TargetPlatform("arm64", "3.11"), http=False)
    assert not [r for r in lean.requirements if r.startswith(("fastapi", "uvicorn"))]


def test_armv7_tflite_resolves_real_wheels_and_uses_the_devices_numpy(tmp_path):
    """PyPI has tflite-runtime for armv7 but no numpy: the plan takes numpy from the device."""
    plan = plan_runtime("tflite", TargetPlatform("armv7", "3.11"))
    assert plan.engine == "tflite-runtime" and plan.system_modules == ["numpy"]
    wheels = resolve_plan_wheels(plan, TargetPlatform("armv7", "3.11"), tmp_path)
    names = {w.name: w.filename for w in wheels}
    assert "armv7l" in names["tflite-runtime"] and "numpy" not in names
    assert "armv7l" in names["pydantic-core"] and "fastapi" in names


def test_cli_builds_with_json_and_refuses_bad_combinations(tmp_path):
    bento = es.tiny_bento()
    wrong = run_cli("target", "edge", str(bento), "--arch", "armv7", "-o", str(tmp_path), check=False)
    assert wrong.returncode == 1 and "no armv7 wheels" in wrong.stderr and "fix:" in wrong.stderr
    other = run_cli("target", "edge", str(bento), "--format", "tflite", "-o", str(tmp_path), check=False)
    assert other.returncode == 1 and "holds a .onnx model, not .tflite" in other.stderr
    assert not list(tmp_path.iterdir()), "a refused build writes nothing"
    result = run_cli("target", "edge", str(bento), "--arch", "arm64", "--python", "3.11", "--json",
                     "-o", str(tmp_path))
    data = json.loads(result.stdout)
    assert data["machine"] == "aarch64" and Path(data["path"]).is_file()
    assert any(w["name"] == "onnxruntime" and "aarch64" in w["file"] for w in data["wheels"])
    assert data["installed_size"] > data["size"] > 1_000_000 and data["measured_memory"] > 20 * 2**20


# ----------------------------------------------------------------------------- install.sh guards

def test_install_refuses_changed_or_extra_files_before_doing_anything(x86_bundle, tmp_path):
    folder = es.unpack(x86_bundle, tmp_path / "unpacked")
    model = folder / "bento" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[50] ^= 1
    model.write_bytes(bytes(data))
    prefix = tmp_path / "opt"
    result = subprocess.run(["sh", str(folder / "install.sh"), "--prefix", str(prefix), "--no-service"],
                            capture_output=True, text=True)
    assert result.returncode == 4 and "bento/model.onnx" in result.stderr and "do not match" in result.stderr
    assert not prefix.exists(), "nothing is written before the files verify"

    clean = es.unpack(x86_bundle, tmp_path / "clean")
    (clean / "bento" / "extra.py").write_text("print('hi')\n")
    result = subprocess.run(["sh", str(clean / "install.sh"), "--prefix", str(prefix), "--no-service"],
                            capture_output=True, text=True)
    assert result.returncode == 4 and "bento/extra.py" in result.stderr and not prefix.exists()


def test_install_refuses_odd_prefixes_and_a_concurrent_install(x86_bundle, tmp_path):
    folder = es.unpack(x86_bundle, tmp_path / "unpacked")
    spaced = subprocess.run(["sh", str(folder / "install.sh"), "--prefix", str(tmp_path / "my models"),
                             "--no-service"], capture_output=True, text=True)
    assert spaced.returncode == 2 and "may hold only" in spaced.stderr and not (tmp_path / "my models").exists()
    prefix = tmp_path / "opt"
    (prefix / ".install.lock").mkdir(parents=True)
    busy = subprocess.run(["sh", str(folder / "install.sh"), "--prefix", str(prefix), "--no-service",
                           "--python", str(es.SYSTEM_PYTHON if PY else "python3")], capture_output=True, text=True)
    assert busy.returncode == 1 and "another install" in busy.stderr
    assert (prefix / ".install.lock").is_dir(), "someone else's lock is left alone"
    assert sorted(p.name for p in (prefix / "releases").iterdir()) == []


def test_install_refuses_another_architecture(tmp_path):
    folder = es.unpack(es.bundle("arm64", "3.11"), tmp_path / "arm")
    result = subprocess.run(["sh", str(folder / "install.sh"), "--prefix", str(tmp_path / "opt"), "--no-service"],
                            capture_output=True, text=True)
    assert result.returncode == 5 and "for aarch64 but this device is x86_64" in result.stderr
    assert "--arch" in result.stderr and not (tmp_path / "opt").exists()


# ----------------------------------------------------------------------------- native install, serve, rollback

@pytest.fixture(scope="module")
def installed(x86_bundle, tmp_path_factory) -> Path:
    """The x86_64 bundle installed with its own install.sh, offline, into a clean venv."""
    if PY is None:
        pytest.skip("/usr/bin/python3 with venv is needed (apt-get install python3 python3-venv)")
    prefix = tmp_path_factory.mktemp("device") / "opt" / "tiny"
    folder = es.unpack(x86_bundle, tmp_path_factory.mktemp("unpacked"))
    result = subprocess.run([*_offline(), "sh", str(folder / "install.sh"), "--prefix", str(prefix),
                             "--python", str(es.SYSTEM_PYTHON), "--no-service"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "check passed" in result.stderr
    return prefix


@needs_system_python
def test_installed_layout(installed):
    current = installed / "current"
    assert current.is_symlink() and os.readlink(current).startswith("releases/")
    release = current.resolve()
    assert (release / ".installed").is_file() and (release / "venv" / "bin" / "python").is_file()
    assert (installed / "config.env").is_file() and not (installed / "previous").exists()
    venv_cfg = (release / "venv" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in venv_cfg, "a clean venv: nothing from the host"


@needs_system_python
def test_one_shot_predict_and_errors(installed, tmp_path):
    run = str(installed / "current" / "run")
    ok = subprocess.run([run, "predict"], input=json.dumps(es.REQUEST), capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    es.assert_outputs_close(json.loads(ok.stdout)["outputs"], es.expected_outputs())
    request = tmp_path / "req.json"
    request.write_text(json.dumps(es.REQUEST))
    from_file = subprocess.run([run, "predict", "--input", str(request)], capture_output=True, text=True, timeout=60)
    assert json.loads(from_file.stdout) == json.loads(ok.stdout)
    bad = subprocess.run([run, "predict"], input='{"inputs": [[1, 2]]}', capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "4 features, got 2" in json.loads(bad.stdout)["error"]
    junk = subprocess.run([run, "predict"], input="{nope", capture_output=True, text=True, timeout=60)
    assert junk.returncode == 2 and "not valid JSON" in json.loads(junk.stdout)["error"]


@needs_system_python
def test_json_lines_loop(installed):
    lines = [json.dumps({"id": 1, **es.REQUEST}), "", "not json", json.dumps({"id": "b", "inputs": [[1.0]]}),
             json.dumps({"inputs": es.REQUEST["inputs"][:1]})]
    result = subprocess.run([str(installed / "current" / "run"), "lines"], input="\n".join(lines) + "\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == 4, "one answer per non-empty line, in order"
    assert answers[0]["id"] == 1
    es.assert_outputs_close(answers[0]["outputs"], es.expected_outputs())
    assert answers[1]["status"] == 422 and "not valid JSON" in answers[1]["error"]
    assert answers[2]["id"] == "b" and answers[2]["status"] == 422
    assert answers[3]["outputs"]["label"] == es.expected_outputs()["label"][:1]


@needs_system_python
def test_serves_the_http_contract_natively(installed):
    port = free_port()
    env = {**os.environ, "PORT": str(port)}
    proc = subprocess.Popen([str(installed / "current" / "run"), "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/readyz", timeout=60, proc=proc)
        request = urllib.request.Request(f"{base}/predict", data=json.dumps(es.REQUEST).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            es.assert_outputs_close(json.loads(response.read())["outputs"], es.expected_outputs())
        with urllib.request.urlopen(f"{base}/metadata", timeout=10) as response:
            assert json.loads(response.read())["tag"].startswith("tiny:")
        bad = urllib.request.Request(f"{base}/predict", data=b'{"inputs": [[1]]}')
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(bad, timeout=10)
        assert exc.value.code == 422 and "error" in json.loads(exc.value.read())
        assert stop_process(proc, timeout=30) == 0  # SIGTERM, what `systemctl stop` sends: drain, clean exit
    finally:
        stop_process(proc)


@needs_system_python
def test_update_keeps_previous_and_rollback_switches_back(installed, tmp_path):
    first = os.readlink(installed / "current")
    folder = es.unpack(es.bundle("x86_64", PY, seed=1), tmp_path / "v2")
    result = subprocess.run([*_offline(), "sh", str(folder / "install.sh"), "--prefix", str(installed),
                             "--python", str(es.SYSTEM_PYTHON), "--no-service"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    second = os.readlink(installed / "current")
    assert second != first and os.readlink(installed / "previous") == first
    run = str(installed / "current" / "run")
    answer = json.loads(subprocess.run([run, "predict"], input=json.dumps(es.REQUEST), capture_output=True,
                                       text=True, timeout=60).stdout)
    es.assert_outputs_close(answer["outputs"], es.expected_outputs(seed=1))

    back = subprocess.run([run, "rollback"], capture_output=True, text=True, timeout=60)
    assert back.returncode == 0, back.stderr
    assert os.readlink(installed / "current") == first and os.readlink(installed / "previous") == second
    answer = json.loads(subprocess.run([str(installed / "current" / "run"), "predict"], input=json.dumps(es.REQUEST),
                                       capture_output=True, text=True, timeout=60).stdout)
    es.assert_outputs_close(answer["outputs"], es.expected_outputs(seed=0))


def test_runner_modes_stay_import_light(tmp_path):
    """`run predict` and `run lines` must not import the HTTP stack (or anything of the compiler)."""
    release = tmp_path / "release"
    shutil.copytree(es.tiny_bento(), release / "bento")
    script = (
        "import sys\n"
        "BLOCKED = ('fastapi', 'uvicorn', 'starlette', 'pydantic', 'sklearn', 'onnx.', 'click', 'rich',"
        " 'bento_compile.compiler', 'bento_compile.targets', 'bento_compile.cli')\n"
        "class Blocker:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith(BLOCKED) or name == 'onnx':\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Blocker())\n"
        "from bento_compile.adapters.edge_runner import main\n"
        "sys.exit(main(['--release', sys.argv[1], 'lines']))\n"
    )
    big = json.dumps({"inputs": [[1.0, 2.0, 3.0, 4.0]] * 400_000})  # over max_body_bytes
    result = subprocess.run([sys.executable, "-c", script, str(release)], capture_output=True, text=True, timeout=120,
                            input=json.dumps(es.REQUEST) + "\n" + big + "\n" + json.dumps(es.REQUEST) + "\n")
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a.get("status") for a in answers] == [None, 413, None]
    assert answers[0] == answers[2]


@needs_system_python
def test_ort_bento_ships_as_ort_and_serves_the_same(tmp_path):
    """A Bento compiled to .ort (the compiler's `format: ort`) ships as it is, on ONNX Runtime."""
    bento = es.tiny_bento(model_format="ort")
    built = build_edge_bundle(bento, EdgeOptions(arch="x86_64", python=PY, format="ort", http=False,
                                                 measure=False), tmp_path / "dist")
    assert built.model_format == "ort" and built.plan.engine == "onnxruntime"
    assert not [w for w in built.wheels if w.name in ("fastapi", "uvicorn")], "--no-http leaves the server out"
    with tarfile.open(built.path) as tar:
        names = tar.getnames()
    assert "tinyort-edge-x86_64/bento/model.ort" in names
    assert "tinyort-edge-x86_64/bento/required_operators.config" in names, "the whole Bento folder travels"
    folder = es.unpack(built.path, tmp_path / "unpacked")
    prefix = tmp_path / "opt"
    result = subprocess.run([*_offline(), "sh", str(folder / "install.sh"), "--prefix", str(prefix),
                             "--python", str(es.SYSTEM_PYTHON), "--no-service"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    run = str(prefix / "current" / "run")
    answer = subprocess.run([run, "predict"], input=json.dumps(es.REQUEST), capture_output=True, text=True, timeout=60)
    es.assert_outputs_close(json.loads(answer.stdout)["outputs"], es.expected_outputs())
    serve = subprocess.run([run, "serve"], capture_output=True, text=True, timeout=60)
    assert serve.returncode == 1 and "without the HTTP server" in serve.stderr


def test_a_damaged_bento_is_not_bundled(tmp_path):
    bento = tmp_path / "bento"
    shutil.copytree(es.tiny_bento(), bento)
    (bento / "model.onnx").write_bytes((bento / "model.onnx").read_bytes()[:-3])
    with pytest.raises(BentoCompileError, match=r"is damaged: model\.onnx"):
        build_edge_bundle(bento, EdgeOptions(arch="x86_64", measure=False), tmp_path / "dist")
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


@needs_system_python
def test_a_release_that_fails_its_check_is_removed_and_current_stays(installed, tmp_path):
    """A bundle whose files all verify but whose model does not load (re-hashed after tampering, as only
    someone rewriting SHA256SUMS could): install.sh gets as far as `run check`, then removes the release."""
    before = os.readlink(installed / "current")
    folder = es.unpack(es.bundle("x86_64", PY, seed=1), tmp_path / "v2")
    model = folder / "bento" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-3])
    env = folder / "bundle.env"
    env.write_text(re.sub(r"^RELEASE_ID=.*$", "RELEASE_ID='tampered'", env.read_text(), flags=re.M))
    sums = [line.split("  ", 1) for line in (folder / "SHA256SUMS").read_text().splitlines()]
    (folder / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n" for _digest, name in sums))
    result = subprocess.run([*_offline(), "sh", str(folder / "install.sh"), "--prefix", str(installed),
                             "--python", str(es.SYSTEM_PYTHON), "--no-service"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "did not load on this device" in result.stderr
    assert "removed the half-made release" in result.stderr
    assert os.readlink(installed / "current") == before
    live = {os.readlink(link) for link in (installed / "current", installed / "previous") if link.is_symlink()}
    assert {f"releases/{p.name}" for p in (installed / "releases").iterdir()} == live
    assert not (installed / ".install.lock").exists()


def test_lines_answers_bytes_that_are_not_utf8_with_a_422(tmp_path):
    release = tmp_path / "release"
    shutil.copytree(es.tiny_bento(), release / "bento")
    good = json.dumps(es.REQUEST).encode() + b"\n"
    result = subprocess.run([sys.executable, "-m", "bento_compile.adapters.edge_runner", "--release", str(release),
                             "lines"], input=good + b"\xff\xfe{\n" + good, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [a.get("status") for a in answers] == [None, 422, None]


def test_the_unit_runs_one_worker_per_whole_cpu_of_its_quota():
    from bento_compile.targets.edge import render_unit

    for quota, workers in (("50%", 1), ("100%", 1), ("250%", 2), ("600%", 6)):
        unit = render_unit("tiny:1", "bento-tiny", "512M", quota).decode()
        assert f"Environment=BENTO_COMPILE_WORKERS={workers}\n" in unit
        # config.env is read after the unit's own Environment=, so a device's setting there wins
        assert unit.index("Environment=BENTO_COMPILE_WORKERS") < unit.index("EnvironmentFile=")
