"""Ed25519 keys and signatures for Bentos (the build side; `runtimes/trust.py` is the serving side).

`sign` writes `signature.json` beside `manifest.json`: the algorithm, the
public key (so a reader can see who signed; never trusted from there), its
fingerprint, the manifest's sha256 and the signature over the manifest's
exact bytes. The manifest holds every file's sha256, so the signature covers
the whole Bento. Ed25519 signatures are deterministic and the record has no
timestamp: signing the same Bento with the same key twice gives the same
bytes, and artifacts built from a signed Bento stay reproducible.

The private key never enters a Bento or an artifact: it is read from a file
(`--key`) or from $BENTO_COMPILE_SIGNING_KEY (the PEM text, or a path), which
is how a CI secret arrives.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bento_compile.core.errors import BentoCompileError
from bento_compile.core.files import write_atomic
from bento_compile.runtimes.errors import IntegrityError
from bento_compile.runtimes.manifest import MANIFEST_NAME, read_manifest, verify_files
from bento_compile.runtimes.trust import (
    ALGORITHM,
    SIGNATURE_NAME,
    SIGNATURE_SCHEMA,
    key_fingerprint,
    load_public_key,
    unlisted_files,
    verify_signature,
)

PRIVATE_KEY_ENV = "BENTO_COMPILE_SIGNING_KEY"
PASSPHRASE_ENV = "BENTO_COMPILE_SIGNING_KEY_PASSPHRASE"
PRIVATE_NAME = "bento-signing.key"
PUBLIC_NAME = "bento-signing.pub.pem"


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    fingerprint: str


def generate_keypair(out_dir: Path, name: str = "bento-signing", overwrite: bool = False) -> KeyPair:
    """Write `NAME.key` (PKCS#8 PEM, mode 0600) and `NAME.pub.pem` (SubjectPublicKeyInfo PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub.pem"
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise BentoCompileError(f"{path} already exists; refusing to overwrite a key.",
                                    "Choose another -o folder or --name, or pass --force to replace it.")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    write_atomic(private_path, private_pem, 0o600)  # created 0600: never readable by others, not even briefly
    write_atomic(public_path, public_pem, 0o644)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KeyPair(private_path, public_path, key_fingerprint(raw))


def load_private_key(source: str | Path | None = None):
    """The signing key from `source` (a path), else $BENTO_COMPILE_SIGNING_KEY (PEM text or a path).

    An encrypted PEM is opened with $BENTO_COMPILE_SIGNING_KEY_PASSPHRASE.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if source is None:
        value = os.environ.get(PRIVATE_KEY_ENV, "").strip()
        if not value:
            raise BentoCompileError("No signing key given.",
                                    f"Pass --key FILE, or set ${PRIVATE_KEY_ENV} to the private key (PEM) or its "
                                    "path. Make one with: bento-compile keygen -o keys/")
        origin = f"${PRIVATE_KEY_ENV}"
        data = value.encode() if value.startswith("-----BEGIN") else _read_key_file(Path(value), origin)
    else:
        origin = str(source)
        data = _read_key_file(Path(source), origin)
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode() if passphrase else None)
    except TypeError as exc:
        raise BentoCompileError(f"The signing key in {origin} is encrypted: {exc}.",
                                f"Set ${PASSPHRASE_ENV} to its passphrase.") from None
    except ValueError as exc:
        raise BentoCompileError(f"{origin} is not a PEM private key ({exc}).",
                                "Pass the *.key file written by `bento-compile keygen` (not the .pub.pem).") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BentoCompileError(f"The key in {origin} is a {type(key).__name__}, not Ed25519.",
                                "Make an Ed25519 key with: bento-compile keygen -o keys/")
    return key


def _read_key_file(path: Path, origin: str) -> bytes:
    if not path.is_file():
        raise BentoCompileError(f"The signing key file {path} (from {origin}) does not exist.",
                                "Pass the *.key file written by `bento-compile keygen -o DIR`.")
    if path.stat().st_size > 16 * 1024:
        raise BentoCompileError(f"{path} is too large to be a key file.", "Pass the *.key file from keygen.")
    return path.read_bytes()


def public_key_raw(private_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign_bento(bento_dir: Path, private_key) -> dict[str, Any]:
    """Verify the Bento's files, then write `signature.json` (atomically). Returns the record.

    Refuses to sign a Bento whose files do not match its manifest: a signature
    must never vouch for bytes that were already changed.
    """
    root = Path(bento_dir)
    manifest = read_manifest(root)
    try:
        verify_files(root, manifest)
    except IntegrityError as exc:
        raise BentoCompileError(f"Refusing to sign {manifest.tag}: {exc}", "Rebuild or re-pull the Bento.") from None
    extra = unlisted_files(root, manifest)
    if extra:
        raise BentoCompileError(f"Refusing to sign {manifest.tag}: {', '.join(extra)} not listed in its manifest.",
                                "Remove the unlisted files; only what the manifest lists is covered by a signature.")
    manifest_bytes = (root / MANIFEST_NAME).read_bytes()
    raw = public_key_raw(private_key)
    record = {
        "schema": SIGNATURE_SCHEMA,
        "algorithm": ALGORITHM,
        "signed_file": MANIFEST_NAME,
        "tag": manifest.tag,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "public_key": base64.b64encode(raw).decode(),
        "public_key_fingerprint": key_fingerprint(raw),
        "signature": base64.b64encode(private_key.sign(manifest_bytes)).decode(),
    }
    write_atomic(root / SIGNATURE_NAME, json.dumps(record, indent=2, sort_keys=True) + "\n", 0o644)
    return record


def resolve_public_key(pub: str | Path | None) -> bytes:
    """--pub FILE (or key text), else $BENTO_COMPILE_PUBLIC_KEY; an error saying how to pass one otherwise."""
    from bento_compile.runtimes.trust import PUBLIC_KEY_ENV, configured_public_key

    try:
        key = configured_public_key(str(pub) if pub else None)
    except IntegrityError as exc:
        raise BentoCompileError(str(exc), "Pass the *.pub.pem written by `bento-compile keygen`.") from None
    if key is None:
        raise BentoCompileError("No public key given.", f"Pass --pub FILE (the *.pub.pem from keygen) or set "
                                f"${PUBLIC_KEY_ENV}.")
    return key


def verify_bento(bento_dir: Path, public_key: bytes) -> dict[str, Any]:
    """Everything the runtime checks in trust mode, as one report: signature, unlisted files, every hash.

    Raises IntegrityError naming the first file at fault.
    """
    root = Path(bento_dir)
    manifest_bytes = (root / MANIFEST_NAME).read_bytes()
    record = verify_signature(root, public_key, manifest_bytes)
    manifest = read_manifest(root)
    extra = unlisted_files(root, manifest)
    if extra:
        raise IntegrityError(f"{', '.join(extra)} in the Bento but not in its signed manifest")
    verify_files(root, manifest)
    return {"tag": manifest.tag, "key": record["public_key_fingerprint"],
            "files": sorted(manifest.files), "manifest_sha256": record["manifest_sha256"]}


def fingerprint_of(public_key_source: str | Path) -> str:
    return key_fingerprint(load_public_key(public_key_source))
