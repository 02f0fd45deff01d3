"""`deploy lambda`: a Bento live on AWS Lambda, as a zip or a container image, behind an alias.

One deploy, in order (nothing that moves traffic happens before the smoke check):
  1. check the package (250 MiB unzipped, architecture) and the function (ours, or --adopt)
  2. skip everything when the alias already serves this code (CodeSha256 / image digest)
  3. create the function (with a least-privilege role when no --role, retried while IAM
     propagates), or update its code then its configuration, waiting on LastUpdateStatus
     between calls and retrying ResourceConflictException with backoff
  4. publish a version whose description names the Bento tag
  5. smoke check: invoke that version with the Bento's example, compare at parity tolerance
  6. move the alias (wholly, or a weighted canary), recording the history for rollback
  7. provisioned concurrency on the alias, the function URL
A failure at any step leaves the alias where it was, and the error says what was created.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bento_compile.core.errors import BentoCompileError
from bento_compile.deploy.aws import Aws, aws_call
from bento_compile.deploy.lambda_alias import (
    AliasState,
    canary_move,
    full_move,
    promoted,
    read_alias,
    rolled_back,
    write_alias,
)
from bento_compile.deploy.lambda_package import LambdaPackage, code_location
from bento_compile.deploy.lambda_role import ensure_role, role_name
from bento_compile.deploy.smoke import Invoker, SmokeResult, expected_outputs, lambda_invoker, shown, smoke_check
from bento_compile.deploy.waiting import (
    Backoff,
    is_conflict,
    is_role_not_ready,
    lambda_call,
    retrying,
    wait_until_settled,
)

TAG_KEY = "bento-compile:tag"
DESCRIPTION_PREFIX = "bento-compile: "
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ALIAS_NAME = re.compile(r"^(?![0-9]+$)[A-Za-z0-9_-]{1,128}$")
ENV_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
URL_AUTH = {"iam": "AWS_IAM", "public": "NONE"}
# Lambda's own variables may not be set by a function's configuration.
RESERVED_ENV = frozenset({"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                          "AWS_SESSION_TOKEN", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_RUNTIME_API",
                          "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "_HANDLER", "AWS_EXECUTION_ENV"})
COSTS = {
    "provisioned": ("Provisioned concurrency keeps {n} environment(s) initialised all the time: it is billed per "
                    "GB-second whether or not requests arrive (about 1,024 MB × {n} × 730 h a month at "
                    "the memory set), and it cannot be combined with SnapStart."),
    "snapstart": ("SnapStart (Python 3.12+) restores published versions from a snapshot of init: Python "
                  "functions pay for caching the snapshot and for each restore; it cannot be combined with "
                  "provisioned concurrency, container images, EFS or more than 512 MB of ephemeral storage."),
}

Progress = Callable[[str], None]


@dataclass
class LambdaOptions:
    """What the command line asks for; None means: from targets.lambda in the Bento, else Lambda's default."""

    function_name: str
    alias: str = "live"
    arch: str | None = None
    python: str | None = None
    memory: int | None = None
    timeout: int | None = None
    role: str | None = None
    canary: float | None = None
    bucket: str | None = None
    provisioned: int | None = None
    snapstart: bool | None = None
    url: str | None = None  # none | iam | public
    env: dict[str, str] = field(default_factory=dict)
    smoke: bool = True
    adopt: bool = False
    public_key: str | None = None  # base64 Ed25519 key for signed Bentos (BENTO_COMPILE_PUBLIC_KEY)


@dataclass(frozen=True)
class ImageSource:
    """A container image already pushed, named by digest, and the Bento it holds."""

    image_uri: str  # REGISTRY/REPO@sha256:...
    arch: str
    manifest: dict[str, Any]
    bento_dir: Path

    @property
    def bento_tag(self) -> str:
        return f"{self.manifest['name']}:{self.manifest['version']}"

    @property
    def digest(self) -> str:
        return self.image_uri.rsplit("@", 1)[-1]


Source = LambdaPackage | ImageSource


