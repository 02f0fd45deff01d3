"""Refusing to serve a Bento that was not signed by the key the operator trusts.

Ships inside every artifact, so it stays import-light: reading and parsing
keys is plain Python (an Ed25519 public key is 32 bytes; its PEM form is a
fixed 12-byte DER prefix plus those bytes), and `cryptography` is imported
only when a public key is configured and a signature must be checked. With
no key configured, `enforce_trust` returns at once and imports nothing.

What is signed: the exact bytes of `manifest.json`. The manifest holds the
size and sha256 of every file in the Bento, so a valid signature plus
`verify_files` proves every byte that is loaded. The signature lives beside
it in `signature.json` and is not listed in the manifest: signing never
changes a Bento's content-addressed version, and a Bento can be signed after
it was built (e.g. only on a release tag in CI).

In trust mode a file in the Bento folder that the manifest does not list is
refused as well: the signature covers only what the manifest names, and a
loader (ONNX external data, a future backend) must never pick up bytes that
nobody signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from bento_compile.runtimes.errors import IntegrityError
from bento_compile.runtimes.manifest import MANIFEST_NAME, Manifest, parse_manifest

SIGNATURE_NAME = "signature.json"
PUBLIC_KEY_ENV = "BENTO_COMPILE_PUBLIC_KEY"
ALGORITHM = "ed25519"
SIGNATURE_SCHEMA = 1
# DER SubjectPublicKeyInfo of an Ed25519 key = this prefix + the 32 raw key bytes (RFC 8410).
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_OPENSSH_PREFIX = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"
_MAX_KEY_TEXT = 16 * 1024
_MAX_SIGNATURE_BYTES = 64 * 1024


class PublicKeyError(IntegrityError):
    """The configured public key cannot be read; the model must not be loaded."""


def key_fingerprint(raw_public_key: bytes) -> str:
    """A short, stable name for a public key: `sha256:` + hex of the raw 32 bytes' hash."""
    return "sha256:" + hashlib.sha256(raw_public_key).hexdigest()


