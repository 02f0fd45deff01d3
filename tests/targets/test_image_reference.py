"""Image references are split by one named function (targets/registry.py), apart from Bento tags."""

from __future__ import annotations

import pytest

from bento_compile.core.errors import BentoCompileError
from bento_compile.targets.images import BuiltImage
from bento_compile.targets.registry import Reference, parse_image_reference

DIGEST = "sha256:" + "c" * 64


@pytest.mark.parametrize("reference, name, tag, digest", [
    ("churn", "churn", None, None),
    ("churn:1.4", "churn", "1.4", None),
    ("127.0.0.1:5000/churn", "127.0.0.1:5000/churn", None, None),  # a port is not a tag
    ("127.0.0.1:5000/ml/churn:1.4", "127.0.0.1:5000/ml/churn", "1.4", None),
    (f"ghcr.io/x/churn:1@{DIGEST}", "ghcr.io/x/churn", "1", DIGEST),
    (f"ghcr.io/x/churn@{DIGEST}", "ghcr.io/x/churn", None, DIGEST),
])
def test_parse_image_reference(reference, name, tag, digest):
    split = parse_image_reference(reference)
    assert (split.name, split.tag, split.digest) == (name, tag, digest)
    assert split.tag_or_latest == (tag or "latest")


def test_a_built_image_is_pinned_by_its_name_and_digest():
    image = BuiltImage("oci", "127.0.0.1:5000/churn:1.4", DIGEST)
    assert image.pinned == f"127.0.0.1:5000/churn@{DIGEST}"
    assert BuiltImage("docker", "churn:1", None).pinned == "churn:1"


def test_reference_parse_still_refuses_a_bad_digest():
    with pytest.raises(BentoCompileError, match="invalid digest"):
        Reference.parse("127.0.0.1:5000/churn@")
