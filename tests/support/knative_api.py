"""A local stand-in for a Kubernetes API server with Knative Serving, for the official kubernetes client.

TEST DOUBLE: no Kubernetes API server can run here. This HTTP server on 127.0.0.1 answers
the two calls `deploy knative` makes on serving.knative.dev/v1 Services (GET, and PATCH as a
server-side apply), and is strict where the real server is:

- every applied body is validated against the real Knative Service CRD in ../shared/schemas
  (jsonschema plus a walk that names every undeclared field, tests/support/knative_schema.py);
- an apply must be `Content-Type: application/apply-patch+yaml` with a fieldManager;
- it answers like the API server and the Knative controller: `metadata.generation` bumps when
  the spec changes; the status first still describes the OLD generation (observedGeneration
  behind, Ready from before), and only on a later read is the new generation reconciled:
  Ready True, or Ready False (RevisionFailed / RevisionMissing) with the route left on what it
  served; revision names are immutable (the webhook's "Saw the following changes without a
  name change"), traffic must sum to 100 with unique tags; errors are Kubernetes `Status`
  objects (NotFound, Forbidden with RBAC's wording, Invalid).

An image whose reference contains "broken" makes a revision that never becomes ready.

Where a revision really answers: a tag's URL is a made-up example.com address unless the test
maps the revision's image to a real server (`serve_at`: image -> http://127.0.0.1:PORT, a real
Bento server the test started), so the deploy's smoke request reaches real code.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import urllib.parse
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import yaml

from tests.support.knative_schema import load_crd_schema, undeclared_fields

SERVICE_PATH = re.compile(r"^/apis/serving\.knative\.dev/v1/namespaces/([^/]+)/services/([^/]+)$")
USER = "system:serviceaccount:ci:deployer"


@dataclass
class KnativeApi:
    url: str = ""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    forbidden: set[tuple[str, str]] = field(default_factory=set)  # (verb, namespace) RBAC refuses
    services: dict[tuple[str, str], dict] = field(default_factory=dict)
    revisions: dict[tuple[str, str], dict] = field(default_factory=dict)  # (namespace, revision) -> template
    requests: list[dict] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # schema violations seen (a test asserts it stays empty)
    reconcile_after_reads: int = 1  # reads of a new generation before the controller has reconciled it
    serve_at: dict[str, str] = field(default_factory=dict)  # image -> URL of a real server for its tag URLs

    def __post_init__(self):
        self.schema = load_crd_schema()
        self.validator = jsonschema.Draft202012Validator(self.schema)
        self.lock = threading.Lock()
        self._pending: dict[tuple[str, str], int] = {}

    # -- helpers the tests use --------------------------------------------------------------
    def seed(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        """A Service made some other way (kubectl, kn), Ready on one revision."""
        revision = f"{name}-00001"
        template = {"metadata": {"name": revision}, "spec": {"containers": [{"image": "ghcr.io/knative/helloworld"}]}}
        self.revisions[(namespace, revision)] = template["spec"]
        service = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                   "metadata": {"name": name, "namespace": namespace, "labels": labels, "generation": 1},
                   "spec": {"template": template, "traffic": [{"latestRevision": True, "percent": 100}]}}
        self.services[(namespace, name)] = service
        self._reconcile(namespace, name)

    def traffic(self, namespace: str, name: str) -> list[tuple[str, int, str]]:
        status = self.services[(namespace, name)]["status"]
        return [(t.get("revisionName", ""), t.get("percent", 0), t.get("tag", "")) for t in status["traffic"]]

    def kubeconfig(self, path: Path, namespace: str = "ml", token: str | None = None) -> Path:
        """A kubeconfig with a context `test` (bearer token) on this server, default namespace `namespace`."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "deployer", "user": {"token": token or self.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "double", "user": "deployer",
                                                     "namespace": namespace}},
                         {"name": "other", "context": {"cluster": "double", "user": "deployer",
                                                      "namespace": "other"}}]}))
        return path

    # -- the controller ----------------------------------------------------------------------
    def _reconcile(self, namespace: str, name: str) -> None:
        service = self.services[(namespace, name)]
        spec, status = service["spec"], service.setdefault("status", {})
        revision = spec["template"]["metadata"]["name"]
        image = spec["template"]["spec"]["containers"][0].get("image", "")
        status["observedGeneration"] = service["metadata"]["generation"]
        status["latestCreatedRevisionName"] = revision
        url = f"http://{name}.{namespace}.example.com"
        targets = spec.get("traffic") or [{"latestRevision": True, "percent": 100}]
        missing = [t["revisionName"] for t in targets if t.get("revisionName")
                   and (namespace, t["revisionName"]) not in self.revisions]
        if "broken" in image:
            ready = {"type": "Ready", "status": "False", "reason": "RevisionFailed",
                     "message": f'Revision "{revision}" failed with message: Back-off pulling image "{image}".'}
        elif missing:
            ready = {"type": "Ready", "status": "False", "reason": "RevisionMissing",
                     "message": f'Revision "{missing[0]}" referenced in traffic not found.'}
        else:
            ready = {"type": "Ready", "status": "True"}
            status["latestReadyRevisionName"] = revision
            status["url"] = url
            status["traffic"] = [
                {**{"revisionName": t.get("revisionName") or revision, "percent": t.get("percent", 0)},
                 **({"tag": t["tag"], "url": self._tag_url(namespace, name, t.get("revisionName") or revision,
                                                            t["tag"])}
                    if t.get("tag") else {}),
                 **({"latestRevision": True} if t.get("latestRevision") else {})} for t in targets]
        kinds = ("ConfigurationsReady", "RoutesReady", "Ready")
        status["conditions"] = [{**ready, "type": kind} for kind in kinds]

    def _tag_url(self, namespace: str, name: str, revision: str, tag: str) -> str:
        image = ((self.revisions.get((namespace, revision)) or {}).get("containers") or [{}])[0].get("image", "")
        return self.serve_at.get(image) or f"http://{tag}-{name}.{namespace}.example.com"

    # -- the API ----------------------------------------------------------------------------
    def get(self, namespace: str, name: str) -> tuple[int, dict]:
        if ("get", namespace) in self.forbidden:
            return _forbidden("get", namespace, name)
        key = (namespace, name)
        if key not in self.services:
            return _status(404, "NotFound", f'services.serving.knative.dev "{name}" not found', name)
        if key in self._pending:
            self._pending[key] -= 1
            if self._pending[key] < 0:
                del self._pending[key]
                self._reconcile(namespace, name)
        return 200, self.services[key]

    def apply(self, namespace: str, name: str, query: dict[str, str], content_type: str, raw: bytes
              ) -> tuple[int, dict]:
        if content_type != "application/apply-patch+yaml":
            return _status(415, "UnsupportedMediaType", f"the body of an apply must be application/apply-patch+yaml,"
                                                        f" not {content_type}", name)
        if not query.get("fieldManager"):
            return _status(422, "Invalid", "PatchOptions.meta.k8s.io is invalid: fieldManager: Required value: "
                                           "is required for apply patch", name)
        if ("patch", namespace) in self.forbidden:
            return _forbidden("patch", namespace, name)
        body = yaml.safe_load(raw)
        problems = undeclared_fields(body, self.schema)
        try:
            self.validator.validate(body)
        except jsonschema.ValidationError as exc:
            problems.append(f"{'.'.join(str(p) for p in exc.absolute_path)}: {exc.message}")
        if body.get("apiVersion") != "serving.knative.dev/v1" or body.get("kind") != "Service":
            problems.append("apiVersion/kind must be serving.knative.dev/v1 Service")
        if problems:
            self.refused += problems
            return _status(422, "Invalid", f'Service.serving.knative.dev "{name}" is invalid: {problems}', name)
        metadata = body.get("metadata") or {}
        if metadata.get("name") != name or metadata.get("namespace", namespace) != namespace:
            return _status(400, "BadRequest", "the name/namespace of the object does not match the URL", name)
        spec = body.get("spec") or {}
        template = spec.get("template") or {}
        revision = (template.get("metadata") or {}).get("name", "")
        webhook = 'admission webhook "validation.webhook.serving.knative.dev" denied the request: validation failed: '
        if not revision.startswith(f"{name}-"):
            return _status(400, "BadRequest", f"{webhook}not prefixed with the Service name: "
                                              "spec.template.metadata.name", name)
        known = self.revisions.get((namespace, revision))
        if known is not None and known != template.get("spec"):
            return _status(400, "BadRequest", f"{webhook}Saw the following changes without a name change (-old +new)"
                                              ": spec.template.metadata.name", name)
        traffic = spec.get("traffic") or []
        if traffic and sum(t.get("percent", 0) for t in traffic) != 100:
            return _status(400, "BadRequest", f"{webhook}Traffic targets sum to "
                                              f"{sum(t.get('percent', 0) for t in traffic)}, want 100: spec.traffic",
                           name)
        tags = [t["tag"] for t in traffic if t.get("tag")]
        if len(tags) != len(set(tags)):
            return _status(400, "BadRequest", f"{webhook}Multiple definitions for tags {tags}: spec.traffic", name)
        self.revisions[(namespace, revision)] = copy.deepcopy(template.get("spec"))
        key = (namespace, name)
        old = self.services.get(key)
        if old is None:
            stored = {"apiVersion": body["apiVersion"], "kind": "Service",
                      "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "generation": 1,
                                   "labels": {}, "annotations": {}}, "spec": {}, "status": {}}
        else:
            stored = old
        meta = stored["metadata"]
        meta["labels"] = {**(meta.get("labels") or {}), **(metadata.get("labels") or {})}
        meta["annotations"] = {**(meta.get("annotations") or {}), **(metadata.get("annotations") or {})}
        meta["managedFields"] = [{"manager": query["fieldManager"], "operation": "Apply",
                                  "apiVersion": "serving.knative.dev/v1", "fieldsType": "FieldsV1"}]
        if old is not None and old["spec"] != spec:
            meta["generation"] += 1
        stored["spec"] = copy.deepcopy(spec)
        self.services[key] = stored
        if stored.get("status", {}).get("observedGeneration") != meta["generation"]:
            self._pending[key] = self.reconcile_after_reads
        return (201 if old is None else 200), stored


