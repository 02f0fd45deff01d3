"""Checking Kubernetes YAML against the real Knative Service CRD (../shared/schemas), strictly.

The CRD leaves an object open (`metadata` at the top is Kubernetes ObjectMeta), so jsonschema alone
accepts any key there: the walker names every key the schema does not declare.
"""

from __future__ import annotations

import jsonschema
import yaml

from tests.support.helpers import SHARED

CRD = SHARED / "schemas" / "knative-serving-service-crd.yaml"
OBJECT_META = {"name", "namespace", "labels", "annotations", "generateName", "finalizers", "ownerReferences"}


def load_crd_schema() -> dict:
    document = yaml.safe_load(CRD.read_text())
    return next(v for v in document["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def undeclared_fields(value, schema: dict, path: str = "") -> list[str]:
    """Every key in `value` the schema does not declare (x-kubernetes-preserve-unknown-fields does not excuse it)."""
    problems = []
    if isinstance(value, dict):
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if props is not None and key in props:
                problems += undeclared_fields(item, props[key], where)
            elif isinstance(additional, dict):
                problems += undeclared_fields(item, additional, where)
            elif path == "metadata" and props is None and key in OBJECT_META:
                continue
            else:
                problems.append(where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problems += undeclared_fields(item, schema.get("items", {}), f"{path}[{index}]")
    return problems


def assert_valid(document: dict, schema: dict) -> None:
    jsonschema.validate(document, schema)  # types, enums, required
    assert undeclared_fields(document, schema) == []
    assert document["apiVersion"] == "serving.knative.dev/v1" and document["kind"] == "Service"
