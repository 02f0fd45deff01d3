"""The AWS Lambda container image: the same layers as the HTTP image, started by awslambdaric.

Built by the same code as the Cloud Run / Knative image (`targets.images`):
base, then the dependency layer (resolved for the target arch and Python),
our runtime and adapters, and the Bento last. The entry point is the Runtime
Interface Client (`python3 -m awslambdaric`) running
`bento_compile.adapters.aws_lambda.handler`, so the image runs on the AWS
Lambda Python base image (the default) or on any base with python3.

The build context (Dockerfile + one folder per layer) is always written, so
it can be built and pushed with `docker build` where bento-compile does not
run; the image itself is built when a builder can reach the base.
"""

from __future__ import annotations

from pathlib import Path

from bento_compile.runtimes.manifest import read_manifest
from bento_compile.runtimes.model_format import model_format_of
from bento_compile.targets.images import ImagePlan, plan_image

DEFAULT_BASE = "public.ecr.aws/lambda/python:3.12"
HANDLER = "bento_compile.adapters.aws_lambda.handler"


def lambda_image_requirements(bento_dir: Path, arch: str, python: str) -> list[str]:
    """The Lambda target's own list (`targets.lambda_zip.lambda_requirements`, so zip and image stay in
    step) plus awslambdaric, which an image on a non-AWS base must bring itself."""
    from bento_compile.targets.lambda_zip import lambda_requirements
    from bento_compile.targets.pipeline_wheels import pipeline_requirements

    manifest = read_manifest(bento_dir)
    signed = (Path(bento_dir) / "signature.json").is_file()
    return [*lambda_requirements(arch, python, model_format_of(manifest), signed), *pipeline_requirements(manifest),
            "awslambdaric>=2.2"]


def plan_lambda_image(bento_dir: Path, base_reference: str = DEFAULT_BASE, arch: str = "x86_64",
                      python: str | None = None, load_mode: str = "eager") -> ImagePlan:
    from bento_compile.targets.images import open_base, resolve_python

    python = resolve_python(open_base(base_reference, arch), base_reference, python)
    requirements = lambda_image_requirements(bento_dir, arch, python)
    env = {"BENTO_COMPILE_LOAD": load_mode}
    return plan_image("lambda", bento_dir, base_reference, arch, python, requirements, env,
                      ["python3", "-m", "awslambdaric"], [HANDLER], [])
