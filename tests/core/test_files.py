"""core/files.py: every file and cache folder is written beside its destination and renamed into place."""

from __future__ import annotations

import os
import stat

import pytest

from bento_compile.core.files import cache_root, cached_folder, replacing_file, write_atomic, write_json_atomic


def test_a_failed_write_leaves_the_old_file_and_no_partial(tmp_path):
    target = tmp_path / "out" / "template.yaml"
    write_atomic(target, "old\n")
    with pytest.raises(RuntimeError), replacing_file(target) as partial:
        partial.write_text("half a new fi")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["template.yaml"]


def test_a_private_file_is_created_with_its_mode_before_any_byte(tmp_path):
    target = tmp_path / "key.pem"
    with replacing_file(target, 0o600) as partial:
        assert stat.S_IMODE(os.stat(partial).st_mode) == 0o600  # already, while still empty
        partial.write_bytes(b"secret")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == b"secret"


def test_json_is_deterministic(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'


def test_a_cached_folder_is_filled_once_and_a_failed_fill_leaves_nothing(tmp_path):
    calls = []

    def fill(work):
        calls.append(work)
        (work / "lib.py").write_text("x = 1\n")

    target = tmp_path / "cache" / "unpacked" / "abc"
    assert cached_folder(target, fill) == target and (target / "lib.py").is_file()
    assert cached_folder(target, fill) == target and len(calls) == 1  # kept: filled once

    def broken(work):
        (work / "half").write_text("")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cached_folder(tmp_path / "cache" / "unpacked" / "def", broken)
    assert sorted(p.name for p in (tmp_path / "cache" / "unpacked").iterdir()) == ["abc"]


def test_a_cached_folder_another_process_made_first_is_kept(tmp_path):
    target = tmp_path / "compiled"

    def racing(work):  # another build renames its copy into place while this one fills
        target.mkdir()
        (target / "theirs").write_text("")
        (work / "ours").write_text("")

    assert cached_folder(target, racing) == target
    assert [p.name for p in target.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["compiled"]


def test_one_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("BENTO_COMPILE_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("BENTO_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "bento-compile"
