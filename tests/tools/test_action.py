"""The GitHub Action (action.yml) and the example workflow, run here step by step.

GitHub's own actions (setup-python, cache, upload-artifact) cannot run here;
every `run:` step of ours is executed by bash exactly as the runner does it:
`${{ … }}` expressions in `env:` resolved from the inputs and earlier steps'
outputs, $GITHUB_OUTPUT a fresh file per step, parsed the way the runner
parses it (key=value and key<<DELIMITER blocks).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bento_compile.core.signing import generate_keypair
from tests.support.helpers import REPO, run_cli

EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def load_action() -> dict:
    return yaml.safe_load((REPO / "action.yml").read_text())


def parse_github_output(text: str) -> dict[str, str]:
    """The runner's format: `key=value` lines and `key<<DELIM` … `DELIM` blocks."""
    outputs, lines, i = {}, text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            outputs[key] = "\n".join(lines[i + 1:end])
            i = end + 1
            continue
        if "=" in line:
            key, value = line.split("=", 1)
            outputs[key] = value
        i += 1
    return outputs


def run_action(inputs: dict[str, str], workspace: Path, env: dict[str, str] | None = None) -> dict:
    """Run every `run:` step of action.yml; return the action's outputs (and the steps' for inspection)."""
    action = load_action()
    values = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    unknown = set(inputs) - set(values)
    assert not unknown, f"not inputs of action.yml: {unknown}"
    values.update(inputs)
    steps: dict[str, dict[str, str]] = {}

    def resolve(text: str) -> str:
        def one(match: re.Match) -> str:
            expr = match.group(1)
            if expr.startswith("inputs."):
                return values[expr[len("inputs."):]]
            if expr.startswith("steps."):
                step_id, _, key = expr[len("steps."):].split(".", 2)
                return steps.get(step_id, {}).get(key, "")
            if expr == "runner.os":
                return "Linux"
            if expr == "github.action_path":
                return str(REPO)
            raise AssertionError(f"expression not supported by the local runner: {expr}")
        return EXPRESSION.sub(one, str(text))

    base_env = {**os.environ, **(env or {}),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                "GITHUB_ACTION_PATH": str(REPO), "GITHUB_WORKSPACE": str(workspace), "RUNNER_OS": "Linux",
                "RUNNER_TEMP": str(workspace.parent / "runner-temp"), "COLUMNS": "200"}
    Path(base_env["RUNNER_TEMP"]).mkdir(exist_ok=True)
    for number, step in enumerate(action["runs"]["steps"]):
        if "uses" in step:
            continue
        output_file = workspace.parent / f"github-output-{number}"
        output_file.write_text("")
        step_env = {**base_env, "GITHUB_OUTPUT": str(output_file)}
        step_env.update({key: resolve(value) for key, value in (step.get("env") or {}).items()})
        assert step.get("shell") == "bash"
        result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                                cwd=workspace, env=step_env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise AssertionError(f"step '{step.get('name')}' failed:\n{result.stdout}\n{result.stderr}")
        if "id" in step:
            steps[step["id"]] = parse_github_output(output_file.read_text())
    outputs = {name: resolve(spec["value"]) for name, spec in action["outputs"].items()}
    return {"outputs": outputs, "steps": steps}


def test_action_yml_is_a_composite_action_with_the_promised_interface():
    action = load_action()
    assert action["runs"]["using"] == "composite"
    assert {"model", "config", "targets", "push", "sign-key"} <= set(action["inputs"])
    assert {"tag", "artifacts", "bento-path"} <= set(action["outputs"])
    uses = [step["uses"] for step in action["runs"]["steps"] if "uses" in step]
    assert any(u.startswith("actions/setup-python@") for u in uses)
    assert any(u.startswith("actions/cache@") for u in uses)  # pip downloads are cached
    cache = next(s for s in action["runs"]["steps"] if s.get("uses", "").startswith("actions/cache@"))
    assert "pip-key" in cache["with"]["key"]
    for step in action["runs"]["steps"]:
        if "run" in step:
            # Inputs reach scripts through env only: no `${{ }}` in a script (no script injection).
            assert "${{" not in step["run"], step["name"]
            assert step["shell"] == "bash"


