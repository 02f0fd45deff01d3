"""Target-platform wheel resolution: the tag lists pip needs, and a real resolution."""

from __future__ import annotations

import pytest
from packaging.utils import parse_wheel_filename

from bento_compile.core.errors import BentoCompileError
from bento_compile.targets.wheels import TargetPlatform, resolve_wheels


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
