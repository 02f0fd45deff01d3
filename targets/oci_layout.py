"""Daemonless image building: write an OCI image layout directly, no Docker engine.

An image is a few JSON documents and tar layers addressed by sha256. This
module writes them itself, reproducibly: layer entries are sorted, owned by
root, with fixed permissions and a fixed mtime (the Bento's creation time),
gzip runs with no file name and mtime 0, and the config's `created` is that
same time. Building the same Bento on the same base twice therefore gives
the same layer digests and the same manifest digest.

The base image comes from an OCI layout folder (`path` or `path:tag`, e.g.
what `skopeo copy` or `umoci` writes) or from a registry over its HTTP API;
its blobs are copied unchanged (digests stay valid), only media types are
normalised to OCI. `push_layout` uploads a layout to a registry the same way.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from bento_compile.core.errors import BentoCompileError
from bento_compile.core.files import replacing_folder
from bento_compile.targets.registry import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Reference,
    RegistryClient,
)

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": OCI_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar": OCI_LAYER_TAR,
    OCI_LAYER_GZIP: OCI_LAYER_GZIP,
    OCI_LAYER_TAR: OCI_LAYER_TAR,
    "application/vnd.oci.image.layer.v1.tar+zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
OCI_ARCH = {"x86_64": "amd64", "amd64": "amd64", "arm64": "arm64", "aarch64": "arm64"}
_CHUNK = 1 << 20


# -- layers -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileEntry:
    """One file in a layer: its absolute path in the image and where its bytes come from."""

    path: str
    source: Path | None = None
    data: bytes | None = None
    mode: int = 0o644
    link: str | None = None  # a symlink target instead of content

    def size(self) -> int:
        if self.link is not None:
            return 0
        return len(self.data) if self.data is not None else self.required_source().stat().st_size

    def required_source(self) -> Path:
        """The file to copy, for an entry that is neither a link nor inline data."""
        if self.source is None:
            raise BentoCompileError(f"Layer entry '{self.path}' has no content (no source, data or link).",
                                    "This is a bug in the target; report it.")
        return self.source


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class _HashingWriter:
    """A write-only file that hashes and counts what passes through it to `inner`."""

    def __init__(self, inner: _Writable):
        self.inner = inner
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.inner.write(data)

    def flush(self) -> None:
        self.inner.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def write_layer(entries: list[FileEntry], blobs: Path, mtime: int) -> tuple[dict, str]:
    """Write a gzipped tar layer into `blobs` (…/blobs/sha256). Returns (descriptor, diff_id).

    Parent folders are added (0755), entries are sorted, ownership is root and
    the mtime fixed, so the same entries give the same bytes on every machine.
    """
    files: dict[str, FileEntry] = {}
    for entry in entries:
        name = entry.path.strip("/")
        if not name or ".." in name.split("/"):
            raise BentoCompileError(f"Layer path '{entry.path}' is not a plain absolute path.",
                                    "This is a bug in the target; report it.")
        files[name] = entry
    dirs = sorted({p for name in files for p in _parents(name)} - set(files))
    blobs.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=blobs, prefix=".layer-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            compressed = _HashingWriter(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6) as gz:
                plain = _HashingWriter(gz)
                # A "w|" stream only ever calls write(); typeshed's fileobj protocol also asks for read/seek/tell.
                with tarfile.open(fileobj=plain, mode="w|",  # type: ignore[call-overload]
                                  format=tarfile.PAX_FORMAT) as tar:
                    for name in sorted([*dirs, *files]):
                        info = tarfile.TarInfo(name)
                        info.mtime = mtime
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        item = files.get(name)
                        if item is None:
                            info.type, info.mode = tarfile.DIRTYPE, 0o755
                            tar.addfile(info)
                        elif item.link is not None:
                            info.type, info.linkname, info.mode = tarfile.SYMTYPE, item.link, 0o777
                            tar.addfile(info)
                        elif item.data is not None:
                            info.size, info.mode = len(item.data), item.mode
                            tar.addfile(info, io.BytesIO(item.data))
                        else:
                            source = item.required_source()
                            info.size, info.mode = source.stat().st_size, item.mode
                            with open(source, "rb") as handle:
                                tar.addfile(info, handle)
        digest = compressed.digest
        tmp.replace(blobs / digest.split(":", 1)[1])
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": compressed.size}, plain.digest


# -- layouts ----------------------------------------------------------------------------------
def canonical_json(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Layout:
    """An OCI image layout folder: `oci-layout`, `index.json`, `blobs/sha256/…`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"

    def create(self) -> Layout:
        self.blobs.mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        return self

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.split(":", 1)[1]

    def put_json(self, document: dict, media_type: str) -> dict:
        raw = canonical_json(document)
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        self.blob_path(digest).write_bytes(raw)
        return {"mediaType": media_type, "digest": digest, "size": len(raw)}

    def read_json(self, digest: str) -> dict:
        try:
            raw = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise BentoCompileError(f"{self.root} lacks the blob {digest}.",
                                    "The layout is incomplete; copy it again (skopeo copy ... oci:DIR:TAG).") from None
        if "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
            raise BentoCompileError(f"Blob {digest} in {self.root} does not match its digest.",
                                    "The layout is corrupted; copy it again.")
        return json.loads(raw)

    def index(self) -> dict:
        try:
            return json.loads((self.root / "index.json").read_text())
        except (OSError, ValueError) as exc:
            raise BentoCompileError(f"{self.root} is not an OCI image layout ({exc}).",
                                    "Pass a folder written by `skopeo copy ... oci:DIR:TAG`, or a registry "
                                    "reference such as 127.0.0.1:5000/python:3.11.") from None

    def write_index(self, manifests: list[dict]) -> None:
        tmp = self.root / "index.json.tmp"
        tmp.write_bytes(canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}))
        tmp.replace(self.root / "index.json")


