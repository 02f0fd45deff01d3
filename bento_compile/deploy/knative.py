"""Deploy to Knative Serving through the official Kubernetes client (server-side apply).

The Service applied is the one `target knative` writes (same revision name, same
container, same probes), plus `spec.traffic` by revision with the tags of
deploy.traffic. It is applied with server-side apply under the field manager
`bento-compile`, so fields other managers own (an operator's annotations, a mesh's
labels) are left alone. Then the Service is watched until it is `Ready` for THIS
generation: `status.observedGeneration == metadata.generation` (an older generation's
Ready says nothing about ours). When the new revision fails, the previous spec is
applied back, so the traffic is what it was.

Before a new revision takes traffic it is smoke-checked (deploy.service_smoke): a first apply
adds it at 0 % under the tag `candidate`, the Bento's example is POSTed to the tag's URL from
`status.traffic` (or `--smoke-url`, e.g. a port-forward when the URL is cluster-local), and only
when the answer agrees is the traffic plan applied. A failing check leaves it there at 0 %. A new
Service cannot route 0 % everywhere, so a first deploy is checked once it is Ready, and a failure
says it serves.

Configuration is kubectl's: KUBECONFIG or ~/.kube/config (`--context` picks one), or
the in-cluster service account when the command runs in a pod.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bento_compile.core.config import KnativeTarget
from bento_compile.core.errors import BentoCompileError
from bento_compile.deploy.service_outcome import ServedRoute, ServiceDeployment
from bento_compile.deploy.service_smoke import check_url, http_sender, run_smoke, smoke_plan, summary, tag_url
from bento_compile.deploy.smoke import expected_outputs
from bento_compile.deploy.traffic import CANDIDATE, Route, TrafficState, describe, plan_routes, read_state
from bento_compile.runtimes.manifest import Manifest
from bento_compile.targets.knative import API_VERSION, MANAGED_BY, knative_service, service_name

GROUP, VERSION, PLURAL = "serving.knative.dev", "v1", "services"
FIELD_MANAGER = "bento-compile"
MANAGED_LABEL = "app.kubernetes.io/managed-by"
BENTO_ANNOTATION = "dev.bento-compile/bento"
REQUEST_TIMEOUT = 30
# The namespace becomes part of the URL path: a DNS label, checked before it is used.
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass
class KnativeRequest:
    """What to do to which service. `image` (pinned by digest) is needed for deploy and canary only."""

    manifest: Manifest
    settings: KnativeTarget
    action: str  # deploy, canary, promote, rollback
    image: str | None = None
    percent: int | None = None
    namespace: str | None = None
    context: str | None = None
    adopt: bool = False
    timeout: float = 600.0
    poll: float = 0.5
    smoke: bool = True
    smoke_url: str | None = None  # where the new revision answers, when its tag URL is not reachable from here
    bento_dir: Path | None = None  # the Bento the smoke check computes the example's outputs from
    progress: Callable[[str], None] | None = None


def _kubernetes():
    try:
        import kubernetes
    except ImportError:
        raise BentoCompileError("Deploying to Knative needs the kubernetes client, which is not installed.",
                                "pip install 'bento-compile[k8s]'") from None
    return kubernetes


def connect(context: str | None) -> tuple[Any, str]:
    """An API client from kubeconfig (or the pod's service account), and the context's namespace."""
    kubernetes = _kubernetes()
    from kubernetes.config.config_exception import ConfigException

    configuration = kubernetes.client.Configuration()
    namespace = "default"
    try:
        kubernetes.config.load_kube_config(context=context, client_configuration=configuration)
        contexts, active = kubernetes.config.list_kube_config_contexts()
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        namespace = (chosen or {}).get("context", {}).get("namespace") or namespace
    except (ConfigException, OSError) as exc:
        if context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            namespace = _pod_namespace() or namespace
        else:
            where = os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise BentoCompileError(f"No usable Kubernetes configuration ({where}): {exc}",
                                    "Point KUBECONFIG at the cluster's kubeconfig (`kubectl config get-contexts` "
                                    "lists the contexts; pass --context NAME).") from None
    configuration.retries = 1
    return kubernetes.client.ApiClient(configuration), namespace


def _pod_namespace() -> str | None:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def routes_of(service: dict[str, Any]) -> list[Route]:
    """spec.traffic as routes; a `latestRevision: true` target is the latest ready revision."""
    status = service.get("status") or {}
    routes = []
    for target in (service.get("spec") or {}).get("traffic") or []:
        revision = target.get("revisionName")
        if target.get("latestRevision") and not revision:
            revision = status.get("latestReadyRevisionName")
        if revision:
            routes.append(Route(revision, int(target.get("percent") or 0), target.get("tag") or ""))
    return routes


def served(service: dict[str, Any]) -> list[ServedRoute]:
    """status.traffic (what the route serves, with each tag's URL), else spec.traffic."""
    status = service.get("status") or {}
    if status.get("traffic"):
        return [ServedRoute(Route(t.get("revisionName") or status.get("latestReadyRevisionName") or "",
                                  int(t.get("percent") or 0), t.get("tag") or ""), t.get("url") or "")
                for t in status["traffic"]]
    return [ServedRoute(route) for route in routes_of(service)]


def traffic(routes: list[Route]) -> list[dict[str, Any]]:
    return [{"revisionName": r.revision, "percent": r.percent, **({"tag": r.tag} if r.tag else {})} for r in routes]


def ready_condition(service: dict[str, Any]) -> dict[str, Any] | None:
    """The Ready condition, when the controller has looked at this generation; None while it has not."""
    status = service.get("status") or {}
    if status.get("observedGeneration") != (service.get("metadata") or {}).get("generation"):
        return None
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)


class _Calls:
    """get / apply on one Knative Service, each failure one line naming the verb and the resource."""

    def __init__(self, api_client: Any, namespace: str, name: str):
        kubernetes = _kubernetes()
        self.api = kubernetes.client.CustomObjectsApi(api_client)
        self.exception = kubernetes.client.exceptions.ApiException
        self.namespace, self.name = namespace, name
        self.resource = f"services.serving.knative.dev/{name} in namespace {namespace}"
        self.host = api_client.configuration.host

    def error(self, exc: Exception, verb: str) -> BentoCompileError:
        if not isinstance(exc, self.exception):
            if isinstance(exc, OSError) or type(exc).__module__.startswith("urllib3"):
                return BentoCompileError(f"Cannot reach the Kubernetes API server at {self.host} ({verb} "
                                         f"{self.resource}): {exc}",
                                         "Check the cluster address in the kubeconfig and the network.")
            return BentoCompileError(f"{verb} {self.resource} failed: {type(exc).__name__}: {exc}",
                                     "Retry; if it persists, report it with this message.")
        message = _status_message(exc)
        if exc.status == 403:
            return BentoCompileError(f"Access denied: {verb} {self.resource}: {message}",
                                     f"Grant a Role with get and patch on services.serving.knative.dev in "
                                     f"{self.namespace} (check: kubectl auth can-i patch "
                                     f"services.serving.knative.dev -n {self.namespace}).")
        if exc.status == 401:
            return BentoCompileError(f"The Kubernetes API server refused the credentials ({verb} {self.resource}): "
                                     f"{message}", "Refresh the kubeconfig's credentials (log in to the cluster "
                                                   "again).")
        if exc.status == 404:
            return BentoCompileError(f"The cluster has no {GROUP}/{VERSION} services ({verb} {self.resource}): "
                                     f"{message}", "Install Knative Serving in the cluster, or pick the right "
                                                   "cluster with --context.")
        return BentoCompileError(f"The cluster refused {verb} {self.resource}: {message}",
                                 "Check the settings in targets.knative (bento.yaml) against the message.")

    def get(self) -> dict[str, Any] | None:
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name,
                                                         _request_timeout=REQUEST_TIMEOUT)
        except self.exception as exc:
            if exc.status == 404 and _names_object(exc, self.name):
                return None
            raise self.error(exc, "get") from None
        except Exception as exc:
            raise self.error(exc, "get") from None

    def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        try:
            applied = self.api.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, document, field_manager=FIELD_MANAGER,
                force=True, _content_type="application/apply-patch+yaml", _request_timeout=REQUEST_TIMEOUT)
        except Exception as exc:
            raise self.error(exc, "patch (server-side apply)") from None
        # An apply that creates answers 201, which the generated client does not decode (it returns None).
        return applied or self.get() or {}

    def wait_ready(self, generation: int, timeout: float, poll: float) -> tuple[dict[str, Any], str | None]:
        """The Service once the controller has judged `generation`: (service, None) when Ready, or
        (service, why not) when it failed or the time ran out."""
        deadline = time.monotonic() + timeout
        while True:
            service = self.get() or {}
            observed = (service.get("metadata") or {}).get("generation") == generation
            condition = ready_condition(service) if observed else None
            if condition is not None and condition.get("status") == "True":
                return service, None
            if condition is not None and condition.get("status") == "False":
                return service, f"{condition.get('reason') or 'NotReady'}: {condition.get('message') or ''}".strip()
            if time.monotonic() > deadline:
                return service, f"not Ready after {timeout:.0f} s"
            time.sleep(poll)
            poll = min(poll * 1.5, 5.0)


