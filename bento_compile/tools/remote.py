"""The remote Bento store on S3 (or anything that speaks its API): push, pull, list, stage tags.

Layout under s3://bucket/prefix/:

    bentos/NAME/VERSION/<every file the manifest lists>
    bentos/NAME/VERSION/signature.json      (when signed)
    bentos/NAME/VERSION/manifest.json       (uploaded LAST: its presence means the Bento is whole)
    stages/NAME/STAGE.json                  (pointer: version + manifest sha256; one PUT, so atomic)

Why this shape:
- Keys are content-addressed (VERSION is the hash of the content), so a key's
  bytes never change: re-pushing skips what is there, and a half-finished
  multipart upload for a key can be resumed by anyone, part by part, after
  checking each part's MD5 ETag against the local bytes.
- A reader trusts nothing it downloads: the manifest must name the version
  asked for (and match the stage pointer's digest), every file must match the
  manifest's sha256 and size, a signature is checked when a key is given, and
  only then is the staged folder renamed into the local store. Hashes catch
  corruption; only a signature (`pull --pub`) proves who made the Bento: a
  writer to the bucket could rewrite a model and its manifest consistently.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore, StoredBento
from bento_compile.runtimes.boundary import UnsafeName, check_bento_names, check_version
from bento_compile.runtimes.errors import IntegrityError
from bento_compile.runtimes.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    read_manifest,
    sha256_file,
    verify_files,
)
from bento_compile.runtimes.names import parse_bento_tag
from bento_compile.runtimes.trust import SIGNATURE_NAME

MiB = 1024 * 1024
MIN_PART = 5 * MiB          # S3's minimum part size (all parts but the last)
MAX_PARTS = 10_000          # S3's maximum part count
MAX_MANIFEST = 16 * MiB
STAGE_PATTERN = re.compile(r"^[a-z][a-z0-9._-]{0,62}$")
Progress = Callable[[str], None]


def parse_s3_url(url: str) -> tuple[str, str]:
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?", url or "")
    if not match:
        raise BentoCompileError(f"'{url}' is not an S3 URL.", "Use s3://bucket or s3://bucket/prefix.")
    return match[1], (match[2] or "").strip("/")


def parse_remote_tag(tag: str) -> tuple[str, str]:
    """`NAME[:VERSION|:STAGE|:latest]` → (name, ref), or an error saying how to write one."""
    parsed = parse_bento_tag(tag)
    if parsed is None:
        raise BentoCompileError(f"'{tag}' is not a Bento tag.", "Use NAME:VERSION, NAME:STAGE or NAME:latest.")
    return parsed


def split_ref(url: str) -> tuple[str, str, str]:
    """s3://bucket/prefix/NAME:REF → (s3://bucket/prefix, NAME, REF)."""
    base, _, last = (url or "").rstrip("/").rpartition("/")
    if not base.startswith("s3://") or base == "s3:/":
        raise BentoCompileError(f"'{url}' does not name a Bento in S3.",
                                "Use s3://bucket/prefix/NAME:VERSION, e.g. s3://models/bentos/churn:prod.")
    name, ref = parse_remote_tag(last)
    return base, name, ref


@dataclass
class PushResult:
    uploaded_bytes: int = 0
    reused_bytes: int = 0
    skipped: int = 0


