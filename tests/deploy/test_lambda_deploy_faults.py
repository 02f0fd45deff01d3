"""`deploy lambda` when things go wrong: bad input refused before anything is uploaded, AWS faults that clear
by themselves retried, and the ones that do not reported in one line with the alias untouched.

The AWS side is a real moto_server. moto's functions are always Active and Successful and never
conflict, and it has no provisioned-concurrency calls: for those behaviours `FlakyLambda` (below)
stands in for the one call named in each test and passes every other call to moto unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import zipfile

import pytest
from botocore.exceptions import ClientError

from bento_compile.core.errors import BentoCompileError
from bento_compile.deploy.aws import aws_call, connect
from bento_compile.deploy.aws_lambda import DeployFailed, LambdaDeployer, LambdaOptions
from bento_compile.deploy.lambda_package import open_package
from bento_compile.deploy.waiting import Backoff
from tests.support.deploy_support import aws_environment, boto_client
from tests.support.helpers import free_port, stop_process, wait_http

pytestmark = [pytest.mark.slow]


class Sleeps:
    """Backoff's sleep, recorded instead of slept."""

    def __init__(self):
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client_error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 409}},
                       operation)


class FlakyLambda:
    """The real moto Lambda client, except for the calls a test overrides (see the module docstring)."""

    def __init__(self, real, log: list[str]):
        self._real = real
        self.log = log

    def __getattr__(self, name):
        attribute = getattr(self._real, name)
        if callable(attribute):
            def logged(*args, **kwargs):
                self.log.append(name)
                return attribute(*args, **kwargs)
            return logged
        return attribute


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    for key, value in aws_environment(moto_endpoint).items():
        monkeypatch.setenv(key, value)
    return connect()


@pytest.fixture
def name(request) -> str:
    return "f-" + request.node.name.replace("test_", "").replace("_", "-")[:50]


def deployer(aws, name: str, sleeps: Sleeps | None = None, lam=None) -> LambdaDeployer:
    sleeps = sleeps or Sleeps()
    if lam is not None:
        aws._clients["lambda"] = lam
    backoff = Backoff(first=1.0, ceiling=4.0, total=30.0, sleep=sleeps)
    return LambdaDeployer(aws, name, progress=lambda _m: None, backoff=backoff, role_backoff=backoff)


def no_smoke(name: str, **kw) -> LambdaOptions:
    return LambdaOptions(name, smoke=False, **kw)


def test_updates_wait_while_in_progress_and_retry_conflicts(aws, moto_endpoint, deploy_zip, name, tmp_path):
    from tests.support.deploy_support import variant_zip

    deployer(aws, name).deploy(open_package(deploy_zip), no_smoke(name))
    log: list[str] = []
    lam = FlakyLambda(boto_client("lambda", moto_endpoint), log)
    real_config, real_update = lam._real.get_function_configuration, lam._real.update_function_configuration
    pending = {"in_progress": 2, "conflicts": 2}

    def get_function_configuration(**kwargs):
        log.append("get_function_configuration")
        answer = real_config(**kwargs)
        if "update_function_code" in log and pending["in_progress"]:  # the code update is still being applied
            pending["in_progress"] -= 1
            answer = {**answer, "LastUpdateStatus": "InProgress"}
        return answer

    def update_function_configuration(**kwargs):
        log.append("update_function_configuration")
        if pending["conflicts"]:  # someone else's change is in flight
            pending["conflicts"] -= 1
            raise client_error("ResourceConflictException", "The operation cannot be performed at this time. "
                               "An update is in progress for resource", "UpdateFunctionConfiguration")
        return real_update(**kwargs)

    lam.get_function_configuration = get_function_configuration
    lam.update_function_configuration = update_function_configuration
    sleeps = Sleeps()
    second = variant_zip(deploy_zip, tmp_path / "second.zip", "waits")
    result = deployer(aws, name, sleeps, lam).deploy(open_package(second), no_smoke(name, memory=2048))
    assert result.version == "2"
    code_at = log.index("update_function_code")
    first_config_update = log.index("update_function_configuration")
    # between the code update and the configuration update: polled until no longer InProgress
    assert log[code_at + 1:first_config_update].count("get_function_configuration") >= 3
    assert log.count("update_function_configuration") == 3 and pending == {"in_progress": 0, "conflicts": 0}
    assert sleeps.waits[:2] == [1.0, 2.0] and len(sleeps.waits) == 4  # 2 waits on InProgress, 2 on conflicts
    assert boto_client("lambda", moto_endpoint).get_function_configuration(
        FunctionName=name, Qualifier="2")["MemorySize"] == 2048


