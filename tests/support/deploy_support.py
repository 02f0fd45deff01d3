"""Helpers for the deploy tests: AWS clients on the session's moto_server, and the one call moto cannot do.

moto implements Lambda's control plane but cannot run function code (it would pull a
Docker image). `LocalInvoker` stands in for that one call, `lambda:Invoke`, and only that:
it asks the real moto for the version's CodeSha256 and code location, takes the bytes
that were deployed (the S3 object for an S3 upload; for a direct upload, moto keeps the
bytes to itself, so the local zip whose SHA-256 equals the CodeSha256 that moto computed
from what it received), and runs them with the local Runtime API emulator and the real
awslambdaric (bento_compile.tools.invoke).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tests.support.lambda_support import CREDENTIALS


def aws_environment(endpoint: str) -> dict[str, str]:
    """The standard AWS chain pointed at moto: dummy credentials, a region, AWS_ENDPOINT_URL."""
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}


def boto_client(service: str, endpoint: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name=CREDENTIALS["AWS_REGION"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def code_sha256(path: Path) -> str:
    return base64.b64encode(hashlib.sha256(Path(path).read_bytes()).digest()).decode()


def variant_zip(source: Path, destination: Path, marker: str) -> Path:
    """The same function with one more small file: other bytes (another CodeSha256), same behaviour,
    as a rebuild of the zip with a changed file would be."""
    shutil.copyfile(source, destination)
    with zipfile.ZipFile(destination, "a") as archive:
        archive.writestr("deploy-test-marker.txt", marker)
    return destination


def tampered_zip(source: Path, destination: Path) -> Path:
    """The zip with its model file's bytes changed: the function fails its init (hash mismatch)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(destination, "w") as dst:
        manifest = json.loads(src.read("bento/manifest.json"))
        model = f"bento/{manifest['model']['file']}"
        for info in src.infolist():
            data = src.read(info)
            if info.filename == model:
                data = data[:-8] + b"tampered"
            info.compress_type = zipfile.ZIP_STORED  # stored, not deflated again: the copy takes no time
            dst.writestr(info, data)
    return destination


class LocalInvoker:
    """A double for `lambda:Invoke` only (see the module docstring). `calls` records each invoke."""

    def __init__(self, endpoint: str, zips: list[Path], home: Path, env: dict[str, str] | None = None):
        self.home = home  # BENTO_COMPILE_HOME for the local runtime's caches (kept for the session)
        self.lam = boto_client("lambda", endpoint)
        self.s3 = boto_client("s3", endpoint)
        self.by_sha = {code_sha256(path): Path(path) for path in zips}
        self.env = env or {}
        self.calls: list[dict[str, Any]] = []
        self.work = Path(zips[0]).parent / "deployed-code" if zips else Path("deployed-code")

    def add(self, path: Path) -> None:
        self.by_sha[code_sha256(path)] = Path(path)

    def deployed_package(self, function_name: str, qualifier: str) -> tuple[Path, str]:
        """The bytes deployed to that version, and where they were taken from ('s3' or 'direct')."""
        data = self.lam.get_function(FunctionName=function_name, Qualifier=qualifier)
        sha = data["Configuration"]["CodeSha256"]
        config = self.lam.get_function_configuration(FunctionName=function_name, Qualifier=qualifier)
        assert config["CodeSha256"] == sha
        key = urlparse(data["Code"]["Location"]).path.lstrip("/")
        for bucket in (b["Name"] for b in self.s3.list_buckets().get("Buckets", [])):
            try:
                body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except self.s3.exceptions.NoSuchKey:
                continue
            self.work.mkdir(parents=True, exist_ok=True)
            path = self.work / f"{hashlib.sha256(body).hexdigest()}.zip"
            path.write_bytes(body)
            assert code_sha256(path) == sha, "the S3 object is not the code Lambda reports"
            return path, "s3"
        assert sha in self.by_sha, f"moto reports CodeSha256 {sha}, which is none of the test's zips"
        return self.by_sha[sha], "direct"

    def __call__(self, function_name: str, qualifier: str, payload: bytes) -> tuple[str | None, bytes]:
        from bento_compile.core.errors import BentoCompileError
        from bento_compile.tools.invoke import invoke_zip

        path, origin = self.deployed_package(function_name, qualifier)
        # The version runs with its own configured environment, as Lambda runs it.
        config = self.lam.get_function_configuration(FunctionName=function_name, Qualifier=qualifier)
        env = {**((config.get("Environment") or {}).get("Variables") or {}), **self.env}
        self.calls.append({"function": function_name, "qualifier": qualifier, "origin": origin, "zip": path,
                           "env": env})
        saved = os.environ.get("BENTO_COMPILE_HOME")
        os.environ["BENTO_COMPILE_HOME"] = str(self.home)
        try:
            answers, _init = invoke_zip(path, [json.loads(payload)], env=env, timeout=60)
        except BentoCompileError as exc:  # an init error: Lambda answers the invoke with Unhandled
            return "Unhandled", json.dumps({"errorMessage": exc.problem, "errorType": "Runtime.InitError"}).encode()
        finally:
            if saved is None:
                os.environ.pop("BENTO_COMPILE_HOME", None)
            else:
                os.environ["BENTO_COMPILE_HOME"] = saved
        result = answers[0].result
        return (None if result.ok else (result.error_type or "Unhandled")), json.dumps(result.body).encode()
