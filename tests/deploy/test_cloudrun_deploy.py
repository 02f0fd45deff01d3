"""`bento-compile deploy cloudrun`: the official client (google-cloud-run run_v2, REST) against an API double.

There is no Cloud Run emulator: the API is a local HTTP double (tests/support/cloudrun_api.py) that
validates every request body against the real Cloud Run v2 discovery document (`run.v2.json` from
google-api-python-client) and answers like the API (long-running operations, generations, traffic
statuses, Google's error bodies). Everything else is real: the CLI in a subprocess, the store, the
google-auth credentials chain (a service account key whose signed tokens the double checks), and the
smoke check's request: the double's tag URLs point at a real Bento server (tests/deploy/conftest.py;
the smoke cases themselves are in test_service_smoke.py).
The image is given by digest, so nothing is built here (the build-and-push path is in
test_service_image_push.py).
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.support.cloudrun_api import adc_environment, cloudrun_api, no_credentials_environment
from tests.support.helpers import run_cli

pytestmark = pytest.mark.slow

IMAGE_A = "127.0.0.1:5000/cancer@sha256:" + "a" * 64
IMAGE_B = "127.0.0.1:5000/cancer@sha256:" + "b" * 64
NAME = "projects/acme-ml/locations/europe-west1/services/cancer"
WHERE = ("--project", "acme-ml", "--region", "europe-west1")


@pytest.fixture
def api(example_server):
    with cloudrun_api() as double:
        double.serve_at = {IMAGE_A: example_server, IMAGE_B: example_server}
        yield double
        assert double.refused == []  # every request body the client sent matched the discovery schema


@pytest.fixture
def gcp(api, tmp_path) -> dict[str, str]:
    return adc_environment(api, tmp_path)


def deploy(tag: str, *args: str, env: dict[str, str], check: bool = True):
    result = run_cli("deploy", "cloudrun", tag, *args, env=env, check=check)
    if check:
        return json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def patches(api) -> int:
    return sum(1 for r in api.requests if r["method"] == "PATCH")


def test_deploy_canary_promote_rollback(stored_example, api, gcp, tmp_path, example_server):
    first = deploy(stored_example, "--image", IMAGE_A, *WHERE, "--json", env=gcp)
    version = stored_example.split(":")[1]
    rev_a = first["revision"]
    assert rev_a.startswith(f"cancer-{version[:8]}-") and first["version"] == rev_a
    assert first["url"] == api.services[NAME]["uri"] and first["url"].startswith("https://cancer-")
    assert first["traffic"] == [{"revision": rev_a, "percent": 100, "tag": "current", "url": example_server}]
    assert first["smoke"] == {"passed": True, "problems": [], "url": example_server}  # checked once created
    assert first["bento_tag"] == stored_example and first["image"] == IMAGE_A and first["unchanged"] is False
    # created through UpdateService with allow_missing, waited on through the operation
    update = next(r for r in api.requests if r["method"] == "PATCH")
    assert update["query"]["allowMissing"] == "true" and "updateMask" not in update["query"]
    assert any("/operations/" in r["path"] for r in api.requests)
    template = api.services[NAME]["template"]
    assert template["revision"] == rev_a and template["containers"][0]["image"] == IMAGE_A
    assert template["containers"][0]["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert api.services[NAME]["labels"]["managed-by"] == "bento-compile"
    # the same revision name `target cloudrun` writes into its YAML for the same image
    out = tmp_path / "dist"
    run_cli("target", "cloudrun", stored_example, "--image", IMAGE_A, "--manifest-only", "-o", str(out))
    assert yaml.safe_load((out / "service.yaml").read_text())["spec"]["template"]["metadata"]["name"] == rev_a

    again = deploy(stored_example, "--image", IMAGE_A, *WHERE, "--json", env=gcp)
    assert again["unchanged"] is True and again["revision"] == rev_a and patches(api) == 1  # nothing sent

    canary = deploy(stored_example, "--image", IMAGE_B, *WHERE, "--canary", "10", "--json", env=gcp)
    rev_b = canary["revision"]
    assert rev_b != rev_a
    assert api.traffic(NAME) == [(rev_a, 90, "current"), (rev_b, 10, "candidate")]
    assert canary["traffic"][1]["url"] == example_server
    # two updates: the new revision at 0% under `candidate` (smoke-checked), then the traffic alone
    staged, moved = [r for r in api.requests if r["method"] == "PATCH"][-2:]
    assert staged["query"]["updateMask"] == "template,traffic,labels,annotations,ingress"
    assert [(t["revision"], t.get("percent", 0), t["tag"]) for t in staged["body"]["traffic"]] == [
        (rev_a, 100, "current"), (rev_b, 0, "candidate")]
    assert moved["query"]["updateMask"] == "traffic" and canary["smoke"]["passed"] is True

    promoted = deploy(stored_example, *WHERE, "--promote", "--json", env=gcp)
    assert promoted["revision"] == rev_b and promoted["smoke"] is None
    assert promoted["notes"] == ["no smoke check: --promote moves traffic only between revisions that served or "
                                 "were checked before"]
    assert api.traffic(NAME) == [(rev_b, 100, "current"), (rev_a, 0, "previous")]
    assert api.requests[-2]["query"]["updateMask"] == "traffic"  # only traffic moves; no new revision
    assert set(api.revisions[NAME]) == {rev_a, rev_b}

    rolled = run_cli("deploy", "cloudrun", stored_example, *WHERE, "--rollback", env=gcp)
    assert rolled.stdout.strip().splitlines()[-1] == first["url"]  # without --json: the URL, for scripts
    assert f"{rev_a} 100% (current), {rev_b} 0% (candidate)" in rolled.stderr
    assert api.traffic(NAME) == [(rev_a, 100, "current"), (rev_b, 0, "candidate")]

    # nothing more to undo, and no canary to promote: one line each, and the traffic as it was
    before = patches(api)
    assert "has no previous revision to roll back to" in deploy(stored_example, *WHERE, "--rollback", env=gcp,
                                                                 check=False)
    assert "no canary in flight: nothing to promote" in deploy(stored_example, *WHERE, "--promote", env=gcp,
                                                                check=False)
    assert patches(api) == before
    assert api.traffic(NAME) == [(rev_a, 100, "current"), (rev_b, 0, "candidate")]


def test_a_revision_that_fails_leaves_the_traffic_where_it_was(stored_example, api, gcp):
    first = deploy(stored_example, "--image", IMAGE_A, *WHERE, "--json", env=gcp)
    broken = "127.0.0.1:5000/broken@sha256:" + "c" * 64
    stderr = deploy(stored_example, "--image", broken, *WHERE, env=gcp, check=False)
    assert "Cloud Run did not make revision cancer-" in stderr and "failed to start" in stderr
    assert f"keeps the traffic on what served before ({first['revision']} 100% (current))" in stderr
    assert api.traffic(NAME) == [(first["revision"], 100, "current")]


def test_credentials_project_region_and_access_errors_change_nothing(stored_example, api, gcp, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    stderr = deploy(stored_example, "--image", IMAGE_A, *WHERE, env={**no_credentials_environment(bare),
                                                                   "BENTO_COMPILE_CLOUDRUN_ENDPOINT": api.url},
                    check=False)
    assert "No Google Cloud credentials found" in stderr and "gcloud auth application-default login" in stderr
    stderr = deploy(stored_example, "--image", IMAGE_A, "--region", "europe-west1", env=gcp, check=False)
    assert "No Google Cloud project given" in stderr and "--project" in stderr
    stderr = deploy(stored_example, "--image", IMAGE_A, "--project", "acme-ml", env=gcp, check=False)
    assert "No Cloud Run region given" in stderr
    stderr = deploy(stored_example, "--image", IMAGE_A, "--project", "acme/../other", "--region", "europe-west1",
                    env=gcp, check=False)
    assert "'acme/../other' is not a Google Cloud project ID" in stderr
    assert api.requests == []  # refused before any call

    first = deploy(stored_example, "--image", IMAGE_A, *WHERE, "--json", env=gcp)
    api.denied.add("run.services.update")
    stderr = deploy(stored_example, "--image", IMAGE_B, *WHERE, "--canary", "20", env=gcp, check=False)
    assert f"Access denied: run.services.update on {NAME}: Permission 'run.services.update' denied" in stderr
    assert "roles/run.developer" in stderr
    assert api.traffic(NAME) == [(first["revision"], 100, "current")]
    stderr = deploy(stored_example, "--image", IMAGE_B, *WHERE, "--canary", "20", "--promote", env=gcp, check=False)
    assert "--canary and --promote cannot be combined" in stderr


def test_a_service_made_another_way_is_adopted_only_when_asked(stored_example, api, gcp):
    api.seed(NAME, {"team": "web"})
    stderr = deploy(stored_example, "--image", IMAGE_A, *WHERE, env=gcp, check=False)
    assert "exists and was not deployed by bento-compile" in stderr and "--adopt" in stderr
    assert api.traffic(NAME) == [("cancer-00001-abc", 100, "")]
    adopted = deploy(stored_example, "--image", IMAGE_A, *WHERE, "--adopt", "--json", env=gcp)
    assert api.traffic(NAME) == [(adopted["revision"], 100, "current"), ("cancer-00001-abc", 0, "previous")]
    assert api.services[NAME]["labels"] == {"team": "web", "managed-by": "bento-compile",
                                            "bento-version": stored_example.split(":")[1]}
