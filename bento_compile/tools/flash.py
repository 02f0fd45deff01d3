"""`bento-compile flash`: put an edge bundle on a device, or on a mounted root file system.

Two destinations, one installer: both end in the bundle's own `install.sh`, so what
gets verified, where files go and how `current` switches is decided in one place.

- `ssh://[user@]host[:port]:/path` (or `ssh://host[:port]/path`): the system's `ssh`.
  A first connection checks the device (reachable, architecture); then the bundle
  streams over the same kind of connection into a temporary folder there, its
  sha256 is checked, and `install.sh --prefix /path` runs (it enables and starts
  the systemd unit when systemd runs on the device). The temporary folder is removed
  whatever happens.
- a local folder: the mounted root file system of an SD card or image. The bundle is
  unpacked on this machine and `install.sh --root FOLDER` copies it under the root and
  installs the unit there; the device makes its venv on first start.

`install.sh` removes a half-made release on any failure, and `current` only moves
once a release is complete: nothing is ever half-installed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.boundary import UnsafeName, check_prefix
from bento_compile.runtimes.errors import IntegrityError
from bento_compile.runtimes.trust import configured_public_key, load_public_key
from bento_compile.tools.bundle_check import DEVICE_KEY_NAME, SIGNATURE_NAME, SUMS_NAME, CheckedBundle, check_bundle
from bento_compile.tools.root_install import install_into_root

_SSH_URL = re.compile(
    r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+)(?::(?P<port>\d+))?:?(?P<path>/.*)$")
# install.sh's exit codes (see its header).
_EXIT_READ_ONLY, _EXIT_VERIFY, _EXIT_DEVICE = 3, 4, 5


@dataclass(frozen=True)
class SshDestination:
    user: str | None
    host: str
    port: int | None
    path: str

    @property
    def login(self) -> str:
        host = self.host.strip("[]")
        return f"{self.user}@{host}" if self.user else host

    def __str__(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"ssh://{self.login}{port}:{self.path}"


@dataclass(frozen=True)
class BundleInfo:
    path: Path
    top: str
    sha256: str
    manifest: dict
    checked: CheckedBundle


@dataclass(frozen=True)
class FlashResult:
    destination: str
    release: str
    log: str


def parse_destination(text: str) -> SshDestination | Path:
    """An ssh:// URL, or a local folder (a mounted root file system)."""
    if text.startswith("ssh://"):
        match = _SSH_URL.match(text)
        if not match:
            raise BentoCompileError(
                f"'{text}' is not an ssh destination this command understands.",
                "Use ssh://user@host:/absolute/path, or ssh://user@host:2222:/absolute/path for another port.")
        return SshDestination(match["user"], match["host"], int(match["port"]) if match["port"] else None,
                              match["path"].rstrip("/") or "/")
    if "://" in text:
        raise BentoCompileError(f"'{text}': only ssh:// destinations and local folders are supported.",
                                "Use ssh://user@host:/path, or the folder where the card's root file system "
                                "is mounted.")
    return Path(text)


def inspect_bundle(bundle: Path, public_key: bytes | None = None, extract_to: Path | None = None) -> BundleInfo:
    """Read and check the whole tar.gz (bundle_check.check_bundle), and the `.sha256` beside it when there is one.

    With `public_key`, the bundle must carry a valid signature by that key."""
    checked = check_bundle(Path(bundle), public_key, extract_to)
    sidecar = bundle.with_name(bundle.name + ".sha256")
    if sidecar.is_file():
        expected = sidecar.read_text(encoding="utf-8").split()[0] if sidecar.stat().st_size < 4096 else ""
        if expected != checked.sha256:
            raise BentoCompileError(f"{bundle} has sha256 {checked.sha256} but {sidecar.name} says {expected}: "
                                    "the bundle was changed or truncated.", "Rebuild or copy the bundle again.")
    return BundleInfo(Path(bundle), checked.top, checked.sha256, checked.info, checked)


