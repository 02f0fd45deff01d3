"""Knative and Cloud Run manifests, validated against the real Knative Service CRD schema, strictly.

Strict means: every field we emit must be DECLARED in the CRD's OpenAPI
schema (the walker below), on top of jsonschema's type/enum checks. Where the
CRD leaves an object open (`metadata` at the top is Kubernetes ObjectMeta,
which the CRD does not spell out), the walker checks against ObjectMeta's
fields instead of accepting anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bento_compile.core.config import CloudRunTarget, KnativeTarget, load_config
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import read_manifest
from bento_compile.targets.cloudrun import cloudrun_manifests
from bento_compile.targets.knative import knative_manifests
from tests.support.helpers import run_cli
from tests.support.knative_schema import assert_valid, undeclared_fields

IMAGE = "127.0.0.1:5000/cancer@sha256:" + "a" * 64


def test_walker_catches_a_field_the_crd_does_not_declare(crd_schema):
    document = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "x", "nme": "y"},
                "spec": {"template": {"spec": {"containers": [{"image": "i", "readinessProbe": {"httpGet": {
                    "path": "/readyz", "prot": 1}}}], "containerConcurency": 3}}}}
    assert sorted(undeclared_fields(document, crd_schema)) == [
        "metadata.nme", "spec.template.spec.containerConcurency",
        "spec.template.spec.containers[0].readinessProbe.httpGet.prot"]


def test_knative_service_is_valid_and_carries_the_settings(built_example, crd_schema, tmp_path):
    manifest = read_manifest(built_example)
    settings = KnativeTarget(container_concurrency=8, min_scale=1, max_scale=5, namespace="ml")
    result = knative_manifests(manifest, IMAGE, settings, None, None, tmp_path)
    service = result.service
    assert_valid(service, crd_schema)
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/min-scale"] == "1"
    assert annotations["autoscaling.knative.dev/max-scale"] == "5"
    assert annotations["autoscaling.knative.dev/target"] == "5"  # 70% of 8
    spec = template["spec"]
    assert spec["containerConcurrency"] == 8
    container = spec["containers"][0]
    assert container["image"] == IMAGE  # by digest
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"name": "BENTO_COMPILE_MAX_CONCURRENCY", "value": "8"} in container["env"]
    assert {"name": "BENTO_COMPILE_WORKERS", "value": "1"} in container["env"]  # cpu: "1"
    assert not any(e["name"] == "PORT" for e in container["env"])
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    assert template["metadata"]["name"].startswith(f"cancer-{manifest.version[:8]}-")
    assert service["metadata"]["namespace"] == "ml"
    assert "traffic" not in service["spec"]
    # same inputs, same revision name; a changed setting, a new one (Knative refuses a changed template otherwise)
    again = knative_manifests(manifest, IMAGE, settings, None, None, tmp_path)
    assert again.revision == result.revision
    other = knative_manifests(manifest, IMAGE, KnativeTarget(container_concurrency=8, min_scale=2), None, None,
                              tmp_path)
    assert other.revision != result.revision


def test_knative_canary_splits_traffic_and_writes_promote_and_rollback(built_example, crd_schema, tmp_path):
    manifest = read_manifest(built_example)
    result = knative_manifests(manifest, IMAGE, KnativeTarget(), 10, "cancer-old-00000", tmp_path)
    for document in (result.service, result.promote, result.rollback):
        assert_valid(document, crd_schema)
    assert result.service["spec"]["traffic"] == [
        {"revisionName": result.revision, "percent": 10, "tag": "candidate"},
        {"revisionName": "cancer-old-00000", "percent": 90, "tag": "current"}]
    assert result.promote["spec"]["traffic"] == [{"revisionName": result.revision, "percent": 100, "tag": "current"}]
    assert result.rollback["spec"]["traffic"][0] == {"revisionName": "cancer-old-00000", "percent": 100,
                                                     "tag": "current"}
    assert "knative-promote.yaml" in result.commands["promote"]
    assert "--traffic cancer-old-00000=100" in result.commands["rollback"]
    with pytest.raises(BentoCompileError, match="needs the revision"):
        knative_manifests(manifest, IMAGE, KnativeTarget(), 10, None, tmp_path)


def test_cloudrun_service_is_valid_with_its_annotations(built_example, crd_schema, tmp_path):
    manifest = read_manifest(built_example)
    settings = CloudRunTarget(min_instances=1, max_instances=3, region="europe-west1", cpu="2", memory="2Gi")
    result = cloudrun_manifests(manifest, IMAGE, settings, 25, "cancer-prev-11111", tmp_path)
    for document in (result.service, result.promote, result.rollback):
        assert_valid(document, crd_schema)
    annotations = result.service["spec"]["template"]["metadata"]["annotations"]
    assert annotations["run.googleapis.com/startup-cpu-boost"] == "true"
    assert annotations["run.googleapis.com/execution-environment"] == "gen2"
    assert annotations["autoscaling.knative.dev/minScale"] == "1"
    assert annotations["autoscaling.knative.dev/maxScale"] == "3"
    container = result.service["spec"]["template"]["spec"]["containers"][0]
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert result.commands["promote"] == (f"gcloud run services update-traffic cancer --region europe-west1 "
                                          f"--to-revisions {result.revision}=100")


def test_bad_settings_are_clear_errors(built_example, tmp_path):
    manifest = read_manifest(built_example)
    with pytest.raises(BentoCompileError, match="min_scale"):
        knative_manifests(manifest, IMAGE, KnativeTarget(min_scale=5, max_scale=2), None, None, tmp_path)
    with pytest.raises(BentoCompileError, match="PORT"):
        knative_manifests(manifest, IMAGE, KnativeTarget(env={"PORT": "1"}), None, None, tmp_path)
    config = tmp_path / "bento.yaml"
    config.write_text("targets:\n  knative:\n    min_scal: 1\n")
    with pytest.raises(BentoCompileError, match=r"targets\.knative\.min_scal"):
        load_config(config)


def store_bento(bento: Path, tmp_path: Path) -> None:
    """Put the session's Bento into this test's (isolated) store, as `build` would."""
    import shutil

    from bento_compile.core.store import BentoStore

    manifest = read_manifest(bento)
    staged = tmp_path / "staged"
    shutil.copytree(bento, staged)
    BentoStore().commit(staged, manifest.name, manifest.version)


def test_manifest_only_cli_uses_the_digest_given(built_example, crd_schema, tmp_path):
    store_bento(built_example, tmp_path)
    out = tmp_path / "dist"
    result = run_cli("target", "knative", "cancer:latest", "--image", IMAGE, "--manifest-only", "-o", str(out))
    assert result.stdout.strip().splitlines()[-1] == IMAGE
    document = yaml.safe_load((out / "knative.yaml").read_text())
    assert_valid(document, crd_schema)
    # a canary against the manifest already in -o: the previous revision is read from it
    previous = document["spec"]["template"]["metadata"]["name"]
    config = tmp_path / "bento.yaml"
    config.write_text("targets:\n  knative:\n    min_scale: 2\n")
    result = run_cli("target", "knative", "cancer:latest", "--image", IMAGE, "--manifest-only", "-f", str(config),
                     "--canary", "10", "-o", str(out))
    canary = yaml.safe_load((out / "knative.yaml").read_text())
    assert canary["spec"]["traffic"][1] == {"revisionName": previous, "percent": 90, "tag": "current"}
    assert "promote:" in result.stderr and "rollback:" in result.stderr
    assert_valid(yaml.safe_load((out / "knative-promote.yaml").read_text()), crd_schema)
    failed = run_cli("target", "knative", "cancer:latest", "--image", "127.0.0.1:9/none:1", "--manifest-only",
                     "-o", str(tmp_path / "x"), check=False)
    assert failed.returncode == 1 and "Cannot reach the registry" in failed.stderr


def test_cli_help_has_an_example():
    for name in ("cloudrun", "knative", "lambda-image"):
        result = run_cli("target", name, "--help")
        assert "Example" in result.stdout and "--image" in result.stdout


def test_service_targets_pass_one_worker_per_whole_cpu_of_their_limit():
    from bento_compile.core.config import CloudRunTarget
    from bento_compile.targets.knative import container_env

    def workers(settings) -> str:
        return next(e["value"] for e in container_env(settings) if e["name"] == "BENTO_COMPILE_WORKERS")

    assert [workers(KnativeTarget(cpu=cpu)) for cpu in ("500m", "1", "1.5", "2500m", "4")] == ["1", "1", "1", "2", "4"]
    assert workers(CloudRunTarget(cpu="2")) == "2"
    assert workers(KnativeTarget(cpu="4", env={"BENTO_COMPILE_WORKERS": "1"})) == "1"  # the user's setting wins
