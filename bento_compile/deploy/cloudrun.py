"""Deploy to Cloud Run through the official client (google-cloud-run, `run_v2.ServicesClient`).

One `UpdateService` call with `allow_missing` creates or updates the service; the
long-running operation it returns is waited on until the revision is ready (or has
failed, in which case Cloud Run keeps serving what it served). The revision is named
as `target cloudrun` names it (service, Bento version, hash of the template), so the
same Bento and settings deploy to the same revision, and a deploy that would change
nothing sends nothing. Traffic is set by revision with the tags of deploy.traffic.

Before a new revision takes traffic it is smoke-checked (deploy.service_smoke): a first update
adds it at 0 % under the tag `candidate`, the Bento's example is POSTed to that tag's URL with an
ID token minted for the service's URL (services are private unless someone made them public), and
only when the answer agrees does a second update, of `traffic` alone, apply the plan. A new service
cannot be created without traffic (Cloud Run needs 100 % somewhere), so a first deploy is checked
right after it is created, and a failure says it serves.

The client speaks REST (the transport the discovery document describes), so a private
endpoint or a test double is reached through `--endpoint`. Credentials and the default
project come from Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS,
`gcloud auth application-default login`, the metadata server, workload identity).
"""

from __future__ import annotations

import concurrent.futures
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bento_compile.core.config import CloudRunTarget
from bento_compile.core.errors import BentoCompileError
from bento_compile.deploy.service_outcome import ServedRoute, ServiceDeployment
from bento_compile.deploy.service_smoke import http_sender, run_smoke, smoke_plan, summary, tag_url
from bento_compile.deploy.smoke import Send, expected_outputs
from bento_compile.deploy.traffic import CANDIDATE, Route, TrafficState, describe, plan_routes, read_state
from bento_compile.runtimes.manifest import Manifest
from bento_compile.targets.cloudrun import cloudrun_service
from bento_compile.targets.images import HTTP_PORT
from bento_compile.targets.knative import MANAGED_BY, container_env, service_name

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
# GCP labels allow no '/' or '.', so ours are plain keys; the Bento tag (with its ':') is an annotation.
MANAGED_LABEL = "managed-by"
BENTO_ANNOTATION = "dev.bento-compile/bento"
# Both become parts of resource names (URL paths): checked before they are used. Domain-scoped IDs are
# `example.com:project`.
PROJECT = re.compile(r"(?:[a-z][-a-z0-9.]{0,62}:)?[a-z][-a-z0-9]{4,28}[a-z0-9]")
REGION = re.compile(r"[a-z]+-[a-z]+\d{1,2}")
ROLES_FIX = ("Grant the deploying identity roles/run.developer on the project (run.services.get, create, update) "
             "and roles/iam.serviceAccountUser on the service's runtime service account.")


@dataclass
class CloudRunRequest:
    """What to do to which service. `image` (pinned by digest) is needed for deploy and canary only."""

    manifest: Manifest
    settings: CloudRunTarget
    action: str  # deploy, canary, promote, rollback
    project: str | None = None
    region: str | None = None
    image: str | None = None
    percent: int | None = None
    adopt: bool = False
    endpoint: str | None = None
    timeout: float = 600.0
    smoke: bool = True
    bento_dir: Path | None = None  # the Bento the smoke check computes the example's outputs from
    progress: Callable[[str], None] | None = None


def _libraries():
    try:
        import google.auth
        from google.api_core import exceptions
        from google.cloud import run_v2
    except ImportError:
        raise BentoCompileError("Deploying to Cloud Run needs google-cloud-run, which is not installed.",
                                "pip install 'bento-compile[gcp]'") from None
    return google.auth, exceptions, run_v2


def connect(project: str | None, endpoint: str | None) -> tuple[Any, str]:
    """A ServicesClient (REST) with Application Default Credentials, and the project to deploy into."""
    google_auth, _exceptions, run_v2 = _libraries()
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, adc_project = google_auth.default(scopes=SCOPES)
    except DefaultCredentialsError:
        raise BentoCompileError("No Google Cloud credentials found (Application Default Credentials).",
                                "Run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS "
                                "to a service account key file (in GitHub Actions: google-github-actions/auth)."
                                ) from None
    project = (project or os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")
               or adc_project)
    if not project:
        raise BentoCompileError("No Google Cloud project given, and the credentials name none.",
                                "Pass --project PROJECT_ID (or set GOOGLE_CLOUD_PROJECT).")
    options = {"api_endpoint": endpoint} if endpoint else None
    return run_v2.ServicesClient(credentials=credentials, transport="rest", client_options=options), project


