"""`bento-compile deploy lambda` as a user runs it, against the session's real moto_server.

Each command is a fresh process (run_cli): canary, status, promote and rollback work from
what AWS holds alone, as from a fresh machine. Those runs pass --no-smoke because moto
cannot execute code; the one in-process run below (a stored Bento TAG, built into a zip by
the command) does the smoke check with tests.support.deploy_support.LocalInvoker standing in
for `lambda:Invoke`, the only call moto lacks.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.support.deploy_support import LocalInvoker, aws_environment, boto_client, code_sha256, variant_zip
from tests.support.helpers import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.lambda_zip]


@pytest.fixture
def env(moto_endpoint):
    return aws_environment(moto_endpoint)


def deploy(env, *args, check=True):
    result = run_cli("deploy", "lambda", *args, env=env, check=check)
    return result, (json.loads(result.stdout) if check and "--json" in args else None)


def test_canary_promote_rollback_status_from_fresh_processes(env, deploy_zip, tmp_path, moto_endpoint):
    name = "cli-walkthrough"
    _, first = deploy(env, str(deploy_zip), "--function", name, "--no-smoke", "--json")
    assert first["version"] == "1" and first["routing"] == {"1": 1.0} and first["skipped"] is False
    assert first["code_sha256"] == code_sha256(deploy_zip) and first["bento_tag"].startswith("cancer:")
    assert first["function_arn"].endswith(f":function:{name}") and first["alias"] == "live"
    assert first["url"].startswith("https://")

    again, unchanged = deploy(env, str(deploy_zip), "--function", name, "--no-smoke", "--json")
    assert unchanged["skipped"] is True and "Unchanged" in again.stderr

    second = variant_zip(deploy_zip, tmp_path / "second.zip", "cli second build")
    _, canary = deploy(env, str(second), "--function", name, "--canary", "20", "--no-smoke", "--json")
    assert canary["routing"] == {"1": 0.8, "2": 0.2}

    _, status = deploy(env, "--function", name, "--status", "--json")
    assert [(v["version"], v["weight"]) for v in status["versions"]] == [("1", 0.8), ("2", 0.2)]
    assert status["versions"][1]["code_sha256"] == code_sha256(second)
    assert "Environment" not in json.dumps(status)

    _, promoted = deploy(env, "--function", name, "--promote", "--json")
    assert promoted["routing"] == {"2": 1.0}
    rolled, back = deploy(env, "--function", name, "--rollback", "--json")
    assert back["routing"] == {"1": 1.0} and "Rolled back" in rolled.stderr
    lam = boto_client("lambda", moto_endpoint)
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"

    human, _ = deploy(env, "--function", name, "--status")
    assert "version" in human.stderr and "100.0 %" in human.stderr


@pytest.mark.parametrize(("args", "problem"), [
    (("--function", "cli-nothing", "--promote"), "There is no Lambda function cli-nothing"),
    (("--function", "x", "--promote", "--rollback"), "--promote and --rollback cannot be combined"),
    ((), "Nothing to deploy: no TAG given"),
    (("some:tag", "--function", "x", "--status"), "--status takes no TAG"),
    (("--promote",), "--promote needs --function"),
    (("missing.zip", "--function", "x"), "missing.zip does not exist"),
    (("--function", "../bad", "--status"), "is not a Lambda function name"),
])
def test_bad_input_is_one_clear_error(env, args, problem):
    result, _ = deploy(env, *args, check=False)
    assert result.returncode == 1, result.stderr
    assert problem in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_region_is_one_clear_error(env, tmp_path, deploy_zip):
    bare = {k: v for k, v in env.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    bare.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_REGION="", AWS_DEFAULT_REGION="")
    result, _ = deploy(bare, str(deploy_zip), "--function", "x", check=False)
    assert result.returncode == 1 and "No AWS region is configured" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_stored_bento_is_built_smoke_tested_and_deployed(env, built_example, store_home, deploy_zip,
                                                          lambda_run_home, moto_endpoint, monkeypatch):
    """The TAG path in-process (so the one double, for lambda:Invoke, can stand in): the command builds the
    zip for targets.lambda's settings, deploys it and invokes the new version before the alias exists."""
    from click.testing import CliRunner

    from bento_compile.cli import main
    from bento_compile.deploy import aws_lambda

    manifest = json.loads((built_example / "manifest.json").read_text())
    target = store_home / "bentos" / manifest["name"] / manifest["version"]
    shutil.copytree(built_example, target)
    (target.parent / "latest").write_text(manifest["version"] + "\n")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    invoker = LocalInvoker(moto_endpoint, [], lambda_run_home)
    monkeypatch.setattr(aws_lambda, "lambda_invoker", lambda _lam: invoker)
    # The zip the command builds is the same bytes as the session's (reproducible build): the double finds it.
    invoker.add(deploy_zip)
    python = json.loads(__import__("zipfile").ZipFile(deploy_zip).read("bento-lambda.json"))["python"]

    result = CliRunner().invoke(main, ["deploy", "lambda", f"{manifest['name']}:latest", "--function", "cli-tag",
                                       "--python", python, "--url", "none", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["bento_tag"] == f"{manifest['name']}:{manifest['version']}" and summary["url"] is None
    assert summary["smoke"] == {"passed": True, "problems": []}
    assert summary["code_sha256"] == code_sha256(deploy_zip)  # same inputs, same zip
    assert [c["qualifier"] for c in invoker.calls] == ["1"]