def test_a_failed_update_stops_before_publishing(aws, moto_endpoint, deploy_zip, name, tmp_path):
    from tests.support.deploy_support import variant_zip

    deployer(aws, name).deploy(open_package(deploy_zip), no_smoke(name))
    lam = FlakyLambda(boto_client("lambda", moto_endpoint), [])
    real_config = lam._real.get_function_configuration

    def get_function_configuration(**kwargs):
        return {**real_config(**kwargs), "LastUpdateStatus": "Failed",
                "LastUpdateStatusReason": "The role cannot be assumed by Lambda."}

    lam.get_function_configuration = get_function_configuration
    second = variant_zip(deploy_zip, tmp_path / "second.zip", "failed update")
    with pytest.raises(DeployFailed, match=r"could not apply the change.*role cannot be assumed.*alias was left"):
        deployer(aws, name, lam=lam).deploy(open_package(second), no_smoke(name))
    real = boto_client("lambda", moto_endpoint)
    assert real.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"
    assert [v["Version"] for v in real.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST", "1"]


def test_a_failed_publish_after_the_upload_leaves_the_alias(aws, moto_endpoint, deploy_zip, name, tmp_path):
    from tests.support.deploy_support import variant_zip

    deployer(aws, name).deploy(open_package(deploy_zip), no_smoke(name))
    lam = FlakyLambda(boto_client("lambda", moto_endpoint), [])

    def publish_version(**kwargs):
        raise client_error("ServiceException", "Lambda was unable to publish the version", "PublishVersion")

    lam.publish_version = publish_version
    second = variant_zip(deploy_zip, tmp_path / "second.zip", "publish fails")
    with pytest.raises(DeployFailed) as failure:
        deployer(aws, name, lam=lam).deploy(open_package(second), no_smoke(name))
    message = str(failure.value)
    assert "lambda:PublishVersion" in message and "alias was left as it was" in message
    assert "new code in $LATEST" in message  # says what changed: the upload happened
    assert boto_client("lambda", moto_endpoint).get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"


def test_the_made_role_follows_the_sink_on_the_next_deploy(aws, moto_endpoint, deploy_zip, name):
    from bento_compile.deploy.lambda_role import POLICY_NAME, role_name

    deployer(aws, name).deploy(open_package(deploy_zip), no_smoke(name))
    package = open_package(deploy_zip)
    manifest = {**package.manifest, "targets": {"lambda": {"sink": "s3://results/scores/"}}}
    with_sink = dataclasses.replace(package, manifest=manifest)  # targets.lambda as a Bento would record it
    deployer(aws, name).deploy(with_sink, no_smoke(name))
    iam = boto_client("iam", moto_endpoint)
    policy = iam.get_role_policy(RoleName=role_name(name), PolicyName=POLICY_NAME)["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    assert {"s3:PutObject": "arn:aws:s3:::results/scores/*"}.items() <= {
        s["Action"] if isinstance(s["Action"], str) else "": s["Resource"] for s in policy["Statement"]}.items()
    env = boto_client("lambda", moto_endpoint).get_function_configuration(FunctionName=name)["Environment"]
    assert env["Variables"]["BENTO_COMPILE_SINK"] == "s3://results/scores/"


def test_create_retries_while_the_new_role_propagates(aws, moto_endpoint, deploy_zip, name):
    log: list[str] = []
    lam = FlakyLambda(boto_client("lambda", moto_endpoint), log)
    real_create = lam._real.create_function
    refusals = {"left": 2}

    def create_function(**kwargs):
        log.append("create_function")
        if refusals["left"]:
            refusals["left"] -= 1
            raise client_error("InvalidParameterValueException",
                               "The role defined for the function cannot be assumed by Lambda.", "CreateFunction")
        return real_create(**kwargs)

    lam.create_function = create_function
    sleeps = Sleeps()
    result = deployer(aws, name, sleeps, lam).deploy(open_package(deploy_zip), no_smoke(name))
    assert log.count("create_function") == 3 and len(sleeps.waits) == 2
    assert result.version == "1" and any(c.startswith("IAM role") for c in result.created)


def test_provisioned_concurrency_is_set_on_the_alias(aws, moto_endpoint, deploy_zip, name):
    """moto has no provisioned-concurrency API: the double records the one call."""
    lam = FlakyLambda(boto_client("lambda", moto_endpoint), [])
    calls = []
    lam.put_provisioned_concurrency_config = lambda **kw: calls.append(kw) or {"Status": "IN_PROGRESS"}
    deployer(aws, name, lam=lam).deploy(open_package(deploy_zip), no_smoke(name, provisioned=3))
    assert calls == [{"FunctionName": name, "Qualifier": "live", "ProvisionedConcurrentExecutions": 3}]


def test_snapstart_is_asked_for_published_versions(aws, moto_endpoint, deploy_zip, name):
    """moto accepts SnapStart and drops it (it always reports "None"): the double records what was sent."""
    lam = FlakyLambda(boto_client("lambda", moto_endpoint), [])
    sent = []
    real_create = lam._real.create_function
    lam.create_function = lambda **kw: sent.append(kw) or real_create(**kw)
    deployer(aws, name, lam=lam).deploy(open_package(deploy_zip), no_smoke(name, snapstart=True))
    assert sent[0]["SnapStart"] == {"ApplyOn": "PublishedVersions"} and sent[0]["Runtime"].startswith("python3.1")


@pytest.mark.parametrize(("options", "message"), [
    ({"snapstart": True, "provisioned": 2}, "snapstart and provisioned_concurrency cannot be combined"),
    ({"arch": "arm64"}, "built for x86_64, but --arch arm64.*Nothing was uploaded"),
    ({"python": "3.11"}, "built for Python 3.1[23], but --python 3.11.*Nothing was uploaded"),
    ({"env": {"AWS_REGION": "eu-west-1"}}, "'AWS_REGION' cannot be set"),
    ({"env": {"1BAD": "x"}}, "'1BAD' cannot be set"),
    ({"role": "admin"}, "--role 'admin' is not an IAM role ARN"),
    ({"bucket": "s3://artifacts"}, "--bucket 's3://artifacts' is not an S3 bucket name"),
    ({"canary": 100.0}, "--canary 100.0 is not a share"),
])
def test_bad_options_are_refused_before_anything_is_created(aws, moto_endpoint, deploy_zip, name, options,
                                                            message):
    with pytest.raises(BentoCompileError, match=message):
        deployer(aws, name).deploy(open_package(deploy_zip), no_smoke(name, **options))
    with pytest.raises(ClientError, match=r"ResourceNotFound|not found|Function not found"):
        boto_client("lambda", moto_endpoint).get_function(FunctionName=name)


def test_bad_names_are_refused(aws):
    with pytest.raises(BentoCompileError, match=r"not a Lambda function name"):
        LambdaDeployer(aws, "../etc")
    with pytest.raises(BentoCompileError, match=r"not a Lambda alias name"):
        LambdaDeployer(aws, "ok", alias="123")


def test_a_package_over_250_mib_unzipped_is_refused_before_upload(tmp_path):
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("bento-lambda.json", json.dumps({"arch": "x86_64", "python": "3.12"}))
        archive.writestr("bento/manifest.json", json.dumps({"name": "big", "version": "1"}))
        with archive.open("bento/model.onnx", "w", force_zip64=True) as handle:
            chunk = b"\0" * (1 << 20)
            for _ in range(251):
                handle.write(chunk)
    with pytest.raises(BentoCompileError, match=r"unzips to 251\.\d MiB.*at most 250 MiB.*Nothing was uploaded"):
        open_package(big)


def test_a_zip_not_built_by_bento_compile_is_refused(tmp_path):
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("app.py", "def handler(e, c): return 1\n")
    with pytest.raises(BentoCompileError, match="has no bento-lambda"):
        open_package(plain)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(BentoCompileError, match=r"not a readable zip"):
        open_package(tmp_path / "junk.zip")


def test_promote_and_rollback_without_anything_to_move(aws, deploy_zip, name):
    with pytest.raises(BentoCompileError, match=r"no Lambda function"):
        deployer(aws, name).promote()
    deployer(aws, name).deploy(open_package(deploy_zip), no_smoke(name))
    with pytest.raises(BentoCompileError, match=r"No canary is in flight.*serves version 1"):
        deployer(aws, name).promote()
    with pytest.raises(BentoCompileError, match=r"no version served before it"):
        deployer(aws, name).rollback()


def test_no_region_and_no_credentials(monkeypatch, tmp_path):
    for key in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(BentoCompileError, match=r"No AWS region"):
        connect()
    with pytest.raises(BentoCompileError, match=r"No AWS credentials"):
        connect(region="us-east-1")
    # AWS_REGION alone (what Lambda, ECS and CodeBuild set) is a region too
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert connect().region == "eu-west-1"


@pytest.fixture(scope="module")
def enforcing_moto(tmp_path_factory):
    """A second real moto_server that checks IAM policies (INITIAL_NO_AUTH_ACTION_COUNT: the first calls
    set up a user, every later call is authorised against its policy)."""
    import os
    import sys
    from pathlib import Path

    port = free_port()
    log = open(tmp_path_factory.mktemp("moto-auth") / "moto.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=log, env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "2"})
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", timeout=60, proc=proc)
        endpoint = f"http://127.0.0.1:{port}"
        admin = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
                     aws_secret_access_key="x")
        import boto3

        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="deployer")
        key = iam.create_access_key(UserName="deployer")["AccessKey"]
        yield endpoint, key
    finally:
        stop_process(proc)
        log.close()


def test_access_denied_names_the_action_and_the_resource(enforcing_moto, deploy_zip):
    import boto3

    endpoint, key = enforcing_moto
    lam = boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
    with pytest.raises(BentoCompileError) as refused, aws_call("lambda:CreateFunction", "churn"):
        lam.create_function(FunctionName="churn", Runtime="python3.12", Role="arn:aws:iam::123456789012:role/r",
                            Handler="h.h", Code={"ZipFile": deploy_zip.read_bytes()})
    assert refused.value.problem.startswith("AWS refused lambda:CreateFunction on churn (AccessDenied)")
    assert "user/deployer is not authorized" in refused.value.problem
    assert "Allow lambda:CreateFunction on churn" in refused.value.fix
