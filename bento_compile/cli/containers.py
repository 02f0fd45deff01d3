"""`bento-compile target cloudrun|knative|lambda-image`: container images and service manifests.

Progress goes to stderr; stdout's last line is the image reference the
manifest pins (`repo@sha256:…`), for scripts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, ValidationError

from bento_compile.cli.console import err
from bento_compile.core.config import CloudRunTarget, KnativeTarget, describe_validation_error, load_config
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.files import write_atomic
from bento_compile.core.store import BentoStore

DEFAULT_HTTP_BASE = "docker.io/library/python:3.12-slim"


def target_settings(section: str, model: type[BaseModel], config_file: Path | None,
                    recorded: dict[str, Any]) -> Any:
    """`targets.<section>` from -f bento.yaml, else as recorded in the Bento's manifest, else defaults."""
    data: Any = None
    if config_file is not None:
        config, _ = load_config(config_file)
        data = config.targets.get(section)
        where = f"{config_file}: targets.{section}"
    else:
        data = recorded.get(section)
        where = f"the Bento's targets.{section}"
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        raise BentoCompileError(f"{where} is not valid: {describe_validation_error(exc)}",
                                f"See the targets.{section} reference in the README.") from None


def _image_reference(image: str, version: str) -> str:
    """`--image REGISTRY/churn` gets the Bento version as its tag; an explicit tag or digest is kept."""
    if "@" in image:
        return image
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last else f"{image}:{version}"


def pinned_existing(reference: str) -> str:
    """For --manifest-only: the image's digest, from the reference or by asking its registry."""
    from bento_compile.targets.registry import Reference, RegistryClient

    ref = Reference.parse(reference)
    if ref.digest:
        return f"{ref.name}@{ref.digest}"
    digest = RegistryClient(ref, timeout=15).head_manifest(ref.tag or "latest")
    if digest is None:
        raise BentoCompileError(f"{reference} does not exist in its registry.",
                                "Build and push it first (drop --manifest-only, add --push), or pass "
                                "--image REPO@sha256:DIGEST.")
    return f"{ref.name}@{digest}"


def build_image(kind: str, bento_path: Path, reference: str, base: str, arch: str, python: str | None,
                builder_name: str, push: bool, out_dir: Path, max_concurrency: int = 0, grace: int = 25,
                load_mode: str = "eager"):
    """Plan, build (and push) one image; returns (plan, BuiltImage)."""
    from bento_compile.targets.image_builders import choose_builder
    from bento_compile.targets.images import plan_http_image
    from bento_compile.targets.lambda_image import plan_lambda_image

    builder = choose_builder(builder_name)
    with err.status(f"Resolving the base image and the {arch} wheels…"):
        if kind == "http":
            plan = plan_http_image(bento_path, base, arch, python, max_concurrency, grace)
        else:
            plan = plan_lambda_image(bento_path, base, arch, python, load_mode)
    err.print(f"Base {base} (Python {plan.python}, {arch}); {len(plan.wheels)} wheels; {plan.bytecode}")
    if kind == "lambda" and builder.name != "docker":  # the Docker builder writes (and builds) its own
        from bento_compile.targets.docker_builder import write_context
        from bento_compile.targets.oci_layout import is_layout_reference

        from_ref = base
        if is_layout_reference(base):  # a Dockerfile cannot name a folder: load the layout under a name first
            from_ref = "bento-compile-base"
            err.print(f"The context's FROM is {from_ref}: load the base first, e.g. "
                      f"`skopeo copy oci:{base} docker-daemon:{from_ref}:latest`.")
        context = write_context(plan, out_dir / "context", from_ref)
        err.print(f"Build context: {context} (docker build {context})")
    with err.status(f"Building the image with the {builder.name} builder…"):
        built = builder.build(plan, out_dir, reference)
    if push:
        with err.status(f"Pushing {reference}…"):
            built = builder.push(built)
    summary = {"reference": reference, "pinned": built.pinned, "digest": built.digest, "builder": built.builder,
               "pushed": built.pushed, "layout": str(built.layout) if built.layout else None,
               "layers": built.layer_digests, "size": built.size, "arch": arch, "python": plan.python,
               "base": base, "bytecode": plan.bytecode,
               "wheels": [{"name": w.name, "version": w.version, "sha256": w.sha256} for w in plan.wheels]}
    write_atomic(out_dir / "image.json", json.dumps(summary, indent=2) + "\n")
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
    section, model, filename = (("knative", KnativeTarget, "knative.yaml") if flavour == "knative"
                                else ("cloudrun", CloudRunTarget, "service.yaml"))

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
        from bento_compile.targets.knative import dump_yaml, knative_manifests, previous_revision

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
        if flavour == "knative":
            result = knative_manifests(manifest, pinned, settings, canary, current, out_dir)
        else:
            from bento_compile.targets.cloudrun import cloudrun_manifests

            result = cloudrun_manifests(manifest, pinned, settings, canary, current, out_dir)
        stem = filename.rsplit(".", 1)[0]
        write_atomic(out_dir / filename, dump_yaml(result.service))
        err.print(f"[green]Wrote[/] {out_dir / filename} (revision {result.revision}, image {pinned})")
        if result.promote is not None:
            # canary() fills promote, rollback and commands together, from a percentage and a current revision.
            assert result.rollback is not None and result.commands is not None and canary is not None
            write_atomic(out_dir / f"{stem}-promote.yaml", dump_yaml(result.promote))
            write_atomic(out_dir / f"{stem}-rollback.yaml", dump_yaml(result.rollback))
            err.print(f"Canary: {canary}% to {result.revision}, {100 - canary}% to {current}.")
            err.print(f"  promote:  {result.commands['promote']}")
            err.print(f"  rollback: {result.commands['rollback']}")
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
