"""The traffic plan Cloud Run and Knative deploys share: deploy, canary, promote, rollback by revision tags."""

from __future__ import annotations

import pytest

from bento_compile.core.errors import BentoCompileError
from bento_compile.deploy.traffic import Route, TrafficState, plan_routes, read_state


def test_a_canary_walks_to_promotion_and_rollback_goes_back_to_what_served_before():
    first = plan_routes("deploy", TrafficState(None), "svc", "svc-a")
    assert first == [Route("svc-a", 100, "current")]
    canary = plan_routes("canary", read_state(first), "svc", "svc-b", 10)
    assert canary == [Route("svc-a", 90, "current"), Route("svc-b", 10, "candidate")]
    assert sum(r.percent for r in canary) == 100
    promoted = plan_routes("promote", read_state(canary), "svc")
    assert promoted == [Route("svc-b", 100, "current"), Route("svc-a", 0, "previous")]
    rolled = plan_routes("rollback", read_state(promoted), "svc")
    assert rolled == [Route("svc-a", 100, "current"), Route("svc-b", 0, "candidate")]


def test_rollback_during_a_canary_ends_it_and_keeps_the_way_back():
    state = read_state([Route("svc-b", 80, "current"), Route("svc-c", 20, "candidate"), Route("svc-a", 0, "previous")])
    assert state.canary_in_flight and state.canary_percent == 20
    assert plan_routes("rollback", state, "svc") == [
        Route("svc-b", 100, "current"), Route("svc-c", 0, "candidate"), Route("svc-a", 0, "previous")]


def test_a_service_deployed_another_way_counts_its_busiest_revision_as_current():
    state = read_state([Route("other-1", 30), Route("other-2", 70)])
    assert state.current == "other-2" and state.previous is None
    assert plan_routes("deploy", state, "svc", "svc-a") == [Route("svc-a", 100, "current"),
                                                            Route("other-2", 0, "previous")]


@pytest.mark.parametrize(("action", "state", "revision", "percent", "message"), [
    ("promote", TrafficState("svc-a"), None, None, "no canary in flight"),
    ("promote", TrafficState("svc-a", "svc-b", 0), None, None, "no canary in flight"),  # rolled back already
    ("rollback", TrafficState("svc-a"), None, None, "no previous revision"),
    ("canary", TrafficState(None), "svc-b", 10, "serves no revision yet"),
    ("canary", TrafficState("svc-b"), "svc-b", 10, "already serves svc-b"),
    ("canary", TrafficState("svc-a"), "svc-b", 100, "between 1 and 99"),
])
def test_actions_that_cannot_apply_are_refused_with_what_to_do(action, state, revision, percent, message):
    with pytest.raises(BentoCompileError, match=message) as info:
        plan_routes(action, state, "svc", revision, percent)
    assert info.value.fix


def test_a_new_revision_is_staged_at_zero_percent_and_never_over_a_canary_in_flight():
    from bento_compile.deploy.traffic import staging_routes

    serving = [Route("svc-a", 100, "current"), Route("svc-x", 0, "candidate"), Route("svc-p", 0, "previous")]
    # what serves stays exactly as it is; a candidate a rollback turned away from gives up its tag
    assert staging_routes("canary", serving, "svc", "svc-b") == [
        Route("svc-a", 100, "current"), Route("svc-p", 0, "previous"), Route("svc-b", 0, "candidate")]
    flying = [Route("svc-a", 90, "current"), Route("svc-x", 10, "candidate")]
    with pytest.raises(BentoCompileError, match=r"canary of svc-x \(10%\) is in flight") as info:
        staging_routes("deploy", flying, "svc", "svc-b")
    assert "--promote or --rollback" in info.value.fix
