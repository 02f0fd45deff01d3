"""The lambda-zip target, for real: build for the target platform, unzip into an empty folder,
run it with the real awslambdaric on a CLEAN interpreter (a venv with nothing installed) against
the Runtime API server, and drive every sample event through it.

The managed runtime's own packages (awslambdaric, boto3) are resolved as wheels for the
target into a separate folder, as Lambda provides them; nothing comes from the project venv.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import read_manifest
from bento_compile.runtimes.model import BentoModel
from bento_compile.targets import lambda_zip as lambda_zip_module
from bento_compile.targets.bytecode import find_interpreter
from bento_compile.targets.lambda_zip import build_lambda_zip, lambda_requirements
from bento_compile.targets.reproducible_zip import zip_date
from bento_compile.targets.sam import sam_template
from bento_compile.tools.invoke import local_runtime
from tests.support.helpers import run_cli, stop_process
from tests.support.lambda_rapi import InitError, RuntimeAPI, start_ric
from tests.support.lambda_support import (
    as_predict_request,
    emf_lines,
    fixture_events,
    log_lines,
    old_ir_bento,
    sqs_batch,
)

pytestmark = [pytest.mark.slow, pytest.mark.lambda_zip]

# Lambda Python runtimes on Amazon Linux 2023; the first one with an interpreter here runs the zips.
PYTHON = next((v for v in ("3.12", "3.13") if find_interpreter(v)), "3.12")
TAG = "cp" + PYTHON.replace(".", "")
HANDLER = "bento_compile.adapters.aws_lambda.handler"
EVENTS = fixture_events()
MIB = 1024 * 1024


@pytest.fixture(scope="session")
def lambda_home(tmp_path_factory):
    """The build cache (BENTO_COMPILE_CACHE) these tests share: the clean runtimes are made once a session."""
    return tmp_path_factory.mktemp("lambda-home")


@pytest.fixture(scope="session")
def built_zip(built_example, tmp_path_factory):
    """The example Bento as an x86_64 / Python 3.12 (or 3.13) zip, built once for the session."""
    if find_interpreter(PYTHON) is None:
        pytest.skip("no Python 3.12 or 3.13 interpreter here to build bytecode and run Lambda zips with "
                    "(pyenv install 3.12, or set BENTO_COMPILE_PYTHON_3_12=/path/to/python3.12)")
    return build_lambda_zip(built_example, "x86_64", PYTHON, tmp_path_factory.mktemp("dist"),
                            settings={"warmer": "rate(5 minutes)"}, require_bytecode=True)


@pytest.fixture(scope="session")
def runtime_env(lambda_home):
    """The clean interpreter + the managed runtime's packages (cached under a session home)."""
    if find_interpreter(PYTHON) is None:
        pytest.skip("no Python 3.12 or 3.13 interpreter here to build bytecode and run Lambda zips with "
                    "(pyenv install 3.12, or set BENTO_COMPILE_PYTHON_3_12=/path/to/python3.12)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTO_COMPILE_CACHE", str(lambda_home))
        return local_runtime("x86_64", PYTHON)


@pytest.fixture(scope="session")
def task_dir(built_zip, tmp_path_factory):
    """The zip unpacked into an EMPTY folder, as Lambda's /var/task."""
    folder = tmp_path_factory.mktemp("task")
    assert not any(folder.iterdir())
    with zipfile.ZipFile(built_zip.path) as archive:
        archive.extractall(folder)
    return folder


def start(task: Path, runtime_env, api: RuntimeAPI, log: Path, **env: str) -> subprocess.Popen:
    return start_ric(runtime_env.python, HANDLER, task, api, ric_path=runtime_env.provided, env=env,
                     stdout=open(log, "w"))


@pytest.fixture(scope="module")
def function(task_dir, runtime_env, tmp_path_factory):
    """The unzipped function running under awslambdaric, for the module."""
    log = tmp_path_factory.mktemp("function") / "function.log"
    with RuntimeAPI() as api:
        proc = start(task_dir, runtime_env, api, log)
        try:
            api.wait_ready(60, proc)
            yield api, proc, log
        finally:
            stop_process(proc)


@pytest.fixture(scope="module")
def example(built_example):
    return json.loads((built_example / "manifest.json").read_text())["example"]


@pytest.fixture(scope="module")
def expected(built_example, example):
    return json.loads(json.dumps(BentoModel.load(built_example).predict(example)))


