"""A small client for the OCI distribution (registry v2) HTTP API: pull and push images.

Enough of the protocol to work with any registry without a Docker engine:
manifests and indexes (OCI and Docker media types), blobs verified against
their digest while they stream, monolithic blob uploads, and the token dance
(`WWW-Authenticate: Bearer realm=...`) with credentials from the environment
(`BENTO_COMPILE_REGISTRY_USER` / `_PASSWORD`) or `~/.docker/config.json`.
Registries on 127.0.0.0/8 and localhost are spoken to over plain HTTP, the
same rule Docker applies; everything else uses HTTPS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bento_compile.core.errors import BentoCompileError
from bento_compile.core.files import replacing_file

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
DOCKER_HUB = "registry-1.docker.io"
_CHUNK = 1 << 20
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageName:
    """An image reference split as written: `name[:tag][@digest]`, no registry defaults filled in."""

    name: str  # everything before the tag: [registry/]repository
    tag: str | None
    digest: str | None

    @property
    def tag_or_latest(self) -> str:
        return self.tag or "latest"


def parse_image_reference(reference: str) -> ImageName:
    """Split an image reference into name, tag and digest. A ':' after the last '/' starts the tag
    (so a registry port, `127.0.0.1:5000/churn`, is not one). Nothing is validated or normalised
    here: `Reference.parse` does that for what is pulled or pushed."""
    name, _, digest = reference.partition("@")
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    return ImageName(name, tag, digest or None)


@dataclass(frozen=True)
class Reference:
    """`registry/repository[:tag][@digest]`, normalised the way Docker does (docker.io/library/...)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        ref = text.strip()
        if not ref or " " in ref:
            raise BentoCompileError(f"'{text}' is not an image reference.",
                                    "Write it as REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST], "
                                    "e.g. 127.0.0.1:5000/churn:1.4.")
        split = parse_image_reference(ref)
        ref, tag, digest = split.name, split.tag, split.digest
        if "@" in text and not _DIGEST.match(digest or ""):
            raise BentoCompileError(f"'{text}' has an invalid digest '{digest or ''}'.",
                                    "A digest is sha256: followed by 64 lowercase hex digits.")
        first, _, rest = ref.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, rest
        else:
            registry, repository = "docker.io", ref
        if registry == "docker.io" and "/" not in repository:
            repository = f"library/{repository}"
        if not re.fullmatch(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*", repository):
            raise BentoCompileError(f"'{text}': repository '{repository}' is not valid.",
                                    "Use lowercase letters, digits and . _ - / in repository names.")
        return cls(registry, repository, tag, digest)

    @property
    def api_host(self) -> str:
        return DOCKER_HUB if self.registry == "docker.io" else self.registry

    @property
    def plain_http(self) -> bool:
        host = self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else self.registry
        return host == "localhost" or host.startswith("127.") or host == "[::1]"

    @property
    def name(self) -> str:
        """Without tag or digest: what goes in front of `@sha256:...`."""
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: str) -> str:
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


