"""multipart/form-data bodies, parsed from bytes already bounded by the adapter (stdlib only).

Only what a form upload needs: parts with a `name`, optional `filename`, and their bytes.
"""

from __future__ import annotations

import re

from bento_compile.runtimes.errors import InputError

_BOUNDARY = re.compile(rb'boundary="?([^";]{1,200})"?', re.IGNORECASE)
_NAME = re.compile(rb'[; ]name="([^"]{0,200})"', re.IGNORECASE)
_MAX_PARTS = 256


def boundary_of(content_type: bytes) -> bytes:
    found = _BOUNDARY.search(content_type)
    if not found:
        raise InputError("a multipart/form-data body needs a boundary in its Content-Type")
    return found.group(1)


def parse_multipart(body: bytes, content_type: bytes) -> list[tuple[str, bytes, bool]]:
    """(field name, bytes, is a file) for each part, in order."""
    delimiter = b"--" + boundary_of(content_type)
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise InputError("the multipart body has no parts (or its boundary does not match the Content-Type)")
    if len(chunks) - 2 > _MAX_PARTS:
        raise InputError(f"the multipart body has over {_MAX_PARTS} parts")
    parts = []
    for chunk in chunks[1:-1]:
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise InputError("a multipart part has no header/body separator")
        name = _NAME.search(head)
        if name is None:
            raise InputError("a multipart part has no name in its Content-Disposition")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        parts.append((name.group(1).decode("utf-8", "replace"), data, b"filename=" in head.lower()))
    return parts