def test_the_clean_interpreter_sees_nothing_of_the_project(runtime_env):
    probe = "import importlib.util as u; print([m for m in ('numpy', 'onnxruntime', 'fastapi', 'bento_compile') " \
            "if u.find_spec(m)])"
    result = subprocess.run([str(runtime_env.python), "-c", probe], capture_output=True, text=True, env={},
                            cwd=runtime_env.provided)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    provided = {p.name.split("-")[0].lower() for p in runtime_env.provided.iterdir()}
    assert "awslambdaric" in provided and "boto3" in provided
    assert not provided & {"numpy", "onnxruntime", "fastapi", "bento_compile"}


def test_every_fixture_event_through_the_zip(function, example, expected):
    api, proc, log = function
    answers = {name: api.invoke(event, 30, proc) for name, event in EVENTS.items()}
    assert all(a.ok for a in answers.values()), {n: a.body for n, a in answers.items() if not a.ok}
    for name in ("alb-lambda-target-request-headers-only.json", "apigw-request.json",
                 "apigw-v2-request-no-authorizer.json", "lambda-urls-request.json"):
        assert answers[name].body["statusCode"] == 404, name  # their stock paths are not routes of the contract
        assert json.loads(answers[name].body["body"]) == {"error": "Not Found"}

        predicted = api.invoke(as_predict_request(name, EVENTS[name], example), 30, proc)
        assert predicted.ok and predicted.body["statusCode"] == 200, predicted.body
        assert json.loads(predicted.body["body"]) == expected, name
        bad = api.invoke(as_predict_request(name, EVENTS[name], {"inputs": [[0.5] * 3]}), 30, proc).body
        assert bad["statusCode"] == 422 and "30 features" in json.loads(bad["body"])["error"]
        meta = api.invoke(as_predict_request(name, EVENTS[name], None, "GET", "/metadata"), 30, proc).body
        assert meta["statusCode"] == 200 and json.loads(meta["body"])["tag"].startswith("cancer:")

    v2 = EVENTS["apigw-v2-request-no-authorizer.json"]
    schema = api.invoke(as_predict_request("v2", v2, None, "GET", "/openapi.json"), 30, proc).body
    assert schema["statusCode"] == 200 and "/predict" in json.loads(schema["body"])["paths"]
    docs = api.invoke(as_predict_request("v2", v2, None, "GET", "/docs"), 30, proc).body
    assert docs["statusCode"] == 200 and "swagger" in docs["body"].lower()
    huge = {"inputs": [[0.123456789] * 30] * 3000}  # about 1.2 MB: over the example's runtime.max_body_bytes (1 MiB)
    too_big = api.invoke(as_predict_request("v2", v2, huge), 30, proc).body
    assert too_big["statusCode"] == 413 and "max_body_bytes" in json.loads(too_big["body"])["error"]

    warm = answers["scheduled-event.json"].body
    assert warm["warm"] is True and warm["model"].startswith("cancer:")
    assert answers["sqs-event.json"].body == {"batchItemFailures": [{"itemIdentifier": "MessageID_1"}]}

    batch = sqs_batch(EVENTS["sqs-event.json"], {"ok-1": json.dumps(example), "ok-2": json.dumps(example),
                                                 "bad": json.dumps({"inputs": [[1.0]]})})
    assert api.invoke(batch, 30, proc).body == {"batchItemFailures": [{"itemIdentifier": "bad"}]}

    direct = api.invoke(example, 30, proc)
    assert direct.ok and direct.body == expected

    text = log.read_text()
    predictions = {line["messageId"]: line["outputs"] for line in log_lines(text, "prediction")}
    assert predictions == {"ok-1": expected["outputs"], "ok-2": expected["outputs"]}
    assert len(log_lines(text, "warm ping")) == 1
    assert len(log_lines(text, "cold start")) == 1
    metrics = emf_lines(text)
    assert metrics[0]["ColdStart"] == 1 and metrics[0]["ModelLoadTime"] > 0
    assert all(m["ColdStart"] == 0 for m in metrics[1:])
    assert {m["Source"] for m in metrics} == {"http", "warmer", "sqs", "direct"}


