"""A local stand-in for the Cloud Run Admin API v2, for the official client (google-cloud-run, REST transport).

TEST DOUBLE: no Cloud Run emulator exists and none can run here. This HTTP server on 127.0.0.1
answers the three calls `deploy cloudrun` makes (GetService, UpdateService with allow_missing
and updateMask, GetOperation), plus an OAuth token endpoint, so the real google-auth
Application Default Credentials chain runs end to end: a service account key file, and every
call's bearer token checked (a JWT signed by that key, or the access token traded for one).
It is strict where the API is:

- every request body is validated against the real schema, the Cloud Run v2 discovery
  document that google-api-python-client ships (`run.v2.json`), converted to JSON Schema:
  unknown fields, wrong types and output-only fields are refused with 400 INVALID_ARGUMENT,
  and so are query parameters the document does not declare for the method;
- it answers like the API: a long-running Operation that is not done at first, then done with
  the Service (or with an error when the revision fails); `generation`, `observedGeneration`,
  `etag`, `latestReadyRevision`, `trafficStatuses` with tag URLs; Google's error bodies
  ({"error": {"code", "message", "status"}}) and its permission-denied message;
- revisions are immutable (a name reused with another template is 409), traffic must sum to
  100 and name revisions that exist, tags must be unique; a failed revision leaves the traffic
  where it was, as Cloud Run does.

An image whose reference contains "broken" makes a revision that never becomes ready.

Where a revision really answers: a tag's URL is a made-up *.run.app address unless the test
maps the revision's image to a real server (`serve_at`: image -> http://127.0.0.1:PORT, a real
Bento server the test started), so the deploy's smoke request reaches real code. The token
endpoint also mints ID tokens (a JWT-shaped token carrying `aud`), as Google's does for a
service account asked for a `target_audience`; `id_tokens` records the audiences asked for.
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
from typing import Any

import jsonschema

SERVICE_TYPE = "type.googleapis.com/google.cloud.run.v2.Service"
SERVICE_ACCOUNT = "deployer@test-project.iam.gserviceaccount.com"
SERVICE_PATH = re.compile(r"^/v2/(projects/([^/]+)/locations/([^/]+)/services/([^/]+))$")
OPERATION_PATH = re.compile(r"^/v2/(projects/[^/]+/locations/[^/]+/operations/[^/]+)$")
REVISION = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
LATEST = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"


def discovery_document() -> dict:
    import googleapiclient

    path = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "run.v2.json"
    return json.loads(path.read_text())


def request_schema(document: dict, name: str) -> dict:
    """JSON Schema for a request body of type `name`: every discovery schema converted, strictly.

    Output-only (readOnly) fields may not be sent; enums may come as names or, as the client
    sends them (`$alt=json;enum-encoding=int`), as their index in the document's list."""

    def convert(schema: dict) -> Any:
        if "$ref" in schema:
            return {"$ref": f"#/$defs/{schema['$ref']}"}
        if schema.get("readOnly"):
            return False
        kind = schema.get("type")
        if kind == "object":
            out: dict[str, Any] = {"type": "object"}
            if "properties" in schema:
                out["properties"] = {key: convert(value) for key, value in schema["properties"].items()}
                out["additionalProperties"] = False
            if "additionalProperties" in schema:
                out["additionalProperties"] = convert(schema["additionalProperties"])
            return out
        if kind == "array":
            return {"type": "array", "items": convert(schema.get("items", {}))}
        if kind == "string" and "enum" in schema:
            return {"enum": [*schema["enum"], *range(len(schema["enum"]))]}
        if kind == "string" and schema.get("format") in ("int64", "uint64"):
            return {"type": "string", "pattern": r"^-?\d+$"}
        if kind == "string" and schema.get("format") == "google-duration":
            return {"type": "string", "pattern": r"^-?\d+(\.\d{1,9})?s$"}
        if kind in ("string", "boolean", "number"):
            return {"type": kind}
        if kind == "integer":
            return {"type": "integer", "minimum": -(2 ** 31), "maximum": 2 ** 31 - 1}
        return {}

    return {"$defs": {key: convert(value) for key, value in document["schemas"].items()},
            "$ref": f"#/$defs/{name}"}


def enum_name(value: Any, document: dict, schema: str, prop: str) -> Any:
    names = document["schemas"][schema]["properties"][prop]["enum"]
    return names[value] if isinstance(value, int) else value


