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

from ..runtimes.manifest import read_manifest
from .images import HTTP_REQUIREMENTS, ImagePlan, plan_image

DEFAULT_BASE = "public.ecr.aws/lambda/python:3.12"
HANDLER = "bento_compile.adapters.aws_lambda.handler"


def lambda_requirements(onnxruntime_version: str | None = None) -> list[str]:
    """What the Lambda handler imports: the HTTP stack minus uvicorn, plus Mangum and the RIC.

    boto3 (used only by the SQS/S3 result sinks) is left out: the Lambda base
    image provides it; on another base add it with targets.lambda settings.
    """
    try:  # the Lambda target's own list, when it exposes one, so both stay in step
        from .aws_lambda_requirements import lambda_runtime_requirements  # type: ignore[import-not-found]

        return list(lambda_runtime_requirements())
    except ImportError:
        pass
    requirements = [r for r in HTTP_REQUIREMENTS if not r.startswith("uvicorn")]
    if onnxruntime_version:
        requirements = [f"onnxruntime>={onnxruntime_version}" if r.startswith("onnxruntime") else r
                        for r in requirements]
    return [*requirements, "mangum>=0.17", "awslambdaric>=2.2"]


def plan_lambda_image(bento_dir: Path, base_reference: str = DEFAULT_BASE, arch: str = "x86_64",
                      python: str | None = None, load_mode: str = "eager") -> ImagePlan:
    manifest = read_manifest(bento_dir)
    requirements = lambda_requirements(manifest.raw.get("versions", {}).get("onnxruntime"))
    env = {"BENTO_COMPILE_LOAD": load_mode}
    return plan_image("lambda", bento_dir, base_reference, arch, python, requirements, env,
                      ["python3", "-m", "awslambdaric"], [HANDLER], [])