def test_errors_from_the_zip(function):
    api, proc, _log = function
    bad = api.invoke({"inputs": [[1.0, 2.0]]}, 30, proc)
    assert not bad.ok and bad.error_type == "InputError"
    assert "each row must have 30 features, got 2" in bad.body["errorMessage"]
    unknown = api.invoke({"Hello": "there"}, 30, proc)
    assert not unknown.ok and unknown.error_type == "UnrecognizedEvent"
    assert "direct invoke" in unknown.body["errorMessage"]
    assert proc.poll() is None, "a handler error must not kill the function"


def test_corrupted_model_is_an_init_error_naming_the_file(task_dir, runtime_env, tmp_path):
    broken = tmp_path / "task"
    shutil.copytree(task_dir, broken)
    model = broken / "bento" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[123] ^= 0xFF
    model.write_bytes(bytes(data))
    with RuntimeAPI() as api:
        proc = start(broken, runtime_env, api, tmp_path / "init.log")
        with pytest.raises(InitError) as failure:
            api.wait_ready(60, proc)
        proc.wait(10)
    assert failure.value.error_type == "IntegrityError"
    assert "model.onnx has sha256" in failure.value.body["errorMessage"]
    assert "but the manifest says" in failure.value.body["errorMessage"]


def test_lazy_mode_from_the_zip(task_dir, runtime_env, tmp_path, example, expected):
    with RuntimeAPI() as api:
        proc = start(task_dir, runtime_env, api, tmp_path / "lazy.log", BENTO_COMPILE_LOAD="lazy")
        try:
            api.wait_ready(60, proc)
            assert api.invoke(example, 30, proc).body == expected
        finally:
            stop_process(proc)
    text = (tmp_path / "lazy.log").read_text()
    cold = log_lines(text, "cold start")[0]
    assert cold["load_mode"] == "lazy" and cold["model_ready"] is False
    assert log_lines(text, "model loaded")[0]["load_mode"] == "lazy"


def test_zip_contents_slimmed_and_precompiled(built_zip):
    with zipfile.ZipFile(built_zip.path) as archive:
        names = archive.namelist()
        infos = {i.filename: i for i in archive.infolist()}
        info = json.loads(archive.read("bento-lambda.json"))
        pyc = archive.read(next(n for n in names if n.startswith("bento_compile/adapters/__pycache__/aws_lambda.")))
    assert names == sorted(names)
    assert {i.date_time for i in infos.values()} == {zip_date()}  # 1980-01-01, or SOURCE_DATE_EPOCH
    assert {(i.external_attr >> 16) & 0o777 for i in infos.values()} <= {0o644, 0o755}
    # What slimming removed, and what it must keep.
    assert not [n for n in names if "libonnxruntime.so" in n]
    assert not [n for n in names if n.startswith(("google/", "flatbuffers/", "packaging/", "onnxruntime/tools/"))]
    assert not [n for n in names if "/tests/" in n or n.endswith((".pyi", ".h"))]
    assert [n for n in names if n.startswith("numpy.libs/") and ".so" in n], "numpy.libs must never be stripped"
    assert [n for n in names if n.startswith("onnxruntime/capi/onnxruntime_pybind11_state")]
    assert [n for n in names if n.endswith("dist-info/METADATA") and n.startswith("numpy-")]
    assert [n for n in names if "numpy-" in n and "dist-info/" in n and "LICENSE" in n.upper()]
    assert "onnxruntime/LICENSE" in names
    removed = {r["path"].split("/")[0] for r in info["removed"]}
    assert {"google", "flatbuffers", "packaging"} <= removed
    assert not [n for n in names if n.startswith(("numpy/random/", "numpy/fft/", "pydantic/v1/"))
                and "LICENSE" not in n]
    assert "numpy/random/LICENSE.md" in names  # a removed folder keeps its licence
    # The whole Bento travels, byte for byte.
    bento_files = sorted(n[len("bento/"):] for n in names if n.startswith("bento/"))
    assert "manifest.json" in bento_files and "model.onnx" in bento_files
    # Our code only: the runtime and the adapters, never the compiler, targets or CLI.
    ours = {n.split("/")[1] for n in names if n.startswith("bento_compile/") and n.count("/") >= 2}
    assert ours <= {"runtimes", "adapters", "__pycache__"}, ours
    # Bytecode for the TARGET Python, unchecked-hash (flags = 0b01: hash-based, do not check the source).
    assert info["bytecode"]["python"].startswith(PYTHON + ".") and built_zip.pyc_files > 300
    flags = struct.unpack("<I", pyc[4:8])[0]
    assert flags == 0b01
    assert all(f".cpython-{TAG[2:]}." in n for n in names if n.endswith(".pyc"))
    py_files = [n for n in names if n.endswith(".py") and n.startswith(("bento_compile/", "fastapi/", "numpy/"))]
    for name in py_files[:200]:
        folder, _, module = name.rpartition("/")
        assert f"{folder}/__pycache__/{module[:-3]}.cpython-{TAG[2:]}.pyc" in infos, f"no bytecode for {name}"
    # Sizes (the target for an ONNX Runtime Bento of a scikit-learn model).
    assert built_zip.zipped_bytes == built_zip.path.stat().st_size
    assert built_zip.zipped_bytes < 35 * 1000 * 1000, built_zip.zipped_bytes
    assert built_zip.unzipped_bytes < 110 * 1000 * 1000, built_zip.unzipped_bytes