def revision_template(manifest: Manifest, image: str, settings: CloudRunTarget, revision: str) -> Any:
    """The v2 revision template: the same container, probes and limits `target cloudrun` writes as YAML."""
    _auth, _exceptions, run_v2 = _libraries()
    from google.protobuf import duration_pb2

    environment = {"gen1": run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN1,
                   "gen2": run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2}[settings.execution_environment]
    container = run_v2.Container(
        name="model", image=image,
        ports=[run_v2.ContainerPort(name="http1", container_port=HTTP_PORT)],
        env=[run_v2.EnvVar(name=item["name"], value=item["value"]) for item in container_env(settings)],
        resources=run_v2.ResourceRequirements(limits={"cpu": settings.cpu, "memory": settings.memory},
                                              cpu_idle=settings.cpu_throttling,
                                              startup_cpu_boost=settings.startup_cpu_boost),
        # Cloud Run holds traffic back until the startup probe passes: /readyz is "the model is loaded".
        startup_probe=run_v2.Probe(http_get=run_v2.HTTPGetAction(path="/readyz", port=HTTP_PORT), period_seconds=1,
                                   failure_threshold=120, timeout_seconds=1),
        liveness_probe=run_v2.Probe(http_get=run_v2.HTTPGetAction(path="/healthz", port=HTTP_PORT),
                                    period_seconds=10, failure_threshold=3, timeout_seconds=2))
    return run_v2.RevisionTemplate(
        revision=revision, labels=_labels(manifest), annotations={BENTO_ANNOTATION: manifest.tag},
        scaling=run_v2.RevisionScaling(min_instance_count=settings.min_instances,
                                       max_instance_count=settings.max_instances),
        timeout=duration_pb2.Duration(seconds=settings.timeout_seconds),
        max_instance_request_concurrency=settings.container_concurrency,
        execution_environment=environment, containers=[container])


def _labels(manifest: Manifest) -> dict[str, str]:
    return {MANAGED_LABEL: MANAGED_BY, "bento-version": manifest.version.lower()[:63]}


def routes_of(service: Any) -> list[Route]:
    """The service's traffic as routes; a LATEST target is the latest ready revision."""
    _auth, _exceptions, run_v2 = _libraries()
    latest = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
    routes = []
    for target in service.traffic:
        revision = service.latest_ready_revision.rsplit("/", 1)[-1] if target.type_ == latest else target.revision
        if revision:
            routes.append(Route(revision, target.percent, target.tag))
    return routes


def _traffic(routes: list[Route]) -> list[Any]:
    _auth, _exceptions, run_v2 = _libraries()
    by_revision = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    return [run_v2.TrafficTarget(type_=by_revision, revision=r.revision, percent=r.percent, tag=r.tag)
            for r in routes]


def served(service: Any) -> list[ServedRoute]:
    """Where traffic goes as Cloud Run reports it (traffic_statuses), with each tag's URL."""
    if service.traffic_statuses:
        return [ServedRoute(Route(status.revision or service.latest_ready_revision.rsplit("/", 1)[-1],
                                  status.percent, status.tag), status.uri) for status in service.traffic_statuses]
    return [ServedRoute(route) for route in routes_of(service)]