# -- base images ------------------------------------------------------------------------------
@dataclass
class BaseImage:
    """A resolved base image: its config, its layer descriptors, and where their blobs are."""

    reference: str
    config: dict
    layers: list[dict]
    blob_dir: Path  # folder of blobs named by hex digest
    manifest_digest: str = ""
    annotations: dict = field(default_factory=dict)
    _scan: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def blob(self, digest: str) -> Path:
        return self.blob_dir / digest.split(":", 1)[1]

    def python_version(self) -> str | None:
        """The base's Python minor version: from PYTHON_VERSION (official images) or the layers' files."""
        for item in self.config.get("config", {}).get("Env") or []:
            key, _, value = item.partition("=")
            if key == "PYTHON_VERSION" and re.match(r"^3\.\d+", value):
                return ".".join(value.split(".")[:2])
        return self.scan()["python"]

    def scan(self) -> dict:
        """One pass over the base's layers: its python3.X binary, and whether libstdc++ is there
        (every manylinux wheel of numpy / onnxruntime links it)."""
        if self._scan is not None:
            return self._scan
        found: dict[str, Any] = {"python": None, "libstdcxx": False}
        python = re.compile(r"^\.?/?(?:usr/bin|usr/local/bin|var/lang/bin)/python(3\.\d+)$")
        libstdcxx = re.compile(r"(^|/)(usr/)?lib(64)?/(.*/)?libstdc\+\+\.so\.6$")
        for layer in self.layers:
            if not layer["mediaType"].endswith(("tar+gzip", "tar")):
                continue
            with tarfile.open(self.blob(layer["digest"]), mode="r|*") as tar:
                for member in tar:
                    match = python.match(member.name)
                    if match:
                        found["python"] = match.group(1)
                    elif libstdcxx.search(member.name):
                        found["libstdcxx"] = True
        self._scan = found
        return found


def is_layout_reference(text: str) -> bool:
    path = text.rsplit(":", 1)[0] if ":" in text and not Path(text).exists() else text
    return (Path(path) / "oci-layout").is_file()


def load_base(reference: str, arch: str, cache: Path) -> BaseImage:
    """Open a base image from an OCI layout (`DIR` or `DIR:TAG`) or a registry reference."""
    if is_layout_reference(reference):
        return _base_from_layout(reference, arch)
    return _base_from_registry(reference, arch, cache)