def flash(bundle: Path, destination: str, *, prefix: str | None = None, service: bool = True,
          identity: Path | None = None, ssh_options: tuple[str, ...] = (), sudo: bool = False,
          python: str | None = None, public_key: str | Path | bytes | None = None,
          progress: Callable[[str], None] = lambda _m: None) -> FlashResult:
    """Flash a bundle. `public_key` (or $BENTO_COMPILE_PUBLIC_KEY) makes a valid signature by that key required."""
    target = parse_destination(destination)
    if prefix is not None:
        try:
            check_prefix(prefix, "--prefix")
        except UnsafeName as exc:
            raise BentoCompileError(f"{exc}.", "e.g. --prefix /opt/churn") from None
    try:
        key = configured_public_key(public_key if isinstance(public_key, bytes) else
                                    (str(public_key) if public_key else None))
    except IntegrityError as exc:
        raise BentoCompileError(str(exc), "Pass the *.pub.pem written by `bento-compile keygen`.") from None
    if isinstance(target, SshDestination):
        if prefix is not None:
            raise BentoCompileError("--prefix is for local root file systems.",
                                    f"Put the path in the URL: ssh://{target.login}:{prefix}")
        info = inspect_bundle(Path(bundle), key)
        _say_trust(info, key, progress)
        return flash_ssh(info, target, service=service, identity=identity, ssh_options=ssh_options, sudo=sudo,
                         python=python, progress=progress)
    if python is not None:
        raise BentoCompileError("--python is for ssh destinations.",
                                "A root file system's venv is made on the device's first boot with its python3.")
    return flash_local(Path(bundle), target, prefix=prefix, service=service, public_key=key, progress=progress)


def _say_trust(info: BundleInfo, key: bytes | None, progress: Callable[[str], None]) -> None:
    if key is not None:
        progress(f"Signature verified (key {info.checked.signed_by})")
    else:
        progress("No public key configured (--pub, $BENTO_COMPILE_PUBLIC_KEY, or trusted-key.pub.pem on the "
                 "device): the bundle's signature is not checked, only its own checksums")


# ------------------------------------------------------------------------------------- local root

def flash_local(bundle: Path, root: Path, *, prefix: str | None, service: bool, public_key: bytes | None = None,
                progress: Callable[[str], None] = lambda _m: None) -> FlashResult:
    """Check the bundle here, then install it under ROOT in Python (tools/root_install.py): no code from the
    bundle runs on this machine."""
    root = root.resolve()
    if not root.is_dir():
        raise BentoCompileError(f"{root} is not a folder.",
                                "Mount the card's root partition and pass its mount point, e.g. /media/sdcard/rootfs.")
    if not (root / "etc").is_dir() or not (root / "usr").is_dir():
        raise BentoCompileError(f"{root} does not look like a root file system (no etc/ and usr/).",
                                "Pass the mount point of the root partition (the one with etc/ and usr/), "
                                "or use ssh://user@host:/path for a running device.")
    with tempfile.TemporaryDirectory(prefix="bento-flash-") as scratch:
        info = inspect_bundle(bundle, public_key, extract_to=Path(scratch))
        wanted = info.manifest["target"]["machine"]
        found = root_machine(root)
        if found is not None and found != wanted and not (wanted == "armv7l" and found == "aarch64"):
            raise BentoCompileError(
                f"{root} is a root file system for {found}, but the bundle is for {wanted}.",
                f"Build one for it: bento-compile target edge {info.manifest['tag']} --arch "
                f"{ {'aarch64': 'arm64', 'armv7l': 'armv7'}.get(found, found)}")
        _check_writable(root)
        prefix = prefix or info.manifest["prefix"]
        device_key = root / prefix.lstrip("/") / DEVICE_KEY_NAME
        if public_key is None and device_key.is_file():
            try:
                public_key = load_public_key(device_key)
            except IntegrityError as exc:
                raise BentoCompileError(f"The device's {device_key}: {exc}", "Replace it with a *.pub.pem.") from None
            info.checked.require_signature(public_key, bundle)
        _say_trust(info, public_key, progress)
        progress(f"Installing {info.manifest['tag']} into {root}{prefix}")
        try:
            release = install_into_root(info.checked, Path(scratch) / info.top, root, prefix, service)
        except OSError as exc:
            raise BentoCompileError(f"Installing into {root}{prefix} failed: {exc}",
                                    "Nothing was switched: the previous release is still current.") from None
    return FlashResult(str(root), release, "")


