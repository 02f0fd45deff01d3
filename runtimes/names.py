"""What a Bento name and a Bento tag (`NAME[:VERSION]`) may be: the one rule for every side.

It lives in the runtime because the runtime ships alone and cannot import the build side; the
compiler, the store, the config schema and the remote store all read it from here. A name
becomes a folder name in the store, an S3 key and an image label, so it is narrow on purpose.
"""

from __future__ import annotations

import re

# Lowercase letter or digit first, then letters, digits, '.', '_' or '-': 63 characters at most.
BENTO_NAME = r"[a-z0-9][a-z0-9._-]{0,62}"
BENTO_NAME_PATTERN = f"^{BENTO_NAME}$"  # for schema validators (pydantic `pattern=`)
_NAME = re.compile(BENTO_NAME_PATTERN)
_TAG = re.compile(rf"^(?P<name>{BENTO_NAME})(?::(?P<version>[A-Za-z0-9._-]+))?$")


def is_bento_name(name: str) -> bool:
    return bool(_NAME.match(name or ""))


def parse_bento_tag(tag: str) -> tuple[str, str] | None:
    """`NAME` or `NAME:VERSION` → (name, version, "latest" when absent); None when it is not a tag.

    The caller says what was wrong and how to fix it, in its own words (the CLI and the runtime
    report errors differently)."""
    match = _TAG.match(tag or "")
    if not match:
        return None
    return match["name"], match["version"] or "latest"
