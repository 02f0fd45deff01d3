"""`deploy lambda` against a real moto_server (Lambda, IAM, S3, STS control planes) through AWS_ENDPOINT_URL.

moto cannot run function code: the smoke check's one call, `lambda:Invoke`, is served by
tests.support.deploy_support.LocalInvoker, which takes the bytes that were really deployed
(the S3 object, or the local zip whose SHA-256 is the CodeSha256 moto computed from what
it received) and runs them with the real awslambdaric against the local Runtime API
emulator. Everything else is moto answering the real API.
"""

from __future__ import annotations

import json

import pytest

from bento_compile.core.errors import BentoCompileError
from bento_compile.deploy.aws import connect
from bento_compile.deploy.aws_lambda import DeployFailed, LambdaDeployer, LambdaOptions
from bento_compile.deploy.lambda_package import open_package, s3_key
from bento_compile.deploy.lambda_role import POLICY_NAME, role_name
from bento_compile.deploy.waiting import Backoff
from tests.support.deploy_support import (
    LocalInvoker,
    aws_environment,
    boto_client,
    code_sha256,
    tampered_zip,
    variant_zip,
)

pytestmark = [pytest.mark.slow, pytest.mark.lambda_zip]

NO_SLEEP = Backoff(first=0.01, ceiling=0.01, total=1.0, sleep=lambda _s: None)


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    for key, value in aws_environment(moto_endpoint).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return connect()


@pytest.fixture
def lam(moto_endpoint):
    return boto_client("lambda", moto_endpoint)


@pytest.fixture
def invoker(moto_endpoint, deploy_zip, lambda_run_home):
    return LocalInvoker(moto_endpoint, [deploy_zip], lambda_run_home)


@pytest.fixture
def name(request) -> str:
    """A function name of this test's own (the moto_server is shared by the session)."""
    return "t-" + request.node.name.replace("test_", "").replace("_", "-")[:50]


def deployer(aws, name: str, invoker=None, **kw) -> LambdaDeployer:
    return LambdaDeployer(aws, name, progress=lambda _m: None, backoff=NO_SLEEP, role_backoff=NO_SLEEP,
                          invoker=invoker, **kw)