def test_two_builds_give_the_same_bytes(built_zip, built_example, tmp_path):
    again = build_lambda_zip(built_example, "x86_64", PYTHON, tmp_path, settings={"warmer": "rate(5 minutes)"},
                             require_bytecode=True)
    assert again.sha256 == built_zip.sha256
    assert again.path.read_bytes() == built_zip.path.read_bytes()


def test_arm64_zip_has_arm64_wheels_and_binaries(built_example, tmp_path):
    result = build_lambda_zip(built_example, "arm64", PYTHON, tmp_path, template=False)
    with zipfile.ZipFile(result.path) as archive:
        info = json.loads(archive.read("bento-lambda.json"))
        shared_objects = [n for n in archive.namelist() if n.endswith(".so") or ".so." in n]
        machines = {n: struct.unpack("<H", archive.read(n)[18:20])[0] for n in shared_objects}
        wheel_tags = [line for n in archive.namelist() if n.endswith(".dist-info/WHEEL")
                      for line in archive.read(n).decode().splitlines() if line.startswith("Tag:")]
    assert info["arch"] == "arm64" and info["machine"] == "aarch64"
    binary = [w["file"] for w in info["wheels"] if not w["file"].endswith("-none-any.whl")]
    assert binary and all(f.endswith("aarch64.whl") for f in binary), binary
    assert all(TAG in f or "abi3" in f for f in binary), binary
    assert {w["name"] for w in info["wheels"]} >= {"numpy", "onnxruntime", "pydantic-core", "orjson"}
    assert all(tag.endswith(("aarch64", "-any")) for tag in wheel_tags), wheel_tags
    assert shared_objects and set(machines.values()) == {183}, {n: m for n, m in machines.items() if m != 183}
    assert result.zipped_bytes < 35 * 1000 * 1000
    event = tmp_path / "event.json"
    event.write_text("{}")
    refused = run_cli("invoke", str(result.path), "--event", str(event), check=False)
    assert refused.returncode == 1 and "This zip is for aarch64" in refused.stderr, refused.stderr


def test_amazon_linux_2_runtimes_get_glibc_2_26_wheels_and_refuse_models_too_new(built_example, tmp_path):
    """Python 3.11 on Lambda runs on Amazon Linux 2 (glibc 2.26): only onnxruntime 1.16 installs there."""
    assert "numpy>=1.24,<2" in lambda_requirements("x86_64", "3.11")
    with pytest.raises(BentoCompileError, match=r"Amazon Linux 2 \(glibc 2.26\).*ONNX IR version 10") as failure:
        build_lambda_zip(built_example, "x86_64", "3.11", tmp_path)
    assert "--python 3.12" in failure.value.fix
    assert not list(tmp_path.glob("*.zip"))


def test_size_budget_fails_with_the_largest_contributors(built_example, tmp_path, monkeypatch):
    monkeypatch.setattr(lambda_zip_module, "ZIPPED_LIMIT", 10 * MIB)
    with pytest.raises(BentoCompileError) as failure:
        build_lambda_zip(built_example, "x86_64", PYTHON, tmp_path, template=False)
    message = str(failure.value.problem)
    assert "over the limit of 10.0 MiB" in message and "zipped" in message
    assert "onnxruntime/capi/" in message and "numpy.libs/" in message
    assert len([line for line in message.splitlines() if "MiB  " in line]) == 10
    assert "lambda-image" in failure.value.fix
    assert not list(tmp_path.glob("*.zip")) and not list(tmp_path.glob(".*partial"))