@dataclass
class CloudRunApi:
    """The double's state and knobs; `url` is what the client's api_endpoint should be."""

    url: str = ""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    denied: set[str] = field(default_factory=set)  # permissions refused, e.g. {"run.services.update"}
    services: dict[str, dict] = field(default_factory=dict)
    revisions: dict[str, dict[str, dict]] = field(default_factory=dict)  # service name -> revision -> template
    failed_revisions: set[str] = field(default_factory=set)
    operations: dict[str, dict] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # schema violations seen (a test asserts it stays empty)
    document: dict = field(default_factory=discovery_document)
    public_key: Any = None  # the service account key's public half (adc_environment sets it)
    serve_at: dict[str, str] = field(default_factory=dict)  # image -> URL of a real server for its tag URLs
    id_tokens: dict[str, str] = field(default_factory=dict)  # ID token minted -> its audience

    def __post_init__(self):
        # One validator, its schema checked once (jsonschema.validate checks the schema on every call).
        self.validator = jsonschema.Draft202012Validator(request_schema(self.document, "GoogleCloudRunV2Service"))
        self.lock = threading.Lock()

    # -- helpers the tests use --------------------------------------------------------------
    def seed(self, name: str, labels: dict[str, str]) -> None:
        """A service made some other way (e.g. `gcloud run deploy`), serving one revision."""
        service_id = name.rsplit("/", 1)[-1]
        revision = f"{service_id}-00001-abc"
        template = {"revision": revision, "containers": [{"image": "us-docker.pkg.dev/cloudrun/container/hello"}]}
        self.revisions[name] = {revision: template}
        self.services[name] = self._status(name, {"name": name, "labels": labels, "template": template,
                                                  "traffic": [{"type": LATEST, "percent": 100}]}, revision, 1)

    def traffic(self, name: str) -> list[tuple[str, int, str]]:
        service = self.services[name]
        return [(s.get("revision", ""), s.get("percent", 0), s.get("tag", "")) for s in service["trafficStatuses"]]

    def signed_by_service_account(self, token: str) -> bool:
        """A JWT the service account signed (RS256), unexpired: what the client sends as a self-signed
        bearer token, or as the assertion it trades for an access token."""
        import base64
        import time

        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        def decode(part: str) -> bytes:
            return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

        parts = token.split(".")
        if self.public_key is None or len(parts) != 3:
            return False
        try:
            self.public_key.verify(decode(parts[2]), f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(),
                                   hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        claims = json.loads(decode(parts[1]))
        return claims.get("iss") == SERVICE_ACCOUNT and claims.get("exp", 0) > time.time()

    def claims(self, token: str) -> dict:
        """The claims of a JWT the service account signed (checked), else {}."""
        import base64

        if not self.signed_by_service_account(token):
            return {}
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

    def mint_id_token(self, audience: str) -> str:
        """A JWT-shaped ID token for `audience` (google-auth reads its expiry; only this double checks it)."""
        import base64
        import time

        def part(value: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        token = ".".join([part({"alg": "RS256", "typ": "JWT"}),
                          part({"aud": audience, "email": SERVICE_ACCOUNT, "exp": int(time.time()) + 3600,
                                "iat": int(time.time()), "iss": "https://accounts.google.com"}),
                          uuid.uuid4().hex])
        self.id_tokens[token] = audience
        return token

    def authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        return scheme == "Bearer" and (token == self.token or self.signed_by_service_account(token))

    # -- the API ----------------------------------------------------------------------------
    def _status(self, name: str, service: dict, ready: str | None, generation: int) -> dict:
        service_id, location = name.rsplit("/", 1)[-1], name.split("/")[3]
        base = f"https://{service_id}-abcdefghij-{location[:2]}.a.run.app"
        statuses = []
        for target in service.get("traffic", []):
            kind = enum_name(target.get("type", 0), self.document, "GoogleCloudRunV2TrafficTarget", "type")
            status = {"type": kind, "percent": target.get("percent", 0)}
            status["revision"] = ready if kind == LATEST else target.get("revision", "")
            if target.get("tag"):
                status["tag"] = target["tag"]
                image = ((self.revisions.get(name, {}).get(status["revision"]) or {}).get("containers")
                         or [{}])[0].get("image", "")
                status["uri"] = self.serve_at.get(image) or f"https://{target['tag']}---{base[len('https://'):]}"
            statuses.append(status)
        out = {key: value for key, value in service.items() if key != "etag"}
        out.update({"uri": base, "urls": [base], "generation": str(generation), "observedGeneration": str(generation),
                    "etag": f'"{uuid.uuid4().hex}"', "trafficStatuses": statuses,
                    "latestCreatedRevision": f"{name}/revisions/{service['template'].get('revision', '')}",
                    "terminalCondition": {"type": "Ready", "state": "CONDITION_SUCCEEDED"},
                    "conditions": [{"type": "Ready", "state": "CONDITION_SUCCEEDED"}]})
        if ready:
            out["latestReadyRevision"] = f"{name}/revisions/{ready}"
        return out

    def get_service(self, name: str) -> tuple[int, dict]:
        if "run.services.get" in self.denied:
            return _denied("run.services.get", name)
        if name not in self.services:
            return _error(404, "NOT_FOUND", f"Resource '{name}' was not found")
        return 200, self.services[name]

    def unknown_parameters(self, method: str, query: dict[str, str]) -> list[str]:
        """Query parameters the discovery document does not declare for `method` (nor as a standard one)."""
        resource = self.document["resources"]["projects"]["resources"]["locations"]["resources"]["services"]
        allowed = {*resource["methods"][method].get("parameters", {}), *self.document.get("parameters", {}), "$alt"}
        return sorted(set(query) - allowed)

    def update_service(self, name: str, query: dict[str, str], body: dict) -> tuple[int, dict]:
        unknown = self.unknown_parameters("patch", query)
        if unknown:
            self.refused.append(f"query parameters {unknown}")
            return _error(400, "INVALID_ARGUMENT", f"Unknown query parameters: {unknown}")
        try:
            self.validator.validate(body)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path)
            self.refused.append(f"{where}: {exc.message}")
            return _error(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {where}: {exc.message}")
        exists = name in self.services
        if not exists and query.get("allowMissing") != "true":
            return _error(404, "NOT_FOUND", f"Resource '{name}' was not found")
        permission = "run.services.update" if exists else "run.services.create"
        if permission in self.denied:
            return _denied(permission, name)
        if body.get("name", name) != name:  # the client moves `name` into the URL; if sent, it must agree
            return _error(400, "INVALID_ARGUMENT", f"service.name '{body.get('name')}' does not match the URL")
        old = self.services.get(name)
        if old is not None and body.get("etag") and body["etag"] != old["etag"]:
            return _error(409, "ABORTED", "The service was modified (etag mismatch); read it again.")
        if old is not None and query.get("updateMask"):
            new = {key: copy.deepcopy(value) for key, value in old.items()
                   if key in ("name", "labels", "annotations", "template", "traffic", "ingress")}
            for path in query["updateMask"].split(","):
                if path in body:
                    new[path] = body[path]
                else:
                    new.pop(path, None)
        else:
            new = {"name": name, **{key: value for key, value in body.items() if key != "etag"}}
        template = new.get("template") or {}
        service_id = name.rsplit("/", 1)[-1]
        revision = template.get("revision", "")
        if not revision.startswith(f"{service_id}-"):
            return _error(400, "INVALID_ARGUMENT", f"template.revision must start with '{service_id}-'.")
        known = self.revisions.setdefault(name, {})
        if revision in known and known[revision] != template:
            return _error(409, "ALREADY_EXISTS", f"Revision named '{revision}' with different configuration "
                                                 "already exists.")
        created = revision not in known
        traffic = new.get("traffic") or [{"type": LATEST, "percent": 100}]
        tags = [t["tag"] for t in traffic if t.get("tag")]
        if len(tags) != len(set(tags)):
            return _error(400, "INVALID_ARGUMENT", f"Traffic tags must be unique: {tags}")
        if sum(t.get("percent", 0) for t in traffic) != 100:
            return _error(400, "INVALID_ARGUMENT", "Traffic percentages must add up to 100.")
        for target in traffic:
            kind = enum_name(target.get("type", 0), self.document, "GoogleCloudRunV2TrafficTarget", "type")
            if kind == REVISION and target.get("revision") not in known and target.get("revision") != revision:
                return _error(400, "INVALID_ARGUMENT", f"Revision '{target.get('revision')}' does not exist.")
        known[revision] = copy.deepcopy(template)
        broken = any("broken" in c.get("image", "") for c in template.get("containers", []))
        if created and broken:
            self.failed_revisions.add(revision)
        generation = int(old["generation"]) + 1 if old else 1
        operation = f"{name.rsplit('/services/', 1)[0]}/operations/{uuid.uuid4()}"
        if revision in self.failed_revisions:
            # Cloud Run keeps serving what it served: the template moves on, the traffic does not.
            kept = {**new, "traffic": old["traffic"] if old else []}
            ready = old.get("latestReadyRevision", "").rsplit("/", 1)[-1] if old else None
            state = self._status(name, kept, ready or None, generation)
            state["terminalCondition"] = {"type": "Ready", "state": "CONDITION_FAILED",
                                          "message": f"Revision '{revision}' is not ready and cannot serve traffic."}
            self.services[name] = state
            self.operations[operation] = {"name": operation, "done": True, "error": {
                "code": 9, "message": f"Revision '{revision}' is not ready and cannot serve traffic. The user-provided "
                                      "container failed to start and listen on the port defined by the PORT=8080 "
                                      "environment variable."}}
        else:
            self.services[name] = self._status(name, new, revision, generation)
            self.operations[operation] = {"name": operation, "done": True,
                                          "response": {"@type": SERVICE_TYPE, **self.services[name]}}
        return 200, {"name": operation, "done": False, "metadata": {"@type": SERVICE_TYPE, **new}}

    def get_operation(self, name: str) -> tuple[int, dict]:
        if name not in self.operations:
            return _error(404, "NOT_FOUND", f"Operation '{name}' was not found")
        return 200, self.operations[name]


def _error(code: int, status: str, message: str) -> tuple[int, dict]:
    return code, {"error": {"code": code, "message": message, "status": status}}


def _denied(permission: str, name: str) -> tuple[int, dict]:
    return _error(403, "PERMISSION_DENIED", f"Permission '{permission}' denied on resource '{name}' (or it may not "
                                            "exist).")


def _handler(api: CloudRunApi):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parsed.query))
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if parsed.path == "/token" and method == "POST":
                form = dict(urllib.parse.parse_qsl(raw.decode()))
                claims = api.claims(form.get("assertion", ""))
                if not claims:
                    return self._send(400, {"error": "invalid_grant"})
                if claims.get("target_audience"):  # a service account asking for an ID token
                    return self._send(200, {"id_token": api.mint_id_token(claims["target_audience"])})
                return self._send(200, {"access_token": api.token, "expires_in": 3600, "token_type": "Bearer"})
            if not api.authorized(self.headers.get("Authorization")):
                return self._send(*_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."))
            body = json.loads(raw) if raw else None
            with api.lock:
                api.requests.append({"method": method, "path": parsed.path, "query": query, "body": body})
                service = SERVICE_PATH.match(parsed.path)
                operation = OPERATION_PATH.match(parsed.path)
                if service and method == "GET":
                    return self._send(*api.get_service(service.group(1)))
                if service and method == "PATCH":
                    return self._send(*api.update_service(service.group(1), query, body or {}))
                if operation and method == "GET":
                    return self._send(*api.get_operation(operation.group(1)))
            return self._send(*_error(404, "NOT_FOUND", f"{method} {parsed.path} is not part of this double"))

        def do_GET(self):
            self._route("GET")

        def do_PATCH(self):
            self._route("PATCH")

        def do_POST(self):
            self._route("POST")

    return Handler


@contextmanager
def cloudrun_api():
    """Serve a fresh double on 127.0.0.1; yields the CloudRunApi (its `url` is set)."""
    api = CloudRunApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


def adc_environment(api: CloudRunApi, folder: Path) -> dict[str, str]:
    """Environment for the real ADC chain: a service account key file (a fresh RSA key) whose token endpoint
    is the double, gcloud's config in an empty folder, and the metadata server pointed at a closed port."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    api.public_key = key.public_key()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    credentials = folder / "service-account.json"
    credentials.write_text(json.dumps({"type": "service_account", "client_email": SERVICE_ACCOUNT,
                                       "client_id": "1234567890", "private_key_id": "test-key", "private_key": pem,
                                       "token_uri": f"{api.url}/token"}))
    return {**no_credentials_environment(folder), "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
            "BENTO_COMPILE_CLOUDRUN_ENDPOINT": api.url}


def no_credentials_environment(folder: Path) -> dict[str, str]:
    """No credentials anywhere: no key file, an empty gcloud config, and no metadata server (never the
    link-local address: a closed port on 127.0.0.1 stands for it)."""
    from tests.support.helpers import free_port

    (folder / "gcloud").mkdir(exist_ok=True)
    closed = f"127.0.0.1:{free_port()}"
    return {"GOOGLE_APPLICATION_CREDENTIALS": "", "CLOUDSDK_CONFIG": str(folder / "gcloud"),
            "GCE_METADATA_HOST": closed, "GCE_METADATA_IP": closed, "NO_GCE_CHECK": "True",
            "GOOGLE_CLOUD_PROJECT": "", "CLOUDSDK_CORE_PROJECT": ""}