class _Calls:
    """The client's calls, each failure turned into one line naming the action and the resource."""

    def __init__(self, client: Any, name: str, project: str, endpoint: str | None):
        self.client, self.name, self.project = client, name, project
        self.endpoint = endpoint or "https://run.googleapis.com"
        _auth, self.exceptions, self.run_v2 = _libraries()

    def error(self, exc: Exception, action: str) -> BentoCompileError:
        from google.auth.exceptions import RefreshError, TransportError

        ex = self.exceptions
        # The REST transport prefixes the API's message with "PATCH https://…: "; the resource is named already.
        message = re.sub(r"^[A-Z]+ \S+: ", "", getattr(exc, "message", None) or str(exc))
        if isinstance(exc, ex.PermissionDenied | ex.Forbidden):
            return BentoCompileError(f"Access denied: {action} on {self.name}: {message}", ROLES_FIX)
        if isinstance(exc, ex.Unauthenticated | ex.Unauthorized | RefreshError):
            return BentoCompileError(f"Google Cloud refused the credentials ({action} on {self.name}): {message}",
                                     "Refresh them: `gcloud auth application-default login`, or check "
                                     "GOOGLE_APPLICATION_CREDENTIALS.")
        if isinstance(exc, ex.NotFound):
            return BentoCompileError(f"Cloud Run answered 'not found' to {action} on {self.name}: {message}",
                                     "Check --project and --region, and that the Cloud Run API is enabled "
                                     "(gcloud services enable run.googleapis.com).")
        if isinstance(exc, ex.Aborted | ex.Conflict | ex.FailedPrecondition) and action != "wait":
            return BentoCompileError(f"Cloud Run refused {action} on {self.name}: {message}",
                                     "Someone else may have changed the service meanwhile; run the command again.")
        if isinstance(exc, ex.GoogleAPICallError):
            return BentoCompileError(f"Cloud Run refused {action} on {self.name}: {message}",
                                     "Check the settings in targets.cloudrun (bento.yaml) against the message.")
        if isinstance(exc, TransportError | OSError) or type(exc).__module__.startswith("requests"):
            return BentoCompileError(f"Cannot reach the Cloud Run API at {self.endpoint} ({action}): {exc}",
                                     "Check the network (and --endpoint, when you gave one).")
        return BentoCompileError(f"{action} on {self.name} failed: {type(exc).__name__}: {exc}",
                                 "Retry; if it persists, report it with this message.")

    def get(self) -> Any | None:
        try:
            return self.client.get_service(name=self.name, timeout=60)
        except self.exceptions.NotFound:
            return None
        except Exception as exc:
            raise self.error(exc, "run.services.get") from None

    def update(self, service: Any, mask: list[str] | None, creating: bool, timeout: float) -> Any:
        from google.api_core import retry as retries
        from google.api_core.future import polling
        from google.protobuf import field_mask_pb2

        request = self.run_v2.UpdateServiceRequest(service=service, allow_missing=True)
        if mask:
            request.update_mask = field_mask_pb2.FieldMask(paths=mask)
        action = "run.services.create" if creating else "run.services.update"
        try:
            operation = self.client.update_service(request=request, timeout=60)
        except Exception as exc:
            raise self.error(exc, action) from None
        wait: retries.Retry = polling.DEFAULT_POLLING.with_delay(initial=0.5, maximum=5.0, multiplier=1.5)
        try:
            return operation.result(polling=wait.with_timeout(timeout))
        except self.exceptions.GoogleAPICallError as exc:
            raise _NotReady(getattr(exc, "message", None) or str(exc)) from None
        except concurrent.futures.TimeoutError:
            raise _NotReady(f"the operation did not finish within {timeout:.0f} s") from None


class _NotReady(Exception):
    """The update's operation ended in an error: the new revision never became ready."""


def deploy_cloudrun(request: CloudRunRequest) -> ServiceDeployment:
    settings, manifest = request.settings, request.manifest
    region = request.region or settings.region
    if not region:
        raise BentoCompileError("No Cloud Run region given.",
                                "Pass --region (e.g. europe-west1) or set targets.cloudrun.region in bento.yaml.")
    if not REGION.fullmatch(region):
        raise BentoCompileError(f"'{region}' is not a Cloud Run region.", "Pass e.g. --region europe-west1.")
    # The example's outputs before any call: a Bento that fails the runtime's checks stops here.
    expected = (expected_outputs(manifest.to_dict(), None, request.bento_dir)
                if request.smoke and request.action in ("deploy", "canary") else None)
    client, project = connect(request.project, request.endpoint)
    if not PROJECT.fullmatch(project):
        raise BentoCompileError(f"'{project}' is not a Google Cloud project ID.",
                                "Pass the project's ID (lowercase letters, digits and '-', e.g. acme-ml-prod), "
                                "not its display name.")
    service_id = service_name(settings, manifest)
    calls = _Calls(client, f"projects/{project}/locations/{region}/services/{service_id}", project, request.endpoint)
    existing = calls.get()
    if existing is not None and existing.labels.get(MANAGED_LABEL) != MANAGED_BY and not request.adopt:
        raise BentoCompileError(f"The Cloud Run service {calls.name} exists and was not deployed by bento-compile.",
                                "Pass --adopt to take it over (its template and traffic are replaced), or set "
                                "targets.cloudrun.service to another name.")
    state = read_state(routes_of(existing)) if existing is not None else TrafficState(None)

    revision = state.candidate if request.action == "promote" else None
    if request.action in ("deploy", "canary"):
        if not request.image:
            raise BentoCompileError(f"{request.action} needs an image.", "Pass --image REPO (built and pushed).")
        _document, revision = cloudrun_service(manifest, request.image, settings)
    elif existing is None:
        raise BentoCompileError(f"The Cloud Run service {calls.name} does not exist: nothing to {request.action}.",
                                "Deploy it first (without --promote / --rollback).")
    routes = plan_routes(request.action, state, service_id, revision, request.percent)
    if request.action == "rollback":
        revision = routes[0].revision

    if existing is not None and routes_of(existing) == routes and (
            request.action not in ("deploy", "canary") or existing.template.revision == revision):
        return _outcome(request, existing, service_id, calls.name, revision or "", unchanged=True)

    plan = smoke_plan(request.action, expected is not None, routes_of(existing) if existing else None, routes,
                      service_id, revision or "")
    updates = _Updates(calls, region, project, service_id, revision or "", request.timeout)
    service = calls.run_v2.Service(name=calls.name, traffic=_traffic(plan.first),
                                   etag=existing.etag if existing else "")
    mask = ["traffic"]
    if request.action in ("deploy", "canary"):
        assert request.image is not None and revision is not None
        service.template = revision_template(manifest, request.image, settings, revision)
        service.labels = {**(existing.labels if existing else {}), **_labels(manifest)}
        service.annotations = {**(existing.annotations if existing else {}), BENTO_ANNOTATION: manifest.tag}
        service.ingress = calls.run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL
        mask = ["template", "traffic", "labels", "annotations", "ingress"]
    elif request.adopt and existing is not None and existing.labels.get(MANAGED_LABEL) != MANAGED_BY:
        service.labels = {**existing.labels, **_labels(manifest)}
        mask.append("labels")
    updated = updates.update(service, mask if existing is not None else None, existing is None)
    smoke = None
    if plan.check:
        assert expected is not None
        url = tag_url(served(updated), plan.tag, calls.name)
        left = (f"The service was created and serves it (Cloud Run cannot create a service without traffic): "
                f"delete it (gcloud run services delete {service_id} --region {region} --project {project}) or deploy "
                "a Bento that passes." if existing is None else
                f"No traffic moved: {revision} stays at 0% under the tag {CANDIDATE} ({url}); the service routes "
                f"{describe(routes_of(updated))}.")
        result = run_smoke(_sender(url, updated.uri or url, service_id, region, project), manifest.to_dict(),
                           expected, revision or "", calls.name, left, request.progress)
        smoke = summary(result, url)
        if existing is not None:
            updated = updates.update(calls.run_v2.Service(name=calls.name, traffic=_traffic(routes), etag=updated.etag),
                                   ["traffic"], False)
    return _outcome(request, updated, service_id, calls.name, revision or "", smoke=smoke, notes=plan.notes)


