"""The deploy's small parts on their own: the smoke comparison, the alias history, backoff, the role's policy,
and the ECR login against the session's moto_server."""

from __future__ import annotations

import pytest

from bento_compile.core.errors import BentoCompileError
from bento_compile.deploy.lambda_alias import (
    AliasState,
    canary_move,
    describe,
    full_move,
    parse_history,
    promoted,
    rolled_back,
)
from bento_compile.deploy.lambda_role import policy_document, sqs_arn_from_url
from bento_compile.deploy.smoke import compare, tolerances
from bento_compile.deploy.waiting import Backoff, is_role_not_ready, retrying


def test_compare_uses_the_parity_rule_and_exact_labels():
    expected = {"label": [1, 0], "probabilities": [[0.25, 0.75], [0.9, 0.1]], "score": [[1000.0]]}
    same = {"outputs": {"label": [1, 0], "probabilities": [[0.25004, 0.74996], [0.9, 0.1]], "score": [[1000.05]]}}
    assert compare(expected, same, {"probabilities": 1e-4, "score": 1e-4}) == []  # 1000 × 1e-4 = 0.1 allowed
    drift = {"outputs": {"label": [1, 0], "probabilities": [[0.26, 0.74], [0.9, 0.1]], "score": [[1000.0]]}}
    assert compare(expected, drift, {"probabilities": 1e-4}) == [
        "output 'probabilities'[0] is 0.26, expected 0.25 (tolerance 0.0001)"]
    flipped = {"outputs": {"label": [0, 0], "probabilities": expected["probabilities"], "score": [[1000.0]]}}
    assert compare(expected, flipped, {}) == ["output 'label'[0] is 0, expected 1"]
    assert compare(expected, {"outputs": {"label": [1]}}, {})[0] == "output 'label' has shape (1,), expected (2,)"
    assert compare(expected, {"errorMessage": "boom"}, {}) == ["the answer has no 'outputs' object"]


def test_tolerances_come_from_the_parity_report():
    manifest = {"parity": {"outputs": {"probabilities": {"kind": "continuous", "tolerance": 0.001},
                                       "label": {"kind": "label", "agreement": 1.0}}}}
    assert tolerances(manifest) == {"probabilities": 0.001}


def test_alias_history_round_trips_and_stays_within_lambdas_limit():
    assert parse_history(describe(["1", "2", "3"])) == ["1", "2", "3"]
    assert parse_history("made by hand") == []
    long = [str(v) for v in range(1, 200)]
    text = describe(long)
    assert len(text) <= 256 and parse_history(text)[-1] == "199"  # the newest are kept


def test_alias_moves():
    first = full_move(None, "live", "1")
    assert (first.version, first.weights, first.history) == ("1", {}, ["1"])
    canary = canary_move(first, "2", 10)
    assert canary.routing() == {"1": 0.9, "2": 0.1} and canary.history == ["1"]
    live = promoted(canary, "f", "live")
    assert (live.version, live.weights, live.history) == ("2", {}, ["1", "2"])
    back = rolled_back(live, "f", "live")
    assert (back.version, back.history) == ("1", ["1"])
    with pytest.raises(BentoCompileError, match="nothing to roll back to"):
        rolled_back(back, "f", "live")
    with pytest.raises(BentoCompileError, match="No canary is in flight"):
        promoted(live, "f", "live")
    # an alias made before history was kept: its own version is the one to go back to
    legacy = AliasState("live", "7")
    assert full_move(legacy, "live", "8").history == ["7", "8"]


def test_backoff_grows_to_its_ceiling_and_stops_at_its_total():
    assert list(Backoff(first=1, factor=2, ceiling=4, total=12).delays()) == [1, 2, 4, 4]
    waits = []
    attempts = {"n": 0}

    def flaky():
        attempts["n"] += 1
        raise ValueError("still not")

    with pytest.raises(ValueError):
        retrying(flaky, lambda e: True, Backoff(first=1, total=3, sleep=waits.append))
    assert waits == [1, 2] and attempts["n"] == 3


def test_role_not_ready_is_recognised_by_lambdas_words():
    from botocore.exceptions import ClientError

    error = ClientError({"Error": {"Code": "InvalidParameterValueException",
                                   "Message": "The role defined for the function cannot be assumed by Lambda."}},
                        "CreateFunction")
    other = ClientError({"Error": {"Code": "InvalidParameterValueException", "Message": "Unzipped size must be "
                                   "smaller than 262144000 bytes"}}, "CreateFunction")
    assert is_role_not_ready(error) and not is_role_not_ready(other)


def test_the_role_policy_grants_the_sink_and_the_trigger_queue_only():
    s3 = policy_document("aws", "eu-west-1", "123456789012", "churn",
                         {"sink": "s3://results/churn/", "sqs_queue_arn": "arn:aws:sqs:eu-west-1:123456789012:in"})
    grants = {s["Sid"]: (s["Action"], s["Resource"]) for s in s3["Statement"]}
    assert grants["WriteResultsToSink"] == ("s3:PutObject", "arn:aws:s3:::results/churn/*")
    assert grants["ReadTriggerQueue"][1] == "arn:aws:sqs:eu-west-1:123456789012:in"
    assert grants["WriteOwnLogs"][1] == "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/churn:*"
    queue = policy_document("aws", "eu-west-1", "123456789012", "churn",
                            {"sink": "https://sqs.eu-west-1.amazonaws.com/210987654321/out"})
    assert {s["Sid"]: s["Resource"] for s in queue["Statement"]}["SendResultsToSink"] == \
        "arn:aws:sqs:eu-west-1:210987654321:out"
    assert sqs_arn_from_url("http://127.0.0.1:4566/000000000000/out", "aws", "us-east-1", "1") == \
        "arn:aws:sqs:us-east-1:1:out"


def test_ecr_login_creates_the_repository(moto_endpoint, monkeypatch):
    from bento_compile.deploy.aws import connect
    from bento_compile.deploy.lambda_image import ecr_credentials
    from tests.support.deploy_support import aws_environment, boto_client

    for key, value in aws_environment(moto_endpoint).items():
        monkeypatch.setenv(key, value)
    aws = connect()
    registry = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    user, password = ecr_credentials(aws, registry, "parts-cancer")
    assert user == "AWS" and password
    repositories = boto_client("ecr", moto_endpoint).describe_repositories(repositoryNames=["parts-cancer"])
    assert repositories["repositories"][0]["repositoryName"] == "parts-cancer"
    assert ecr_credentials(aws, registry, "parts-cancer")[0] == "AWS"  # the second time it exists: no error
    assert ecr_credentials(aws, "127.0.0.1:5000", "cancer") is None  # not ECR: the registry's own login


def test_a_bento_without_an_example_cannot_be_smoke_tested():
    from bento_compile.deploy.smoke import example_of

    with pytest.raises(BentoCompileError) as refused:
        example_of({"name": "face", "version": "1", "example": None})
    assert "face:1 recorded no example" in refused.value.problem and "--no-smoke" in refused.value.fix
    assert example_of({"example": {"inputs": [[1.0]]}}) == {"inputs": [[1.0]]}
