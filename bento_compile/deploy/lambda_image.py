"""Container images for Lambda: an ECR repository to push to, and the architecture of an image already pushed.

An image is built and pushed as `target lambda-image` does (by the command line), then
deployed by digest (`ImageUri` = REPO@sha256:…) so the function runs exactly the bytes
that were pushed. An image named by digest is checked for the function's architecture
before anything else happens.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from bento_compile.core.errors import BentoCompileError
from bento_compile.deploy.aws import Aws, aws_call

ECR_HOST = re.compile(r"^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
OCI_ARCH = {"x86_64": "amd64", "arm64": "arm64"}


def ecr_credentials(aws: Aws, registry: str, repository: str) -> tuple[str, str] | None:
    """For an ECR registry: make the repository if missing and return (user, password) for a push;
    None for any other registry (its own login applies)."""
    if not ECR_HOST.match(registry):
        return None
    ecr = aws.client("ecr")
    try:
        with aws_call("ecr:DescribeRepositories", repository):
            ecr.describe_repositories(repositoryNames=[repository])
    except BentoCompileError as exc:
        if getattr(exc, "code", None) != "RepositoryNotFoundException":
            raise
        with aws_call("ecr:CreateRepository", repository):
            ecr.create_repository(repositoryName=repository, imageTagMutability="MUTABLE",
                                  imageScanningConfiguration={"scanOnPush": True})
    with aws_call("ecr:GetAuthorizationToken", registry):
        data = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return user, password


def image_architecture(reference: str) -> str | None:
    """The Lambda architecture (x86_64 / arm64) of a pushed single-platform image; None when the
    registry's answer names none (an index of several platforms is refused: Lambda takes one)."""
    from bento_compile.targets.registry import OCI_INDEX, Reference, RegistryClient

    ref = Reference.parse(reference)
    client = RegistryClient(ref, timeout=30)
    raw, media_type, _digest = client.get_manifest(ref.digest or ref.tag or "latest")
    document: dict[str, Any] = json.loads(raw)
    if media_type == OCI_INDEX or "manifests" in document:
        platforms = sorted({f"{m.get('platform', {}).get('architecture')}" for m in document.get("manifests", [])})
        raise BentoCompileError(f"{reference} is an index of several platforms ({', '.join(platforms)}); Lambda "
                                "deploys one image of one architecture. Nothing was changed.",
                                "Pass the digest of the platform's own image (REPO@sha256:…).")
    config_digest = document.get("config", {}).get("digest")
    if not config_digest:
        return None
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="bento-image-config-") as work:
        path = Path(work) / "config.json"
        client.fetch_blob(config_digest, path)
        config = json.loads(path.read_text())
    found = config.get("architecture")
    return next((lam for lam, oci in OCI_ARCH.items() if oci == found), found)


def check_architecture(reference: str, arch: str) -> None:
    found = image_architecture(reference)
    if found is not None and found != arch:
        raise BentoCompileError(f"{reference} is an image for {found}, but the function runs on {arch}. "
                                "Nothing was changed.",
                                f"Build the image for {arch} (--arch {arch}), or deploy with --arch {found}.")