def _names_object(exc: Any, name: str) -> bool:
    """A 404 about this object (it does not exist), not about the resource type (Knative not installed)."""
    import json

    try:
        return (json.loads(exc.body).get("details") or {}).get("name") == name
    except (TypeError, ValueError, AttributeError):
        return False


def _status_message(exc: Any) -> str:
    import json

    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def _ours(service: dict[str, Any], name: str, namespace: str) -> dict[str, Any]:
    """The fields bento-compile applied, taken from a live Service (to apply them back with new traffic)."""
    metadata = service.get("metadata") or {}
    labels = {k: v for k, v in (metadata.get("labels") or {}).items() if k.startswith("app.kubernetes.io/")}
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if k.startswith("dev.bento-compile/")}
    return {"apiVersion": API_VERSION, "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
            "spec": {"template": (service.get("spec") or {}).get("template") or {},
                     "traffic": (service.get("spec") or {}).get("traffic") or []}}


def deploy_knative(request: KnativeRequest) -> ServiceDeployment:
    settings, manifest = request.settings, request.manifest
    smoke_url = check_url(request.smoke_url, "--smoke-url") if request.smoke_url else None
    # The example's outputs before any call: a Bento that fails the runtime's checks stops here.
    expected = (expected_outputs(manifest.to_dict(), None, request.bento_dir)
                if request.smoke and request.action in ("deploy", "canary") else None)
    api_client, context_namespace = connect(request.context)
    namespace = request.namespace or settings.namespace or context_namespace
    if not NAMESPACE.fullmatch(namespace):
        raise BentoCompileError(f"'{namespace}' is not a Kubernetes namespace name.",
                                "Namespaces are DNS labels: lowercase letters, digits and '-', at most 63.")
    name = service_name(settings, manifest)
    calls = _Calls(api_client, namespace, name)
    existing = calls.get()
    existing_labels = ((existing or {}).get("metadata") or {}).get("labels") or {}
    if existing is not None and existing_labels.get(MANAGED_LABEL) != MANAGED_BY and not request.adopt:
        raise BentoCompileError(f"The Knative Service {namespace}/{name} exists and was not deployed by "
                                "bento-compile.", "Pass --adopt to take it over (its template and traffic are "
                                                  "replaced), or set targets.knative.service to another name.")
    state = read_state(routes_of(existing)) if existing is not None else TrafficState(None)

    revision = state.candidate if request.action == "promote" else None
    if request.action in ("deploy", "canary"):
        if not request.image:
            raise BentoCompileError(f"{request.action} needs an image.", "Pass --image REPO (built and pushed).")
        document, revision = knative_service(manifest, request.image, settings)
        document["metadata"]["namespace"] = namespace
    elif existing is None:
        raise BentoCompileError(f"The Knative Service {namespace}/{name} does not exist: nothing to "
                                f"{request.action}.", "Deploy it first (without --promote / --rollback).")
    else:
        document = _ours(existing, name, namespace)
        document["metadata"]["labels"][MANAGED_LABEL] = MANAGED_BY
    routes = plan_routes(request.action, state, name, revision, request.percent)
    if request.action == "rollback":
        revision = routes[0].revision
    assert revision is not None

    template_name = (((existing or {}).get("spec") or {}).get("template") or {}).get("metadata", {}).get("name")
    if existing is not None and routes_of(existing) == routes and template_name == document["spec"]["template"][
            "metadata"].get("name") and (ready_condition(existing) or {}).get("status") == "True":
        return _outcome(request, existing, name, namespace, revision, unchanged=True)

    plan = smoke_plan(request.action, expected is not None, routes_of(existing) if existing else None, routes, name,
                      revision)
    service = _apply_and_wait(calls, document, plan.first, existing, revision, request)
    smoke = None
    if plan.check:
        assert expected is not None
        url = smoke_url or tag_url(served(service), plan.tag, f"{namespace}/{name}")
        left = (f"The Service was created and serves it (Knative cannot route 0% everywhere): remove it (kubectl "
                f"delete ksvc {name} -n {namespace}) or deploy a Bento that passes." if existing is None else
                f"No traffic moved: {revision} stays at 0% under the tag {CANDIDATE}; the Service routes "
                f"{describe(routes_of(service))}.")
        fix = (f"The tag URL may be cluster-local: port-forward to it (kubectl port-forward -n {namespace} service/"
               f"{plan.tag}-{name} 8080:80) and pass --smoke-url http://127.0.0.1:8080; or deploy with --no-smoke.")
        result = run_smoke(http_sender(url, {}, "The revision's URL asks for credentials (an auth policy in front of "
                                                "it): " + fix), manifest.to_dict(), expected, revision,
                           f"{namespace}/{name}", left, request.progress)
        smoke = summary(result, url)
        if existing is not None:
            service = _apply_and_wait(calls, document, routes, existing, revision, request)
    return _outcome(request, service, name, namespace, revision, smoke=smoke, notes=plan.notes)


