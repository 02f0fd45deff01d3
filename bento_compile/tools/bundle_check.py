"""What `flash` proves about an edge bundle on the flashing machine, before anything reaches a device.

The checksums inside a bundle (SHA256SUMS, the `.sha256` beside it) travel with it, so they
only catch damage: whoever can replace the bundle can replace them too. A signature can
only be trusted against a key the user holds, so:

- `target edge --sign-key KEY` signs SHA256SUMS (which lists every other file, install.sh and
  bundle.json included) with Ed25519: `SHA256SUMS.sig`, the 64 raw signature bytes, the form
  `openssl pkeyutl -verify -rawin` checks on a device;
- `flash` with a public key (`--pub`, `$BENTO_COMPILE_PUBLIC_KEY`, or `trusted-key.pub.pem` in the
  device's prefix) refuses an unsigned bundle or one signed by another key; without a key it
  says that only the bundle's own checksums were checked;
- either way, every member is read once, here: it must be a regular file or a folder with a safe
  name under the one top folder, every file must match SHA256SUMS, and no file may be unlisted.
  bundle.json is taken from those verified bytes, and its prefix, release id and service name
  are checked like every name from outside.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.boundary import UnsafeName, check_file_entry, check_prefix, check_version

SUMS_NAME = "SHA256SUMS"
SIGNATURE_NAME = "SHA256SUMS.sig"
DEVICE_KEY_NAME = "trusted-key.pub.pem"  # in PREFIX on the device: makes every later install require a signature
_MAX_SMALL = 4 * 1024 * 1024  # SHA256SUMS, bundle.json: metadata, never this large
_SERVICE = re.compile(r"bento-[A-Za-z0-9_.-]{1,63}")


@dataclass
class CheckedBundle:
    """A bundle whose every member was read and checked; `files` maps its relative names to sha256."""

    top: str
    sha256: str
    info: dict[str, Any]
    files: dict[str, str]
    signed_by: str | None  # the key's fingerprint, when a signature was checked
    sums: bytes = b""
    signature: bytes | None = None
    folders: set[str] = field(default_factory=set)

    def require_signature(self, public_key: bytes, bundle: Path) -> None:
        """Check the signature against a key learnt after reading (e.g. the one in the device's prefix)."""
        self.signed_by = verify_signature(self.sums, self.signature, public_key, bundle)


def sign_sums(sums: bytes, private_key: Any) -> bytes:
    """The detached Ed25519 signature of SHA256SUMS (64 raw bytes)."""
    return private_key.sign(sums)


def verify_signature(sums: bytes, signature: bytes | None, public_key: bytes, bundle: Path) -> str:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from bento_compile.runtimes.trust import key_fingerprint

    fingerprint = key_fingerprint(public_key)
    if signature is None:
        raise BentoCompileError(
            f"{bundle} is not signed, but a public key is configured ({fingerprint}): refusing to flash it.",
            "Build it signed: bento-compile target edge TAG --sign-key KEY (the key whose .pub.pem you pass); "
            "to flash an unsigned bundle anyway, do not configure a key for this command.")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, sums)
    except (InvalidSignature, ValueError):
        raise BentoCompileError(
            f"{bundle}'s signature does not verify with the trusted key {fingerprint}: it was signed by another "
            "key, or its files were changed after signing. Refusing to flash it.",
            "Rebuild and sign it with your key (target edge --sign-key), or check which key you pass.") from None
    return fingerprint


class _Hashing:
    """A read-only file wrapper that hashes every byte read through it (the whole .tar.gz's sha256)."""

    def __init__(self, handle: IO[bytes]):
        self.handle, self.digest = handle, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


def check_bundle(bundle: Path, public_key: bytes | None, extract_to: Path | None = None) -> CheckedBundle:
    """Read the bundle once: check each member, hash it (and write it under `extract_to` when given),
    then check SHA256SUMS, the signature and bundle.json. Raises BentoCompileError naming what is wrong."""
    if not bundle.is_file():
        raise BentoCompileError(f"{bundle} does not exist.",
                                "Build one first: bento-compile target edge NAME:latest --arch arm64 -o dist/")
    top: str | None = None
    files: dict[str, str] = {}
    folders: set[str] = set()
    small: dict[str, bytes] = {}
    with open(bundle, "rb") as raw:
        hashing = _Hashing(raw)
        try:
            with tarfile.open(fileobj=hashing, mode="r|gz") as tar:  # type: ignore[call-overload]
                for member in tar:
                    top = _check_member(bundle, member, top)
                    relative = member.name.rstrip("/").partition("/")[2]
                    if member.isdir():
                        if relative:
                            folders.add(relative)
                        if extract_to is not None:
                            (extract_to / member.name).mkdir(parents=True, exist_ok=True)
                        continue
                    files[relative] = _read_member(tar, member, relative, small, extract_to)
            while hashing.read(1 << 20):  # trailing bytes count towards the file's sha256
                pass
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise BentoCompileError(f"{bundle} cannot be read as a tar.gz: {exc}",
                                    "Pass the tar.gz that `bento-compile target edge` wrote.") from None
    if top is None or SUMS_NAME not in small or "bundle.json" not in files:
        raise BentoCompileError(f"{bundle} is not an edge bundle (no SHA256SUMS / bundle.json in it).",
                                "Pass the tar.gz that `bento-compile target edge` wrote.")
    sums = small[SUMS_NAME]
    signed_by = verify_signature(sums, small.get(SIGNATURE_NAME), public_key, bundle) if public_key else None
    _check_sums(bundle, sums, files)
    try:
        info = json.loads(small["bundle.json"])
    except (KeyError, ValueError):
        raise BentoCompileError(f"{bundle}'s bundle.json is not JSON.", "Rebuild the bundle.") from None
    _check_info(bundle, info, top)
    return CheckedBundle(top, hashing.digest.hexdigest(), info, files, signed_by, sums, small.get(SIGNATURE_NAME),
                         folders)


