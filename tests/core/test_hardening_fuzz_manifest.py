"""Property-based fuzzing (hypothesis) of manifest reading: a real manifest with any field replaced by any
JSON value, or any file entry renamed to any text, is either read (and then every name in it obeys the
boundary rules) or refused with an IntegrityError naming the field: never another exception."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bento_compile.runtimes.boundary import check_file_entry, check_name, check_version
from bento_compile.runtimes.errors import IntegrityError
from bento_compile.runtimes.manifest import parse_manifest

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=12)
PATHS = [("name",), ("version",), ("files",), ("model",), ("model", "file"), ("model", "inputs"),
         ("model", "outputs"), ("runtime",), ("runtime", "batching"), ("runtime", "max_body_bytes")]


@pytest.fixture(scope="module")
def manifest(built_example) -> dict:
    return json.loads((built_example / "manifest.json").read_text())


def _read_or_refuse(data) -> None:
    try:
        parsed = parse_manifest(data)
    except IntegrityError:
        return
    check_name(parsed.name)
    check_version(parsed.version)
    for entry in parsed.files:
        check_file_entry(entry)
    assert parsed.model.file in parsed.files


@FUZZ
@given(path=st.sampled_from(PATHS), value=json_values)
def test_any_field_replaced_by_any_value_is_read_or_refused(manifest, path, value):
    data = copy.deepcopy(manifest)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    _read_or_refuse(data)


@FUZZ
@given(name=st.text(max_size=40), also_model=st.booleans())
def test_any_file_name_is_read_only_when_it_is_safe(manifest, name, also_model):
    data = copy.deepcopy(manifest)
    meta = next(iter(data["files"].values()))
    data["files"] = {name: meta}
    if also_model:
        data["model"]["file"] = name
    _read_or_refuse(data)
    if ".." in name.split("/") or name.startswith("/") or not name:
        with pytest.raises(IntegrityError):
            parse_manifest(data)


@FUZZ
@given(data=json_values)
def test_any_json_at_all_is_read_or_refused(data):
    _read_or_refuse(data)
