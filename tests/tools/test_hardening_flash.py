"""`flash` trusts a bundle only as far as a key the user holds: signed bundles (target edge --sign-key) are
checked against --pub, $BENTO_COMPILE_PUBLIC_KEY or the device's trusted-key.pub.pem; replaced, re-summed,
re-packed bundles are refused; nothing from a bundle runs on the flashing machine; install.sh refuses what
is not a listed regular file. Real bundles, real tar files, real install.sh runs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bento_compile.core.errors import BentoCompileError
from bento_compile.core.signing import generate_keypair, load_private_key
from bento_compile.tools.flash import flash
from tests.support import edge_support as es
from tests.support.helpers import run_cli

PY = es.system_python_version() or "3.11"
pytestmark = pytest.mark.slow  # builds a bundle with real wheels and runs install.sh


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return generate_keypair(folder / "ours"), generate_keypair(folder / "theirs")


@pytest.fixture(scope="module")
def signed_bundle(keys, tmp_path_factory) -> Path:
    from bento_compile.targets.edge import EdgeOptions, build_edge_bundle

    ours, _ = keys
    options = EdgeOptions(arch="x86_64", python=PY, measure=False, sign_key=str(ours.private_path))
    bundle = build_edge_bundle(es.tiny_bento(), options, tmp_path_factory.mktemp("signed"))
    assert bundle.signed
    return bundle.path


@pytest.fixture(scope="module")
def unsigned_bundle() -> Path:
    return es.bundle("x86_64", PY)


def fake_root(path: Path) -> Path:
    for folder in ("etc", "usr/bin", "opt"):
        (path / folder).mkdir(parents=True, exist_ok=True)
    return path


def repack(source: Path, dest: Path, mutate: Callable[[Path], None], resum: bool = True,
           extra: Callable[[tarfile.TarFile, str], None] | None = None) -> Path:
    """What someone who can replace a bundle does: unpack, change, recompute SHA256SUMS and the .sha256, repack."""
    work = dest.parent / (dest.name + ".work")
    work.mkdir(parents=True)
    with tarfile.open(source, "r:gz") as tar:
        tar.extractall(work, filter="data")
    (top,) = list(work.iterdir())
    mutate(top)
    if resum:
        files = sorted(p for p in top.rglob("*") if p.is_file() and p.name not in ("SHA256SUMS", "SHA256SUMS.sig"))
        (top / "SHA256SUMS").write_text("".join(
            f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(top).as_posix()}\n" for p in files))
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(top, arcname=top.name)
        if extra is not None:
            extra(tar, top.name)
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    dest.with_name(dest.name + ".sha256").write_text(f"{digest}  {dest.name}\n")
    shutil.rmtree(work)
    return dest


def test_a_signed_bundle_flashes_with_its_key_and_is_refused_with_another(signed_bundle, keys, tmp_path):
    ours, theirs = keys
    with tarfile.open(signed_bundle) as tar:
        assert any(name.endswith("/SHA256SUMS.sig") for name in tar.getnames())
    root = fake_root(tmp_path / "root")
    out = run_cli("flash", str(signed_bundle), "--to", str(root), "--pub", str(ours.public_path))
    assert "Signature verified" in out.stderr and (root / "opt/tiny/current").is_symlink()
    refused = run_cli("flash", str(signed_bundle), "--to", str(fake_root(tmp_path / "r2")), "--pub",
                      str(theirs.public_path), check=False)
    assert refused.returncode == 1 and "does not verify with the trusted key" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "r2/opt/tiny").exists()


def test_an_unsigned_bundle_is_refused_where_a_key_is_configured(unsigned_bundle, keys, tmp_path, monkeypatch):
    ours, _ = keys
    monkeypatch.setenv("BENTO_COMPILE_PUBLIC_KEY", str(ours.public_path))
    with pytest.raises(BentoCompileError, match="is not signed, but a public key is configured"):
        flash(unsigned_bundle, str(fake_root(tmp_path / "r1")))
    monkeypatch.delenv("BENTO_COMPILE_PUBLIC_KEY")
    # Without any key it flashes, and says what was not checked.
    root = fake_root(tmp_path / "r2")
    out = run_cli("flash", str(unsigned_bundle), "--to", str(root))
    assert "signature is not checked" in out.stderr
    # A key in the device's prefix makes every later flash require a signature by it.
    shutil.copy(ours.public_path, root / "opt/tiny/trusted-key.pub.pem")
    with pytest.raises(BentoCompileError, match="is not signed"):
        flash(unsigned_bundle, str(root))


def test_a_replaced_and_resummed_bundle_fails_the_signature(signed_bundle, keys, tmp_path):
    ours, _ = keys

    def evil(top: Path) -> None:
        (top / "install.sh").write_text("#!/bin/sh\ntouch /tmp/bento-evil-ran\n")

    forged = repack(signed_bundle, tmp_path / "tiny-edge-x86_64.tar.gz", evil)
    with pytest.raises(BentoCompileError, match="does not verify"):
        flash(forged, str(fake_root(tmp_path / "root")), public_key=str(ours.public_path))


def test_flash_to_a_root_never_runs_the_bundles_own_code(unsigned_bundle, tmp_path):
    marker = tmp_path / "ran-on-the-host"

    def evil(top: Path) -> None:
        (top / "install.sh").write_text(f"#!/bin/sh\ntouch {marker}\nexit 0\n")

    forged = repack(unsigned_bundle, tmp_path / "tiny-edge-x86_64.tar.gz", evil)
    root = fake_root(tmp_path / "root")
    result = flash(forged, str(root), service=False)  # no key: the checksums are consistent, so it installs
    assert not marker.exists(), "the old flash --to ROOT ran the bundle's install.sh here"
    assert result.release.startswith("/opt/tiny/releases/")
    assert (root / "opt/tiny/current/.pending").is_file()


def test_a_prefix_that_climbs_out_of_the_root_is_refused(unsigned_bundle, tmp_path):
    def climb(top: Path) -> None:
        info = json.loads((top / "bundle.json").read_text())
        info["prefix"] = "/opt/../../../../tmp/escaped"
        (top / "bundle.json").write_text(json.dumps(info))

    forged = repack(unsigned_bundle, tmp_path / "tiny-edge-x86_64.tar.gz", climb)
    root = fake_root(tmp_path / "root")
    with pytest.raises(BentoCompileError, match=r"bundle\.json prefix"):
        flash(forged, str(root))
    with pytest.raises(BentoCompileError, match="--prefix"):
        flash(unsigned_bundle, str(root), prefix="/opt/../../etc")
    assert not (tmp_path / "escaped").exists() and not list((root / "opt").iterdir())
    unpacked = es.unpack(unsigned_bundle, tmp_path / "by-hand")  # install.sh by hand refuses it too
    by_hand = subprocess.run(["sh", str(unpacked / "install.sh"), "--root", str(root), "--prefix", "/opt/../x",
                              "--no-service"], capture_output=True, text=True)
    assert by_hand.returncode == 2 and "'..'" in by_hand.stderr


def _fifo(tar: tarfile.TarFile, top: str) -> None:
    info = tarfile.TarInfo(f"{top}/bento/pipe")
    info.type = tarfile.FIFOTYPE
    tar.addfile(info)


def _device(tar: tarfile.TarFile, top: str) -> None:
    info = tarfile.TarInfo(f"{top}/app/disk")
    info.type, info.devmajor, info.devminor, info.mode = tarfile.BLKTYPE, 8, 0, 0o666
    tar.addfile(info)


def _link(tar: tarfile.TarFile, top: str) -> None:
    info = tarfile.TarInfo(f"{top}/bento/shadow")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
    tar.addfile(info)


def _empty_dir(tar: tarfile.TarFile, top: str) -> None:
    info = tarfile.TarInfo(f"{top}/app/empty")
    info.type = tarfile.DIRTYPE
    tar.addfile(info)


def _climbing_member(tar: tarfile.TarFile, top: str) -> None:
    data = b"planted"
    info = tarfile.TarInfo(f"{top}/../../planted")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("extra, message", [
    (_fifo, "is a FIFO"), (_device, "is a device node"), (_link, "is a symbolic link"),
    (_climbing_member, "would land outside its folder"),
])
def test_flash_refuses_members_that_are_not_plain_files(unsigned_bundle, tmp_path, extra, message):
    forged = repack(unsigned_bundle, tmp_path / "tiny-edge-x86_64.tar.gz", lambda _top: None, extra=extra)
    root = fake_root(tmp_path / "root")
    result = run_cli("flash", str(forged), "--to", str(root), check=False)
    assert result.returncode == 1 and message in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr and not (root / "opt/tiny").exists()


@pytest.mark.parametrize("make, message", [
    (lambda top: os.mkfifo(top / "bento" / "pipe"), "not a regular file or a folder"),
    (lambda top: (top / "app" / "empty").mkdir(), "folders that hold no listed file"),
    (lambda top: (top / "bento" / "shadow").symlink_to("/etc/shadow"), "not a regular file or a folder"),
])
def test_install_sh_refuses_what_is_not_a_listed_regular_file(unsigned_bundle, tmp_path, make, message):
    top = es.unpack(unsigned_bundle, tmp_path / "unpacked")
    make(top)
    root = fake_root(tmp_path / "root")
    result = subprocess.run(["sh", str(top / "install.sh"), "--root", str(root), "--no-service"],
                            capture_output=True, text=True)
    assert result.returncode == 4 and message in result.stderr
    assert not (root / "opt/tiny/releases").exists() or not any((root / "opt/tiny/releases").iterdir())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to check signatures in install.sh")
def test_install_sh_checks_the_signature_against_the_devices_key(signed_bundle, unsigned_bundle, keys, tmp_path):
    ours, theirs = keys
    cases = ((signed_bundle, ours, True), (signed_bundle, theirs, False), (unsigned_bundle, ours, False))
    for number, (bundle, key, ok) in enumerate(cases):
        root = fake_root(tmp_path / f"root-{number}")
        (root / "opt/tiny").mkdir(parents=True)
        shutil.copy(key.public_path, root / "opt/tiny/trusted-key.pub.pem")
        top = es.unpack(bundle, root.parent / f"u-{root.name}")
        result = subprocess.run(["sh", str(top / "install.sh"), "--root", str(root), "--no-service"],
                                capture_output=True, text=True)
        if ok:
            assert result.returncode == 0, result.stderr
            assert "signature verified" in result.stderr
        else:
            assert result.returncode == 4, result.stderr
            assert "not signed" in result.stderr or "does not verify" in result.stderr
            assert not (root / "opt/tiny/current").exists()


def test_signing_is_reproducible(signed_bundle, keys, tmp_path):
    """Ed25519 signatures are deterministic: the signed bundle still builds to the same bytes."""
    ours, _ = keys
    sums = tarfile.open(signed_bundle).extractfile("tiny-edge-x86_64/SHA256SUMS").read()  # noqa: SIM115
    signature = tarfile.open(signed_bundle).extractfile("tiny-edge-x86_64/SHA256SUMS.sig").read()  # noqa: SIM115
    assert load_private_key(ours.private_path).sign(sums) == signature