def test_first_deploy_creates_role_function_version_alias_and_url(aws, lam, invoker, deploy_zip, name,
                                                                    moto_endpoint):
    package = open_package(deploy_zip)
    result = deployer(aws, name, invoker).deploy(package, LambdaOptions(name))

    summary = result.summary()
    for key in ("function_arn", "version", "alias", "routing", "code_sha256", "bento_tag", "skipped", "url"):
        assert key in summary
    assert result.version == "1" and result.routing == {"1": 1.0} and not result.skipped
    assert result.bento_tag == package.bento_tag
    # moto computed CodeSha256 from the bytes it received: they are the zip's bytes
    assert result.code_sha256 == code_sha256(deploy_zip)
    config = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    assert config["CodeSha256"] == code_sha256(deploy_zip)
    assert config["Description"] == f"bento-compile: {package.bento_tag}"
    assert config["Handler"] == "bento_compile.adapters.aws_lambda.handler"
    assert config["Runtime"] == f"python{package.python}" and config["Architectures"] == ["x86_64"]
    assert config["Environment"]["Variables"]["BENTO_COMPILE_LOAD"] == "eager"
    assert lam.get_function(FunctionName=name)["Tags"]["bento-compile:tag"] == package.bento_tag
    alias = lam.get_alias(FunctionName=name, Name="live")
    assert alias["FunctionVersion"] == "1" and "history=1" in alias["Description"]
    # the smoke check ran the deployed code through awslambdaric before the alias existed
    assert [c["qualifier"] for c in invoker.calls] == ["1"] and result.smoke == {"passed": True, "problems": []}
    # least privilege: the role may write this function's logs and nothing else
    iam = boto_client("iam", moto_endpoint)
    assert config["Role"].endswith(f"role/{role_name(name)}")
    policy = iam.get_role_policy(RoleName=role_name(name), PolicyName=POLICY_NAME)["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    resources = {s["Resource"] for s in policy["Statement"]}
    assert resources == {f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/{name}",
                         f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/{name}:*"}
    assert iam.list_attached_role_policies(RoleName=role_name(name))["AttachedPolicies"] == []
    # targets.lambda's default: an IAM-authenticated URL on the alias
    url = lam.get_function_url_config(FunctionName=name, Qualifier="live")
    assert url["AuthType"] == "AWS_IAM" and result.url == url["FunctionUrl"]
    assert any("created the least-privilege execution role" in note for note in result.notes)


def test_unchanged_code_is_skipped_without_upload_or_publish(aws, lam, invoker, deploy_zip, name):
    package = open_package(deploy_zip)
    deployer(aws, name, invoker).deploy(package, LambdaOptions(name, smoke=False))
    versions = len(lam.list_versions_by_function(FunctionName=name)["Versions"])
    last_modified = lam.get_function_configuration(FunctionName=name)["LastModified"]

    again = deployer(aws, name, invoker).deploy(package, LambdaOptions(name, canary=50))
    assert again.skipped and again.version == "1" and again.routing == {"1": 1.0}
    assert "unchanged" in again.notes[0]
    assert len(lam.list_versions_by_function(FunctionName=name)["Versions"]) == versions
    assert lam.get_function_configuration(FunctionName=name)["LastModified"] == last_modified
    assert invoker.calls == []  # no smoke check either: nothing new to check
    # what is set on the alias, not on a version, still follows the options: here the URL goes away
    no_url = deployer(aws, name, invoker).deploy(package, LambdaOptions(name, url="none"))
    assert no_url.skipped and no_url.url is None
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName=name, Qualifier="live")


def test_canary_then_promote_then_rollback_from_a_fresh_deployer(aws, lam, invoker, deploy_zip, name, tmp_path):
    deployer(aws, name, invoker).deploy(open_package(deploy_zip), LambdaOptions(name, smoke=False))
    second = variant_zip(deploy_zip, tmp_path / "second.zip", "second build")
    invoker.add(second)

    canary = deployer(aws, name, invoker).deploy(open_package(second), LambdaOptions(name, canary=10))
    assert canary.version == "2" and canary.routing == {"1": 0.9, "2": 0.1}
    alias = lam.get_alias(FunctionName=name, Name="live")
    assert alias["FunctionVersion"] == "1"
    assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.1}
    assert invoker.calls[-1]["qualifier"] == "2"  # the candidate was invoked by its version before any traffic

    status = deployer(aws, name).status()
    assert status["routing"] == {"1": 0.9, "2": 0.1}
    assert [(v["version"], v["code_sha256"]) for v in status["versions"]] == [
        ("1", code_sha256(deploy_zip)), ("2", code_sha256(second))]
    assert all(v["bento_tag"] == canary.bento_tag for v in status["versions"])

    promoted = deployer(aws, name).promote()
    assert promoted.routing == {"2": 1.0} and promoted.version == "2"
    assert "RoutingConfig" not in lam.get_alias(FunctionName=name, Name="live") or not lam.get_alias(
        FunctionName=name, Name="live")["RoutingConfig"].get("AdditionalVersionWeights")
    with pytest.raises(BentoCompileError, match=r"No canary is in flight"):
        deployer(aws, name).promote()

    # Each step is a new deployer reading only what AWS holds: rollback works from any machine.
    back = deployer(aws, name).rollback()
    assert back.version == "1" and back.routing == {"1": 1.0}
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"
    with pytest.raises(BentoCompileError, match=r"nothing to roll back to"):
        deployer(aws, name).rollback()
    assert lam.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"


def test_rollback_during_a_canary_drops_the_canary(aws, lam, invoker, deploy_zip, name, tmp_path):
    deployer(aws, name, invoker).deploy(open_package(deploy_zip), LambdaOptions(name, smoke=False))
    second = variant_zip(deploy_zip, tmp_path / "second.zip", "canary build")
    invoker.add(second)
    deployer(aws, name, invoker).deploy(open_package(second), LambdaOptions(name, canary=25, smoke=False))
    back = deployer(aws, name).rollback()
    assert back.routing == {"1": 1.0}
    assert not (lam.get_alias(FunctionName=name, Name="live").get("RoutingConfig") or {}).get(
        "AdditionalVersionWeights")


def test_bucket_uploads_through_a_content_addressed_s3_key(aws, lam, invoker, deploy_zip, name, moto_endpoint):
    s3 = boto_client("s3", moto_endpoint)
    s3.create_bucket(Bucket="deploy-artifacts")
    package = open_package(deploy_zip)
    result = deployer(aws, name, invoker).deploy(package, LambdaOptions(name, bucket="deploy-artifacts"))
    key = s3_key(name, package)
    assert key == f"bento-compile/{name}/{package.sha256_hex}.zip"
    head = s3.head_object(Bucket="deploy-artifacts", Key=key)
    assert head["ContentLength"] == package.zipped_bytes
    assert result.code_sha256 == package.code_sha256
    # the smoke check ran the S3 object itself (downloaded back), not the local file
    assert invoker.calls[-1]["origin"] == "s3" and result.smoke["passed"]