@pytest.fixture
def workspace(tmp_path, example_model) -> Path:
    """A checkout of a model repository: the example model, its bento.yaml, one commit at a fixed time."""
    ws = tmp_path / "workspace"
    ws.mkdir()
    for name in ("model.joblib", "sample.npy", "bento.yaml"):
        (ws / name).write_bytes((example_model / name).read_bytes())
    git = {"GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.com", "GIT_COMMITTER_NAME": "ci",
           "GIT_COMMITTER_EMAIL": "ci@example.com", "GIT_COMMITTER_DATE": "2024-05-01T12:00:00Z",
           "GIT_AUTHOR_DATE": "2024-05-01T12:00:00Z", "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    subprocess.run(["git", "init", "-q", str(ws)], check=True, env=git)
    subprocess.run(["git", "-C", str(ws), "add", "."], check=True, env=git)
    subprocess.run(["git", "-C", str(ws), "commit", "-qm", "model"], check=True, env=git)
    return ws


def test_build_only_writes_the_tag_and_pins_created_to_the_commit(workspace, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    result = run_action({"config": "bento.yaml"}, workspace)
    out = result["outputs"]
    assert re.fullmatch(r"cancer:[0-9a-f]{16}", out["tag"])
    manifest = json.loads((Path(out["bento-path"]) / "manifest.json").read_text())
    assert f"{manifest['name']}:{manifest['version']}" == out["tag"]
    assert manifest["created"] == "2024-05-01T12:00:00Z"  # SOURCE_DATE_EPOCH from the commit
    assert out["signed"] == "false" and out["remote-url"] == "" and out["artifacts"] == ""
    assert json.loads(out["artifacts-json"]) == {}
    assert not (Path(out["bento-path"]) / "signature.json").exists()


def test_missing_model_and_config_is_a_clear_error(workspace):
    with pytest.raises(AssertionError, match="set the 'model' input"):
        run_action({}, workspace)


@pytest.mark.slow
def test_tag_build_signs_builds_a_target_and_pushes(workspace, s3, tmp_path):
    _client, bucket = s3
    keys = generate_keypair(tmp_path / "keys")
    url = f"s3://{bucket}/bentos"
    result = run_action({
        "model": "model.joblib", "config": "bento.yaml", "sample": "sample.npy",
        "targets": "edge --arch x86_64 --python 3.11   # a comment\n\n",
        "output-dir": "dist", "sign-key": keys.private_path.read_text(), "push": url, "stage": "staging",
    }, workspace)
    out = result["outputs"]
    assert out["signed"] == "true" and out["key-fingerprint"] == keys.fingerprint
    artifacts = out["artifacts"].splitlines()
    assert len(artifacts) == 1
    bundle = Path(artifacts[0]) if Path(artifacts[0]).is_absolute() else workspace / artifacts[0]
    assert bundle.is_file() and bundle.name.endswith(".tar.gz")
    assert json.loads(out["artifacts-json"]) == {"edge": artifacts[0]}
    # The artifact carries the signature: it verifies with the public key, and not with another.
    ok = run_cli("verify", str(bundle), "--pub", str(keys.public_path), "--json")
    assert json.loads(ok.stdout)["tag"] == out["tag"]
    assert out["remote-url"] == f"{url}/{out['tag']}"
    listed = json.loads(run_cli("list", "--remote", url, "--json").stdout)
    assert [(e["tag"], e["signed"], e["stages"]) for e in listed] == [(out["tag"], True, ["latest", "staging"])]
    # The private key never lands in the workspace or the artifact.
    secret = keys.private_path.read_text().splitlines()[1]
    for path in workspace.rglob("*"):
        if path.is_file() and path.suffix != ".whl":
            assert secret.encode() not in path.read_bytes(), path


def test_example_workflow_compiles_every_push_and_signs_and_pushes_on_tags():
    workflow = yaml.safe_load((REPO / "examples" / "github-workflow.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on:` as true
    assert "push" in triggers and triggers["push"]["tags"]
    steps = workflow["jobs"]["compile"]["steps"]
    ours = next(s for s in steps if s.get("id") == "bento")
    assert "startsWith(github.ref, 'refs/tags/')" in ours["with"]["sign-key"]
    assert "secrets.BENTO_SIGNING_KEY" in ours["with"]["sign-key"]
    assert "startsWith(github.ref, 'refs/tags/')" in ours["with"]["push"]
    assert set(ours["with"]) <= set(load_action()["inputs"])
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert "steps.bento.outputs.artifacts" in upload["with"]["path"]
    for step in steps:
        if "run" in step:
            assert "${{" not in step["run"]


IMAGE = "127.0.0.1:5000/cancer@sha256:" + "a" * 64


@pytest.mark.slow
def test_deploy_lines_run_after_the_build_and_give_the_version_and_url(workspace, tmp_path):
    # The platforms are the API doubles of tests/deploy (no Cloud Run or Kubernetes API server can run
    # here); the Action's own plumbing (lines, options, outputs) runs for real. No server runs the
    # pushed image, so the smoke check is skipped (tests/deploy/test_service_smoke.py runs it).
    from tests.support.cloudrun_api import adc_environment, cloudrun_api
    from tests.support.knative_api import knative_api

    with knative_api() as kube, cloudrun_api() as gcp:
        env = {"KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig")), **adc_environment(gcp, tmp_path)}
        result = run_action({"config": "bento.yaml", "deploy": (
            f"knative --image {IMAGE} --namespace prod --no-smoke   # the cluster\n\n"
            f"cloudrun --image {IMAGE} --project acme-ml --region europe-west1 --no-smoke\n")}, workspace, env=env)
        assert kube.refused == [] and gcp.refused == []
    out = result["outputs"]
    deployed = json.loads(out["deploy-json"])
    assert list(deployed) == ["knative", "cloudrun"]
    assert deployed["knative"]["resource"] == "prod/cancer" and deployed["knative"]["bento_tag"] == out["tag"]
    assert kube.services[("prod", "cancer")]["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    service = gcp.services["projects/acme-ml/locations/europe-west1/services/cancer"]
    # the outputs are the last deploy's: the Cloud Run revision and URL
    assert out["version"] == deployed["cloudrun"]["revision"] == service["template"]["revision"]
    assert out["url"] == service["uri"] and out["function-arn"] == ""


@pytest.mark.slow
def test_a_failed_deploy_line_stops_the_step_with_its_own_error(workspace, tmp_path):
    # The smoke check cannot reach the double's service URL: the deploy fails, and the step must end
    # with that error and its fix, not with a traceback from reading an empty result.
    from tests.support.knative_api import knative_api

    with knative_api() as kube:
        env = {"KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig"))}
        with pytest.raises(AssertionError) as failed:
            run_action({"config": "bento.yaml", "deploy": f"knative --image {IMAGE} --namespace prod"},
                       workspace, env=env)
    message = str(failed.value)
    assert "step 'Deploy' failed" in message and "for the smoke check" in message and "--no-smoke" in message
    assert "deploy line 'knative --image" in message
    assert "Traceback" not in message


def test_an_unknown_deploy_platform_is_refused_before_anything_is_built(workspace):
    with pytest.raises(AssertionError, match=r"(?s)step 'Install bento-compile' failed:.*platform 'heroku'"):
        run_action({"config": "bento.yaml", "deploy": "lambda --function churn\nheroku --app churn"}, workspace)


@pytest.mark.slow
def test_a_lambda_deploy_line_gives_the_function_arn_version_and_url(workspace, moto_endpoint):
    # moto_server is the real Lambda control plane here; it cannot run code, so the smoke check is skipped
    # (tests/deploy/test_lambda_deploy.py runs the deployed code).
    from tests.support.deploy_support import aws_environment, boto_client

    result = run_action({"config": "bento.yaml", "deploy": "lambda --function action-cancer --no-smoke --url public"},
                        workspace, env=aws_environment(moto_endpoint))
    out = result["outputs"]
    function = boto_client("lambda", moto_endpoint).get_function(FunctionName="action-cancer")["Configuration"]
    assert out["function-arn"] == function["FunctionArn"]
    assert out["version"] == json.loads(out["deploy-json"])["lambda"]["version"] == "1"
    assert out["url"].startswith("http")
