"""`bento-compile deploy lambda`: a Bento (or a zip built by `target lambda-zip`) live on AWS Lambda.

Progress goes to stderr; stdout carries the result (one JSON object with --json).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from bento_compile.cli.console import err
from bento_compile.cli.options import LAMBDA_PYTHONS, parse_env_pairs
from bento_compile.core.errors import BentoCompileError


def _progress(message: str) -> None:
    err.print(f"  {escape(message)}")


@contextlib.contextmanager
def _registry_login(user: str, password: str) -> Iterator[None]:
    """The registry client reads its login from these variables: set them for the push only."""
    saved = {k: os.environ.get(k) for k in ("BENTO_COMPILE_REGISTRY_USER", "BENTO_COMPILE_REGISTRY_PASSWORD")}
    os.environ["BENTO_COMPILE_REGISTRY_USER"], os.environ["BENTO_COMPILE_REGISTRY_PASSWORD"] = user, password
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _zip_source(tag: str, arch: str | None, python: str | None, work: Path):
    """A zip given on the command line, or the stored Bento TAG built into one now."""
    from bento_compile.deploy.lambda_package import open_package

    given = Path(tag)
    if tag.endswith(".zip") or given.is_file():
        if not given.is_file():
            raise BentoCompileError(f"{tag} does not exist.", "Pass a zip built by `target lambda-zip`, or a TAG.")
        return open_package(given)
    from bento_compile.adapters.lambda_events import lambda_settings
    from bento_compile.core.store import BentoStore
    from bento_compile.targets.lambda_zip import build_lambda_zip

    bento = BentoStore().resolve(tag)
    settings = lambda_settings(bento.manifest)
    arch = arch or settings.get("arch") or "x86_64"
    python = python or settings.get("python") or "3.12"
    err.print(f"Building the Lambda zip for {bento.tag} ({arch}, Python {python})")
    with err.status("building"):
        built = build_lambda_zip(bento.path, arch, python, work, settings, progress=_progress, template=False)
    return open_package(built.path)


def _image_source(aws: Any, tag: str, image: str, arch: str | None, python: str | None, base_image: str | None,
                  builder: str, work: Path):
    """Build and push the Lambda image of TAG as `target lambda-image` does; or check one named by digest."""
    from bento_compile.adapters.lambda_events import lambda_settings
    from bento_compile.core.store import BentoStore
    from bento_compile.deploy.aws_lambda import ImageSource
    from bento_compile.deploy.lambda_image import check_architecture, ecr_credentials
    from bento_compile.targets.registry import Reference

    bento = BentoStore().resolve(tag)
    raw = json.loads((bento.path / "manifest.json").read_text(encoding="utf-8"))
    arch = arch or lambda_settings(bento.manifest).get("arch") or "x86_64"
    ref = Reference.parse(image)
    if ref.digest:
        check_architecture(image, arch)
        return ImageSource(image, arch, raw, bento.path)
    from bento_compile.cli.containers import _image_reference, build_image
    from bento_compile.targets.lambda_image import DEFAULT_BASE

    reference = _image_reference(image, bento.manifest.version)
    login = ecr_credentials(aws, ref.registry, ref.repository)
    with _registry_login(*login) if login else contextlib.nullcontext():
        _plan, built = build_image("lambda", bento.path, reference, base_image or DEFAULT_BASE, arch, python,
                                   builder, True, work / "lambda-image")
    if not built.digest:
        raise BentoCompileError(f"The registry gave no digest for {reference}; Lambda must deploy it by digest.",
                                "Push to a registry that answers with Docker-Content-Digest (ECR does).")
    return ImageSource(f"{ref.name}@{built.digest}", arch, raw, bento.path)


def _print_routing(result: dict[str, Any]) -> None:
    table = Table("version", "traffic", box=None)
    for version, share in (result.get("routing") or {}).items():
        table.add_row(str(version), f"{share * 100:.1f} %")
    err.print(table)


def _print_status(status: dict[str, Any]) -> None:
    err.print(f"{status['function_arn']} alias [bold]{status['alias']}[/]")
    if not status["versions"]:
        err.print("  the alias does not exist yet")
        return
    table = Table("version", "traffic", "Bento", "code sha256", "published", box=None)
    for row in status["versions"]:
        table.add_row(row["version"], f"{row['weight'] * 100:.1f} %", row["bento_tag"] or "-",
                      (row["code_sha256"] or "-")[:16] + "…", row["last_modified"] or "-")
    err.print(table)
    if status.get("history"):
        err.print(f"served before: {', '.join(status['history'][:-1]) or '(none)'}")
    if status.get("url"):
        err.print(f"URL: {status['url']}")


@click.command("lambda")
@click.argument("tag", required=False)
@click.option("--function", "function_name", help="The Lambda function (default: targets.lambda.function_name, "
                                                   "else the Bento's name).")
@click.option("--arch", type=click.Choice(["x86_64", "arm64"]), help="Architecture (default: targets.lambda.arch).")
@click.option("--python", "python_version", type=click.Choice(LAMBDA_PYTHONS),
              help="Python runtime (default: targets.lambda.python, else 3.12).")
@click.option("--memory", type=click.IntRange(128, 10240), help="MB (default: targets.lambda.memory).")
@click.option("--timeout", type=click.IntRange(1, 900), help="Seconds per invocation (default: targets.lambda).")
@click.option("--role", help="Execution role ARN (default: a least-privilege role made for the function).")
@click.option("--alias", default="live", show_default=True, help="The alias that serves traffic.")
@click.option("--canary", type=click.FloatRange(0, 100, min_open=True, max_open=True),
              help="Route PERCENT of the alias's traffic to the new version; the rest stays on the current one.")
@click.option("--bucket", help="Upload the zip through this S3 bucket (always above 50 MiB).")
@click.option("--image", help="Deploy a container image: build it as `target lambda-image` does and push it to "
                              "REPO (ECR or any registry), or deploy REPO@sha256:DIGEST as it is.")
@click.option("--base-image", help="With --image: the base (default: the AWS Lambda Python base image).")
@click.option("--builder", type=click.Choice(["auto", "docker", "oci"]), default="auto", show_default=True,
              help="With --image: how to build it.")
@click.option("--provisioned", type=click.IntRange(0), help="Provisioned concurrency on the alias (billed all the "
                                                           "time; not with SnapStart).")
@click.option("--snapstart/--no-snapstart", default=None, help="SnapStart for published versions (Python 3.12+; "
                                                               "not with provisioned concurrency or images).")
@click.option("--url", "url_mode", type=click.Choice(["none", "iam", "public"]),
              help="Function URL on the alias: iam (AWS_IAM auth), public (auth NONE) or none "
                   "(default: targets.lambda.function_url).")
@click.option("--env", "env_pairs", multiple=True, help="KEY=VALUE for the function (repeatable).")
@click.option("--pub", "public_key", help="Public key (*.pub.pem) the function checks a signed Bento with "
                                          "(default: $BENTO_COMPILE_PUBLIC_KEY).")
@click.option("--no-smoke", is_flag=True, help="Move traffic without invoking the new version first.")
@click.option("--adopt", is_flag=True, help="Take over a function that bento-compile did not create.")
@click.option("--promote", is_flag=True, help="Move the alias wholly to the canary's version.")
@click.option("--rollback", is_flag=True, help="Put the alias back on the version it served before (no upload).")
@click.option("--status", "show_status", is_flag=True, help="Show what the alias serves.")
@click.option("--region", help="AWS region (default: the standard chain: AWS_REGION, profile).")
@click.option("--profile", help="AWS profile (default: AWS_PROFILE, else the default chain).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def deploy_lambda(tag: str | None, function_name: str | None, arch: str | None, python_version: str | None,
                  memory: int | None, timeout: int | None, role: str | None, alias: str, canary: float | None,
                  bucket: str | None, image: str | None, base_image: str | None, builder: str,
                  provisioned: int | None, snapstart: bool | None, url_mode: str | None, env_pairs: tuple[str, ...],
                  public_key: str | None, no_smoke: bool, adopt: bool, promote: bool, rollback: bool,
                  show_status: bool, region: str | None, profile: str | None, as_json: bool) -> None:
    """Deploy the Bento TAG (or a zip from `target lambda-zip`) to AWS Lambda behind an alias.

    \b
    Creates the function (and a least-privilege role) or updates it, publishes a
    version named after the Bento, invokes it with the Bento's example and
    compares the answer at the parity tolerance, and only then moves the alias:
    wholly, or a --canary share. Unchanged code (same CodeSha256) is skipped.
    Credentials, region and endpoint come from the standard AWS chain
    (AWS_ENDPOINT_URL works for any AWS-compatible endpoint).
    \b
    Example:
      bento-compile deploy lambda churn:latest --function churn
      bento-compile deploy lambda churn:latest --function churn --canary 10
      bento-compile deploy lambda --function churn --promote
      bento-compile deploy lambda --function churn --rollback
      bento-compile deploy lambda --function churn --status --json
      bento-compile deploy lambda dist/churn-lambda.zip --function churn --bucket my-artifacts
      bento-compile deploy lambda churn:latest --function churn \\
          --image 123456789012.dkr.ecr.eu-west-1.amazonaws.com/churn
    """
    from bento_compile.deploy.aws import connect
    from bento_compile.deploy.aws_lambda import LambdaDeployer, LambdaOptions

    modes = [flag for flag, on in (("--promote", promote), ("--rollback", rollback), ("--status", show_status)) if on]
    if len(modes) > 1:
        raise BentoCompileError(f"{' and '.join(modes)} cannot be combined.", "Pass one of them.")
    if modes and tag:
        raise BentoCompileError(f"{modes[0]} takes no TAG: it moves traffic between versions already published.",
                                f"Run: bento-compile deploy lambda --function NAME {modes[0]}")
    if not modes and not tag:
        raise BentoCompileError("Nothing to deploy: no TAG given.",
                                "Pass a Bento TAG (churn:latest) or a zip, or --promote / --rollback / --status.")
    if modes and not function_name:
        raise BentoCompileError(f"{modes[0]} needs --function NAME.", "Name the Lambda function.")
    aws = connect(region, profile)
    if modes:
        deployer = LambdaDeployer(aws, function_name or "", alias, _progress, adopt=adopt)
        if show_status:
            status = deployer.status()
            if as_json:
                click.echo(json.dumps(status, indent=2))
            else:
                _print_status(status)
            return
        result = deployer.promote() if promote else deployer.rollback()
        err.print(f"[green]{'Promoted' if promote else 'Rolled back'}:[/] {alias} now serves version "
                  f"{result.version} ({result.bento_tag or 'no Bento tag'})")
        _print_routing(result.summary())
        if as_json:
            click.echo(json.dumps(result.summary(), indent=2))
        return

    assert tag is not None
    pub = None
    if public_key or os.environ.get("BENTO_COMPILE_PUBLIC_KEY"):
        import base64

        from bento_compile.core.signing import resolve_public_key

        pub = base64.b64encode(resolve_public_key(public_key)).decode()
    options = LambdaOptions(function_name or "", alias, arch, python_version, memory, timeout, role, canary, bucket,
                            provisioned, snapstart, url_mode, parse_env_pairs(env_pairs), not no_smoke, adopt, pub)
    with tempfile.TemporaryDirectory(prefix="bento-deploy-") as work:
        source = (_image_source(aws, tag, image, arch, python_version, base_image, builder, Path(work)) if image
                  else _zip_source(tag, arch, python_version, Path(work)))
        if not function_name:
            settings = (source.manifest.get("targets") or {}).get("lambda") or {}
            options.function_name = settings.get("function_name") or source.manifest["name"]
        deployer = LambdaDeployer(aws, options.function_name, alias, _progress, adopt=adopt)
        err.print(f"Deploying {source.bento_tag} to {options.function_name} ({aws.region})")
        result = deployer.deploy(source, options)
    for note in result.notes:
        err.print(f"[yellow]note:[/] {escape(note)}")
    if result.skipped:
        err.print(f"[green]Unchanged:[/] {alias} already serves {result.bento_tag} (version {result.version})")
    else:
        err.print(f"[green]Deployed[/] {result.bento_tag} as version {result.version} of {options.function_name}"
                  + (" (smoke check passed)" if result.smoke else ""))
    _print_routing(result.summary())
    if result.url:
        err.print(f"URL: {result.url}")
    if as_json:
        click.echo(json.dumps(result.summary(), indent=2))
    else:
        click.echo(result.function_arn + ":" + alias)
    sys.stdout.flush()
