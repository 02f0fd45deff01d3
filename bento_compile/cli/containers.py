"""`bento-compile target cloudrun|knative|lambda-image`: container images and service manifests.

Progress goes to stderr; stdout's last line is the image reference the
manifest pins (`repo@sha256:…`), for scripts.
"""

from __future__ import annotations

from pathlib import Path

import click

from bento_compile.cli.console import err
from bento_compile.core.store import BentoStore
from bento_compile.targets.images import BuiltImage, ImagePlan
from bento_compile.targets.services import (
    DEFAULT_HTTP_BASE,
    SERVICES,
    pinned_existing,
    target_settings,
    write_service,
)
from bento_compile.targets.services import build_image as build_and_record
from bento_compile.targets.services import image_reference as _image_reference

# Also imported from here by the deploy commands and the tests.
__all__ = ["COMMANDS", "DEFAULT_HTTP_BASE", "_image_reference", "build_image", "pinned_existing", "target_settings"]


def build_image(kind: str, bento_path: Path, reference: str, base: str, arch: str, python: str | None,
                builder_name: str, push: bool, out_dir: Path, max_concurrency: int = 0, grace: int = 25,
                load_mode: str = "eager") -> tuple[ImagePlan, BuiltImage]:
    """Plan, build (and push) one image (targets/services.py), saying each step on stderr."""
    with err.status("Building the image…") as status:
        def progress(message: str) -> None:
            status.update(message + "…")
            err.print(f"[dim]•[/] {message}")

        plan, built = build_and_record(kind, bento_path, reference, base, arch, python, builder_name, push,
                                       out_dir, max_concurrency, grace, load_mode, progress)
    where = f"OCI layout {built.layout}" if built.layout else "the Docker engine"
    err.print(f"[green]Built[/] {reference} in {where} ({built.size / 1e6:.1f} MB compressed)")
    if not built.pushed and built.layout:
        err.print(f"Not pushed: `--push`, or `skopeo copy oci:{built.layout}:{reference.rsplit(':', 1)[-1]} "
                  f"docker://{reference}` (the digest stays {built.digest}).")
    return plan, built


