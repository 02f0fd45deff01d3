"""The deployment package: a Lambda zip (built from a Bento, or given), checked, hashed, and uploaded.

Lambda's `CodeSha256` is the base64 of the zip's SHA-256, so the hash computed here is
compared with the deployed function's to skip what did not change. A zip goes up
directly up to 50 MiB, else (or with --bucket) through S3 under a content-addressed key
(`bento-compile/FUNCTION/SHA256.zip`): the same bytes are never uploaded twice. Lambda's
250 MiB unzipped limit is checked before anything is uploaded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bento_compile.core.errors import BentoCompileError
from bento_compile.deploy.aws import aws_call, error_code
from bento_compile.targets.lambda_zip import HANDLER, UNZIPPED_LIMIT, ZIPPED_LIMIT

BUILD_INFO = "bento-lambda.json"
MANIFEST_IN_ZIP = "bento/manifest.json"
_MAX_JSON = 16 * 1024 * 1024  # a manifest or build record larger than this is not one of ours


@dataclass(frozen=True)
class LambdaPackage:
    """A Lambda zip ready to deploy, and what it holds."""

    path: Path
    sha256_hex: str
    zipped_bytes: int
    unzipped_bytes: int
    arch: str
    python: str
    handler: str
    manifest: dict[str, Any]  # the Bento's manifest.json, read from the zip

    @property
    def code_sha256(self) -> str:
        """What Lambda reports as CodeSha256: base64 of the raw digest."""
        return base64.b64encode(bytes.fromhex(self.sha256_hex)).decode()

    @property
    def bento_tag(self) -> str:
        return f"{self.manifest['name']}:{self.manifest['version']}"


def code_sha256_of(sha256_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def _read_json(archive: zipfile.ZipFile, member: str, path: Path) -> dict[str, Any]:
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise BentoCompileError(f"{path} has no {member}: it was not built by bento-compile.",
                                "Build the zip with `bento-compile target lambda-zip TAG`, or pass the TAG.") from None
    if info.file_size > _MAX_JSON:
        raise BentoCompileError(f"{path}: {member} is {info.file_size} bytes, too large to be ours.",
                                "Rebuild the zip with `bento-compile target lambda-zip TAG`.")
    try:
        data = json.loads(archive.read(member))
    except ValueError as exc:
        raise BentoCompileError(f"{path}: {member} is not valid JSON ({exc}).",
                                "Rebuild the zip with `bento-compile target lambda-zip TAG`.") from None
    if not isinstance(data, dict):
        raise BentoCompileError(f"{path}: {member} is not a JSON object.", "Rebuild the zip.")
    return data


def open_package(path: Path) -> LambdaPackage:
    """Read and check a Lambda zip: ours (build record + Bento manifest), within 250 MiB unzipped."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            info = _read_json(archive, BUILD_INFO, path)
            manifest = _read_json(archive, MANIFEST_IN_ZIP, path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BentoCompileError(f"{path} is not a readable zip: {exc}",
                                "Pass a zip built by `bento-compile target lambda-zip`, or a Bento TAG.") from None
    unzipped = sum(i.file_size for i in infos)
    if unzipped > UNZIPPED_LIMIT:
        raise BentoCompileError(
            f"{path} unzips to {unzipped / 2**20:.1f} MiB; Lambda allows at most {UNZIPPED_LIMIT / 2**20:.0f} MiB "
            "unzipped. Nothing was uploaded.",
            "Quantize the model (quantize: dynamic), or deploy a container image with --image REPO (10 GB).")
    for key in ("name", "version"):
        if not isinstance(manifest.get(key), str):
            raise BentoCompileError(f"{path}: {MANIFEST_IN_ZIP} has no {key}.", "Rebuild the zip.")
    arch, python = info.get("arch"), info.get("python")
    if arch not in ("x86_64", "arm64") or not isinstance(python, str):
        raise BentoCompileError(f"{path}: {BUILD_INFO} names no Lambda architecture and Python.",
                                "Rebuild the zip with `bento-compile target lambda-zip TAG`.")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return LambdaPackage(path, digest.hexdigest(), path.stat().st_size, unzipped, arch, python,
                         str(info.get("handler") or HANDLER), manifest)


def s3_key(function_name: str, package: LambdaPackage) -> str:
    """Content-addressed: the key names the bytes, so an object there is never stale."""
    return f"bento-compile/{function_name}/{package.sha256_hex}.zip"


def needs_s3(package: LambdaPackage, bucket: str | None) -> bool:
    return bucket is not None or package.zipped_bytes > ZIPPED_LIMIT


def code_location(s3: Any, package: LambdaPackage, function_name: str, bucket: str | None,
                  progress: Any = None) -> dict[str, Any]:
    """The `Code` of CreateFunction / the arguments of UpdateFunctionCode: the bytes, or an S3 object
    uploaded now unless the same key already holds the same size."""
    if not needs_s3(package, bucket):
        return {"ZipFile": package.path.read_bytes()}
    if bucket is None:
        raise BentoCompileError(
            f"{package.path} is {package.zipped_bytes / 2**20:.1f} MiB: above {ZIPPED_LIMIT / 2**20:.0f} MiB Lambda "
            "only takes a zip from S3. Nothing was uploaded.",
            "Pass --bucket BUCKET (in the function's region) to upload it through S3.")
    key = s3_key(function_name, package)
    resource = f"s3://{bucket}/{key}"
    try:
        with aws_call("s3:HeadObject", resource):
            head = s3.head_object(Bucket=bucket, Key=key)
        present = head.get("ContentLength") == package.zipped_bytes
    except Exception as exc:
        if getattr(exc, "code", None) not in ("404", "NoSuchKey", "NotFound") and error_code(exc) != "404":
            raise
        present = False
    if not present:
        if progress:
            progress(f"Uploading {package.zipped_bytes / 2**20:.1f} MiB to {resource}")
        with aws_call("s3:PutObject", resource, "Check the bucket exists, in the function's region."):
            s3.upload_file(str(package.path), bucket, key,
                           ExtraArgs={"ChecksumAlgorithm": "SHA256", "Metadata": {"bento-tag": package.bento_tag}})
    elif progress:
        progress(f"{resource} already holds this package")
    return {"S3Bucket": bucket, "S3Key": key}
