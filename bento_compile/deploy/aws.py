"""AWS clients from the standard credential chain, and AWS errors as one clear line.

Credentials, region and endpoint come from wherever boto3 finds them (environment,
profile, SSO, instance or task role); `AWS_ENDPOINT_URL` (and the per-service
`AWS_ENDPOINT_URL_LAMBDA`, ...) is botocore's own, so any AWS-compatible endpoint works.
boto3 is an optional extra (`pip install 'bento-compile[aws]'`): importing this module
without it is fine; asking for a client says how to install it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bento_compile.core.errors import BentoCompileError

# Error codes that mean "who you are may not do this": say which action on which resource.
ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
                           "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch",
                           "ExpiredToken", "ExpiredTokenException", "InvalidSignatureException"})


class AwsCallError(BentoCompileError):
    """An AWS API call failed; `code` is AWS's error code (for callers that tell cases apart)."""

    def __init__(self, problem: str, fix: str, code: str, action: str):
        super().__init__(problem, fix)
        self.code = code
        self.action = action


@dataclass
class Aws:
    """One boto3 session and the clients made from it (made once each)."""

    session: Any
    region: str
    _clients: dict[str, Any]

    def client(self, service: str) -> Any:
        if service not in self._clients:
            from botocore.config import Config

            # Our own code retries what needs retrying (IAM propagation, update conflicts);
            # botocore keeps its standard retries for throttling and transient faults.
            self._clients[service] = self.session.client(
                service, region_name=self.region, config=Config(retries={"mode": "standard", "max_attempts": 5},
                                                                connect_timeout=10, read_timeout=120))
        return self._clients[service]


def connect(region: str | None = None, profile: str | None = None) -> Aws:
    """A session from the standard chain, refusing early (one line each) when there is no region or no
    credentials, so nothing is half-done later for want of them."""
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        raise BentoCompileError("Deploying to AWS needs boto3, which is not installed.",
                                "pip install 'bento-compile[aws]'") from None
    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except botocore.exceptions.ProfileNotFound as exc:
        raise BentoCompileError(f"The AWS profile is not configured: {exc}",
                                "Name a profile from ~/.aws/config with --profile or AWS_PROFILE.") from None
    # botocore reads AWS_DEFAULT_REGION; AWS_REGION is what Lambda, ECS, CodeBuild and the newer SDKs set.
    resolved = session.region_name or os.environ.get("AWS_REGION") or None
    if not resolved:
        raise BentoCompileError("No AWS region is configured.",
                                "Pass --region, or set AWS_REGION (or region in ~/.aws/config).")
    try:
        credentials = session.get_credentials()
    except botocore.exceptions.BotoCoreError as exc:
        raise BentoCompileError(f"AWS credentials could not be loaded: {exc}",
                                "Fix the credentials in the environment or ~/.aws/ (aws configure).") from None
    if credentials is None:
        raise BentoCompileError("No AWS credentials found (environment, profile, SSO or instance role).",
                                "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, run `aws configure` or "
                                "`aws sso login`, or pass --profile.")
    return Aws(session, resolved, {})


_XML_FIELD = re.compile(r"<(Code|Message)>([^<]{0,2000})</\1>")


def _inner_xml(error: dict[str, Any]) -> dict[str, str]:
    """An error answered as XML to a JSON API (some gateways and emulators do): its own Code and Message."""
    message = str(error.get("Message") or "")
    return dict(_XML_FIELD.findall(message)) if message.lstrip().startswith("<") else {}


def error_code(exc: BaseException) -> str | None:
    """AWS's error code of a botocore ClientError (None for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        return _inner_xml(error).get("Code") or error.get("Code")
    return None


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        return str(_inner_xml(error).get("Message") or error.get("Message") or exc)
    return str(exc)


@contextmanager
def aws_call(action: str, resource: str, fix: str = "") -> Iterator[None]:
    """Run AWS calls, turning a failure into one line that names the action and the resource."""
    import botocore.exceptions

    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc) or "Error"
        message = error_message(exc)
        status = (getattr(exc, "response", {}).get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if code in ACCESS_DENIED or (status == 403 and code == "403"):
            raise AwsCallError(f"AWS refused {action} on {resource} ({code}): {message}",
                               f"Allow {action} on {resource} for the identity deploying (its IAM policy), "
                               "or deploy with credentials that have it.", code, action) from None
        raise AwsCallError(f"{action} on {resource} failed ({code}): {message}", fix or
                           "Check the resource and the options; run again with the same command when fixed.",
                           code, action) from None
    except botocore.exceptions.NoCredentialsError:
        raise AwsCallError("No AWS credentials found.", "Set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or "
                           "`aws configure`.", "NoCredentials", action) from None
    except botocore.exceptions.EndpointConnectionError as exc:
        raise AwsCallError(f"{action}: cannot reach the AWS endpoint ({exc}).",
                           "Check the network, AWS_REGION and AWS_ENDPOINT_URL.", "EndpointConnectionError",
                           action) from None


def call(action: str, resource: str, function: Callable[..., Any], **kwargs: Any) -> Any:
    """One AWS call under `aws_call`."""
    with aws_call(action, resource):
        return function(**kwargs)
