"""The API doubles the Cloud Run and Knative deploy tests run against are strict: what the real schemas refuse,
they refuse (otherwise the deploy tests would prove nothing about the bodies the clients send)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.support.cloudrun_api import discovery_document, request_schema
from tests.support.knative_api import knative_api


@pytest.fixture(scope="module")
def service_schema() -> jsonschema.Draft202012Validator:
    schema = request_schema(discovery_document(), "GoogleCloudRunV2Service")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_cloud_run_schema_is_the_discovery_documents_and_strict(service_schema):
    good = {"template": {"revision": "svc-1", "containers": [{"image": "x", "ports": [{"containerPort": 8080}]}],
                         "timeout": "60s", "executionEnvironment": 2},
            "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": "svc-1", "percent": 100}]}
    service_schema.validate(good)
    for bad in ({**good, "spec": {}},  # a Knative-style field: not in the v2 API
                {**good, "uri": "https://svc.a.run.app"},  # output only
                {**good, "traffic": [{"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_NEWEST", "percent": 100}]},
                {**good, "template": {**good["template"], "timeout": 60}},  # a Duration is a string
                {**good, "template": {**good["template"], "containers": [{"image": "x", "port": 8080}]}}):
        with pytest.raises(jsonschema.ValidationError):
            service_schema.validate(bad)


def test_the_knative_double_refuses_what_the_crd_does_not_declare():
    import urllib.error
    import urllib.request

    with knative_api() as api:
        body = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                "metadata": {"name": "svc", "namespace": "ml"},
                "spec": {"template": {"metadata": {"name": "svc-1"},
                                      "spec": {"containers": [{"image": "x", "gpu": 1}]}}}}
        request = urllib.request.Request(
            f"{api.url}/apis/serving.knative.dev/v1/namespaces/ml/services/svc?fieldManager=t", method="PATCH",
            data=json.dumps(body).encode(), headers={"Authorization": f"Bearer {api.token}",
                                                      "Content-Type": "application/apply-patch+yaml"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 422
        assert json.loads(info.value.read())["reason"] == "Invalid"
        assert any("gpu" in problem for problem in api.refused)
        assert api.services == {}