@dataclass
class DeployResult:
    """What `deploy lambda` (and --promote / --rollback) did; `summary()` is the --json object."""

    function_arn: str
    alias: str
    version: str | None
    routing: dict[str, float]
    code_sha256: str | None
    bento_tag: str | None
    skipped: bool = False
    url: str | None = None
    smoke: dict[str, Any] | None = None
    created: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    action: str = "deploy"

    def summary(self) -> dict[str, Any]:
        return {"action": self.action, "function_arn": self.function_arn, "version": self.version,
                "alias": self.alias, "routing": self.routing, "code_sha256": self.code_sha256,
                "bento_tag": self.bento_tag, "skipped": self.skipped, "url": self.url, "smoke": self.smoke,
                "created": self.created, "notes": self.notes}


class DeployFailed(BentoCompileError):
    """A step after something was created failed: the alias was not moved; `created` says what exists now."""

    def __init__(self, problem: str, fix: str, created: list[str], smoke: SmokeResult | None = None):
        made = f" Created so far (serving no traffic): {', '.join(created)}." if created else ""
        super().__init__(problem + " The alias was left as it was." + made, fix)
        self.created = created
        self.smoke = smoke


def check_names(function_name: str, alias: str) -> None:
    if not FUNCTION_NAME.match(function_name or ""):
        raise BentoCompileError(f"--function {function_name!r} is not a Lambda function name.",
                                "Use 1-64 letters, digits, '-' or '_', e.g. --function churn.")
    if not ALIAS_NAME.match(alias or ""):
        raise BentoCompileError(f"--alias {alias!r} is not a Lambda alias name.",
                                "Use 1-128 letters, digits, '-' or '_', not all digits, e.g. --alias live.")


def check_options(options: LambdaOptions) -> None:
    """Names that go to AWS as they are: refused here, in words, rather than by AWS halfway through."""
    if options.role is not None and not ROLE_ARN.match(options.role):
        raise BentoCompileError(f"--role {options.role!r} is not an IAM role ARN.",
                                "Pass arn:aws:iam::ACCOUNT:role/NAME, or leave --role out to get a "
                                "least-privilege role made for the function.")
    if options.bucket is not None and not BUCKET.match(options.bucket):
        raise BentoCompileError(f"--bucket {options.bucket!r} is not an S3 bucket name.",
                                "Use 3-63 lowercase letters, digits, '.' or '-' (the bucket, not an s3:// URL).")
    if options.canary is not None and not 0 < options.canary < 100:
        raise BentoCompileError(f"--canary {options.canary} is not a share between 0 and 100 %.",
                                "Pass e.g. --canary 10; --promote moves all traffic.")


def lambda_config(manifest: dict[str, Any], options: LambdaOptions, arch: str, python: str | None) -> Any:
    """targets.lambda from the Bento with the command line's overrides, validated by the same schema."""
    from pydantic import ValidationError

    from bento_compile.core.config import LambdaTarget, describe_validation_error

    settings = dict(((manifest.get("targets") or {}).get("lambda")) or {})
    overrides = {"arch": arch, "python": python, "memory": options.memory, "timeout": options.timeout,
                 "provisioned_concurrency": options.provisioned, "snapstart": options.snapstart}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return LambdaTarget.model_validate(settings)
    except ValidationError as exc:
        problem = describe_validation_error(exc)
        raise BentoCompileError(f"The Lambda settings are not valid: {problem}",
                                "Change the options (or targets.lambda in bento.yaml)."
                                + (" " + COSTS["snapstart"] if "snapstart" in problem else "")) from None


def environment(config: Any, options: LambdaOptions) -> dict[str, str]:
    """The function's variables: load mode, targets.lambda's environment and sink, the public key, --env."""
    env = {"BENTO_COMPILE_LOAD": config.load, **config.environment}
    if config.sink:
        env["BENTO_COMPILE_SINK"] = config.sink
    if options.public_key:
        env["BENTO_COMPILE_PUBLIC_KEY"] = options.public_key
    env.update(options.env)
    for key in env:
        if not ENV_KEY.match(key) or key in RESERVED_ENV:
            raise BentoCompileError(f"The environment variable name {key!r} cannot be set on a Lambda function.",
                                    "Use letters, digits and '_', starting with a letter, and none of Lambda's "
                                    "reserved names (AWS_*, LAMBDA_*, _HANDLER).")
    if sum(len(k) + len(v) for k, v in env.items()) > 4096:
        raise BentoCompileError("The function's environment is over Lambda's 4 KB.",
                                "Keep large values in S3 or SSM Parameter Store and pass their names.")
    return env