class RemoteStore:
    """One bucket + prefix; all access through a boto3 S3 client."""

    def __init__(self, bucket: str, prefix: str, client: Any, part_size: int = 64 * MiB,
                 multipart_threshold: int = 64 * MiB):
        self.bucket, self.prefix, self.client = bucket, prefix.strip("/"), client
        self.part_size = max(part_size, MIN_PART)
        self.multipart_threshold = max(multipart_threshold, MIN_PART)

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None, **kwargs: Any) -> RemoteStore:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise BentoCompileError("The remote store needs boto3, which is not installed.",
                                    "pip install 'bento-compile[s3]' (or pip install boto3).") from None
        bucket, prefix = parse_s3_url(url)
        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 5)
        config = Config(retries={"max_attempts": attempts, "mode": "standard"},
                        s3={"addressing_style": "path"} if endpoint_url or os.environ.get("AWS_ENDPOINT_URL") else {})
        client = boto3.client("s3", endpoint_url=endpoint_url or None, config=config)
        return cls(bucket, prefix, client, **kwargs)

    # -- keys ---------------------------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _bento_key(self, name: str, version: str, file: str = "") -> str:
        return self._key("bentos", name, version, file)

    def url_for(self, name: str, version: str) -> str:
        return f"s3://{self.bucket}/{self._key(f'{name}:{version}')}"

    # -- errors -------------------------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(what, exc) from None

    def _translate(self, what: str, exc: Exception) -> Exception:
        """A BentoCompileError with a fix for what a user can act on; anything else unchanged."""
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                return BentoCompileError(f"The bucket '{self.bucket}' does not exist ({what}).",
                                         "Create it first, or check the s3:// URL and --endpoint-url.")
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                return BentoCompileError(f"S3 refused {what}: {code}.",
                                         "Check AWS credentials (AWS_PROFILE / AWS_ACCESS_KEY_ID) and the "
                                         "bucket policy.")
            return exc
        if isinstance(exc, BotoCoreError):
            return BentoCompileError(f"S3 request failed ({what}): {exc}",
                                     "Check the endpoint (--endpoint-url), network and credentials; "
                                     "re-run the command: it resumes.")
        return exc

    def _list_keys(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        keys = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys += [obj["Key"] for obj in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(f"listing s3://{self.bucket}/{prefix}", exc) from None
        return keys

    @staticmethod
    def _missing(exc: Exception) -> bool:
        from botocore.exceptions import ClientError

        return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in (
            "404", "NoSuchKey", "NotFound")

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self._call(f"HEAD {key}", self.client.head_object, Key=key)
        except Exception as exc:
            if self._missing(exc):
                return None
            raise

    def _get_small(self, key: str, limit: int = MAX_MANIFEST) -> bytes | None:
        try:
            response = self._call(f"GET {key}", self.client.get_object, Key=key)
        except Exception as exc:
            if self._missing(exc):
                return None
            raise
        if response["ContentLength"] > limit:
            raise BentoCompileError(f"s3://{self.bucket}/{key} is {response['ContentLength']} bytes, over the "
                                    f"{limit}-byte limit for metadata.", "The object is not a Bento file; re-push.")
        return response["Body"].read()

    # -- push ---------------------------------------------------------------------------------------------------
    def push(self, bento_dir: Path, progress: Progress = lambda _m: None) -> PushResult:
        """Upload a verified Bento: listed files, then signature.json, then manifest.json; then `latest`."""
        root = Path(bento_dir)
        manifest = read_manifest(root)
        try:
            verify_files(root, manifest)
        except IntegrityError as exc:
            raise BentoCompileError(f"Refusing to push {manifest.tag}: {exc}", "Rebuild the Bento.") from None
        result = PushResult()
        files = [(rel, meta.sha256, meta.size) for rel, meta in sorted(manifest.files.items())]
        if (root / SIGNATURE_NAME).is_file():
            sig = root / SIGNATURE_NAME
            files.append((SIGNATURE_NAME, sha256_file(sig), sig.stat().st_size))
        manifest_path = root / MANIFEST_NAME
        files.append((MANIFEST_NAME, sha256_file(manifest_path), manifest_path.stat().st_size))
        for relative, digest, size in files:
            key = self._bento_key(manifest.name, manifest.version, relative)
            head = self._head(key)
            if head and head.get("Metadata", {}).get("sha256") == digest and head["ContentLength"] == size:
                result.skipped += 1
                continue
            progress(f"uploading {relative} ({size} bytes)")
            if size >= self.multipart_threshold:
                uploaded, reused = self._upload_multipart(key, root / relative, digest, size, progress)
                result.uploaded_bytes += uploaded
                result.reused_bytes += reused
            else:
                data = (root / relative).read_bytes()
                if hashlib.sha256(data).hexdigest() != digest:
                    raise BentoCompileError(f"{relative} changed while pushing.", "Re-run the push.")
                self._call(f"PUT {key}", self.client.put_object, Key=key, Body=data, Metadata={"sha256": digest},
                           ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode())
                result.uploaded_bytes += size
        self._write_stage(manifest.name, "latest", manifest.version, sha256_file(manifest_path))
        return result

    def _part_size(self, size: int) -> int:
        part = self.part_size
        while -(-size // part) > MAX_PARTS:
            part *= 2
        return part

    def _pending_upload(self, key: str) -> tuple[str | None, dict[int, tuple[str, int]]]:
        """The newest unfinished multipart upload for `key` and its parts {number: (etag, size)}."""
        uploads = self._call("list uploads", self.client.list_multipart_uploads, Prefix=key).get("Uploads", [])
        uploads = sorted((u for u in uploads if u["Key"] == key), key=lambda u: u["Initiated"], reverse=True)
        if not uploads:
            return None, {}
        upload_id = uploads[0]["UploadId"]
        parts: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:
            page = self._call("list parts", self.client.list_parts, Key=key, UploadId=upload_id,
                              PartNumberMarker=marker)
            for part in page.get("Parts", []):
                parts[part["PartNumber"]] = (part["ETag"].strip('"'), part["Size"])
            if not page.get("IsTruncated"):
                break
            marker = page["NextPartNumberMarker"]
        for stale in uploads[1:]:
            self._call("abort stale upload", self.client.abort_multipart_upload, Key=key, UploadId=stale["UploadId"])
        return upload_id, parts

    def _upload_multipart(self, key: str, path: Path, digest: str, size: int, progress: Progress) -> tuple[int, int]:
        """Resumable multipart upload: reuse parts whose MD5 matches, upload the rest, then complete."""
        part_size = self._part_size(size)
        upload_id, existing = self._pending_upload(key)
        if upload_id and any(psize != part_size for n, (_e, psize) in existing.items() if n * part_size < size):
            self._call("abort upload", self.client.abort_multipart_upload, Key=key, UploadId=upload_id)
            upload_id, existing = None, {}
        if upload_id is None:
            upload_id = self._call(f"start upload {key}", self.client.create_multipart_upload, Key=key,
                                   Metadata={"sha256": digest})["UploadId"]
        elif existing:
            progress(f"resuming {path.name}: {len(existing)} part(s) already uploaded")
        completed, uploaded, reused = [], 0, 0
        whole = hashlib.sha256()
        count = -(-size // part_size)
        with open(path, "rb") as handle:
            for number in range(1, count + 1):
                chunk = handle.read(part_size)
                whole.update(chunk)
                md5 = hashlib.md5(chunk)
                if existing.get(number) == (md5.hexdigest(), len(chunk)):
                    etag, reused = existing[number][0], reused + len(chunk)
                else:
                    progress(f"uploading {path.name} part {number}/{count}")
                    etag = self._call(f"upload part {number} of {key}", self.client.upload_part, Key=key,
                                      UploadId=upload_id, PartNumber=number, Body=chunk,
                                      ContentMD5=base64.b64encode(md5.digest()).decode())["ETag"].strip('"')
                    uploaded += len(chunk)
                completed.append({"PartNumber": number, "ETag": f'"{etag}"'})
        if whole.hexdigest() != digest:
            raise BentoCompileError(f"{path} changed while pushing (sha256 differs from the manifest).",
                                    "Rebuild the Bento; never edit files in the store.")
        self._call(f"complete upload {key}", self.client.complete_multipart_upload, Key=key, UploadId=upload_id,
                   MultipartUpload={"Parts": completed})
        return uploaded, reused

    # -- stages -------------------------------------------------------------------------------------------------
    def _write_stage(self, name: str, stage: str, version: str, manifest_sha256: str) -> dict[str, Any]:
        pointer = {"name": name, "stage": stage, "version": version, "manifest_sha256": manifest_sha256}
        body = (json.dumps(pointer, sort_keys=True) + "\n").encode()
        # One PUT replaces the whole object: readers see the old pointer or the new one, never a mix.
        self._call("write stage", self.client.put_object, Key=self._key("stages", name, f"{stage}.json"), Body=body,
                   ContentType="application/json")
        return pointer

    def read_stage(self, name: str, stage: str) -> dict[str, Any] | None:
        """The stage pointer, checked field by field: its version becomes a folder name in the store."""
        key = self._key("stages", name, f"{stage}.json")
        data = self._get_small(key, 64 * 1024)
        if data is None:
            return None
        where = f"the stage pointer s3://{self.bucket}/{key}"
        try:
            pointer = json.loads(data)
        except ValueError as exc:
            raise _bad_pointer(where, f"it is not JSON ({exc})") from None
        if not isinstance(pointer, dict):
            raise _bad_pointer(where, f"it holds a JSON {type(pointer).__name__}, not an object")
        for field in ("version", "manifest_sha256"):
            if not isinstance(pointer.get(field), str):
                raise _bad_pointer(where, f"its '{field}' is missing or not a string")
        try:
            check_version(pointer["version"], f"{where}: 'version'")
        except UnsafeName as exc:
            raise _bad_pointer(where, str(exc)) from None
        if not re.fullmatch(r"[0-9a-f]{64}", pointer["manifest_sha256"]):
            raise _bad_pointer(where, "its 'manifest_sha256' is not 64 lowercase hex digits")
        return pointer

    def set_stage(self, name: str, ref: str, stage: str) -> dict[str, Any]:
        """Promote: NAME:STAGE → the version REF resolves to (checked to exist and be whole)."""
        if not STAGE_PATTERN.match(stage) or re.fullmatch(r"[0-9a-f]{6,}", stage):
            raise BentoCompileError(f"'{stage}' is not a stage name.",
                                    "Use a word such as prod, staging or canary (not a hex version).")
        version, manifest_bytes, _ = self._resolve(name, ref)
        return self._write_stage(name, stage, version, hashlib.sha256(manifest_bytes).hexdigest())

    # -- pull ---------------------------------------------------------------------------------------------------
    def _versions(self, name: str) -> list[str]:
        prefix = self._bento_key(name, "") + "/"
        return [key[len(prefix):].split("/")[0] for key in self._list_keys(prefix)
                if key.endswith("/" + MANIFEST_NAME) and key[len(prefix):].count("/") == 1]

    def _resolve(self, name: str, ref: str) -> tuple[str, bytes, str | None]:
        """(version, manifest bytes, expected manifest sha256 from a stage pointer or None)."""
        expected = None
        pointer = self.read_stage(name, ref) if STAGE_PATTERN.match(ref) else None
        if pointer:
            version, expected = pointer["version"], pointer["manifest_sha256"]
        else:
            version = ref
            if self._head(self._bento_key(name, ref, MANIFEST_NAME)) is None:
                matches = [v for v in self._versions(name) if v.startswith(ref)]
                if len(matches) != 1:
                    known = ", ".join(sorted(self._versions(name))) or "none"
                    problem = "matches several versions" if matches else "is not in the remote store"
                    raise BentoCompileError(f"{name}:{ref} {problem} (s3://{self.bucket}/{self._key()}).",
                                            f"Pushed versions of {name}: {known}.")
                version = matches[0]
        data = self._get_small(self._bento_key(name, version, MANIFEST_NAME))
        if data is None:
            raise BentoCompileError(f"{name}:{version} has no manifest in s3://{self.bucket}/{self._key()} "
                                    "(the push never finished).", "Push it again.")
        return version, data, expected

    def pull(self, name: str, ref: str, store: BentoStore, public_key: bytes | None = None,
             progress: Progress = lambda _m: None) -> StoredBento:
        """Download into a staging folder, verify everything, then move into the local store."""
        version, manifest_bytes, expected = self._resolve(name, ref)
        source = f"s3://{self.bucket}/{self._bento_key(name, version)}"
        if expected and hashlib.sha256(manifest_bytes).hexdigest() != expected:
            raise _refused(source, f"{MANIFEST_NAME} does not match the sha256 recorded by the stage '{ref}'")
        try:
            manifest = Manifest.from_dict(json.loads(manifest_bytes))
            # Its version names the store folder and its file entries become paths: checked before either.
            check_bento_names(manifest.name, manifest.version, manifest.model_file, manifest.files)
        except UnsafeName as exc:
            raise _refused(source, str(exc)) from None
        except (ValueError, KeyError, TypeError, IntegrityError) as exc:
            raise _refused(source, f"{MANIFEST_NAME} is damaged ({type(exc).__name__}: {exc})") from None
        if (manifest.name, manifest.version) != (name, version):
            raise _refused(source, f"{MANIFEST_NAME} is for {manifest.tag}, not {name}:{version}: it was changed")
        with store.staging() as staged:
            for relative, meta in sorted(manifest.files.items()):
                progress(f"downloading {relative}")
                self._download(self._bento_key(name, version, relative), staged, relative, meta, source)
            signature = self._get_small(self._bento_key(name, version, SIGNATURE_NAME), 64 * 1024)
            if signature is not None:
                (staged / SIGNATURE_NAME).write_bytes(signature)
            (staged / MANIFEST_NAME).write_bytes(manifest_bytes)
            try:
                verify_files(staged, manifest)
                if public_key is not None:
                    from bento_compile.core.signing import verify_bento

                    verify_bento(staged, public_key)
            except IntegrityError as exc:
                raise _refused(source, str(exc)) from None
            path, _new = store.commit(staged, name, version)
        return StoredBento(path, read_manifest(path))

    def _download(self, key: str, staged: Path, relative: str, meta: FileEntry, source: str) -> None:
        dest = staged / relative
        if not dest.resolve().is_relative_to(staged.resolve()):
            raise _refused(source, f"the manifest names a file outside the Bento: {relative}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        response = self._call(f"GET {key}", self.client.get_object, Key=key)
        if response["ContentLength"] != meta.size:
            raise _refused(source, f"{relative} is {response['ContentLength']} bytes but the manifest says "
                           f"{meta.size}")
        digest, body = hashlib.sha256(), response["Body"]
        with open(dest, "wb") as out:
            for chunk in iter(lambda: body.read(MiB), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != meta.sha256:
            raise _refused(source, f"{relative} has sha256 {digest.hexdigest()} but the manifest says {meta.sha256}")

    # -- list ---------------------------------------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        """Whole Bentos (manifest present) with created, size, signed, and the stages pointing at each."""
        prefix = self._key("bentos") + "/"
        keys = set(self._list_keys(self._key() + "/" if self.prefix else ""))
        stages: dict[tuple[str, str], list[str]] = {}
        stage_prefix = self._key("stages") + "/"
        for key in sorted(k for k in keys if k.startswith(stage_prefix) and k.endswith(".json")):
            try:  # a damaged pointer must not hide the others (pull names what is wrong with it)
                pointer = json.loads(self._get_small(key, 64 * 1024) or b"{}")
                stages.setdefault((pointer["name"], pointer["version"]), []).append(pointer["stage"])
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        entries = []
        for key in sorted(k for k in keys if k.startswith(prefix) and k.endswith("/" + MANIFEST_NAME)):
            name, version = key[len(prefix):].split("/")[:2]
            raw = json.loads(self._get_small(key) or b"{}")
            entries.append({
                "tag": f"{name}:{version}", "name": name, "version": version, "created": raw.get("created", ""),
                "size": sum(meta.get("size", 0) for meta in raw.get("files", {}).values()),
                "signed": self._bento_key(name, version, SIGNATURE_NAME) in keys,
                "stages": sorted(stages.get((name, version), [])),
            })
        return sorted(entries, key=lambda e: (e["name"], e["created"]))


def _bad_pointer(where: str, detail: str) -> BentoCompileError:
    return BentoCompileError(f"Refusing {where}: {detail}. Nothing was written to the local store.",
                             "Point the stage again at a good version (bento-compile tag NAME:VERSION STAGE "
                             "--remote …), or pull a version (NAME:VERSION); if it keeps happening, the remote store "
                             "is being tampered with.")


def _refused(source: str, detail: str) -> BentoCompileError:
    return BentoCompileError(f"Refusing to pull {source}: {detail}. Nothing was written to the local store.",
                             "Re-push the Bento from a good copy; if it keeps happening, the remote store is being "
                             "tampered with.")