def _status(code: int, reason: str, message: str, name: str) -> tuple[int, dict]:
    return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                  "reason": reason, "details": {"name": name, "group": "serving.knative.dev", "kind": "services"},
                  "code": code}


def _forbidden(verb: str, namespace: str, name: str) -> tuple[int, dict]:
    return _status(403, "Forbidden", f'services.serving.knative.dev "{name}" is forbidden: User "{USER}" cannot '
                                     f'{verb} resource "services" in API group "serving.knative.dev" in the namespace '
                                     f'"{namespace}"', name)


def _handler(api: KnativeApi):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parsed.query))
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Authorization") != f"Bearer {api.token}":
                return self._send(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
            match = SERVICE_PATH.match(parsed.path)
            with api.lock:
                api.requests.append({"method": method, "path": parsed.path, "query": query,
                                     "content_type": self.headers.get("Content-Type"),
                                     "body": yaml.safe_load(raw) if raw else None})
                if match and method == "GET":
                    return self._send(*api.get(match.group(1), match.group(2)))
                if match and method == "PATCH":
                    return self._send(*api.apply(match.group(1), match.group(2), query,
                                                 self.headers.get("Content-Type", ""), raw))
            # What the API server says for a resource type it does not serve (here: anything but services).
            return self._send(404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                    "message": "the server could not find the requested resource",
                                    "reason": "NotFound", "details": {}, "code": 404})

        def do_GET(self):
            self._route("GET")

        def do_PATCH(self):
            self._route("PATCH")

    return Handler


@contextmanager
def knative_api():
    """Serve a fresh double on 127.0.0.1; yields the KnativeApi (its `url` is set)."""
    api = KnativeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