def _pick_platform(manifests: list[dict], arch: str, where: str) -> dict:
    want = OCI_ARCH[arch]
    for descriptor in manifests:
        platform = descriptor.get("platform")
        if platform and platform.get("os", "linux") == "linux" and platform.get("architecture") == want:
            return descriptor
    archs = sorted({d.get("platform", {}).get("architecture", "?") for d in manifests})
    raise BentoCompileError(f"{where} has no linux/{want} image (it has: {', '.join(archs)}).",
                            f"Pick a base image built for {want}, or change --arch.")


def _base_from_layout(reference: str, arch: str) -> BaseImage:
    path, tag = (reference, None)
    if not (Path(reference) / "oci-layout").is_file():
        path, tag = reference.rsplit(":", 1)
    layout = Layout(Path(path))
    manifests = layout.index().get("manifests", [])
    if tag is not None:
        manifests = [m for m in manifests if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
        if not manifests:
            raise BentoCompileError(f"The layout {path} has no image tagged '{tag}'.",
                                    "List its tags with `skopeo inspect oci:DIR` or look at index.json.")
    if not manifests:
        raise BentoCompileError(f"The layout {path} holds no image.", "Copy an image into it first.")
    descriptor = manifests[0]
    if len(manifests) > 1 or descriptor["mediaType"] in (OCI_INDEX, DOCKER_LIST):
        nested = []
        for item in manifests:
            if item["mediaType"] in (OCI_INDEX, DOCKER_LIST):
                nested += layout.read_json(item["digest"]).get("manifests", [])
            else:
                nested.append(item)
        if len(nested) == 1 and "platform" not in nested[0]:
            descriptor = nested[0]
        else:
            descriptor = _pick_platform(nested, arch, str(path))
    manifest = layout.read_json(descriptor["digest"])
    config = layout.read_json(manifest["config"]["digest"])
    _check_arch(config, arch, reference)
    for layer in manifest["layers"]:
        if not layout.blob_path(layer["digest"]).is_file():
            raise BentoCompileError(f"The layout {path} lacks the layer {layer['digest']}.",
                                    "Copy the image again with `skopeo copy`.")
    return BaseImage(reference, config, [_normalise_layer(x) for x in manifest["layers"]], layout.blobs,
                     descriptor["digest"])


def _check_arch(config: dict, arch: str, where: str) -> None:
    found = config.get("architecture")
    if found and found != OCI_ARCH[arch]:
        raise BentoCompileError(f"The base image {where} is for {found}, not {OCI_ARCH[arch]}.",
                                f"Pass a base built for {OCI_ARCH[arch]}, or --arch matching the base.")


def _normalise_layer(layer: dict) -> dict:
    media_type = _LAYER_TYPES.get(layer["mediaType"])
    if media_type is None:
        raise BentoCompileError(f"Base layer type {layer['mediaType']} is not supported.",
                                "Use a base image with gzip or plain tar layers.")
    return {"mediaType": media_type, "digest": layer["digest"], "size": layer["size"]}


def _base_from_registry(reference: str, arch: str, cache: Path) -> BaseImage:
    ref = Reference.parse(reference)
    client = RegistryClient(ref)
    raw, media_type, digest = client.get_manifest(ref.digest or ref.tag or "latest")
    document = json.loads(raw)
    if media_type in (OCI_INDEX, DOCKER_LIST):
        descriptor = _pick_platform(document.get("manifests", []), arch, str(ref))
        raw, media_type, digest = client.get_manifest(descriptor["digest"])
        document = json.loads(raw)
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise BentoCompileError(f"{ref} has an unsupported manifest type {media_type}.",
                                "Use an image in OCI or Docker v2 schema 2 format.")
    blobs = cache / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for descriptor in [document["config"], *document["layers"]]:
        target = blobs / descriptor["digest"].split(":", 1)[1]
        if not target.is_file():
            client.fetch_blob(descriptor["digest"], target)
    config = json.loads((blobs / document["config"]["digest"].split(":", 1)[1]).read_bytes())
    _check_arch(config, arch, str(ref))
    return BaseImage(str(ref), config, [_normalise_layer(x) for x in document["layers"]], blobs, digest)


# -- images -----------------------------------------------------------------------------------
def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class LayerSpec:
    """A layer to add on top of the base: a name for the history, and its files.

    `mtime` pins the file times of layers that must not change with the model
    (dependencies, runtime), so a new Bento reuses them; None means the image's
    time. `cache_key`, when set, names the layer's exact content (the caller
    vouches for it), so the compressed blob is reused instead of written again.
    """

    name: str
    entries: list[FileEntry]
    mtime: int | None = None
    cache_key: str | None = None


@dataclass
class ImageConfig:
    """What the runtime config of the new image says (on top of the base's)."""

    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    workdir: str
    user: str
    labels: dict[str, str]
    exposed_ports: list[int] = field(default_factory=list)
    stop_signal: str = "SIGTERM"


def image_config(base: BaseImage, arch: str, config: ImageConfig, diff_ids: list[str], history: list[dict],
                 created: str) -> dict:
    """The OCI image config: the base's, with our env/entrypoint/labels/layers on top.

    Every history entry carries `created` (umoci 0.4.7 crashes without one).
    """
    base_cfg = base.config.get("config") or {}
    env = {}
    for item in base_cfg.get("Env") or []:
        key, _, value = item.partition("=")
        env[key] = value
    env.update(config.env)
    runtime = {
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Entrypoint": config.entrypoint,
        "Cmd": config.cmd,
        "WorkingDir": config.workdir,
        "User": config.user,
        "Labels": {**(base_cfg.get("Labels") or {}), **config.labels},
        "StopSignal": config.stop_signal,
    }
    if config.exposed_ports:
        runtime["ExposedPorts"] = {f"{p}/tcp": {} for p in config.exposed_ports}
    base_history = [dict(h, created=h.get("created") or created) for h in base.config.get("history") or []]
    return {
        "created": created,
        "architecture": OCI_ARCH[arch],
        "os": "linux",
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": [*base.config.get("rootfs", {}).get("diff_ids", []), *diff_ids]},
        "history": [*base_history, *history],
    }


@dataclass
class LayoutImage:
    """What `build_layout` made: where, the manifest digest, and the layer descriptors."""

    layout: Path
    tag: str
    digest: str
    config_digest: str
    layers: list[dict]
    size: int


def _cached_layer(layer: LayerSpec, layout: Layout, epoch: int, cache: Path | None) -> tuple[dict, str]:
    """Write a layer, or link it from `cache` when its `cache_key` was written before."""
    mtime = layer.mtime if layer.mtime is not None else epoch
    if cache is None or layer.cache_key is None:
        return write_layer(layer.entries, layout.blobs, mtime)
    key = hashlib.sha256(f"{layer.cache_key}|{mtime}".encode()).hexdigest()
    record = cache / f"{key}.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        blob = cache / saved["descriptor"]["digest"].split(":", 1)[1]
        if blob.is_file() and blob.stat().st_size == saved["descriptor"]["size"]:
            _link_or_copy(blob, layout.blob_path(saved["descriptor"]["digest"]))
            return saved["descriptor"], saved["diff_id"]
    descriptor, diff_id = write_layer(layer.entries, layout.blobs, mtime)
    cache.mkdir(parents=True, exist_ok=True)
    _link_or_copy(layout.blob_path(descriptor["digest"]), cache / descriptor["digest"].split(":", 1)[1])
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps({"descriptor": descriptor, "diff_id": diff_id}))
    tmp.replace(record)
    return descriptor, diff_id


