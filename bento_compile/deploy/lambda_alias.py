"""The alias that serves traffic, and the history that makes rollback work from any machine.

The alias's own description records the versions it has served, oldest first
(`bento-compile history=3,5,6`), so `--rollback` needs nothing kept locally: the version to
go back to is the one before the current. A canary is the alias's RoutingConfig
(`AdditionalVersionWeights`): the alias stays on the current version and routes a share
to the candidate. Every update passes the RevisionId it read, so a change made by
someone else in between fails instead of being overwritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bento_compile.core.errors import BentoCompileError
from bento_compile.deploy.aws import aws_call, error_code
from bento_compile.deploy.waiting import Backoff, lambda_call

_HISTORY = re.compile(r"bento-compile history=([0-9,]*)")
_DESCRIPTION_LIMIT = 256  # Lambda's limit on an alias description


@dataclass
class AliasState:
    """What an alias serves now. `weights` holds the canary's share (0..1) by version."""

    name: str
    version: str
    weights: dict[str, float] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    revision: str | None = None
    arn: str | None = None

    @property
    def candidate(self) -> str | None:
        return next(iter(self.weights), None)

    def routing(self) -> dict[str, float]:
        """{version: share of traffic} including the primary version."""
        shares = {self.version: round(1.0 - sum(self.weights.values()), 6)}
        shares.update(self.weights)
        return shares


def describe(history: list[str]) -> str:
    """The alias description holding as much of the history (newest kept) as fits."""
    kept = list(history)
    while kept and len(f"bento-compile history={','.join(kept)}") > _DESCRIPTION_LIMIT:
        kept.pop(0)
    return f"bento-compile history={','.join(kept)}"


def parse_history(description: str | None) -> list[str]:
    match = _HISTORY.search(description or "")
    return [v for v in match.group(1).split(",") if v] if match else []


def read_alias(lam: Any, function_name: str, alias: str) -> AliasState | None:
    try:
        with aws_call("lambda:GetAlias", f"{function_name}:{alias}"):
            data = lam.get_alias(FunctionName=function_name, Name=alias)
    except BentoCompileError as exc:
        if getattr(exc, "code", None) == "ResourceNotFoundException":
            return None
        raise
    weights = ((data.get("RoutingConfig") or {}).get("AdditionalVersionWeights")) or {}
    return AliasState(alias, data["FunctionVersion"], {str(k): float(v) for k, v in weights.items()},
                      parse_history(data.get("Description")), data.get("RevisionId"), data.get("AliasArn"))


def write_alias(lam: Any, function_name: str, current: AliasState | None, target: AliasState,
                backoff: Backoff) -> AliasState:
    """Create the alias, or move it from `current` (refusing if it changed since it was read)."""
    resource = f"{function_name}:{target.name}"
    routing = {"AdditionalVersionWeights": dict(target.weights)}
    if current is None:
        data = lambda_call("lambda:CreateAlias", resource, lam.create_alias, backoff, FunctionName=function_name,
                           Name=target.name, FunctionVersion=target.version, Description=describe(target.history),
                           **({"RoutingConfig": routing} if target.weights else {}))
    else:
        try:
            data = lambda_call("lambda:UpdateAlias", resource, lam.update_alias, backoff,
                               FunctionName=function_name, Name=target.name, FunctionVersion=target.version,
                               Description=describe(target.history), RoutingConfig=routing,
                               **({"RevisionId": current.revision} if current.revision else {}))
        except BentoCompileError as exc:
            if getattr(exc, "code", None) == "PreconditionFailedException" or error_code(exc) == \
                    "PreconditionFailedException":
                raise BentoCompileError(f"The alias {resource} was changed by someone else while deploying; "
                                        "it was left as they set it.",
                                        "Look at it (--status) and run the command again.") from None
            raise
    return AliasState(target.name, target.version, dict(target.weights), list(target.history),
                      data.get("RevisionId"), data.get("AliasArn"))


def full_move(current: AliasState | None, alias: str, version: str) -> AliasState:
    """All traffic to `version`; it joins the history."""
    history = list(current.history) if current else []
    if current and not history:
        history = [current.version]  # an alias made before we kept history: its version is the one to go back to
    if not history or history[-1] != version:
        history.append(version)
    return AliasState(alias, version, {}, history)


def canary_move(current: AliasState, version: str, percent: float) -> AliasState:
    """The alias stays on its version and routes `percent` % to `version`."""
    history = list(current.history) or [current.version]
    return AliasState(current.name, current.version, {version: round(percent / 100.0, 6)}, history)


def promoted(current: AliasState | None, function_name: str, alias: str) -> AliasState:
    if current is None:
        raise BentoCompileError(f"{function_name} has no alias {alias!r}: nothing to promote.",
                                "Deploy first: bento-compile deploy lambda TAG --function NAME --canary 10.")
    candidate = current.candidate
    if candidate is None:
        raise BentoCompileError(f"No canary is in flight on {function_name}:{alias} (it serves version "
                                f"{current.version} wholly); nothing to promote.",
                                "Start one with `deploy lambda TAG --function NAME --canary PERCENT`.")
    return full_move(current, alias, candidate)


def rolled_back(current: AliasState | None, function_name: str, alias: str) -> AliasState:
    """A canary in flight: drop it. Otherwise: back to the version served before the current one."""
    if current is None:
        raise BentoCompileError(f"{function_name} has no alias {alias!r}: nothing to roll back.",
                                "Check --function and --alias (see --status).")
    if current.weights:
        return AliasState(alias, current.version, {}, list(current.history) or [current.version])
    history = list(current.history)
    if history and history[-1] == current.version:
        history.pop()
    if not history:
        raise BentoCompileError(f"{function_name}:{alias} serves version {current.version} and no version served "
                                "before it is recorded; there is nothing to roll back to.",
                                "Deploy the Bento you want instead: bento-compile deploy lambda TAG --function NAME.")
    return AliasState(alias, history[-1], {}, history)
