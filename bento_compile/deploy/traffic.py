"""Traffic between the revisions of a Cloud Run or Knative service: deploy, canary, promote, rollback.

Both platforms route by revision with named tags, so the state lives on the platform
itself and a fresh machine (a CI job) can promote or roll back what another started:

- `current`: the revision that serves (all of it, or what a canary leaves);
- `candidate`: the new revision while a canary is in flight (its share > 0), or, at 0 %,
  the one a rollback turned away from;
- `previous`: at 0 %, the revision that served before the last full switch: what
  `--rollback` goes back to.

Each tag also gives its revision a URL of its own, so the candidate can be tried before
it takes any traffic. The platform modules turn these entries into their own formats.
"""

from __future__ import annotations

from dataclasses import dataclass

from bento_compile.core.errors import BentoCompileError

CURRENT, CANDIDATE, PREVIOUS = "current", "candidate", "previous"
ACTIONS = ("deploy", "canary", "promote", "rollback")


@dataclass(frozen=True)
class Route:
    """One traffic target: a revision, its share in percent, and its tag ('' for none)."""

    revision: str
    percent: int
    tag: str = ""


@dataclass(frozen=True)
class TrafficState:
    """What the service routes now, read back from its traffic list."""

    current: str | None
    candidate: str | None = None
    canary_percent: int = 0
    previous: str | None = None

    @property
    def canary_in_flight(self) -> bool:
        return self.candidate is not None and self.canary_percent > 0


def read_state(routes: list[Route]) -> TrafficState:
    """Our tags when they are there; otherwise (a service deployed some other way) the revision with the most
    traffic is the current one."""
    by_tag = {route.tag: route for route in routes if route.tag}
    current = by_tag.get(CURRENT)
    if current is None:
        serving = [route for route in routes if route.percent > 0]
        current = max(serving, key=lambda route: route.percent) if serving else None
    candidate = by_tag.get(CANDIDATE)
    previous = by_tag.get(PREVIOUS)
    return TrafficState(current.revision if current else None,
                        candidate.revision if candidate else None,
                        candidate.percent if candidate else 0,
                        previous.revision if previous else None)


def plan_routes(action: str, state: TrafficState, service: str, revision: str | None = None,
                percent: int | None = None) -> list[Route]:
    """The traffic list after `action`; raises, changing nothing, when the action cannot apply."""
    if action == "deploy":
        assert revision is not None
        routes = [Route(revision, 100, CURRENT)]
        if state.current and state.current != revision:
            routes.append(Route(state.current, 0, PREVIOUS))
        elif state.previous and state.previous != revision:  # redeploying what serves keeps the way back
            routes.append(Route(state.previous, 0, PREVIOUS))
        return routes
    if action == "canary":
        assert revision is not None and percent is not None
        if not 1 <= percent <= 99:
            raise BentoCompileError(f"--canary {percent} is not a percentage between 1 and 99.",
                                    "Pass e.g. --canary 10 to send 10% of requests to the new revision.")
        if state.current is None:
            raise BentoCompileError(f"The service {service} serves no revision yet, so there is nothing to "
                                    "canary against.", "Deploy once without --canary.")
        if state.current == revision:
            raise BentoCompileError(f"The service {service} already serves {revision}: nothing to canary.",
                                    "Change the Bento or a setting, or deploy without --canary.")
        return [Route(state.current, 100 - percent, CURRENT), Route(revision, percent, CANDIDATE),
                *_keep_previous(state, state.current, revision)]
    if action == "promote":
        if not state.canary_in_flight or state.candidate is None:
            raise BentoCompileError(f"The service {service} has no canary in flight: nothing to promote.",
                                    "Start one with `--canary PERCENT`, or deploy without --canary.")
        routes = [Route(state.candidate, 100, CURRENT)]
        if state.current and state.current != state.candidate:
            routes.append(Route(state.current, 0, PREVIOUS))
        return routes
    if action == "rollback":
        if state.canary_in_flight and state.candidate and state.current:
            return [Route(state.current, 100, CURRENT), Route(state.candidate, 0, CANDIDATE),
                    *_keep_previous(state, state.current, state.candidate)]
        if state.previous and state.current and state.previous != state.current:
            return [Route(state.previous, 100, CURRENT), Route(state.current, 0, CANDIDATE)]
        raise BentoCompileError(f"The service {service} has no previous revision to roll back to.",
                                "Rollback returns to the revision that served before the last deploy or "
                                "promotion; deploy the Bento you want instead.")
    raise ValueError(f"unknown traffic action {action!r}")


def staging_routes(action: str, routes: list[Route], service: str, revision: str) -> list[Route]:
    """The traffic while a new revision is smoke-checked: what serves stays exactly as it is, and the new
    revision joins at 0 % under `candidate` (its own URL, no user's requests). An earlier candidate at 0 %
    (one a rollback turned away from) gives the tag up. A canary in flight is refused: its tag is what
    --promote and --rollback read, so it cannot be taken over silently."""
    flying = next((r for r in routes if r.tag == CANDIDATE and r.percent > 0), None)
    if flying is not None:
        raise BentoCompileError(f"A canary of {flying.revision} ({flying.percent}%) is in flight on {service}: a new "
                                f"revision cannot be checked under the tag {CANDIDATE} before the {action}.",
                                "Finish the canary first (--promote or --rollback), then deploy again.")
    return [*(r for r in routes if r.tag != CANDIDATE), Route(revision, 0, CANDIDATE)]


def _keep_previous(state: TrafficState, *taken: str) -> list[Route]:
    """The `previous` route as it was, so a canary (started or aborted) does not lose the way back."""
    if state.previous and state.previous not in taken:
        return [Route(state.previous, 0, PREVIOUS)]
    return []


def describe(routes: list[Route]) -> str:
    """`rev-a 90% (current), rev-b 10% (candidate)`: for the one line a deploy prints."""
    return ", ".join(f"{route.revision} {route.percent}%" + (f" ({route.tag})" if route.tag else "")
                     for route in routes)