def parse_public_key(value: str | bytes) -> bytes:
    """The raw 32-byte Ed25519 key from PEM, OpenSSH (`ssh-ed25519 AAAA…`), base64 or hex text.

    Accepts what `bento-compile keygen` writes (PEM) and the one-line forms an
    environment variable can hold. Raises PublicKeyError naming the accepted forms.
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    text = text.strip()
    if len(text) > _MAX_KEY_TEXT:
        raise PublicKeyError("the public key is too long to be an Ed25519 public key")
    try:
        if text.startswith("-----BEGIN"):
            if "PRIVATE KEY" in text.split("\n", 1)[0]:
                raise PublicKeyError("a PRIVATE key was given where the PUBLIC key belongs: never ship the private "
                                "key; pass the *.pub.pem file that `bento-compile keygen` wrote")
            body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
            der = base64.b64decode(body, validate=True)
            if len(der) == 44 and der.startswith(_SPKI_PREFIX):
                return der[12:]
            raise PublicKeyError("the PEM public key is not an Ed25519 key")
        if text.startswith("ssh-ed25519 "):
            blob = base64.b64decode(text.split()[1], validate=True)
            if len(blob) == 51 and blob.startswith(_OPENSSH_PREFIX):
                return blob[19:]
            raise PublicKeyError("the ssh-ed25519 public key is malformed")
        if len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text):
            return bytes.fromhex(text)
        raw = base64.b64decode(text, validate=True)
        if len(raw) == 32:
            return raw
        if len(raw) == 44 and raw.startswith(_SPKI_PREFIX):
            return raw[12:]
    except (binascii.Error, ValueError, IndexError):
        pass
    raise PublicKeyError("the public key is not an Ed25519 public key in PEM, OpenSSH, base64 (32 bytes) or hex form; "
                    "use the *.pub.pem file written by `bento-compile keygen`, or its path")


def load_public_key(value: str | os.PathLike[str]) -> bytes:
    """A key given as the key text itself (what an env var holds) or as a path to a key file."""
    text = os.fspath(value).strip()
    if text.startswith(("-----BEGIN", "ssh-ed25519 ")):
        return parse_public_key(text)
    path = Path(text).expanduser() if len(text) < 4096 else None
    if path is not None and path.is_file():
        if path.stat().st_size > _MAX_KEY_TEXT:
            raise PublicKeyError(f"{path} is too large to be a public key file")
        try:
            return parse_public_key(path.read_bytes())
        except PublicKeyError as exc:
            raise PublicKeyError(f"{path}: {exc}") from None
    try:
        return parse_public_key(text)
    except PublicKeyError:
        raise PublicKeyError(f"{text[:80]!r} is neither a public key file nor an Ed25519 public key (PEM, "
                             "ssh-ed25519, base64 or hex); pass the *.pub.pem file written by "
                             "`bento-compile keygen`, or its contents") from None


def configured_public_key(explicit: str | os.PathLike[str] | bytes | None = None) -> bytes | None:
    """The key to enforce: an explicit one (config, CLI) first, else $BENTO_COMPILE_PUBLIC_KEY, else None."""
    if isinstance(explicit, bytes):
        return explicit if len(explicit) == 32 else parse_public_key(explicit)
    if explicit:
        return load_public_key(explicit)
    from_env = os.environ.get(PUBLIC_KEY_ENV, "").strip()
    if not from_env:
        return None
    try:
        return load_public_key(from_env)
    except PublicKeyError as exc:
        raise PublicKeyError(f"${PUBLIC_KEY_ENV} is set but unusable: {exc}") from None


def read_signature(bento_dir: Path) -> dict[str, Any]:
    """Parse `signature.json`, refusing a missing, oversized or malformed one by name."""
    path = Path(bento_dir) / SIGNATURE_NAME
    if not path.is_file():
        raise IntegrityError(
            f"{SIGNATURE_NAME} is missing from {bento_dir}: the Bento is not signed, but a public key is "
            f"configured (${PUBLIC_KEY_ENV}), so it must be. Sign it: bento-compile sign TAG --key KEYFILE")
    if path.stat().st_size > _MAX_SIGNATURE_BYTES:
        raise IntegrityError(f"{SIGNATURE_NAME} is over {_MAX_SIGNATURE_BYTES} bytes: it is not a signature file")
    try:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict):
            raise ValueError("not an object")
        signature = base64.b64decode(data["signature"], validate=True)
        algorithm, fingerprint = data["algorithm"], data["public_key_fingerprint"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise IntegrityError(f"{SIGNATURE_NAME} is damaged ({type(exc).__name__}: {exc}): it was changed after "
                             "signing; re-sign the Bento or re-pull it") from None
    if algorithm != ALGORITHM:
        raise IntegrityError(f"{SIGNATURE_NAME} uses algorithm {algorithm!r}; this runtime accepts only {ALGORITHM}")
    if len(signature) != 64:
        raise IntegrityError(f"{SIGNATURE_NAME} holds a {len(signature)}-byte signature; Ed25519 signatures are 64 "
                             "bytes: the file was changed after signing")
    return {**data, "_signature_bytes": signature, "_fingerprint": fingerprint}


def verify_signature(bento_dir: Path, public_key: bytes, manifest_bytes: bytes | None = None) -> dict[str, Any]:
    """Check `signature.json` against the exact bytes of `manifest.json`; return the signature record.

    Raises IntegrityError naming the file at fault: the signature (wrong key,
    damaged) or the manifest (changed since it was signed).
    """
    root = Path(bento_dir)
    record = read_signature(root)
    expected = key_fingerprint(public_key)
    if record["_fingerprint"] != expected:
        raise IntegrityError(
            f"{SIGNATURE_NAME} was made with key {record['_fingerprint']}, but the trusted public key is {expected}: "
            "the Bento was signed by someone else (or the wrong public key is configured); refusing to load")
    if manifest_bytes is None:
        manifest_bytes = (root / MANIFEST_NAME).read_bytes()
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        raise IntegrityError(
            "a public key is configured but the `cryptography` package is not installed, so the signature cannot "
            "be checked; refusing to load. Rebuild the artifact with cryptography in its wheels "
            "(targets add it when the Bento is signed) or pip install cryptography") from None
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(record["_signature_bytes"], manifest_bytes)
    except InvalidSignature:
        signed_digest = record.get("manifest_sha256")
        if signed_digest and signed_digest != hashlib.sha256(manifest_bytes).hexdigest():
            raise IntegrityError(
                f"{MANIFEST_NAME} was changed after it was signed (its sha256 is not the one in {SIGNATURE_NAME}); "
                "refusing to load: rebuild or re-pull the Bento") from None
        raise IntegrityError(
            f"{SIGNATURE_NAME} does not verify against {MANIFEST_NAME} with key {expected}: the signature or the "
            "manifest was changed after signing; refusing to load") from None
    return {k: v for k, v in record.items() if not k.startswith("_")}


def unlisted_files(bento_dir: Path, manifest: Manifest) -> list[str]:
    """Files in the Bento folder that neither the manifest lists nor are the manifest/signature themselves."""
    root = Path(bento_dir)
    allowed = {MANIFEST_NAME, SIGNATURE_NAME, *manifest.files}
    found = []
    for path in root.rglob("*"):
        if path.is_dir():
            continue
        relative = path.relative_to(root).as_posix()
        if relative not in allowed:
            found.append(relative)
    return sorted(found)


def enforce_trust(bento_dir: Path, manifest: Manifest, public_key: str | bytes | None = None) -> dict[str, Any] | None:
    """The load-time hook: with no key configured, do nothing; with one, verify or raise.

    Called by `BentoModel.load` after reading the manifest and before
    `verify_files` checks every file's sha256 (which then proves the files,
    since the manifest that names their hashes is now authentic).
    """
    key = configured_public_key(public_key)
    if key is None:
        return None
    root = Path(bento_dir)
    manifest_bytes = (root / MANIFEST_NAME).read_bytes()
    record = verify_signature(root, key, manifest_bytes)
    # The manifest object the caller parsed must be the one whose bytes were just verified.
    if parse_manifest(json.loads(manifest_bytes)) != manifest:
        raise IntegrityError(f"{MANIFEST_NAME} changed while it was being verified; refusing to load")
    extra = unlisted_files(root, manifest)
    if extra:
        raise IntegrityError(
            f"{', '.join(extra[:5])} {'is' if len(extra) == 1 else 'are'} in the Bento but not in its signed manifest: "
            "unsigned files are refused when a public key is configured; remove them or rebuild the Bento")
    return record