def test_sam_template_passes_cfn_lint(built_zip, tmp_path, built_example):
    import yaml

    template = yaml.safe_load(built_zip.template.read_text())
    function = template["Resources"]["BentoFunction"]["Properties"]
    assert function["Handler"] == HANDLER and function["Runtime"] == f"python{PYTHON}"
    assert function["Architectures"] == ["x86_64"] and function["FunctionUrlConfig"] == {"AuthType": "AWS_IAM"}
    assert function["Events"]["Warmer"]["Properties"]["Schedule"] == "rate(5 minutes)"
    assert Path(built_zip.template.parent / function["CodeUri"]) == built_zip.path
    manifest = read_manifest(built_example)
    variants = {
        "plain.yaml": {"function_url": False},
        "provisioned.yaml": {"provisioned_concurrency": 2, "memory": 2048, "timeout": 10, "load": "background",
                             "sink": "s3://results/predictions/", "function_url_auth": "NONE",
                             "sqs_queue_arn": "arn:aws:sqs:us-east-1:123456789012:requests", "sqs_batch_size": 50},
        "snapstart.yaml": {"snapstart": True, "sink": "https://sqs.us-east-1.amazonaws.com/123456789012/out"},
    }
    paths = [str(built_zip.template)]
    for name, settings in variants.items():
        path = tmp_path / name
        path.write_text(yaml.safe_dump(sam_template(manifest, "cancer-lambda.zip", "arm64", "3.13", settings)))
        paths.append(str(path))
    result = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), *paths],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    provisioned = yaml.safe_load((tmp_path / "provisioned.yaml").read_text())["Resources"]["BentoFunction"]
    props = provisioned["Properties"]
    assert props["AutoPublishAlias"] == "live"
    assert props["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": 2}
    assert props["Events"]["Queue"]["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["Environment"]["Variables"] == {"BENTO_COMPILE_LOAD": "background",
                                                 "BENTO_COMPILE_SINK": "s3://results/predictions/"}
    assert props["Policies"] == [{"S3WritePolicy": {"BucketName": "results"}}]
    snap = yaml.safe_load((tmp_path / "snapstart.yaml").read_text())["Resources"]["BentoFunction"]["Properties"]
    assert snap["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert snap["Policies"] == [{"SQSSendMessagePolicy": {"QueueName": "out"}}]


def test_cli_builds_and_invokes(example_model, tmp_path, lambda_home, runtime_env, example, expected):
    """bento.yaml's targets.lambda travels in the Bento to the zip, the template and the handler."""
    import yaml

    config = yaml.safe_load((example_model / "bento.yaml").read_text())
    config["targets"] = {"lambda": {"python": PYTHON, "memory": 512, "load": "lazy", "warmer": "rate(10 minutes)"}}
    (tmp_path / "bento.yaml").write_text(yaml.safe_dump(config))
    for name in ("model.joblib", "sample.npy"):
        shutil.copy(example_model / name, tmp_path / name)
    env = {"BENTO_COMPILE_HOME": str(tmp_path / "store")}
    run_cli("build", "-f", str(tmp_path / "bento.yaml"), env=env)
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({**config, "targets": {"lambda": {"memroy": 512}}}))
    refused = run_cli("build", "-f", str(typo), check=False, env=env)
    assert refused.returncode == 1 and "targets.lambda.memroy" in refused.stderr, refused.stderr

    built = run_cli("target", "lambda-zip", "cancer:latest", "-o", str(tmp_path / "dist"), env=env)
    zip_path = Path(built.stdout.strip().splitlines()[-1])
    assert zip_path == tmp_path / "dist" / "cancer-lambda.zip" and zip_path.is_file()
    assert "zipped" in built.stderr and "50.0 MiB" in built.stderr and "250.0 MiB" in built.stderr
    template = yaml.safe_load((tmp_path / "dist" / "template.yaml").read_text())
    function = template["Resources"]["BentoFunction"]["Properties"]
    assert function["MemorySize"] == 512 and function["Runtime"] == f"python{PYTHON}"
    assert function["Environment"]["Variables"]["BENTO_COMPILE_LOAD"] == "lazy"
    assert function["Events"]["Warmer"]["Properties"]["Schedule"] == "rate(10 minutes)"

    event = tmp_path / "event.json"
    event.write_text(json.dumps(example))
    env["BENTO_COMPILE_CACHE"] = str(lambda_home)  # reuse the cached clean runtime
    answer = run_cli("invoke", str(zip_path), "--event", str(event), env=env)
    assert json.loads(answer.stdout) == expected
    assert '"load_mode":"lazy"' in answer.stderr  # from the manifest's targets.lambda, without the template
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"inputs": [[1.0]]}))
    failed = run_cli("invoke", str(zip_path), "--event", str(bad), "--no-logs", check=False, env=env)
    assert failed.returncode == 1 and json.loads(failed.stdout)["errorType"] == "InputError"
    missing = run_cli("invoke", str(zip_path), "--event", str(tmp_path / "nope.json"), check=False, env=env)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    other = next((i for i in map(find_interpreter, ("3.11", "3.10")) if i is not None), None)
    if other is not None:  # an interpreter of another version is refused, not silently used
        wrong = run_cli("invoke", str(zip_path), "--event", str(event), "--python", str(other.path), check=False,
                        env=env)
        assert wrong.returncode == 1 and f"was built for Python {PYTHON}" in wrong.stderr, wrong.stderr


