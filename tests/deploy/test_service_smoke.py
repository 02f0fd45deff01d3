"""`deploy cloudrun` and `deploy knative` gate traffic on the Bento's own example (the smoke check).

The control planes are the API doubles of test_cloudrun_deploy.py / test_knative_deploy.py (no Cloud
Run or Kubernetes API server can run here); what answers the smoke request is real: the tag URL the
double reports points at a real Bento server process on 127.0.0.1 (tests/deploy/conftest.py), either
directly or through a FrontDoor that answers 503s first (warm-up) or 403 (Cloud Run's IAM front end).
"""

from __future__ import annotations

import json

import pytest

from tests.support.cloudrun_api import adc_environment, cloudrun_api
from tests.support.helpers import run_cli
from tests.support.knative_api import knative_api
from tests.support.smoke_servers import FrontDoor

pytestmark = pytest.mark.slow

IMAGE_A = "127.0.0.1:5000/cancer@sha256:" + "a" * 64
IMAGE_B = "127.0.0.1:5000/cancer@sha256:" + "b" * 64
WRONG = "127.0.0.1:5000/other@sha256:" + "d" * 64  # an image holding another Bento
NAME = "projects/acme-ml/locations/europe-west1/services/cancer"
WHERE = ("--project", "acme-ml", "--region", "europe-west1")
KEY = ("ml", "cancer")


@pytest.fixture(params=["cloudrun", "knative"])
def platform(request, example_server, other_server, tmp_path):
    """(platform, its API double, the CLI's environment), each image's tag URLs on a real server."""
    with (cloudrun_api() if request.param == "cloudrun" else knative_api()) as api:
        api.serve_at = {IMAGE_A: example_server, IMAGE_B: example_server, WRONG: other_server}
        env = (adc_environment(api, tmp_path) if request.param == "cloudrun"
               else {"KUBECONFIG": str(api.kubeconfig(tmp_path / "kubeconfig"))})
        yield request.param, api, env
        assert api.refused == []  # every body the clients sent matched the real schema


def deploy(platform: str, tag: str, *args: str, env: dict[str, str], check: bool = True):
    where = WHERE if platform == "cloudrun" else ()
    result = run_cli("deploy", platform, tag, *args, *where, env=env, check=check)
    if check:
        return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return None, " ".join(result.stderr.split())  # rich wraps long lines: compare the words


def traffic(platform: str, api) -> list[tuple[str, int, str]]:
    return api.traffic(NAME) if platform == "cloudrun" else api.traffic(*KEY)


def test_a_revision_of_another_bento_takes_no_traffic(stored_example, platform):
    name, api, env = platform
    first, _ = deploy(name, stored_example, "--image", IMAGE_A, "--json", env=env)
    _, stderr = deploy(name, stored_example, "--image", WRONG, "--canary", "10", env=env, check=False)
    assert "The smoke check failed on revision cancer-" in stderr
    assert "output 'label'[0] is" in stderr and "expected" in stderr  # the mismatch, named
    assert "It answered: {" in stderr and "--no-smoke" in stderr
    assert "No traffic moved:" in stderr and "stays at 0% under the tag candidate" in stderr
    served = traffic(name, api)
    assert served[0] == (first["revision"], 100, "current")
    assert [(percent, tag) for _, percent, tag in served[1:]] == [(0, "candidate")]  # left there, at 0%

    # a straight deploy to 100% is gated the same way
    _, stderr = deploy(name, stored_example, "--image", WRONG, env=env, check=False)
    assert "The smoke check failed" in stderr and traffic(name, api)[0] == (first["revision"], 100, "current")

    # the right Bento then passes and moves traffic; the failed candidate gives up its tag
    canary, progress = deploy(name, stored_example, "--image", IMAGE_B, "--canary", "10", "--json", env=env)
    assert canary["smoke"]["passed"] is True and "Smoke check passed" in progress
    assert traffic(name, api) == [(first["revision"], 90, "current"), (canary["revision"], 10, "candidate")]


