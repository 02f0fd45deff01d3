"""From a Bento to a built image and its service manifests: the steps of the container targets.

`bento-compile target cloudrun|knative|lambda-image` and `bento_compile.target(...)` both run
these, so the two never disagree on what gets built, pinned and written. Progress goes to a
callback (plain text); what to print and how is the caller's business.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from bento_compile.core.config import CloudRunTarget, KnativeTarget, describe_validation_error, load_config
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.files import write_atomic
from bento_compile.runtimes.manifest import Manifest
from bento_compile.targets.images import BuiltImage, ImagePlan

Progress = Callable[[str], None]
DEFAULT_HTTP_BASE = "docker.io/library/python:3.12-slim"
# flavour → (bento.yaml targets section, its settings model, the manifest's file name)
SERVICES: dict[str, tuple[str, type[BaseModel], str]] = {
    "knative": ("knative", KnativeTarget, "knative.yaml"),
    "cloudrun": ("cloudrun", CloudRunTarget, "service.yaml"),
}


def target_settings(section: str, model: type[BaseModel], config_file: Path | None,
                    recorded: dict[str, Any]) -> Any:
    """`targets.<section>` from a bento.yaml, else as recorded in the Bento's manifest, else defaults."""
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


def image_reference(image: str, version: str) -> str:
    """`REGISTRY/churn` gets the Bento version as its tag; an explicit tag or digest is kept."""
    if "@" in image:
        return image
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last else f"{image}:{version}"


def pinned_existing(reference: str) -> str:
    """For an image built elsewhere: its digest, from the reference or by asking its registry."""
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
                load_mode: str = "eager", progress: Progress = lambda _m: None) -> tuple[ImagePlan, BuiltImage]:
    """Plan, build (and push) one image, `kind` "http" or "lambda"; writes OUT/image.json."""
    from bento_compile.targets.image_builders import choose_builder
    from bento_compile.targets.images import plan_http_image
    from bento_compile.targets.lambda_image import plan_lambda_image

    builder = choose_builder(builder_name)
    progress(f"Resolving the base image and the {arch} wheels")
    if kind == "http":
        plan = plan_http_image(bento_path, base, arch, python, max_concurrency, grace)
    else:
        plan = plan_lambda_image(bento_path, base, arch, python, load_mode)
    progress(f"Base {base} (Python {plan.python}, {arch}); {len(plan.wheels)} wheels; {plan.bytecode}")
    if kind == "lambda" and builder.name != "docker":  # the Docker builder writes (and builds) its own
        from bento_compile.targets.docker_builder import write_context
        from bento_compile.targets.oci_layout import is_layout_reference

        from_ref = base
        if is_layout_reference(base):  # a Dockerfile cannot name a folder: load the layout under a name first
            from_ref = "bento-compile-base"
            progress(f"The context's FROM is {from_ref}: load the base first, e.g. "
                     f"`skopeo copy oci:{base} docker-daemon:{from_ref}:latest`.")
        context = write_context(plan, out_dir / "context", from_ref)
        progress(f"Build context: {context} (docker build {context})")
    progress(f"Building the image with the {builder.name} builder")
    built = builder.build(plan, out_dir, reference)
    if push:
        progress(f"Pushing {reference}")
        built = builder.push(built)
    summary = {"reference": reference, "pinned": built.pinned, "digest": built.digest, "builder": built.builder,
               "pushed": built.pushed, "layout": str(built.layout) if built.layout else None,
               "layers": built.layer_digests, "size": built.size, "arch": arch, "python": plan.python,
               "base": base, "bytecode": plan.bytecode,
               "wheels": [{"name": w.name, "version": w.version, "sha256": w.sha256} for w in plan.wheels]}
    write_atomic(out_dir / "image.json", json.dumps(summary, indent=2) + "\n")
    return plan, built


@dataclass
class ServiceFiles:
    """The service manifest written, and for a canary its promote / rollback manifests and commands."""

    service: Path
    revision: str
    promote: Path | None = None
    rollback: Path | None = None
    commands: dict[str, str] = field(default_factory=dict)

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.service, self.promote, self.rollback) if p is not None]


def write_service(flavour: str, manifest: Manifest, pinned: str, settings: Any, canary: int | None,
                  current: str | None, out_dir: Path) -> ServiceFiles:
    """The Knative or Cloud Run manifest(s) for the image `pinned`, written atomically into `out_dir`."""
    from bento_compile.targets.cloudrun import cloudrun_manifests
    from bento_compile.targets.knative import dump_yaml, knative_manifests

    filename = SERVICES[flavour][2]
    build = knative_manifests if flavour == "knative" else cloudrun_manifests
    result = build(manifest, pinned, settings, canary, current, out_dir)
    stem = filename.rsplit(".", 1)[0]
    files = ServiceFiles(write_atomic(out_dir / filename, dump_yaml(result.service)), result.revision)
    if result.promote is not None:
        # canary() fills promote, rollback and commands together.
        assert result.rollback is not None and result.commands is not None
        files.promote = write_atomic(out_dir / f"{stem}-promote.yaml", dump_yaml(result.promote))
        files.rollback = write_atomic(out_dir / f"{stem}-rollback.yaml", dump_yaml(result.rollback))
        files.commands = dict(result.commands)
    return files