def test_a_changed_package_is_refused_before_anything_is_uploaded(aws, lam, invoker, deploy_zip, name, tmp_path):
    deployer(aws, name, invoker).deploy(open_package(deploy_zip), LambdaOptions(name, smoke=False))
    broken = tampered_zip(deploy_zip, tmp_path / "broken.zip")
    with pytest.raises(BentoCompileError, match=r"model.onnx has sha256 .* Nothing was uploaded"):
        deployer(aws, name, invoker).deploy(open_package(broken), LambdaOptions(name, canary=10))
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == code_sha256(deploy_zip)
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST", "1"]


def test_a_function_error_leaves_the_alias_and_says_what_was_created(aws, lam, invoker, deploy_zip, name):
    """A real fault of the deployed function: a public key is configured, so the runtime demands a signed
    Bento, and this one is not. The init fails; the alias must not move."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    deployer(aws, name, invoker).deploy(open_package(deploy_zip), LambdaOptions(name, smoke=False))
    key = base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    with pytest.raises(DeployFailed) as failure:
        deployer(aws, name, invoker).deploy(open_package(deploy_zip),
                                            LambdaOptions(name, canary=10, public_key=key.decode()))
    message = str(failure.value)
    assert "smoke check failed on version 2" in message and "Runtime.InitError" in message
    assert "signature.json is missing" in message  # what came back: the runtime's own words
    assert "alias was left as it was" in message and failure.value.created == ["version 2"]
    assert invoker.calls[-1]["env"]["BENTO_COMPILE_PUBLIC_KEY"] == key.decode()
    alias = lam.get_alias(FunctionName=name, Name="live")
    assert alias["FunctionVersion"] == "1" and not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")


def test_smoke_mismatch_past_the_tolerance_is_refused(aws, lam, invoker, deploy_zip, name):
    """The function answers, but not like the Bento: a double perturbs the real answer of the deployed code."""
    def drifting(function_name, qualifier, payload):
        error, body = invoker(function_name, qualifier, payload)
        answer = json.loads(body)
        for values in answer["outputs"].values():
            if values and isinstance(values[0], list) and isinstance(values[0][0], float):
                values[0][0] += 0.01  # far past the parity tolerance (1e-4)
        return error, json.dumps(answer).encode()

    with pytest.raises(DeployFailed, match=r"smoke check failed on version 1.*expected") as failure:
        deployer(aws, name, drifting).deploy(open_package(deploy_zip), LambdaOptions(name))
    assert "It answered:" in str(failure.value)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=name, Name="live")  # no traffic ever moved


def test_no_smoke_skips_the_check_and_says_so(aws, invoker, deploy_zip, name):
    result = deployer(aws, name, invoker).deploy(open_package(deploy_zip), LambdaOptions(name, smoke=False))
    assert invoker.calls == [] and result.smoke is None
    assert any("--no-smoke" in note for note in result.notes)


def test_a_function_not_made_by_bento_compile_is_refused_unless_adopted(aws, lam, invoker, deploy_zip, name,
                                                                        moto_endpoint):
    iam = boto_client("iam", moto_endpoint)
    role = iam.create_role(RoleName=f"own-{name}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=role, Handler="app.handler",
                        Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18})  # an empty zip: someone else's function
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    with pytest.raises(BentoCompileError, match=r"was not deployed by bento-compile.*nothing was changed"):
        deployer(aws, name, invoker).deploy(open_package(deploy_zip), LambdaOptions(name))
    assert lam.get_function_configuration(FunctionName=name)["Handler"] == "app.handler"
    with pytest.raises(BentoCompileError, match=r"--adopt"):
        deployer(aws, name).rollback()

    adopted = deployer(aws, name, invoker, adopt=True).deploy(open_package(deploy_zip),
                                                              LambdaOptions(name, adopt=True, smoke=False))
    assert adopted.version == "2" and adopted.routing == {"2": 1.0}
    assert lam.get_function_configuration(FunctionName=name)["Role"] == role  # its own role is kept


def test_public_url_gets_its_permission_and_none_removes_it(aws, lam, invoker, deploy_zip, name):
    result = deployer(aws, name, invoker).deploy(open_package(deploy_zip),
                                                 LambdaOptions(name, url="public", smoke=False))
    assert lam.get_function_url_config(FunctionName=name, Qualifier="live")["AuthType"] == "NONE"
    policy = json.loads(lam.get_policy(FunctionName=name, Qualifier="live")["Policy"])
    assert any(s["Action"] == "lambda:InvokeFunctionUrl" and s["Principal"] in ("*", {"AWS": "*"})
               for s in policy["Statement"])
    assert result.url.startswith("https://")
    off = deployer(aws, name)._url("none", None)
    assert off is None
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName=name, Qualifier="live")
