"""The smoke check for Cloud Run and Knative: the Bento's example, POSTed to the new revision's tag URL.

The revision first joins the service at 0 % under the tag `candidate` (deploy.traffic.staging_routes),
so it has a URL of its own and no user reaches it; its answer is judged by deploy.smoke, the same
comparison as Lambda's; only when it passes does the traffic plan apply. Every part is bounded: one
request's time, the warm-up (a fresh revision may answer 503, or refuse connections, for a few
seconds), and the size of the answer read.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bento_compile.core.errors import BentoCompileError
from bento_compile.deploy.service_outcome import ServedRoute
from bento_compile.deploy.smoke import Send, SmokeResult, shown, smoke_check
from bento_compile.deploy.traffic import CANDIDATE, CURRENT, Route, staging_routes
from bento_compile.deploy.waiting import Backoff, retrying

REQUEST_TIMEOUT = 30.0
# The runtime refuses bodies over its max_body_bytes; an answer this large is not a model's answer.
MAX_ANSWER = 8 * 1024 * 1024
# 503 from a revision still starting, 502/504 from the front end before it; connections refused meanwhile.
WARMING = frozenset({502, 503, 504})
WARM_UP = Backoff(first=0.5, factor=2.0, ceiling=4.0, total=30.0)


class _Warming(Exception):
    """The revision is not answering yet (a status in WARMING, or the connection refused)."""


def check_url(url: str, where: str) -> str:
    """An http(s) URL with a host, without the trailing '/': checked before anything is sent to it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise BentoCompileError(f"{where} '{url}' is not an http(s) URL.",
                                "Pass e.g. --smoke-url http://127.0.0.1:8080 (a port-forward to the revision).")
    return url.rstrip("/")


def http_sender(base_url: str, headers: dict[str, str], denied_fix: str, backoff: Backoff = WARM_UP,
                timeout: float = REQUEST_TIMEOUT) -> Send:
    """POST the example to BASE_URL/predict, retried while the revision warms up. 401/403 raise with
    `denied_fix` (the platform's way to be let in); any other error status is the revision's answer, which
    smoke_check judges."""
    url = base_url + "/predict"

    def attempt(payload: bytes) -> tuple[str | None, bytes]:
        request = urllib.request.Request(url, data=payload, method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # the URL was checked by check_url
                return None, _read(response, url)
        except urllib.error.HTTPError as answer:
            with answer:
                body = _read(answer, url)
            if answer.code in WARMING:
                raise _Warming(f"HTTP {answer.code}") from None
            if answer.code in (401, 403):
                raise BentoCompileError(f"The revision at {base_url} refused the smoke request (HTTP {answer.code}): "
                                        f"{shown(body.decode('utf-8', 'replace').strip())}", denied_fix) from None
            return f"HTTP {answer.code}", body
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ConnectionRefusedError | ConnectionResetError):
                raise _Warming(str(reason)) from None
            raise BentoCompileError(f"Cannot reach the revision at {base_url} for the smoke check: {reason}",
                                    "Check the network, or pass --smoke-url to reach it another way; "
                                    "--no-smoke skips the check.") from None

    def send(payload: bytes) -> tuple[str | None, bytes]:
        try:
            return retrying(lambda: attempt(payload), lambda exc: isinstance(exc, _Warming), backoff)
        except _Warming as still:
            raise BentoCompileError(f"The revision at {base_url} was still not answering after "
                                    f"{backoff.total:.0f} s of warm-up ({still}).",
                                    "Look at the revision's logs; it may be slow to load the model. Deploy again, "
                                    "or pass --no-smoke to skip the check.") from None

    return send


def _read(response: Any, url: str) -> bytes:
    body = response.read(MAX_ANSWER + 1)
    if len(body) > MAX_ANSWER:
        raise BentoCompileError(f"{url} answered more than {MAX_ANSWER // (1024 * 1024)} MiB to the Bento's example.",
                                "That is not the Bento's answer: check that the tag URL serves this Bento.")
    return body


def run_smoke(send: Send, manifest: dict[str, Any], expected: dict[str, Any], revision: str, where: str,
              left: str, progress: Callable[[str], None] | None = None) -> SmokeResult:
    """smoke_check on the revision; a failure raises, naming what the revision answered and `left` (what
    the service routes now)."""
    if progress:
        progress(f"Smoke check: POST the Bento's example to revision {revision}")
    try:
        result = smoke_check(send, manifest, expected, who="revision")
    except BentoCompileError as exc:  # refused, unreachable, still warming up: the same state to report
        raise BentoCompileError(f"{exc.problem} {left}", exc.fix) from None
    if not result.passed:
        raise BentoCompileError(
            f"The smoke check failed on revision {revision} of {where}: {'; '.join(result.problems)}. "
            f"It answered: {shown(result.answer)}. {left}",
            "Check that the image holds this Bento (deploy by the digest `target` printed) and read the revision's "
            "logs; fix it and deploy again, or pass --no-smoke to skip the check.")
    return result


def summary(result: SmokeResult, url: str) -> dict[str, Any]:
    """The smoke part of the --json outcome: as Lambda's, plus the URL the example was sent to."""
    return {**result.summary(), "url": url}


@dataclass(frozen=True)
class SmokePlan:
    """How a deploy reaches its new revision: whether it is checked, the traffic of the first update (the new
    revision at 0 % under `candidate`, or the plan itself when nothing is checked first), the tag whose URL
    answers the check, and the notes that say why a check is skipped."""

    check: bool
    first: list[Route]
    tag: str = CANDIDATE
    notes: list[str] = field(default_factory=list)


def smoke_plan(action: str, enabled: bool, serving: list[Route] | None, routes: list[Route], service: str,
               revision: str) -> SmokePlan:
    """The plan for `action` on a service routing `serving` (None: it does not exist yet) towards `routes`."""
    if action not in ("deploy", "canary"):
        return SmokePlan(False, routes, notes=[f"no smoke check: --{action} moves traffic only between revisions "
                                               "that served or were checked before"])
    if not enabled:
        return SmokePlan(False, routes, notes=["smoke check skipped (--no-smoke): traffic moved without sending the "
                                               "example to the new revision"])
    if serving is None:  # a new service routes 100 % somewhere: the new revision, checked once it is ready
        return SmokePlan(True, routes, CURRENT)
    if any(route.revision == revision and route.percent > 0 for route in serving):
        return SmokePlan(False, routes, notes=[f"no smoke check: revision {revision} already serves"])
    return SmokePlan(True, staging_routes(action, serving, service, revision))


def tag_url(routes: list[ServedRoute], tag: str, where: str) -> str:
    """The URL the platform gave the tag, checked; an error when it gave none."""
    url = next((route.url for route in routes if route.route.tag == tag and route.url), "")
    if not url:
        raise BentoCompileError(f"{where} reports no URL for the tag {tag}, so the new revision cannot be "
                                "smoke-checked; no traffic was moved to it.",
                                "Pass --no-smoke to move traffic without the check.")
    return check_url(url, f"The {tag} URL of {where}")
