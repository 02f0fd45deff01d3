"""Cloud Run services: the Knative Service API plus Cloud Run's own annotations.

`gcloud run services replace service.yaml` takes the same serving.knative.dev/v1
document as Knative, with `autoscaling.knative.dev/minScale|maxScale` for the
instance bounds and `run.googleapis.com/*` annotations for startup CPU boost,
CPU throttling and the execution environment. Cloud Run holds traffic back
until the startup probe passes, so `/readyz` is the startup probe here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bento_compile.core.config import CloudRunTarget
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import Manifest
from bento_compile.targets.images import HTTP_PORT
from bento_compile.targets.knative import ServiceManifests, build_service, canary, container_env, labels, service_name


def cloudrun_service(manifest: Manifest, image: str, settings: CloudRunTarget) -> tuple[dict[str, Any], str]:
    if settings.min_instances > settings.max_instances:
        raise BentoCompileError(f"targets.cloudrun.min_instances ({settings.min_instances}) is above "
                                f"max_instances ({settings.max_instances}).", "Lower min_instances.")
    service = service_name(settings, manifest)
    annotations = {
        "autoscaling.knative.dev/minScale": str(settings.min_instances),
        "autoscaling.knative.dev/maxScale": str(settings.max_instances),
        "run.googleapis.com/startup-cpu-boost": str(settings.startup_cpu_boost).lower(),
        "run.googleapis.com/cpu-throttling": str(settings.cpu_throttling).lower(),
        "run.googleapis.com/execution-environment": settings.execution_environment,
        "dev.bento-compile/bento": manifest.tag,
    }
    container = {
        "name": "model",
        "image": image,
        "ports": [{"name": "http1", "containerPort": HTTP_PORT}],
        "env": container_env(settings),
        "resources": {"limits": {"cpu": settings.cpu, "memory": settings.memory}},
        "startupProbe": {"httpGet": {"path": "/readyz", "port": HTTP_PORT}, "periodSeconds": 1,
                         "failureThreshold": 120, "timeoutSeconds": 1},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": HTTP_PORT}, "periodSeconds": 10,
                          "failureThreshold": 3, "timeoutSeconds": 2},
    }
    metadata = {"name": service, "labels": labels(manifest, service),
                "annotations": {"run.googleapis.com/ingress": "all", "dev.bento-compile/bento": manifest.tag}}
    pod = {"containerConcurrency": settings.container_concurrency, "timeoutSeconds": settings.timeout_seconds}
    return build_service(service, manifest, annotations, container, pod, metadata, labels(manifest, service))


def cloudrun_manifests(manifest: Manifest, image: str, settings: CloudRunTarget, canary_percent: int | None,
                       current: str | None, out_dir: Path) -> ServiceManifests:
    service, revision = cloudrun_service(manifest, image, settings)
    if canary_percent is None:
        return ServiceManifests(service, revision)
    name = service["metadata"]["name"]
    region = f" --region {settings.region}" if settings.region else ""
    return canary(service, revision, current, canary_percent,
                  f"gcloud run services update-traffic {name}{region} --to-revisions {revision}=100",
                  f"gcloud run services update-traffic {name}{region} --to-revisions {current}=100")
