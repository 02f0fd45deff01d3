"""Target-platform wheel resolution: the tag lists pip needs, and a real resolution."""

from __future__ import annotations

import hashlib
import stat
import zipfile

import pytest
from packaging.utils import parse_wheel_filename

from bento_compile.core.errors import BentoCompileError
from bento_compile.targets.wheel_install import unpack_wheels, unpacked_wheel
from bento_compile.targets.wheels import TargetPlatform, Wheel, resolve_wheels


def test_tag_lists_span_every_glibc():
    arm = TargetPlatform(arch="arm64", python="3.12", glibc=(2, 34)).platform_tags()
    assert arm[0] == "manylinux_2_34_aarch64" and "manylinux2014_aarch64" in arm
    assert "manylinux_2_28_aarch64" in arm and "manylinux_2_17_aarch64" in arm
    assert all("x86_64" not in t for t in arm)
    x86 = TargetPlatform(arch="x86_64", python="3.11", glibc=(2, 26)).platform_tags()
    assert "manylinux_2_28_x86_64" not in x86  # an older glibc must not accept newer wheels
    assert "manylinux1_x86_64" in x86 and x86[-1] == "manylinux1_x86_64"


def test_unknown_platform_is_a_clear_error():
    with pytest.raises(BentoCompileError, match="Unknown architecture"):
        TargetPlatform(arch="sparc")
    with pytest.raises(BentoCompileError, match="Unsupported Python"):
        TargetPlatform(python="2.7")


@pytest.mark.slow
def test_resolves_arm64_wheels_not_the_build_machines(tmp_path):
    target = TargetPlatform(arch="arm64", python="3.12")
    wheels = resolve_wheels(["numpy", "orjson"], target, tmp_path)
    assert {w.name for w in wheels} == {"numpy", "orjson"}
    for wheel in wheels:
        _, _, _, tags = parse_wheel_filename(wheel.filename)
        assert {t.platform for t in tags} & set(target.platform_tags()), wheel.filename
        assert {t.interpreter for t in tags} & {"cp312", "py3"}
        assert len(wheel.sha256) == 64


@pytest.mark.slow
def test_unresolvable_requirement_names_the_platform(tmp_path):
    with pytest.raises(BentoCompileError, match=r"aarch64 / Python 3\.12"):
        resolve_wheels(["surely-not-a-real-package-name-xyz"], TargetPlatform(arch="arm64"), tmp_path)


def fake_wheel(folder, entries: dict[str, tuple[bytes, int]]) -> Wheel:
    """A small wheel zip: {name: (content, unix mode)}."""
    path = folder / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, (data, mode) in entries.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            archive.writestr(info, data)
    return Wheel("demo", "1.0", path, hashlib.sha256(path.read_bytes()).hexdigest())


def test_unpacking_lays_a_wheel_out_as_site_packages(tmp_path):
    wheel = fake_wheel(tmp_path, {"demo/__init__.py": (b"x = 1\n", 0o600), "demo/_ext.so": (b"ELF", 0o700),
                                  "demo-1.0.data/purelib/extra.py": (b"", 0o644),
                                  "demo-1.0.data/scripts/demo": (b"#!/bin/sh\n", 0o755)})
    tree = unpacked_wheel(wheel, tmp_path / "cache")
    assert sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()) == [
        "demo/__init__.py", "demo/_ext.so", "extra.py"]  # scripts are not needed to import it
    assert stat.S_IMODE((tree / "demo/__init__.py").stat().st_mode) == 0o644
    assert stat.S_IMODE((tree / "demo/_ext.so").stat().st_mode) == 0o755
    assert unpacked_wheel(wheel, tmp_path / "cache") == tree == tmp_path / "cache" / "unpacked" / wheel.sha256


@pytest.mark.parametrize("name", ["../evil.py", "/etc/evil.py", "demo/../../evil.py",
                                  "demo-1.0.data/platlib/../../evil.py"])
def test_a_wheel_entry_outside_the_folder_is_refused_and_nothing_is_kept(tmp_path, name):
    wheel = fake_wheel(tmp_path, {"demo/__init__.py": (b"", 0o644), name: (b"boom", 0o644)})
    with pytest.raises(BentoCompileError, match="outside the package folder"):
        unpacked_wheel(wheel, tmp_path / "cache")
    assert not (tmp_path / "cache" / "unpacked" / wheel.sha256).exists()
    assert list((tmp_path / "cache" / "unpacked").iterdir()) == []
    with pytest.raises(BentoCompileError, match="outside the package folder"):
        unpack_wheels([wheel], tmp_path / "site")
    assert not (tmp_path / "evil.py").exists()
