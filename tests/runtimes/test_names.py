"""The Bento name and tag rule, in one place (runtimes/names.py) for the compiler, store, config and remote."""

from __future__ import annotations

import pytest

from bento_compile.runtimes.names import is_bento_name, parse_bento_tag


@pytest.mark.parametrize("tag, parsed", [
    ("churn", ("churn", "latest")),
    ("churn:latest", ("churn", "latest")),
    ("churn:3f2a9c01", ("churn", "3f2a9c01")),
    ("iris.v2_x-1:prod", ("iris.v2_x-1", "prod")),
    ("Churn", None), ("-churn", None), ("churn:", None), ("a/b:1", None), ("churn:v 1", None), ("", None),
    ("x" * 64, None),
])
def test_bento_tags(tag, parsed):
    assert parse_bento_tag(tag) == parsed


def test_names_follow_the_same_rule():
    assert is_bento_name("cancer") and is_bento_name("a" * 63)
    assert not is_bento_name("a" * 64) and not is_bento_name("../etc") and not is_bento_name("")
