"""`verify` checks exactly the Bento the runtime will load: an artifact with a signed decoy beside a tampered
`bento/` whose manifest is padded past the size verify reads, two copies, or a Bento where the runtime does
not look, is refused — through the real CLI, on real zip and tar.gz artifacts."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from bento_compile.core.signing import generate_keypair, load_private_key, sign_bento
from tests.support.helpers import run_cli


@pytest.fixture(scope="module")
def signed(built_example, tmp_path_factory):
    folder = tmp_path_factory.mktemp("signed")
    keys = generate_keypair(folder / "keys")
    bento = folder / "bento"
    shutil.copytree(built_example, bento)
    sign_bento(bento, load_private_key(keys.private_path))
    return bento, keys


def zipped(dest: Path, folders: dict[str, Path]) -> Path:
    with zipfile.ZipFile(dest, "w") as archive:
        archive.writestr("bento_compile/__init__.py", "")
        for arcname, folder in folders.items():
            for path in sorted(folder.iterdir()):
                archive.write(path, f"{arcname}/{path.name}")
    return dest


def test_a_signed_decoy_beside_a_padded_tampered_bento_is_refused(signed, tmp_path):
    bento, keys = signed
    tampered = tmp_path / "tampered"
    shutil.copytree(bento, tampered)
    model = bytearray((tampered / "model.onnx").read_bytes())
    model[200] ^= 1
    (tampered / "model.onnx").write_bytes(bytes(model))
    manifest = (tampered / "manifest.json").read_bytes()
    (tampered / "manifest.json").write_bytes(manifest.rstrip() + b" " * (17 * 1024 * 1024) + b"\n")  # still JSON
    artifact = zipped(tmp_path / "function.zip", {"decoy": bento, "bento": tampered})
    result = run_cli("verify", str(artifact), "--pub", str(keys.public_path), check=False)
    assert result.returncode == 1, result.stdout
    assert "over the" in result.stderr and "bento/manifest.json" in result.stderr


def test_two_copies_are_refused_even_when_identical(signed, tmp_path):
    bento, keys = signed
    artifact = zipped(tmp_path / "function.zip", {"bento": bento, "copy": bento})
    result = run_cli("verify", str(artifact), "--pub", str(keys.public_path), check=False)
    assert result.returncode == 1 and "more than one Bento" in result.stderr


def test_a_bento_where_the_runtime_does_not_look_is_refused(signed, tmp_path):
    bento, keys = signed
    artifact = zipped(tmp_path / "function.zip", {"elsewhere": bento})
    result = run_cli("verify", str(artifact), "--pub", str(keys.public_path), check=False)
    assert result.returncode == 1 and "the runtime loads bento/" in result.stderr
    bundle = tmp_path / "bundle.tar.gz"
    with tarfile.open(bundle, "w:gz") as archive:
        archive.add(bento, arcname="tiny-edge-x86_64/models/bento")
    result = run_cli("verify", str(bundle), "--pub", str(keys.public_path), check=False)
    assert result.returncode == 1 and "the runtime loads tiny-edge-x86_64/bento/" in result.stderr
    good = zipped(tmp_path / "good.zip", {"bento": bento})
    assert run_cli("verify", str(good), "--pub", str(keys.public_path)).returncode == 0


@pytest.mark.parametrize("change, rule", [
    (lambda m: m.update(files={"../outside.onnx": m["files"]["model.onnx"]},
                        model={**m["model"], "file": "../outside.onnx"}), "inside the Bento folder"),
    (lambda m: m.update(files={"/etc/hostname": m["files"]["model.onnx"]}), "no absolute paths"),
    (lambda m: m.update(model={**m["model"], "file": "unhashed.onnx"}), "one of the files the manifest hashes"),
])
def test_the_runtime_refuses_names_outside_the_bento_without_any_key(built_example, tmp_path, change, rule):
    """No public key configured: before, these loaded bytes nobody hashed, or read outside the Bento."""
    import json

    from bento_compile.runtimes.errors import IntegrityError
    from bento_compile.runtimes.model import BentoModel

    bento = tmp_path / "bento"
    shutil.copytree(built_example, bento)
    shutil.copy(bento / "model.onnx", tmp_path / "outside.onnx")
    shutil.copy(bento / "model.onnx", bento / "unhashed.onnx")
    manifest = json.loads((bento / "manifest.json").read_text())
    change(manifest)
    (bento / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match=rule):
        BentoModel.load(bento)


def test_the_runtime_refuses_a_model_file_that_is_a_link(built_example, tmp_path):
    from bento_compile.runtimes.errors import IntegrityError
    from bento_compile.runtimes.model import BentoModel

    bento = tmp_path / "bento"
    shutil.copytree(built_example, bento)
    (bento / "model.onnx").rename(tmp_path / "real.onnx")
    (bento / "model.onnx").symlink_to(tmp_path / "real.onnx")  # same bytes, same hash: still refused
    with pytest.raises(IntegrityError, match="symbolic link"):
        BentoModel.load(bento)