class RegistryClient:
    """One repository on one registry; keeps the bearer token it earns."""

    def __init__(self, ref: Reference, timeout: float = 60.0):
        self.ref = ref
        self.timeout = timeout
        self.base = f"{'http' if ref.plain_http else 'https'}://{ref.api_host}/v2/{ref.repository}"
        self._auth: str | None = None

    # -- plumbing -------------------------------------------------------------------------------
    def _request(self, method: str, url: str, data=None, headers: dict[str, str] | None = None,
                 ok: tuple[int, ...] = (200,), _retry: bool = True):
        headers = dict(headers or {})
        if self._auth:
            headers["Authorization"] = self._auth
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and _retry and self._authenticate(exc.headers.get("WWW-Authenticate", "")):
                if hasattr(data, "seek"):
                    data.seek(0)
                return self._request(method, url, data, headers, ok, _retry=False)
            if exc.code in ok:
                return exc
            body = exc.read(2000).decode("utf-8", "replace")
            raise BentoCompileError(f"The registry answered {exc.code} to {method} {url}: {body.strip()}",
                                    self._advice(exc.code)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise BentoCompileError(f"Cannot reach the registry {self.ref.registry} ({method} {url}): {exc}",
                                    "Check the address and that the registry is running; "
                                    "registries on 127.0.0.1/localhost are spoken to over plain HTTP.") from None
        if response.status not in ok:
            raise BentoCompileError(f"The registry answered {response.status} to {method} {url}.",
                                    self._advice(response.status))
        return response

    def _advice(self, status: int) -> str:
        if status in (401, 403):
            return ("Log in: set BENTO_COMPILE_REGISTRY_USER and BENTO_COMPILE_REGISTRY_PASSWORD, "
                    "or run `docker login` so ~/.docker/config.json holds the credentials.")
        if status == 404:
            return f"Check that {self.ref} exists (repository and tag are case-sensitive)."
        return "Retry; if it persists, check the registry's logs."

    def _credentials(self) -> str | None:
        user = os.environ.get("BENTO_COMPILE_REGISTRY_USER")
        if user:
            return base64.b64encode(f"{user}:{os.environ.get('BENTO_COMPILE_REGISTRY_PASSWORD', '')}".encode()).decode()
        config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
        try:
            auths = json.loads(config.read_text()).get("auths", {})
        except (OSError, ValueError):
            return None
        for key in (self.ref.registry, f"https://{self.ref.registry}",
                    "https://index.docker.io/v1/" if self.ref.registry == "docker.io" else None):
            if key and auths.get(key, {}).get("auth"):
                return auths[key]["auth"]
        return None

    def _authenticate(self, challenge: str) -> bool:
        scheme, _, params = challenge.partition(" ")
        creds = self._credentials()
        if scheme.lower() == "basic":
            if creds:
                self._auth = f"Basic {creds}"
                return True
            return False
        if scheme.lower() != "bearer":
            return False
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.pop("realm", None)
        if not realm:
            return False
        fields.setdefault("scope", f"repository:{self.ref.repository}:pull,push")
        url = f"{realm}?{urllib.parse.urlencode(fields)}"
        headers = {"Authorization": f"Basic {creds}"} if creds else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout) as r:
                token = json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError):
            return False
        value = token.get("token") or token.get("access_token")
        if not value:
            return False
        self._auth = f"Bearer {value}"
        return True

    # -- pull -----------------------------------------------------------------------------------
    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        """(raw bytes, media type, digest) of a manifest or index, the digest checked when asked by digest."""
        with self._request("GET", f"{self.base}/manifests/{reference}", headers={"Accept": ACCEPT}) as response:
            raw = response.read(16 << 20)
            media_type = response.headers.get("Content-Type", "").split(";")[0]
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise BentoCompileError(f"The registry sent a manifest whose digest is {digest}, not {reference}.",
                                    "The registry or a proxy is corrupting content; do not use this image.")
        if not media_type or media_type == "application/json":
            media_type = json.loads(raw).get("mediaType", OCI_MANIFEST)
        return raw, media_type, digest

    def head_manifest(self, reference: str) -> str | None:
        """The digest a tag points to, or None when the tag is unknown."""
        response = self._request("HEAD", f"{self.base}/manifests/{reference}", headers={"Accept": ACCEPT},
                                 ok=(200, 404))
        if response.status == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        _raw, _type, digest = self.get_manifest(reference)
        return digest

    def fetch_blob(self, digest: str, dest: Path) -> None:
        """Stream a blob to `dest`, verifying its sha256; a mismatch leaves nothing behind."""
        hasher = hashlib.sha256()
        with replacing_file(dest) as tmp:
            with self._request("GET", f"{self.base}/blobs/{digest}") as response, open(tmp, "wb") as out:
                while chunk := response.read(_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
            if "sha256:" + hasher.hexdigest() != digest:
                raise BentoCompileError(f"Blob {digest} from {self.ref.registry} does not match its digest.",
                                        "The download was corrupted; retry.")

    # -- push -----------------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        return self._request("HEAD", f"{self.base}/blobs/{digest}", ok=(200, 404)).status == 200

    def upload_blob(self, digest: str, path: Path) -> None:
        if self.has_blob(digest):
            return
        response = self._request("POST", f"{self.base}/blobs/uploads/", data=b"", ok=(202,))
        location = response.headers["Location"]
        if location.startswith("/"):
            scheme_host = self.base.split("/v2/", 1)[0]
            location = scheme_host + location
        location += ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
        size = path.stat().st_size
        with open(path, "rb") as body:
            self._request("PUT", location, data=body, ok=(201,),
                          headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})

    def put_manifest(self, reference: str, raw: bytes, media_type: str) -> str:
        response = self._request("PUT", f"{self.base}/manifests/{reference}", data=raw, ok=(201,),
                                 headers={"Content-Type": media_type})
        return response.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(raw).hexdigest()
