"""`bento-compile deploy knative`: the official kubernetes client (server-side apply) against an API double.

No Kubernetes API server can run here: the cluster is a local HTTP double (tests/support/knative_api.py)
that validates every applied Service against the real Knative Service CRD (../shared/schemas) and
answers like the API server and Knative's controller (generation bumps, a status that lags behind
until the new generation is reconciled, Ready conditions, Kubernetes Status errors). Everything
else is real: the CLI in a subprocess, the store, kubeconfig loading with a bearer token, and the smoke
check's request: the double's tag URLs point at a real Bento server (tests/deploy/conftest.py; the
smoke cases themselves are in test_service_smoke.py).
The image is given by digest, so nothing is built here (see test_service_image_push.py).
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.support.helpers import run_cli
from tests.support.knative_api import knative_api

pytestmark = pytest.mark.slow

IMAGE_A = "127.0.0.1:5000/cancer@sha256:" + "a" * 64
IMAGE_B = "127.0.0.1:5000/cancer@sha256:" + "b" * 64
KEY = ("ml", "cancer")


@pytest.fixture
def api(example_server):
    with knative_api() as double:
        double.serve_at = {IMAGE_A: example_server, IMAGE_B: example_server}
        yield double
        assert double.refused == []  # every applied Service matched the CRD


@pytest.fixture
def kube(api, tmp_path) -> dict[str, str]:
    return {"KUBECONFIG": str(api.kubeconfig(tmp_path / "kubeconfig"))}


def deploy(tag: str, *args: str, env: dict[str, str], check: bool = True):
    result = run_cli("deploy", "knative", tag, *args, env=env, check=check)
    if check:
        return json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def applies(api) -> list[dict]:
    return [r for r in api.requests if r["method"] == "PATCH"]


def test_deploy_canary_promote_rollback(stored_example, api, kube, tmp_path, example_server):
    api.reconcile_after_reads = 2  # the first reads after an apply still show the old generation's status
    first = deploy(stored_example, "--image", IMAGE_A, "--json", env=kube)
    rev_a = first["revision"]
    assert first["resource"] == "ml/cancer"  # the context's namespace
    assert first["url"] == "http://cancer.ml.example.com"
    assert first["traffic"] == [{"revision": rev_a, "percent": 100, "tag": "current", "url": example_server}]
    assert first["smoke"] == {"passed": True, "problems": [], "url": example_server}
    apply = applies(api)[0]
    assert apply["content_type"] == "application/apply-patch+yaml"
    assert apply["query"] == {"fieldManager": "bento-compile", "force": "True"}
    # the Service is the one `target knative` writes for this image, plus the traffic block
    out = tmp_path / "dist"
    run_cli("target", "knative", stored_example, "--image", IMAGE_A, "--manifest-only", "-o", str(out))
    written = yaml.safe_load((out / "knative.yaml").read_text())
    assert apply["body"]["spec"]["template"] == written["spec"]["template"]
    assert apply["body"]["spec"]["traffic"] == [{"revisionName": rev_a, "percent": 100, "tag": "current"}]
    # it waited for THIS generation to be reconciled, not an older Ready
    assert sum(1 for r in api.requests if r["method"] == "GET") >= 4

    again = deploy(stored_example, "--image", IMAGE_A, "--json", env=kube)
    assert again["unchanged"] is True and len(applies(api)) == 1

    canary = deploy(stored_example, "--image", IMAGE_B, "--canary", "25", "--json", env=kube)
    rev_b = canary["revision"]
    assert rev_b != rev_a
    assert api.traffic(*KEY) == [(rev_a, 75, "current"), (rev_b, 25, "candidate")]
    # two applies: the new revision at 0% under `candidate` (smoke-checked), then the traffic plan
    staged = applies(api)[-2]["body"]["spec"]["traffic"]
    assert staged == [{"revisionName": rev_a, "percent": 100, "tag": "current"},
                      {"revisionName": rev_b, "percent": 0, "tag": "candidate"}]
    assert api.services[KEY]["metadata"]["generation"] == 3 and canary["smoke"]["passed"] is True

    promoted = deploy(stored_example, "--promote", "--json", env=kube)
    assert promoted["revision"] == rev_b and promoted["bento_tag"] == stored_example
    assert api.traffic(*KEY) == [(rev_b, 100, "current"), (rev_a, 0, "previous")]
    template = applies(api)[-1]["body"]["spec"]["template"]
    assert template["metadata"]["name"] == rev_b  # the template is applied as it was: no new revision

    rolled = run_cli("deploy", "knative", stored_example, "--rollback", env=kube)
    assert rolled.stdout.strip().splitlines()[-1] == "http://cancer.ml.example.com"
    assert f"{rev_a} 100% (current), {rev_b} 0% (candidate)" in rolled.stderr
    assert api.traffic(*KEY) == [(rev_a, 100, "current"), (rev_b, 0, "candidate")]

    before = len(applies(api))
    assert "has no previous revision to roll back to" in deploy(stored_example, "--rollback", env=kube, check=False)
    assert "no canary in flight: nothing to promote" in deploy(stored_example, "--promote", env=kube, check=False)
    assert len(applies(api)) == before
    assert api.traffic(*KEY) == [(rev_a, 100, "current"), (rev_b, 0, "candidate")]


def test_a_revision_that_fails_is_applied_back_to_the_previous_spec(stored_example, api, kube):
    first = deploy(stored_example, "--image", IMAGE_A, "--json", env=kube)
    broken = "127.0.0.1:5000/broken@sha256:" + "c" * 64
    stderr = deploy(stored_example, "--image", broken, "--canary", "10", env=kube, check=False)
    assert "Knative did not make revision cancer-" in stderr and "RevisionFailed" in stderr
    assert f"it is back on its previous traffic ({first['revision']} 100% (current))" in stderr
    service = api.services[KEY]
    assert service["spec"]["template"]["metadata"]["name"] == first["revision"]
    assert api.traffic(*KEY) == [(first["revision"], 100, "current")]


def test_configuration_and_access_errors_change_nothing(stored_example, api, kube, tmp_path):
    stderr = deploy(stored_example, "--image", IMAGE_A, env={"KUBECONFIG": str(tmp_path / "missing")}, check=False)
    assert "No usable Kubernetes configuration" in stderr and "--context" in stderr
    stderr = deploy(stored_example, "--image", IMAGE_A, "--context", "nope", env=kube, check=False)
    assert "No usable Kubernetes configuration" in stderr and "nope" in stderr
    stale = {"KUBECONFIG": str(api.kubeconfig(tmp_path / "stale", token="expired"))}
    stderr = deploy(stored_example, "--image", IMAGE_A, env=stale, check=False)
    assert "refused the credentials" in stderr
    stderr = deploy(stored_example, "--image", IMAGE_A, "-n", "../kube-system", env=kube, check=False)
    assert "'../kube-system' is not a Kubernetes namespace name" in stderr
    assert applies(api) == []

    first = deploy(stored_example, "--image", IMAGE_A, "--json", env=kube)
    api.forbidden.add(("patch", "ml"))
    stderr = deploy(stored_example, "--image", IMAGE_B, "--canary", "10", env=kube, check=False)
    assert ("Access denied: patch (server-side apply) services.serving.knative.dev/cancer in namespace ml: "
            'services.serving.knative.dev "cancer" is forbidden') in stderr
    assert "kubectl auth can-i patch services.serving.knative.dev -n ml" in stderr
    assert api.traffic(*KEY) == [(first["revision"], 100, "current")]
    # another namespace through --namespace and another context both reach the same cluster
    other = deploy(stored_example, "--image", IMAGE_A, "--context", "other", "--json", env=kube)
    assert other["resource"] == "other/cancer"
    assert deploy(stored_example, "--image", IMAGE_A, "-n", "staging", "--json", env=kube)["resource"] == \
        "staging/cancer"


def test_a_service_made_another_way_is_adopted_only_when_asked(stored_example, api, kube):
    api.seed("ml", "cancer", {"team": "web"})
    stderr = deploy(stored_example, "--image", IMAGE_A, env=kube, check=False)
    assert "exists and was not deployed by bento-compile" in stderr and "--adopt" in stderr
    assert api.traffic(*KEY) == [("cancer-00001", 100, "")]
    adopted = deploy(stored_example, "--image", IMAGE_A, "--adopt", "--json", env=kube)
    assert api.traffic(*KEY) == [(adopted["revision"], 100, "current"), ("cancer-00001", 0, "previous")]
    assert api.services[KEY]["metadata"]["labels"]["team"] == "web"
