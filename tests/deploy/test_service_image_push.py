"""`deploy knative|cloudrun --image REPO`: the image is built and pushed as `target … --push` does, and the
service pins exactly the digest the registry holds.

Real parts: the daemonless OCI builder, a `docker-registry` on 127.0.0.1, `skopeo inspect` reading the
pushed manifest back. The platforms are the API doubles of the other deploy tests (no Knative or Cloud
Run API server can run here; see tests/support/knative_api.py and cloudrun_api.py).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support import container_infra as infra
from tests.support.cloudrun_api import adc_environment, cloudrun_api
from tests.support.helpers import run_cli
from tests.support.knative_api import knative_api

pytestmark = [pytest.mark.slow, pytest.mark.containers]

if infra.missing("skopeo"):
    pytest.skip("needs skopeo (apt-get install skopeo)", allow_module_level=True)


def registry_digest(reference: str) -> str:
    result = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{reference}"],
                            capture_output=True, text=True, check=True, timeout=120)
    return json.loads(result.stdout)["Digest"]


def test_deployed_services_pin_the_digest_that_was_pushed(stored_example, container_base_layout, local_registry,
                                                          tmp_path):
    version = stored_example.split(":")[1]
    repo = f"{local_registry}/cancer"
    # --no-smoke: this is about the image; no server runs the pushed image here (the smoke check of a
    # revision that really answers is test_service_smoke.py's)
    build = ("--image", repo, "--builder", "oci", "--base-image", container_base_layout)
    with knative_api() as kube:
        env = {"KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig"))}
        result = run_cli("deploy", "knative", stored_example, *build, "--no-smoke", "-o", str(tmp_path / "kn"),
                         "--json", env=env)
        deployed = json.loads(result.stdout.strip().splitlines()[-1])
        assert kube.refused == []
    digest = registry_digest(f"{repo}:{version}")
    assert deployed["image"] == f"{repo}@{digest}"
    applied = kube.services[("ml", "cancer")]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert applied == f"{repo}@{digest}"
    # the same bytes `target knative --push` builds and pushes
    target = tmp_path / "target"
    run_cli("target", "knative", stored_example, *build, "--push", "-o", str(target))
    assert json.loads((target / "image" / "image.json").read_text())["digest"] == digest

    with cloudrun_api() as api:
        env = adc_environment(api, tmp_path)
        result = run_cli("deploy", "cloudrun", stored_example, *build, "--no-smoke", "--project", "acme-ml",
                         "--region", "europe-west1", "-o", str(tmp_path / "cr"), "--json", env=env)
        assert api.refused == []
    assert json.loads(result.stdout.strip().splitlines()[-1])["image"] == f"{repo}@{digest}"
    template = api.services["projects/acme-ml/locations/europe-west1/services/cancer"]["template"]
    assert template["containers"][0]["image"] == f"{repo}@{digest}"