def _apply_and_wait(calls: _Calls, document: dict[str, Any], routes: list[Route], existing: dict[str, Any] | None,
                    revision: str, request: KnativeRequest) -> dict[str, Any]:
    """Apply the document with this traffic and wait until Ready; a failure puts `existing` back and raises."""
    document["spec"]["traffic"] = traffic(routes)
    applied = calls.apply(document)
    service, failure = calls.wait_ready(_generation(applied), request.timeout, request.poll)
    if failure is not None:
        raise _failed(calls, existing, revision, failure, request)
    return service


def _generation(service: dict[str, Any]) -> int:
    """metadata.generation of an applied Service (0 when the answer lacked it: then nothing counts as Ready)."""
    try:
        return int((service.get("metadata") or {}).get("generation") or 0)
    except (TypeError, ValueError):
        return 0


def _failed(calls: _Calls, existing: dict[str, Any] | None, revision: str, failure: str,
            request: KnativeRequest) -> BentoCompileError:
    """Put the previous spec back (the traffic as it was) and say what happened."""
    where = f"{calls.namespace}/{calls.name}"
    if existing is None:
        return BentoCompileError(f"Knative did not make revision {revision} of {where} ready: {failure}",
                                 f"The Service was created but serves nothing. Fix the image or settings and deploy "
                                 f"again, or remove it: kubectl delete ksvc {calls.name} -n {calls.namespace}")
    restored = calls.apply(_ours(existing, calls.name, calls.namespace))
    back, still = calls.wait_ready(_generation(restored), min(request.timeout, 120), request.poll)
    state = f"it is back on its previous traffic ({describe([s.route for s in served(back)])})" if still is None \
        else f"its previous spec was applied back but is not Ready yet ({still})"
    return BentoCompileError(f"Knative did not make revision {revision} of {where} ready: {failure}; {state}.",
                             f"Look at the revision: kubectl describe revision {revision} -n {calls.namespace}; "
                             "fix it and deploy again.")


def _outcome(request: KnativeRequest, service: dict[str, Any], name: str, namespace: str, revision: str,
             unchanged: bool = False, smoke: dict[str, Any] | None = None, notes: list[str] | None = None
             ) -> ServiceDeployment:
    template = (service.get("spec") or {}).get("template") or {}
    template_meta = template.get("metadata") or {}
    bento_tag = request.manifest.tag if request.action in ("deploy", "canary") else (
        (template_meta.get("annotations") or {}).get(BENTO_ANNOTATION) if template_meta.get("name") == revision
        else None)
    return ServiceDeployment("knative", name, f"{namespace}/{name}", request.action, revision,
                             (service.get("status") or {}).get("url") or "", served(service), bento_tag=bento_tag,
                             image=request.image, unchanged=unchanged, smoke=smoke, notes=notes or [])
