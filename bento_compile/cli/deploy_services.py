"""`bento-compile deploy cloudrun|knative`: build and push the HTTP image, then put it live with traffic control.

The image is built exactly as `target cloudrun|knative --push` builds it (same layers, same
digest); an `--image REPO@sha256:…` already pushed is deployed as it is. Progress goes to
stderr; stdout's last line is the service URL, or one JSON object with --json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from bento_compile.cli.console import err
from bento_compile.cli.containers import DEFAULT_HTTP_BASE, _image_reference, build_image, target_settings
from bento_compile.core.config import CloudRunTarget, KnativeTarget
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore
from bento_compile.deploy.service_outcome import ServiceDeployment
from bento_compile.deploy.traffic import describe


def _action(canary: int | None, promote: bool, rollback: bool) -> str:
    chosen = [name for name, on in (("--canary", canary is not None), ("--promote", promote),
                                    ("--rollback", rollback)) if on]
    if len(chosen) > 1:
        raise BentoCompileError(f"{' and '.join(chosen)} cannot be combined.",
                                "Pass one of --canary PERCENT, --promote or --rollback (or none, for a full deploy).")
    return "canary" if canary is not None else "promote" if promote else "rollback" if rollback else "deploy"


def _pinned_image(action: str, image: str | None, bento: Any, settings: Any, options: dict[str, Any]) -> str | None:
    """The image to deploy, pinned by digest: built and pushed, or taken as given when it names a digest."""
    if action in ("promote", "rollback"):
        if image:
            err.print(f"[yellow]note:[/] --{action} only moves traffic; --image is not used.")
        return None
    if not image:
        raise BentoCompileError(f"`deploy` needs --image to {'start a canary' if action == 'canary' else 'deploy'}.",
                                "Pass --image REGISTRY/REPO (the Bento is built and pushed there), or "
                                "--image REPO@sha256:DIGEST for an image already pushed.")
    if "@" in image:
        from bento_compile.targets.registry import Reference

        pushed = Reference.parse(image)
        err.print(f"Deploying the pushed image {pushed} (not rebuilt).")
        return str(pushed)
    reference = _image_reference(image, bento.manifest.version)
    _plan, built = build_image("http", bento.path, reference, options["base_image"], options["arch"],
                               options["python"], options["builder"], True, options["out_dir"] / "image",
                               settings.container_concurrency, settings.grace_seconds)
    if not built.digest:
        raise BentoCompileError(f"The push of {reference} gave no digest to pin.",
                                "Use --builder oci, or a registry that answers with Docker-Content-Digest.")
    return str(built.pinned)


def _report(outcome: ServiceDeployment, as_json: bool, again: str) -> None:
    what = {"deploy": "serves", "canary": "canary of", "promote": "promoted", "rollback": "rolled back to"}
    if outcome.unchanged:
        err.print(f"[green]Unchanged[/]: {outcome.resource} already routes this way ({outcome.revision}).")
    else:
        err.print(f"[green]Ready[/]: {outcome.resource} {what[outcome.action]} {outcome.revision}")
    if outcome.smoke:
        err.print(f"Smoke check passed: the Bento's example, sent to {outcome.smoke['url']}")
    for note in outcome.notes:
        err.print(f"[yellow]note:[/] {escape(note)}")
    err.print(f"URL: {outcome.url}")
    err.print(f"Traffic: {escape(describe([s.route for s in outcome.traffic]))}")
    for route in outcome.traffic:
        if route.url:
            err.print(f"  {route.route.tag}: {route.url}")
    if outcome.action == "canary" and not outcome.unchanged:
        err.print(f"  promote:  {again} --promote")
        err.print(f"  rollback: {again} --rollback")
    click.echo(json.dumps(outcome.as_json()) if as_json else outcome.url)


def _build_options(func):
    options = [
        click.option("--image", help="Repository to build and push the image to (tag: the Bento version), or "
                                     "REPO@sha256:DIGEST of an image already pushed (deployed as it is)."),
        click.option("--canary", type=click.IntRange(1, 99), help="Send PERCENT of requests to the new revision "
                                                                  "(tag candidate), the rest to the current one."),
        click.option("--promote", is_flag=True, help="Move all traffic to the canary's revision."),
        click.option("--rollback", is_flag=True, help="Back to the revision that served before (ends a canary, "
                                                      "or undoes the last deploy or promotion). Nothing is built."),
        click.option("--adopt", is_flag=True, help="Take over a service that bento-compile did not create."),
        click.option("--wait", "wait_seconds", type=click.IntRange(1, 3600), default=600, show_default=True,
                     help="Seconds to wait for the new revision to be ready."),
        click.option("--no-smoke", is_flag=True, help="Move traffic without sending the Bento's example to the new "
                                                      "revision first (the smoke check)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object (url, revision, traffic...)."),
        click.option("-f", "--file", "config_file", type=click.Path(path_type=Path),
                     help="bento.yaml whose targets section to use (default: what the Bento recorded)."),
        click.option("--builder", type=click.Choice(["auto", "docker", "oci"]), default="auto", show_default=True,
                     help="How the image is built (as for `target`)."),
        click.option("--base-image", default=DEFAULT_HTTP_BASE, show_default=True,
                     help="Base with python3: an OCI layout folder (DIR or DIR:TAG) or a registry reference."),
        click.option("--arch", type=click.Choice(["x86_64", "arm64"]), default="x86_64", show_default=True),
        click.option("--python", help="Python version of the base image (default: detected from the base)."),
        click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), default=Path("dist"),
                     show_default=True, help="Folder for the image layout and image.json."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command("cloudrun")
@click.argument("tag")
@click.option("--project", help="Google Cloud project (default: GOOGLE_CLOUD_PROJECT, else the credentials').")
@click.option("--region", help="Cloud Run region (default: targets.cloudrun.region).")
@click.option("--endpoint", envvar="BENTO_COMPILE_CLOUDRUN_ENDPOINT",
              help="Cloud Run API endpoint (default https://run.googleapis.com; env BENTO_COMPILE_CLOUDRUN_ENDPOINT).")
@_build_options
def cloudrun(tag: str, project: str | None, region: str | None, endpoint: str | None, image: str | None,
             canary: int | None, promote: bool, rollback: bool, adopt: bool, wait_seconds: int, no_smoke: bool,
             as_json: bool, config_file: Path | None, **build: Any) -> None:
    """Deploy the Bento TAG to Cloud Run: build and push the image, create or update the service, wait until
    the new revision is ready, and print the URL and the traffic.

    \b
    Before traffic moves, the new revision gets the tag `candidate` at 0% and the Bento's example is sent to
    that tag's URL with an ID token (the smoke check; --no-smoke skips it).

    \b
    Credentials: Application Default Credentials (gcloud auth application-default login,
    GOOGLE_APPLICATION_CREDENTIALS, or the metadata server). Settings: targets.cloudrun.
    \b
    Example:
      bento-compile deploy cloudrun churn:latest --image europe-docker.pkg.dev/acme/ml/churn \\
          --project acme-ml --region europe-west1
      bento-compile deploy cloudrun churn:latest --image europe-docker.pkg.dev/acme/ml/churn \\
          --project acme-ml --region europe-west1 --canary 10
      bento-compile deploy cloudrun churn:latest --project acme-ml --region europe-west1 --promote
      bento-compile deploy cloudrun churn:latest --project acme-ml --region europe-west1 --rollback
    """
    from bento_compile.deploy.cloudrun import CloudRunRequest, deploy_cloudrun

    action = _action(canary, promote, rollback)
    bento = BentoStore().resolve(tag)
    settings = target_settings("cloudrun", CloudRunTarget, config_file, bento.manifest.targets)
    pinned = _pinned_image(action, image, bento, settings, build)
    with err.status("Updating the Cloud Run service and waiting for the revision…"):
        outcome = deploy_cloudrun(CloudRunRequest(bento.manifest, settings, action, project, region, pinned, canary,
                                                  adopt, endpoint, wait_seconds, not no_smoke, bento.path,
                                                  err.print))
    where = f" --project {outcome.resource.split('/')[1]} --region {outcome.resource.split('/')[3]}"
    _report(outcome, as_json, f"bento-compile deploy cloudrun {bento.tag}{where}")


@click.command("knative")
@click.argument("tag")
@click.option("--namespace", "-n", help="Namespace (default: targets.knative.namespace, else the context's).")
@click.option("--context", help="kubeconfig context (default: the current one).")
@click.option("--smoke-url", help="Where the new revision answers the smoke check, when its tag URL cannot be "
                                  "reached from here (e.g. http://127.0.0.1:8080, a kubectl port-forward).")
@_build_options
def knative(tag: str, namespace: str | None, context: str | None, smoke_url: str | None, image: str | None,
            canary: int | None, promote: bool, rollback: bool, adopt: bool, wait_seconds: int, no_smoke: bool,
            as_json: bool, config_file: Path | None, **build: Any) -> None:
    """Deploy the Bento TAG to Knative Serving: build and push the image, server-side apply the Service,
    wait until it is Ready for the new generation, and print the URL and the traffic.

    \b
    Before traffic moves, the new revision gets the tag `candidate` at 0% and the Bento's example is sent to
    that tag's URL, or to --smoke-url (the smoke check; --no-smoke skips it).

    \b
    Configuration: KUBECONFIG or ~/.kube/config (--context picks one), or the pod's service
    account. Settings: targets.knative.
    \b
    Example:
      bento-compile deploy knative churn:latest --image registry.example.com/churn -n ml
      bento-compile deploy knative churn:latest --image registry.example.com/churn -n ml --canary 10
      bento-compile deploy knative churn:latest -n ml --promote
      bento-compile deploy knative churn:latest -n ml --rollback
    """
    from bento_compile.deploy.knative import KnativeRequest, deploy_knative

    action = _action(canary, promote, rollback)
    bento = BentoStore().resolve(tag)
    settings = target_settings("knative", KnativeTarget, config_file, bento.manifest.targets)
    pinned = _pinned_image(action, image, bento, settings, build)
    with err.status("Applying the Knative Service and waiting until it is Ready…"):
        outcome = deploy_knative(KnativeRequest(bento.manifest, settings, action, pinned, canary, namespace, context,
                                                adopt, wait_seconds, smoke=not no_smoke, smoke_url=smoke_url,
                                                bento_dir=bento.path, progress=err.print))
    where = f" -n {outcome.resource.split('/')[0]}" + (f" --context {context}" if context else "")
    _report(outcome, as_json, f"bento-compile deploy knative {bento.tag}{where}")


COMMANDS = [cloudrun, knative]