_ELF_MACHINES = {(2, 0x3E): "x86_64", (2, 0xB7): "aarch64", (1, 0x28): "armv7l"}


def root_machine(root: Path) -> str | None:
    """The architecture of a root file system, from the ELF header of one of its coreutils
    (None when there is none to read: then there is nothing to check against)."""
    for candidate in ("usr/bin/ls", "bin/ls", "usr/bin/env", "bin/busybox"):
        path = root / candidate
        if path.is_symlink() or not path.is_file():
            continue
        try:
            with open(path, "rb") as handle:
                header = handle.read(20)
        except OSError:
            continue
        if len(header) == 20 and header[:4] == b"\x7fELF":
            machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
            return _ELF_MACHINES.get((header[4], machine))
    return None


def _check_writable(root: Path) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".bento-flash-", dir=root)
    except OSError as exc:
        reason = "it is mounted read-only" if exc.errno == 30 else exc.strerror
        raise BentoCompileError(f"Cannot write to {root}: {reason}.",
                                f"Remount it read-write (mount -o remount,rw {root}) or run as a user who may "
                                "write there (sudo).") from exc
    os.close(fd)
    os.unlink(probe)


# ------------------------------------------------------------------------------------- ssh

def _ssh_base(target: SshDestination, identity: Path | None, ssh_options: tuple[str, ...]) -> list[str]:
    if shutil.which("ssh") is None:
        raise BentoCompileError("The ssh client is not installed.", "apt-get install openssh-client")
    command = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15",
               "-o", "LogLevel=ERROR"]
    if target.port:
        command += ["-p", str(target.port)]
    if identity:
        command += ["-i", str(identity)]
    for option in ssh_options:
        command += ["-o", option]
    return [*command, target.login]


