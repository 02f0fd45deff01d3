"""Waiting on Lambda between calls, and retrying the faults that clear by themselves.

Lambda takes one change to a function at a time: while an update is `InProgress`, the
next one fails with ResourceConflictException. So every change waits for
`LastUpdateStatus` to settle (as SAM sync does with the `function_updated` waiter), and a
conflict that still happens (someone else's change) is retried with backoff. A new IAM
role takes seconds to become assumable by Lambda; creating the function is retried
while Lambda says it cannot assume the role (as Chalice does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bento_compile.core.errors import BentoCompileError
from bento_compile.deploy.aws import AwsCallError, aws_call, error_code, error_message

T = TypeVar("T")


@dataclass
class Backoff:
    """Exponential backoff: first delay, growth factor, ceiling per wait, and the total time allowed."""

    first: float = 1.0
    factor: float = 2.0
    ceiling: float = 8.0
    total: float = 120.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delays(self):
        """The waits between attempts, until their sum would pass `total`."""
        spent, delay = 0.0, self.first
        while spent + delay <= self.total:
            yield delay
            spent += delay
            delay = min(delay * self.factor, self.ceiling)


def retrying(function: Callable[[], T], should_retry: Callable[[BaseException], bool], backoff: Backoff,
             on_retry: Callable[[BaseException, float], None] | None = None) -> T:
    """Call `function`; while it raises what `should_retry` accepts, wait and call again. The last error
    escapes once the backoff's time is spent."""
    delays = backoff.delays()
    while True:
        try:
            return function()
        except Exception as exc:
            if not should_retry(exc):
                raise
            delay = next(delays, None)
            if delay is None:
                raise
            if on_retry:
                on_retry(exc, delay)
            backoff.sleep(delay)


def is_conflict(exc: BaseException) -> bool:
    """Lambda is busy with another change to this function (or ours before it settled)."""
    return error_code(exc) == "ResourceConflictException"


def is_role_not_ready(exc: BaseException) -> bool:
    """A new role that IAM has not yet made assumable by Lambda (it says so in an InvalidParameterValue)."""
    message = error_message(exc).lower()
    return error_code(exc) == "InvalidParameterValueException" and "role" in message and (
        "assume" in message or "cannot be" in message)


def lambda_call(action: str, resource: str, function: Callable[..., Any], backoff: Backoff, **kwargs: Any) -> Any:
    """One Lambda change, retried while it conflicts with an update in flight; errors named by action."""
    def attempt() -> Any:
        return function(**kwargs)

    with aws_call(action, resource):
        return retrying(attempt, is_conflict, backoff)


def wait_until_settled(lam: Any, function_name: str, backoff: Backoff, qualifier: str | None = None) -> dict:
    """Poll the function's configuration until State is not Pending and LastUpdateStatus is not InProgress;
    a Failed state or update is an error that says Lambda's reason."""
    delays = backoff.delays()
    where = f"{function_name}:{qualifier}" if qualifier else function_name
    while True:
        kwargs = {"FunctionName": function_name, **({"Qualifier": qualifier} if qualifier else {})}
        with aws_call("lambda:GetFunctionConfiguration", where):
            config = lam.get_function_configuration(**kwargs)
        state = config.get("State") or "Active"
        update = config.get("LastUpdateStatus") or "Successful"
        if state == "Failed" or update == "Failed":
            reason = config.get("LastUpdateStatusReason") or config.get("StateReason") or "no reason given"
            raise BentoCompileError(f"Lambda could not apply the change to {where}: {reason}",
                                    "Fix what the reason names (role, package, settings) and deploy again; "
                                    "the alias was not moved.")
        if state != "Pending" and update != "InProgress":
            return config
        delay = next(delays, None)
        if delay is None:
            raise AwsCallError(f"{where} is still {state}/{update} after {backoff.total:.0f} s.",
                               "Wait for the update to finish (aws lambda get-function-configuration), then "
                               "deploy again.", "Timeout", "lambda:GetFunctionConfiguration")
        backoff.sleep(delay)