def _check_member(bundle: Path, member: tarfile.TarInfo, top: str | None) -> str:
    name = member.name.rstrip("/")
    head, _, relative = name.partition("/")
    try:
        check_file_entry(name, "tar member")
    except UnsafeName as exc:
        raise BentoCompileError(f"{bundle} holds a member that would land outside its folder: {exc}.",
                                "Refusing it: flash only bundles that `bento-compile target edge` wrote.") from None
    if not (member.isfile() or member.isdir()):
        kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk() else
                "a device node" if member.ischr() or member.isblk() else "a FIFO" if member.isfifo() else "special")
        raise BentoCompileError(f"{bundle}: {name} is {kind}; a bundle holds only regular files and folders.",
                                "Refusing it: rebuild the bundle with bento-compile target edge.")
    if top is not None and head != top:
        raise BentoCompileError(f"{bundle} is not an edge bundle (it has more than one top folder).",
                                "Pass the tar.gz that `bento-compile target edge` wrote.")
    if top is None and member.isfile() and not relative:
        raise BentoCompileError(f"{bundle} is not an edge bundle (a file at its top level).",
                                "Pass the tar.gz that `bento-compile target edge` wrote.")
    return head


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, relative: str, small: dict[str, bytes],
                 extract_to: Path | None) -> str:
    source = tar.extractfile(member)
    assert source is not None  # a regular file
    digest = hashlib.sha256()
    keep = relative in (SUMS_NAME, SIGNATURE_NAME, "bundle.json")
    if keep and member.size > _MAX_SMALL:
        raise ValueError(f"{relative} is {member.size} bytes: not bundle metadata")
    kept = bytearray()
    out = None
    if extract_to is not None:
        target = extract_to / member.name
        target.parent.mkdir(parents=True, exist_ok=True)
        out = open(target, "wb")  # noqa: SIM115 - closed below
    try:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            if keep:
                kept += chunk
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
            (extract_to / member.name).chmod(0o755 if member.mode & 0o100 else 0o644)  # type: ignore[operator]
    if keep:
        small[relative] = bytes(kept)
    return digest.hexdigest()


def _check_sums(bundle: Path, sums: bytes, files: dict[str, str]) -> None:
    listed: dict[str, str] = {}
    for line in sums.decode("utf-8", "replace").splitlines():
        match = re.fullmatch(r"([0-9a-f]{64})  (.+)", line)
        if not match:
            raise BentoCompileError(f"{bundle}'s SHA256SUMS has a malformed line: {line[:80]!r}.", "Rebuild it.")
        listed[match[2]] = match[1]
    for name, digest in sorted(files.items()):
        if name in (SUMS_NAME, SIGNATURE_NAME):
            continue
        if name not in listed:
            raise BentoCompileError(f"{bundle} holds {name}, which SHA256SUMS does not list: refusing it.",
                                    "Rebuild the bundle; never add files to one.")
        if listed[name] != digest:
            raise BentoCompileError(f"{bundle}: {name} does not match SHA256SUMS (the bundle was changed or "
                                    "damaged).", "Rebuild or copy the bundle again.")
    missing = sorted(set(listed) - set(files))
    if missing:
        raise BentoCompileError(f"{bundle} lacks {', '.join(missing[:5])}, which SHA256SUMS lists.",
                                "Rebuild or copy the bundle again.")


def _check_info(bundle: Path, info: Any, top: str) -> None:
    try:
        if not isinstance(info, dict) or info.get("kind") != "bento-compile-edge-bundle":
            raise UnsafeName("bundle.json kind", info.get("kind") if isinstance(info, dict) else info,
                             "an edge bundle's bundle.json has kind bento-compile-edge-bundle")
        check_prefix(info.get("prefix"), "bundle.json prefix")
        check_version(info.get("release_id"), "bundle.json release_id")
        service = info.get("service")
        if not isinstance(service, str) or not _SERVICE.fullmatch(service):
            raise UnsafeName("bundle.json service", service, "a service is bento-NAME")
        target = info.get("target")
        if not isinstance(target, dict) or not isinstance(target.get("machine"), str):
            raise UnsafeName("bundle.json target", target, "target names the device's machine")
        if not isinstance(info.get("tag"), str):
            raise UnsafeName("bundle.json tag", info.get("tag"), "tag is the Bento's NAME:VERSION")
    except UnsafeName as exc:
        raise BentoCompileError(f"{bundle} is not a usable edge bundle: {exc}.",
                                "Rebuild it with bento-compile target edge.") from None