class LambdaDeployer:
    """The function `function_name` in the account and region of `aws`."""

    def __init__(self, aws: Aws, function_name: str, alias: str = "live", progress: Progress = lambda _m: None,
                 backoff: Backoff | None = None, role_backoff: Backoff | None = None,
                 invoker: Invoker | None = None, adopt: bool = False):
        check_names(function_name, alias)
        self.aws = aws
        self.lam = aws.client("lambda")
        self.name = function_name
        self.alias = alias
        self.progress = progress
        self.backoff = backoff or Backoff()
        self.role_backoff = role_backoff or Backoff(first=2.0, ceiling=10.0, total=90.0,
                                                    sleep=self.backoff.sleep)
        self.invoker = invoker or lambda_invoker(self.lam)
        self.adopt = adopt

    # -- reading -------------------------------------------------------------------------------------------

    def function(self) -> dict[str, Any] | None:
        """GetFunction of $LATEST (configuration, code, tags), or None when there is no such function."""
        try:
            with aws_call("lambda:GetFunction", self.name):
                return self.lam.get_function(FunctionName=self.name)
        except BentoCompileError as exc:
            if getattr(exc, "code", None) == "ResourceNotFoundException":
                return None
            raise

    def version_info(self, version: str) -> dict[str, Any]:
        with aws_call("lambda:GetFunction", f"{self.name}:{version}"):
            data = self.lam.get_function(FunctionName=self.name, Qualifier=version)
        config = data["Configuration"]
        description = config.get("Description") or ""
        code = data.get("Code") or {}
        return {"version": version, "code_sha256": config.get("CodeSha256"),
                "image": image_digest_uri(code),
                "bento_tag": description[len(DESCRIPTION_PREFIX):] if description.startswith(DESCRIPTION_PREFIX)
                else None, "last_modified": config.get("LastModified"), "description": description,
                "configuration": config}

    def check_ours(self, existing: dict[str, Any]) -> None:
        tags = existing.get("Tags") or {}
        if TAG_KEY not in tags and not self.adopt:
            raise BentoCompileError(f"The Lambda function {self.name} exists but was not deployed by bento-compile "
                                    f"(it has no {TAG_KEY} tag); nothing was changed.",
                                    "Pass --adopt to take it over, or choose another --function.")

    def url_of(self) -> str | None:
        try:
            with aws_call("lambda:GetFunctionUrlConfig", f"{self.name}:{self.alias}"):
                return self.lam.get_function_url_config(FunctionName=self.name, Qualifier=self.alias)["FunctionUrl"]
        except BentoCompileError as exc:
            if getattr(exc, "code", None) == "ResourceNotFoundException":
                return None
            raise

    def status(self) -> dict[str, Any]:
        """What the alias serves: versions with their share, Bento tag, code and date."""
        existing = self.function()
        if existing is None:
            raise BentoCompileError(f"There is no Lambda function {self.name} in {self.aws.region}.",
                                    "Check --function and the region (AWS_REGION), or deploy it first.")
        current = read_alias(self.lam, self.name, self.alias)
        arn = existing["Configuration"]["FunctionArn"]
        if current is None:
            return {"function_arn": arn, "alias": self.alias, "routing": {}, "versions": [], "url": None,
                    "history": [], "bento_tag": (existing.get("Tags") or {}).get(TAG_KEY)}
        versions = []
        for version, share in current.routing().items():
            info = self.version_info(version)
            # not the configuration: its environment may hold values that a status line must not print
            versions.append({key: info[key] for key in ("version", "bento_tag", "code_sha256", "image",
                                                         "last_modified")} | {"weight": share})
        return {"function_arn": arn, "alias": self.alias, "routing": current.routing(), "versions": versions,
                "history": current.history, "url": self.url_of(),
                "bento_tag": versions[0]["bento_tag"] if versions else None,
                "version": current.version, "candidate": current.candidate}

    # -- traffic only ----------------------------------------------------------------------------------------

    def promote(self) -> DeployResult:
        return self._move_only("promote", promoted)

    def rollback(self) -> DeployResult:
        return self._move_only("rollback", rolled_back)

    def _move_only(self, action: str, plan: Callable[[AliasState | None, str, str], AliasState]) -> DeployResult:
        existing = self.function()
        if existing is None:
            raise BentoCompileError(f"There is no Lambda function {self.name} in {self.aws.region}.",
                                    "Check --function and the region (AWS_REGION).")
        self.check_ours(existing)
        current = read_alias(self.lam, self.name, self.alias)
        target = plan(current, self.name, self.alias)
        moved = write_alias(self.lam, self.name, current, target, self.backoff)
        info = self.version_info(moved.version)
        return DeployResult(existing["Configuration"]["FunctionArn"], self.alias, moved.version, moved.routing(),
                            info["code_sha256"], info["bento_tag"], url=self.url_of(), action=action)

    # -- deploy ---------------------------------------------------------------------------------------------

    def deploy(self, source: Source, options: LambdaOptions) -> DeployResult:
        is_image = isinstance(source, ImageSource)
        python = source.python if isinstance(source, LambdaPackage) else None
        arch = source.arch
        if options.arch and options.arch != arch:
            raise BentoCompileError(f"The package is built for {arch}, but --arch {options.arch} was asked for. "
                                    "Nothing was uploaded.",
                                    f"Rebuild it for {options.arch} (or pass the Bento TAG), or drop --arch.")
        if options.python and python and options.python != python:
            raise BentoCompileError(f"The zip is built for Python {python}, but --python {options.python} was "
                                    "asked for. Nothing was uploaded.",
                                    "Pass the Bento TAG (it is built for --python), or drop --python.")
        check_options(options)
        config = lambda_config(source.manifest, options, arch, python or options.python)
        if is_image and config.snapstart:
            raise BentoCompileError("SnapStart is not available for container images. Nothing was uploaded.",
                                    "Deploy the zip (drop --image), or drop --snapstart.")
        signed = (_zip_has(source.path, "bento/signature.json") if isinstance(source, LambdaPackage)
                  else (source.bento_dir / "signature.json").is_file())
        env = environment(config, options)
        if signed and not options.public_key:
            self.progress("The Bento is signed but no public key was given (--pub or $BENTO_COMPILE_PUBLIC_KEY): "
                          "the function will not check the signature.")
        for kind in ("provisioned", "snapstart"):
            if (kind == "provisioned" and config.provisioned_concurrency) or (kind == "snapstart" and config.snapstart):
                self.progress(COSTS[kind].format(n=config.provisioned_concurrency))

        expected = None
        if options.smoke:  # before anything is uploaded: a package that fails the runtime's checks stops here
            expected = expected_outputs(source.manifest, *bento_location(source))

        existing = self.function()
        if existing is not None:
            self.check_ours(existing)
            package_type = existing["Configuration"].get("PackageType", "Zip")
            if package_type != ("Image" if is_image else "Zip"):
                how = "with --image REPO" if package_type == "Image" else "without --image"
                kinds = ("an image" if package_type == "Image" else "a zip", "an image" if is_image else "a zip")
                raise BentoCompileError(f"{self.name} is {kinds[0]} function; Lambda cannot turn it into {kinds[1]} "
                                        "function. Nothing was uploaded.",
                                        f"Deploy it {how}, or to another --function.")
        current = read_alias(self.lam, self.name, self.alias) if existing else None
        code_id = source.digest if isinstance(source, ImageSource) else source.code_sha256
        skipped = self._unchanged(current, is_image, code_id, function_settings(source, config, env))
        if skipped is not None:
            skipped.url = self._finish(config, options, skipped.routing)  # a new --url or --provisioned still applies
            return skipped

        created: list[str] = []
        try:
            arn, role_note = self._create_or_update(existing, source, config, env, options, created)
            version = self._publish(source, code_id, is_image, created)
        except DeployFailed:
            raise
        except BentoCompileError as exc:
            raise DeployFailed(exc.problem, exc.fix, created) from None
        notes = [role_note] if role_note else []

        smoke = None
        if expected is not None:
            self.progress(f"Smoke check: invoking version {version} with the Bento's example")
            try:
                smoke = smoke_check(partial(self.invoker, self.name, version), source.manifest, expected)
            except BentoCompileError as exc:
                raise DeployFailed(exc.problem, exc.fix, created) from None
            if not smoke.passed:
                raise DeployFailed(
                    f"The smoke check failed on version {version}: {'; '.join(smoke.problems)}. "
                    f"It answered: {shown(smoke.answer)}.",
                    "Look at the function's logs (CloudWatch /aws/lambda/" + self.name + "); rebuild the zip for "
                    "the function's architecture and Python; or deploy with --no-smoke to skip the check.",
                    created, smoke)
        else:
            notes.append("smoke check skipped (--no-smoke): traffic moved without invoking the new version")

        if current is None or options.canary is None:
            if options.canary is not None:
                notes.append(f"first deploy of alias {self.alias}: it serves version {version} wholly "
                             "(a canary needs a version already serving)")
            target = full_move(current, self.alias, version)
        elif current.version == version:
            target = full_move(current, self.alias, version)
        else:
            target = canary_move(current, version, options.canary)
        try:
            moved = write_alias(self.lam, self.name, current, target, self.backoff)
        except BentoCompileError as exc:
            raise DeployFailed(exc.problem, exc.fix, created) from None
        if current is None:
            created.append(f"alias {self.alias}")

        url = self._finish(config, options, moved.routing())
        return DeployResult(arn, self.alias, version, moved.routing(), code_id, source.bento_tag, False, url,
                            smoke.summary() if smoke else None, created, notes)

    def _finish(self, config: Any, options: LambdaOptions, routing: dict[str, float]) -> str | None:
        """What is set on the alias once it serves: provisioned concurrency and the function URL (its address).
        Both are idempotent, so running the command again after a failure here completes them."""
        try:
            if config.provisioned_concurrency:
                self._provision(config.provisioned_concurrency)
            return self._url(options.url, config)
        except BentoCompileError as exc:
            shares = ", ".join(f"version {v}: {w:.0%}" for v, w in routing.items())
            raise BentoCompileError(f"{exc.problem} The alias {self.alias} serves {shares}.",
                                    (exc.fix + " " if exc.fix else "") + "Then run the same command again: the "
                                    "code is unchanged, so only this step is redone.") from None

    def _unchanged(self, current: AliasState | None, is_image: bool, code_id: str,
                   settings: dict[str, Any]) -> DeployResult | None:
        """A result saying "unchanged" when the alias (or its canary) already serves this code with these
        settings (a changed memory size or environment is a new version, without a new upload)."""
        if current is None:
            return None
        for version in (current.version, current.candidate):
            if version is None:
                continue
            info = self.version_info(version)
            served = (info["image"] or "").rsplit("@", 1)[-1] if is_image else info["code_sha256"]
            if served == code_id and same_settings(info["configuration"], settings):
                note = (f"unchanged: {self.alias} serves version {version} with this code and these settings; "
                        "nothing uploaded or published")
                if version == current.candidate:
                    note = (f"unchanged: {self.alias} already routes its canary to version {version} with this code; "
                            "nothing uploaded or published (--promote moves all traffic to it)")
                with aws_call("lambda:GetFunction", self.name):
                    arn = self.lam.get_function(FunctionName=self.name)["Configuration"]["FunctionArn"]
                return DeployResult(arn, self.alias, version, current.routing(), info["code_sha256"] if not is_image
                                    else code_id, info["bento_tag"], True, self.url_of(), notes=[note])
        return None

    def _create_or_update(self, existing: dict[str, Any] | None, source: Source, config: Any, env: dict[str, str],
                          options: LambdaOptions, created: list[str]) -> tuple[str, str | None]:
        is_image = isinstance(source, ImageSource)
        settings = function_settings(source, config, env)
        role_note = None
        if existing is None:
            role = options.role
            if role is None:
                role, made = self._role(config)
                if made:
                    created.append(f"IAM role {role}")
                    role_note = f"created the least-privilege execution role {role}"
            code = self._code(source, options)
            self.progress(f"Creating the function {self.name}")

            def create() -> dict[str, Any]:
                return self.lam.create_function(
                    FunctionName=self.name, Role=role, Code=code, PackageType="Image" if is_image else "Zip",
                    Architectures=[source.arch], Publish=False, Tags={TAG_KEY: source.bento_tag}, **settings)

            with aws_call("lambda:CreateFunction", self.name):
                data = retrying(create, lambda e: is_role_not_ready(e) or is_conflict(e), self.role_backoff,
                                on_retry=lambda _e, d: self.progress(f"IAM is still propagating the role; "
                                                                     f"retrying in {d:.0f} s"))
            created.append(f"function {self.name}")
            wait_until_settled(self.lam, self.name, self.backoff)
            return data["FunctionArn"], role_note

        arn = existing["Configuration"]["FunctionArn"]
        if options.role is None and str(existing["Configuration"].get("Role", "")).endswith(
                f":role/{role_name(self.name)}"):
            self._role(config)  # our role: its policy follows the sink and queue settings of this deploy
        latest = existing["Configuration"].get("CodeSha256")
        latest_image = (image_digest_uri(existing.get("Code") or {}) or "").rsplit("@", 1)[-1]
        same_code = (latest_image == source.digest) if isinstance(source, ImageSource) else (
            latest == source.code_sha256)
        wait_until_settled(self.lam, self.name, self.backoff)
        if same_code and existing["Configuration"].get("Architectures", ["x86_64"]) == [source.arch]:
            self.progress("$LATEST already holds this code: nothing uploaded")
        else:
            code = self._code(source, options)
            self.progress(f"Updating the code of {self.name}")
            lambda_call("lambda:UpdateFunctionCode", self.name, self.lam.update_function_code, self.backoff,
                        FunctionName=self.name, Architectures=[source.arch], Publish=False, **code)
            # $LATEST is not what the alias serves, but say that it changed if a later step fails
            created.append(f"new code in $LATEST ({source.bento_tag})")
            wait_until_settled(self.lam, self.name, self.backoff)
        self.progress(f"Updating the configuration of {self.name}")
        lambda_call("lambda:UpdateFunctionConfiguration", self.name, self.lam.update_function_configuration,
                    self.backoff, FunctionName=self.name, **({"Role": options.role} if options.role else {}),
                    **settings)
        wait_until_settled(self.lam, self.name, self.backoff)
        with aws_call("lambda:TagResource", arn):
            self.lam.tag_resource(Resource=arn, Tags={TAG_KEY: source.bento_tag})
        return arn, role_note

    def _code(self, source: Source, options: LambdaOptions) -> dict[str, Any]:
        """The code argument: the image by digest, or the zip (its bytes, or the S3 object uploaded now)."""
        if isinstance(source, ImageSource):
            return {"ImageUri": source.image_uri}
        return code_location(self.aws.client("s3"), source, self.name, options.bucket, self.progress)

    def _role(self, config: Any) -> tuple[str, bool]:
        with aws_call("sts:GetCallerIdentity", "the deploying identity"):
            identity = self.aws.client("sts").get_caller_identity()
        partition = identity["Arn"].split(":")[1]
        return ensure_role(self.aws.client("iam"), self.name, partition, self.aws.region, identity["Account"],
                           config.model_dump())

    def _publish(self, source: Source, code_id: str, is_image: bool, created: list[str]) -> str:
        self.progress("Publishing a version")
        kwargs: dict[str, Any] = {"FunctionName": self.name, "Description": DESCRIPTION_PREFIX + source.bento_tag}
        if not is_image:
            kwargs["CodeSha256"] = code_id  # Lambda refuses to publish if $LATEST changed under us
        data = lambda_call("lambda:PublishVersion", self.name, self.lam.publish_version, self.backoff, **kwargs)
        version = str(data["Version"])
        created.append(f"version {version}")
        # SnapStart versions stay Pending while the snapshot is taken (minutes): wait before invoking.
        wait_until_settled(self.lam, self.name, Backoff(2.0, 1.5, 15.0, 900.0, self.backoff.sleep), version)
        return version

    def _provision(self, count: int) -> None:
        self.progress(f"Provisioned concurrency: {count} on {self.alias}")
        lambda_call("lambda:PutProvisionedConcurrencyConfig", f"{self.name}:{self.alias}",
                    self.lam.put_provisioned_concurrency_config, self.backoff, FunctionName=self.name,
                    Qualifier=self.alias, ProvisionedConcurrentExecutions=count)

    def _url(self, mode: str | None, config: Any) -> str | None:
        """Create, update or (with --url none) delete the alias's function URL; its address."""
        if mode is None:
            mode = ("public" if config.function_url_auth == "NONE" else "iam") if config.function_url else "none"
        resource = f"{self.name}:{self.alias}"
        existing = self.url_of()
        if mode == "none":
            if existing:
                with aws_call("lambda:DeleteFunctionUrlConfig", resource):
                    self.lam.delete_function_url_config(FunctionName=self.name, Qualifier=self.alias)
            return None
        auth = URL_AUTH[mode]
        if existing:
            data = lambda_call("lambda:UpdateFunctionUrlConfig", resource, self.lam.update_function_url_config,
                               self.backoff, FunctionName=self.name, Qualifier=self.alias, AuthType=auth)
        else:
            data = lambda_call("lambda:CreateFunctionUrlConfig", resource, self.lam.create_function_url_config,
                               self.backoff, FunctionName=self.name, Qualifier=self.alias, AuthType=auth)
        if auth == "NONE":
            self._allow_public_url()
        return data["FunctionUrl"]

    def _allow_public_url(self) -> None:
        """A URL with auth NONE answers the public only with a resource policy that allows it."""
        try:
            with aws_call("lambda:AddPermission", f"{self.name}:{self.alias}"):
                self.lam.add_permission(FunctionName=self.name, Qualifier=self.alias,
                                        StatementId="bento-compile-public-url", Action="lambda:InvokeFunctionUrl",
                                        Principal="*", FunctionUrlAuthType="NONE")
        except BentoCompileError as exc:
            if getattr(exc, "code", None) != "ResourceConflictException":  # the statement is already there
                raise