def container_options(func):
    options = [
        click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), default=Path("dist"),
                     show_default=True, help="Folder for the manifests, the image layout and image.json."),
        click.option("--builder", type=click.Choice(["auto", "docker", "oci"]), default="auto", show_default=True,
                     help="docker: a Docker engine via DOCKER_HOST; oci: daemonless OCI layout (reproducible); "
                          "auto: docker when an engine answers."),
        click.option("--push", is_flag=True, help="Push the image to its registry (needed to pin a Docker-built "
                                                   "image by digest)."),
        click.option("--arch", type=click.Choice(["x86_64", "arm64"]), default="x86_64", show_default=True,
                     help="Image platform; wheels are resolved for it."),
        click.option("--python", help="Python version of the base image (default: detected from the base)."),
        click.option("-f", "--file", "config_file", type=click.Path(path_type=Path),
                     help="bento.yaml whose targets section to use (default: what the Bento recorded)."),
        click.option("--image", required=True, help="Image repository (tag defaults to the Bento version), "
                                                    "e.g. 127.0.0.1:5000/churn."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def service_command(flavour: str):
    section, model, filename = SERVICES[flavour]

    @click.command(flavour)
    @click.argument("tag")
    @container_options
    @click.option("--base-image", default=DEFAULT_HTTP_BASE, show_default=True,
                  help="Base with python3: an OCI layout folder (DIR or DIR:TAG) or a registry reference.")
    @click.option("--manifest-only", is_flag=True, help="Only write the manifest, for an image that exists "
                                                         "(its digest is looked up in the registry).")
    @click.option("--canary", type=click.IntRange(1, 99), help="Send N%% to the new revision, the rest to the "
                                                               "current one; prints promote/rollback commands.")
    @click.option("--current-revision", help="With --canary: the revision serving now (default: the one in the "
                                             "previous manifest in -o).")
    def command(tag: str, out_dir: Path, builder: str, push: bool, arch: str, python: str | None,
                config_file: Path | None, image: str, base_image: str, manifest_only: bool, canary: int | None,
                current_revision: str | None) -> None:
        from bento_compile.targets.knative import previous_revision

        bento = BentoStore().resolve(tag)
        manifest = bento.manifest
        settings = target_settings(section, model, config_file, manifest.targets)
        reference = _image_reference(image, manifest.version)
        if manifest_only:
            pinned = pinned_existing(reference)
        else:
            _plan, built = build_image("http", bento.path, reference, base_image, arch, python, builder, push,
                                       out_dir / "image", settings.container_concurrency, settings.grace_seconds)
            pinned = built.pinned
            if not built.digest:
                err.print("[yellow]warning:[/] the Docker engine knows no registry digest before a push, so the "
                          "manifest names the tag; add --push to pin the image by digest.")
        current = current_revision or previous_revision(out_dir / filename)
        written = write_service(flavour, manifest, pinned, settings, canary, current, out_dir)
        err.print(f"[green]Wrote[/] {written.service} (revision {written.revision}, image {pinned})")
        if canary is not None and written.commands:
            err.print(f"Canary: {canary}% to {written.revision}, {100 - canary}% to {current}.")
            err.print(f"  promote:  {written.commands['promote']}")
            err.print(f"  rollback: {written.commands['rollback']}")
        deploy = (f"kubectl apply -f {out_dir / filename}" if flavour == "knative"
                  else f"gcloud run services replace {out_dir / filename}"
                  + (f" --region {settings.region}" if getattr(settings, "region", None) else ""))
        err.print(f"Deploy: {deploy}")
        click.echo(pinned)

    command.help = (
        f"Build the HTTP image for a Bento and write a {'Knative' if flavour == 'knative' else 'Cloud Run'} "
        f"service manifest ({filename}).\n\n"
        "\b\nThe image: uvicorn serving /predict /healthz /readyz /metadata /docs on $PORT, non-root, the Bento "
        "in its own last layer. Settings come from targets." + section + " in bento.yaml.\n"
        "\b\nExample:\n"
        f"  bento-compile target {flavour} churn:latest --image 127.0.0.1:5000/churn --push -o dist/\n"
        f"  bento-compile target {flavour} churn:latest --image 127.0.0.1:5000/churn --canary 10 -o dist/\n"
        f"  bento-compile target {flavour} churn:latest --image REGISTRY/churn:1.4 --manifest-only -o dist/\n")
    return command


@click.command("lambda-image")
@click.argument("tag")
@container_options
@click.option("--base-image", default=None, help="Base with python3 (default: the AWS Lambda Python base image, "
                                                  "public.ecr.aws/lambda/python:3.12); an OCI layout or a reference.")
@click.option("--load", "load_mode", type=click.Choice(["eager", "lazy", "background"]), default="eager",
              show_default=True, help="When the model loads (see the Lambda target).")
def lambda_image(tag: str, out_dir: Path, builder: str, push: bool, arch: str, python: str | None,
                 config_file: Path | None, image: str, base_image: str | None, load_mode: str) -> None:
    """Build the AWS Lambda container image of a Bento (awslambdaric + the handler).

    \b
    Writes a build context (Dockerfile + layers) and builds the image with
    the Docker engine or daemonlessly (OCI layout).
    \b
    Example:
      bento-compile target lambda-image churn:latest --image 123456789012.dkr.ecr.eu-west-1.amazonaws.com/churn \\
          --arch arm64 --push -o dist/
    """
    from bento_compile.targets.lambda_image import DEFAULT_BASE

    bento = BentoStore().resolve(tag)
    manifest = bento.manifest
    reference = _image_reference(image, manifest.version)
    _plan, built = build_image("lambda", bento.path, reference, base_image or DEFAULT_BASE, arch, python, builder,
                               push, out_dir / "lambda-image", load_mode=load_mode)
    click.echo(built.pinned)


COMMANDS = [service_command("cloudrun"), service_command("knative"), lambda_image]