@dataclass
class _Updates:
    """One service's updates, each waited on; a revision that never gets ready is one error saying what serves."""

    calls: _Calls
    region: str
    project: str
    service_id: str
    revision: str
    timeout: float

    def update(self, service: Any, mask: list[str] | None, creating: bool) -> Any:
        try:
            return self.calls.update(service, mask, creating, self.timeout)
        except _NotReady as failure:
            now = self.calls.get()
            serving = describe([s.route for s in served(now)]) if now is not None else "nothing"
            raise BentoCompileError(
                f"Cloud Run did not make revision {self.revision} of {self.calls.name} ready: {failure}",
                f"Cloud Run keeps the traffic on what served before ({serving}). Read the revision's logs "
                f"(gcloud run revisions describe {self.revision} --region {self.region} --project {self.project}), "
                "fix it, and deploy again.") from None


def _sender(url: str, audience: str, service_id: str, region: str, project: str) -> Send:
    """The HTTP sender for the tag URL, with an ID token for the service's URL when the credentials can mint
    one (Cloud Run's IAM front end checks it; a public service ignores it)."""
    headers, why_not = id_token_headers(audience)
    fix = (f"Grant the deploying identity roles/run.invoker on the service (gcloud run services "
           f"add-iam-policy-binding {service_id} --region {region} --project {project} --member MEMBER "
           "--role roles/run.invoker), or deploy with --no-smoke to skip the check.")
    if why_not:
        fix += (f" No ID token was sent: {why_not}; user credentials cannot mint one, a service account can "
                "(gcloud auth application-default login --impersonate-service-account SA).")
    return http_sender(url, headers, fix)


def id_token_headers(audience: str) -> tuple[dict[str, str], str | None]:
    """`Authorization: Bearer ID_TOKEN` for `audience` from Application Default Credentials, or why there is none."""
    import google.auth.exceptions as auth_errors
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token

    try:
        token = id_token.fetch_id_token(Request(), audience)
    except (auth_errors.DefaultCredentialsError, auth_errors.RefreshError, auth_errors.TransportError,
            ValueError) as exc:
        return {}, f"{type(exc).__name__}: {exc}"
    return {"Authorization": f"Bearer {token}"}, None


def _outcome(request: CloudRunRequest, service: Any, service_id: str, name: str, revision: str,
             unchanged: bool = False, smoke: dict[str, Any] | None = None, notes: list[str] | None = None
             ) -> ServiceDeployment:
    # Only the latest template is on the service: a revision older than it holds a Bento we cannot name here.
    bento_tag = request.manifest.tag if request.action in ("deploy", "canary") else (
        service.template.annotations.get(BENTO_ANNOTATION) if service.template.revision == revision else None)
    return ServiceDeployment("cloudrun", service_id, name, request.action, revision, service.uri, served(service),
                             bento_tag=bento_tag, image=request.image, unchanged=unchanged, smoke=smoke,
                             notes=notes or [])