def test_python_3_11_zip_runs_on_onnxruntime_1_16_and_numpy_1(tmp_path, lambda_home):
    """The Amazon Linux 2 path: glibc 2.26 wheels (onnxruntime 1.16, numpy 1.x, which imports its
    submodules eagerly, so they must stay), run on a clean Python 3.11 under awslambdaric."""
    if find_interpreter("3.11") is None:
        pytest.skip("no Python 3.11 interpreter on this machine (pyenv install 3.11)")
    bento = old_ir_bento(tmp_path, "tiny311")
    built = build_lambda_zip(bento, "x86_64", "3.11", tmp_path / "dist", template=False, require_bytecode=True)
    versions = {w.name: w.version for w in built.wheels}
    assert versions["onnxruntime"].startswith("1.16.") and versions["numpy"].startswith("1.")
    with zipfile.ZipFile(built.path) as archive:
        names = set(archive.namelist())
    assert "numpy/random/__init__.py" in names  # numpy 1.x imports it at `import numpy`
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTO_COMPILE_CACHE", str(lambda_home))
        runtime = local_runtime("x86_64", "3.11")
    task = tmp_path / "task"
    with zipfile.ZipFile(built.path) as archive:
        archive.extractall(task)
    request = {"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
    with RuntimeAPI() as api:
        proc = start(task, runtime, api, tmp_path / "311.log")
        try:
            api.wait_ready(60, proc)
            answer = api.invoke(request, 30, proc)
        finally:
            stop_process(proc)
    assert answer.ok, (answer.body, (tmp_path / "311.log").read_text()[-2000:])
    assert answer.body["outputs"]["label"] == BentoModel.load(bento).predict(request)["outputs"]["label"]


def test_signed_bento_is_verified_inside_lambda(built_example, tmp_path, lambda_home, runtime_env, example, expected):
    """A signed Bento ships cryptography in its zip; with BENTO_COMPILE_PUBLIC_KEY set, the function
    verifies the signature at init, and a key that did not sign it fails init."""
    from bento_compile.core.signing import generate_keypair, load_private_key, sign_bento

    bento = tmp_path / "bento"
    shutil.copytree(built_example, bento)
    keys = generate_keypair(tmp_path / "keys")
    sign_bento(bento, load_private_key(keys.private_path))
    built = build_lambda_zip(bento, "x86_64", PYTHON, tmp_path / "dist", template=False)
    assert {"cryptography", "cffi"} <= {w.name for w in built.wheels}
    task = tmp_path / "task"
    with zipfile.ZipFile(built.path) as archive:
        archive.extractall(task)
    assert (task / "bento" / "signature.json").is_file()

    with RuntimeAPI() as api:
        proc = start(task, runtime_env, api, tmp_path / "signed.log",
                     BENTO_COMPILE_PUBLIC_KEY=keys.public_path.read_text())
        try:
            api.wait_ready(60, proc)
            assert api.invoke(example, 30, proc).body == expected
        finally:
            stop_process(proc)

    stranger = generate_keypair(tmp_path / "other-keys")
    with RuntimeAPI() as api:
        proc = start(task, runtime_env, api, tmp_path / "stranger.log",
                     BENTO_COMPILE_PUBLIC_KEY=stranger.public_path.read_text())
        with pytest.raises(InitError) as failure:
            api.wait_ready(60, proc)
        proc.wait(10)
    assert failure.value.error_type == "IntegrityError", failure.value.body
    assert "signature" in failure.value.body["errorMessage"].lower(), failure.value.body