def test_a_revision_still_warming_up_is_retried_then_checked(stored_example, platform, example_server):
    name, api, env = platform
    first, _ = deploy(name, stored_example, "--image", IMAGE_A, "--json", env=env)
    with FrontDoor(example_server, warming=3) as door:
        api.serve_at[IMAGE_B] = door.url
        canary, _ = deploy(name, stored_example, "--image", IMAGE_B, "--canary", "20", "--json", env=env)
    assert len(door.seen) == 4  # three 503s, then the answer
    assert canary["smoke"] == {"passed": True, "problems": [], "url": door.url}
    assert traffic(name, api) == [(first["revision"], 80, "current"), (canary["revision"], 20, "candidate")]
    if name == "cloudrun":  # an ID token minted for the service's URL, from the same service account
        token = door.seen[-1]["Authorization"].removeprefix("Bearer ")
        assert api.id_tokens[token] == api.services[NAME]["uri"]


def test_no_smoke_skips_the_check_and_says_so(stored_example, platform):
    name, api, env = platform
    deploy(name, stored_example, "--image", IMAGE_A, "--json", env=env)
    skipped, _ = deploy(name, stored_example, "--image", WRONG, "--no-smoke", "--json", env=env)
    assert skipped["smoke"] is None and "--no-smoke" in skipped["notes"][0]
    assert traffic(name, api)[0] == (skipped["revision"], 100, "current")
    rolled, _ = deploy(name, stored_example, "--rollback", "--json", env=env)
    assert rolled["smoke"] is None and "no smoke check: --rollback" in rolled["notes"][0]


@pytest.mark.parametrize("platform", ["cloudrun"], indirect=True)
def test_cloud_run_refusing_the_caller_names_the_invoker_role(stored_example, platform, example_server):
    _, run_api, gcp = platform
    first, _ = deploy("cloudrun", stored_example, "--image", IMAGE_A, "--json", env=gcp)
    with FrontDoor(example_server, status=403) as door:
        run_api.serve_at[IMAGE_B] = door.url
        _, stderr = deploy("cloudrun", stored_example, "--image", IMAGE_B, "--canary", "10", env=gcp, check=False)
    assert len(door.seen) == 1 and door.seen[0]["Authorization"].startswith("Bearer ")
    assert "refused the smoke request (HTTP 403)" in stderr and "does not have permission" in stderr
    assert "roles/run.invoker" in stderr and "add-iam-policy-binding cancer" in stderr and "--no-smoke" in stderr
    assert run_api.traffic(NAME)[0] == (first["revision"], 100, "current")


@pytest.mark.parametrize("platform", ["knative"], indirect=True)
def test_knative_smoke_url_reaches_a_cluster_local_revision(stored_example, platform, example_server):
    _, kn_api, kube = platform
    with FrontDoor(example_server) as door:  # a port-forward, as far as the deploy can tell
        first, _ = deploy("knative", stored_example, "--image", IMAGE_A, "--smoke-url", door.url, "--json", env=kube)
        assert first["smoke"]["url"] == door.url and len(door.seen) == 1
        # the tag URL Knative gives is cluster-local: not reachable from here, and nothing moves
        kn_api.serve_at[IMAGE_B] = "http://candidate-cancer.ml.svc.cluster.local"
        _, stderr = deploy("knative", stored_example, "--image", IMAGE_B, "--canary", "10", env=kube, check=False)
        assert "Cannot reach the revision at http://candidate-cancer.ml.svc.cluster.local" in stderr
        assert "--smoke-url" in stderr and "No traffic moved" in stderr
        assert kn_api.traffic(*KEY)[0] == (first["revision"], 100, "current")
        canary, _ = deploy("knative", stored_example, "--image", IMAGE_B, "--canary", "10", "--smoke-url", door.url,
                           "--json", env=kube)
    assert canary["smoke"]["passed"] is True and len(door.seen) == 2
    assert kn_api.traffic(*KEY) == [(first["revision"], 90, "current"), (canary["revision"], 10, "candidate")]
    _, stderr = deploy("knative", stored_example, "--image", IMAGE_B, "--smoke-url", "file:///etc/passwd", env=kube,
                       check=False)
    assert "--smoke-url 'file:///etc/passwd' is not an http(s) URL" in stderr