def build_layout(base: BaseImage, layers: list[LayerSpec], config: ImageConfig, arch: str, out: Path,
                 tag: str, epoch: int, annotations: dict[str, str] | None = None,
                 layer_cache: Path | None = None) -> LayoutImage:
    """Write base + layers as an OCI image layout in `out` (replaced atomically), tagged `tag`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing_folder(out, ".oci-") as work:
        layout = Layout(work).create()
        for base_layer in base.layers:
            _link_or_copy(base.blob(base_layer["digest"]), layout.blob_path(base_layer["digest"]))
        descriptors, diff_ids, history = [], [], []
        created = rfc3339(epoch)
        for layer in layers:
            descriptor, diff_id = _cached_layer(layer, layout, epoch, layer_cache)
            descriptors.append(descriptor)
            diff_ids.append(diff_id)
            history.append({"created": created, "created_by": f"bento-compile: {layer.name}"})
        config_doc = image_config(base, arch, config, diff_ids, history, created)
        config_descriptor = layout.put_json(config_doc, OCI_CONFIG)
        all_layers = [*base.layers, *descriptors]
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor,
                    "layers": all_layers}
        if annotations:
            manifest["annotations"] = dict(sorted(annotations.items()))
        manifest_descriptor = layout.put_json(manifest, OCI_MANIFEST)
        layout.write_index([{**manifest_descriptor,
                             "platform": {"architecture": OCI_ARCH[arch], "os": "linux"},
                             "annotations": {"org.opencontainers.image.ref.name": tag}}])
    return LayoutImage(out, tag, manifest_descriptor["digest"], config_descriptor["digest"], all_layers,
                       sum(d["size"] for d in all_layers))


def _link_or_copy(source: Path, dest: Path) -> None:
    if dest.exists():
        return
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def push_layout(layout_dir: Path, tag: str, destination: str) -> str:
    """Upload the image tagged `tag` in a layout to `destination` (REGISTRY/REPO[:TAG]). Returns its digest."""
    layout = Layout(Path(layout_dir))
    matches = [m for m in layout.index().get("manifests", [])
               if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    if not matches:
        raise BentoCompileError(f"{layout_dir} has no image tagged '{tag}'.", "Build the image first.")
    descriptor = matches[0]
    raw = layout.blob_path(descriptor["digest"]).read_bytes()
    manifest = json.loads(raw)
    ref = Reference.parse(destination)
    client = RegistryClient(ref)
    for blob in [manifest["config"], *manifest["layers"]]:
        client.upload_blob(blob["digest"], layout.blob_path(blob["digest"]))
    return client.put_manifest(ref.tag or tag, raw, descriptor["mediaType"])


def layout_from_rootfs_tar(rootfs_tar: Path, out: Path, arch: str, tag: str, epoch: int = 0,
                           env: dict[str, str] | None = None) -> LayoutImage:
    """Turn a root file system tar (e.g. from `mmdebstrap --format=tar`) into a one-layer base image layout.

    The tar is gzipped as it is (no re-packing), so its digest depends only on its bytes.
    """
    out = Path(out)
    with replacing_folder(out, ".oci-") as work:
        layout = Layout(work).create()
        fd, tmp_name = tempfile.mkstemp(dir=layout.blobs, prefix=".layer-")
        with os.fdopen(fd, "wb") as raw:
            compressed = _HashingWriter(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=1) as gz:
                plain = _HashingWriter(gz)
                with open(rootfs_tar, "rb") as source:
                    while chunk := source.read(_CHUNK):
                        plain.write(chunk)
        Path(tmp_name).replace(layout.blob_path(compressed.digest))
        descriptor = {"mediaType": OCI_LAYER_GZIP, "digest": compressed.digest, "size": compressed.size}
        created = rfc3339(epoch)
        config = {
            "created": created, "architecture": OCI_ARCH[arch], "os": "linux",
            "config": {"Env": [f"{k}={v}" for k, v in {
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})}.items()]},
            "rootfs": {"type": "layers", "diff_ids": [plain.digest]},
            "history": [{"created": created, "created_by": f"rootfs from {Path(rootfs_tar).name}"}],
        }
        config_descriptor = layout.put_json(config, OCI_CONFIG)
        manifest_descriptor = layout.put_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                               "config": config_descriptor, "layers": [descriptor]}, OCI_MANIFEST)
        layout.write_index([{**manifest_descriptor, "platform": {"architecture": OCI_ARCH[arch], "os": "linux"},
                             "annotations": {"org.opencontainers.image.ref.name": tag}}])
    return LayoutImage(out, tag, manifest_descriptor["digest"], config_descriptor["digest"], [descriptor],
                       compressed.size)