def image_digest_uri(code: dict[str, Any]) -> str | None:
    """The image a function runs, by digest: ImageUri when it was given by digest (as we always give it),
    else what Lambda resolved the tag to."""
    given = code.get("ImageUri")
    if isinstance(given, str) and "@sha256:" in given:
        return given
    return code.get("ResolvedImageUri") or given


def bento_location(source: Source) -> tuple[Path | None, Path | None]:
    """(the zip holding the Bento, the Bento folder): one of the two."""
    return (source.path, None) if isinstance(source, LambdaPackage) else (None, source.bento_dir)


def function_settings(source: Source, config: Any, env: dict[str, str]) -> dict[str, Any]:
    """The function configuration the Bento and the options ask for (CreateFunction / Update… arguments)."""
    settings: dict[str, Any] = {"MemorySize": config.memory, "Timeout": config.timeout,
                                "Environment": {"Variables": env},
                                "Description": DESCRIPTION_PREFIX + source.bento_tag}
    if isinstance(source, LambdaPackage):
        settings.update({"Runtime": f"python{config.python}", "Handler": source.handler,
                         "SnapStart": {"ApplyOn": "PublishedVersions" if config.snapstart else "None"}})
    return settings


def same_settings(configuration: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether a version's configuration already has every setting asked for."""
    for key, wanted in settings.items():
        have = configuration.get(key)
        if key == "Environment":
            have = {"Variables": (have or {}).get("Variables") or {}}
        elif key == "SnapStart":
            have = {"ApplyOn": (have or {}).get("ApplyOn") or "None"}
        if have != wanted:
            return False
    return True


def _zip_has(path: Path, member: str) -> bool:
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return member in archive.namelist()