def flash_ssh(info: BundleInfo, target: SshDestination, *, service: bool, identity: Path | None,
              ssh_options: tuple[str, ...], sudo: bool, progress: Callable[[str], None],
              python: str | None = None) -> FlashResult:
    try:
        check_prefix(target.path, "the ssh destination's path")
    except UnsafeName as exc:
        raise BentoCompileError(f"{exc}.", f"e.g. ssh://{target.login}:/opt/{info.manifest['name']}") from None
    base = _ssh_base(target, identity, ssh_options)
    progress(f"Connecting to {target.login}")
    probe = subprocess.run([*base, "uname -m"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           timeout=60)
    if probe.returncode == 255:
        detail = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "no answer"
        port = target.port or 22
        raise BentoCompileError(
            f"Cannot reach {target.login} on port {port} over ssh: {detail}",
            f"Check the host name, the port and that sshd runs there; try `ssh -p {port} {target.login} true`. "
            "A key is needed (BatchMode): pass --identity KEY or load it into ssh-agent.")
    if probe.returncode != 0:
        raise BentoCompileError(f"{target.login} refused to run a command: {probe.stderr.strip()}",
                                "Check the account can log in with a shell.")
    machine = probe.stdout.strip().splitlines()[-1] if probe.stdout.strip() else "?"
    wanted = info.manifest["target"]["machine"]
    if machine != wanted and not (wanted == "armv7l" and machine in ("armv7l", "armv8l", "aarch64")):
        raise BentoCompileError(
            f"{target.login} is a {machine} device but the bundle is for {wanted}.",
            f"Build one for it: bento-compile target edge {info.manifest['tag']} --arch "
            f"{'arm64' if machine == 'aarch64' else machine}")
    install = ["sh", f'"$t"/{shlex.quote(info.top)}/install.sh', "--prefix", shlex.quote(target.path)]
    if not service:
        install.append("--no-service")
    if python:
        install += ["--python", shlex.quote(python)]
    if sudo:
        install.insert(0, "sudo -n")
    script = (
        't=$(mktemp -d "${TMPDIR:-/tmp}/bento-flash.XXXXXX") || exit 1; '
        "trap 'rm -rf \"$t\"' EXIT; "
        'cat > "$t/bundle.tar.gz" || exit 1; '
        f'echo "{info.sha256}  $t/bundle.tar.gz" | sha256sum -c --quiet >&2 '
        f'|| {{ echo "install.sh: error: the bundle arrived damaged (sha256 mismatch)" >&2; exit {_EXIT_VERIFY}; }}; '
        'tar -xzf "$t/bundle.tar.gz" -C "$t" || exit 1; '
        f'{_device_key_check(info.top, target.path)}'
        f'{" ".join(install)}'
    )
    size = info.path.stat().st_size
    progress(f"Streaming {size / 1e6:.1f} MB to {target.login} and running install.sh")
    with open(info.path, "rb") as bundle:
        result = subprocess.run([*base, script], stdin=bundle, capture_output=True, text=True)
    if result.returncode == 255:
        raise BentoCompileError(f"The ssh connection to {target.login} failed: {result.stderr.strip()[-500:]}",
                                "Nothing was switched on the device; run the same command again.")
    if result.returncode != 0:
        _raise_install_error(result.returncode, result.stderr, str(target))
    return FlashResult(str(target), _last_line(result.stdout), result.stderr)


def _device_key_check(top: str, prefix: str) -> str:
    """Shell (ours, not the bundle's) that runs on the device before install.sh: with a key in the device's
    prefix, the bundle must carry a signature by it. The bytes are the ones checked here (same sha256)."""
    key = shlex.quote(f"{prefix.rstrip('/')}/{DEVICE_KEY_NAME}")
    folder = f'"$t"/{shlex.quote(top)}'
    fail = f'>&2; exit {_EXIT_VERIFY}; }}; '
    return (
        f'if [ -f {key} ]; then '
        f'command -v openssl >/dev/null 2>&1 || {{ echo "install.sh: error: {DEVICE_KEY_NAME} on the device '
        f'requires signed bundles, but openssl is not installed there to check one" {fail}'
        f'[ -f {folder}/{SIGNATURE_NAME} ] || {{ echo "install.sh: error: the bundle is not signed, and '
        f'{DEVICE_KEY_NAME} on the device requires a signature" {fail}'
        f'openssl pkeyutl -verify -pubin -inkey {key} -rawin -in {folder}/{SUMS_NAME} -sigfile '
        f'{folder}/{SIGNATURE_NAME} >/dev/null 2>&1 || {{ echo "install.sh: error: the bundle signature does not '
        f'verify with {DEVICE_KEY_NAME} on the device" {fail}'
        'fi; ')


def _raise_install_error(code: int, log: str, where: str) -> None:
    lines = [line for line in log.strip().splitlines() if line.strip()]
    problem = next((line.split("error: ", 1)[1] for line in lines if "install.sh: error: " in line),
                   lines[-1] if lines else f"install.sh exited with {code}")
    fix = next((line.split("fix: ", 1)[1] for line in lines if "install.sh: fix: " in line), "")
    if code == _EXIT_READ_ONLY:
        raise BentoCompileError(f"{where}: {problem}",
                                fix or "Remount it read-write, or pick a writable path.")
    raise BentoCompileError(f"Installing on {where} failed: {problem}",
                            (fix + " " if fix else "") + "Nothing was switched: the previous release still runs.")


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""
