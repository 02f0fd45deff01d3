"""Knative `Service` manifests (serving.knative.dev/v1), and the traffic split for canaries.

The service runs the HTTP image pinned BY DIGEST. `containerConcurrency`
is the same number the server enforces itself (env
BENTO_COMPILE_MAX_CONCURRENCY: 503 + Retry-After past it), so the platform
and the container agree on what one container can take. Readiness is
`/readyz` (the model is loaded), liveness `/healthz` (the process is up).

Revisions are named `SERVICE-VERSION-HASH`, HASH covering the whole
template: a changed setting makes a new revision name (Knative refuses a
changed template under an old name), the same inputs give the same name.
A canary sends N% to the new revision and the rest to the current one; the
promote and rollback manifests are written beside it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bento_compile.core.config import KnativeTarget, ServiceTarget
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import Manifest
from bento_compile.runtimes.threads import worker_count_for
from bento_compile.targets.images import HTTP_PORT

API_VERSION = "serving.knative.dev/v1"
MANAGED_BY = "bento-compile"


@dataclass
class ServiceManifests:
    """The main manifest, plus promote / rollback manifests and commands when it is a canary."""

    service: dict[str, Any]
    revision: str
    promote: dict[str, Any] | None = None
    rollback: dict[str, Any] | None = None
    commands: dict[str, str] | None = None


def service_name(settings: ServiceTarget, manifest: Manifest) -> str:
    name = settings.service or manifest.name.replace("_", "-").replace(".", "-")
    if not name[:1].isalpha() or len(name) > 49:
        raise BentoCompileError(f"'{name}' cannot be a Knative/Cloud Run service name.",
                                "Set targets.<knative|cloudrun>.service in bento.yaml: lowercase letters, digits "
                                "and '-', starting with a letter, at most 49 characters.")
    return name.strip("-")


def container_env(settings: ServiceTarget) -> list[dict[str, str]]:
    """Env for the container. PORT is the platform's to set (Knative rejects it in the manifest)."""
    reserved = {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"}
    bad = sorted(reserved & set(settings.env))
    if bad:
        raise BentoCompileError(f"targets env sets {', '.join(bad)}, which the platform sets itself.",
                                "Remove it from bento.yaml.")
    env = {"BENTO_COMPILE_MAX_CONCURRENCY": str(settings.container_concurrency),
           "BENTO_COMPILE_GRACE_SECONDS": str(settings.grace_seconds),
           # The container's CPU limit, said outright: the server would read it from the cgroup too, but a
           # node that shows a different quota (or none) must not get a worker per node core.
           "BENTO_COMPILE_WORKERS": str(worker_count_for(cpu_quantity(settings.cpu))), **settings.env}
    return [{"name": k, "value": v} for k, v in env.items()]


def cpu_quantity(value: str) -> float:
    """A Kubernetes CPU quantity in CPUs: "2" → 2.0, "1.5" → 1.5, "500m" → 0.5 (the config checked the form)."""
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def labels(manifest: Manifest, service: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": service, "app.kubernetes.io/version": manifest.version,
            "app.kubernetes.io/managed-by": MANAGED_BY}


def revision_name(service: str, manifest: Manifest, template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:5]
    return f"{service}-{manifest.version[:8]}-{digest}"


def build_service(service: str, manifest: Manifest, template_annotations: dict[str, str],
                  container: dict[str, Any], pod: dict[str, Any], metadata: dict[str, Any],
                  revision_labels: dict[str, str]) -> tuple[dict[str, Any], str]:
    template = {"metadata": {"labels": revision_labels, "annotations": template_annotations},
                "spec": {**pod, "containers": [container]}}
    revision = revision_name(service, manifest, template)
    template["metadata"] = {"name": revision, **template["metadata"]}
    return {"apiVersion": API_VERSION, "kind": "Service", "metadata": metadata, "spec": {"template": template}}, \
        revision


def knative_service(manifest: Manifest, image: str, settings: KnativeTarget) -> tuple[dict[str, Any], str]:
    """The Knative Service for `image` (which should be `repo@sha256:…`)."""
    if settings.max_scale and settings.min_scale > settings.max_scale:
        raise BentoCompileError(f"targets.knative.min_scale ({settings.min_scale}) is above max_scale "
                                f"({settings.max_scale}).", "Lower min_scale or raise max_scale (0 = unlimited).")
    service = service_name(settings, manifest)
    target = settings.target or max(1, int(settings.container_concurrency * 0.7))
    if target > settings.container_concurrency:
        raise BentoCompileError(f"targets.knative.target ({target}) is above container_concurrency "
                                f"({settings.container_concurrency}).",
                                "The autoscaler's target must not exceed the hard limit; lower it.")
    annotations = {
        "autoscaling.knative.dev/metric": "concurrency",
        "autoscaling.knative.dev/target": str(target),
        "autoscaling.knative.dev/min-scale": str(settings.min_scale),
        "autoscaling.knative.dev/max-scale": str(settings.max_scale),
        "dev.bento-compile/bento": manifest.tag,
    }
    resources = {"cpu": settings.cpu, "memory": settings.memory}
    container = {
        "name": "model",
        "image": image,
        "ports": [{"name": "http1", "containerPort": HTTP_PORT}],
        "env": container_env(settings),
        "readinessProbe": {"httpGet": {"path": "/readyz"}, "periodSeconds": 2, "failureThreshold": 3,
                           "timeoutSeconds": 1},
        "livenessProbe": {"httpGet": {"path": "/healthz"}, "periodSeconds": 10, "failureThreshold": 3,
                          "timeoutSeconds": 2},
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    metadata: dict[str, Any] = {"name": service, "labels": labels(manifest, service),
                                "annotations": {"dev.bento-compile/bento": manifest.tag}}
    if settings.namespace:
        metadata["namespace"] = settings.namespace
    pod = {"containerConcurrency": settings.container_concurrency, "timeoutSeconds": settings.timeout_seconds}
    return build_service(service, manifest, annotations, container, pod, metadata, labels(manifest, service))


def split_traffic(service: dict[str, Any], revision: str, current: str, percent: int) -> dict[str, Any]:
    """`percent`% to the new revision (tag `candidate`), the rest to `current` (tag `current`)."""
    if not 1 <= percent <= 99:
        raise BentoCompileError(f"--canary {percent} is not a percentage between 1 and 99.",
                                "Pass e.g. --canary 10 for 10% of requests to the new revision.")
    if current == revision:
        raise BentoCompileError(f"The current revision is already {revision}: nothing to canary.",
                                "Change the Bento or a setting, or deploy without --canary.")
    return with_traffic(service, [
        {"revisionName": revision, "percent": percent, "tag": "candidate"},
        {"revisionName": current, "percent": 100 - percent, "tag": "current"},
    ])


def with_traffic(service: dict[str, Any], traffic: list[dict[str, Any]]) -> dict[str, Any]:
    return {**service, "spec": {**service["spec"], "traffic": traffic}}


def previous_revision(path: Path) -> str | None:
    """The revision named in an earlier manifest in the output folder (what is running now)."""
    try:
        document = yaml.safe_load(path.read_text())
        return document["spec"]["template"]["metadata"]["name"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def canary(service: dict[str, Any], revision: str, current: str | None, percent: int,
           promote_cmd: str, rollback_cmd: str) -> ServiceManifests:
    if not current:
        raise BentoCompileError("--canary needs the revision that serves traffic now.",
                                "Pass --current-revision NAME (see `kubectl get revisions` / "
                                "`gcloud run revisions list`), or keep the previous manifest in the -o folder.")
    return ServiceManifests(
        split_traffic(service, revision, current, percent), revision,
        promote=with_traffic(service, [{"revisionName": revision, "percent": 100, "tag": "current"}]),
        rollback=with_traffic(service, [{"revisionName": current, "percent": 100, "tag": "current"},
                                        {"revisionName": revision, "percent": 0, "tag": "candidate"}]),
        commands={"promote": promote_cmd, "rollback": rollback_cmd})


def knative_manifests(manifest: Manifest, image: str, settings: KnativeTarget, canary_percent: int | None,
                      current: str | None, out_dir: Path) -> ServiceManifests:
    service, revision = knative_service(manifest, image, settings)
    if canary_percent is None:
        return ServiceManifests(service, revision)
    name = service["metadata"]["name"]
    ns = f" -n {settings.namespace}" if settings.namespace else ""
    return canary(service, revision, current, canary_percent,
                  f"kubectl apply -f {out_dir / 'knative-promote.yaml'}   "
                  f"# or: kn service update {name}{ns} --traffic {revision}=100",
                  f"kubectl apply -f {out_dir / 'knative-rollback.yaml'}   "
                  f"# or: kn service update {name}{ns} --traffic {current}=100")


def dump_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=1000)
