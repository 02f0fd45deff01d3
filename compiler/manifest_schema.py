"""The JSON Schema of manifest.json, generated from the typed model in runtimes/manifest.py.

Generated, never hand-written, so it cannot drift from what the compiler writes
and the runtime reads. The checked-in copy (schemas/bento-manifest.schema.json)
is for people and other tools (CI checks, registries, editors); a test fails
when it differs from what this module generates. After changing a manifest
field, refresh it:

    python -m bento_compile.compiler.manifest_schema --write

Each record's docstring and each field's comments in runtimes/manifest.py
become the schema's descriptions, so documenting a field there documents it
here too. What the schema says, field by field, follows the record rules in
runtimes/records.py: fields without a default are required; a field with one
may be absent (older Bentos); unknown keys are allowed everywhere, because a
newer bento-compile may add fields and this runtime keeps them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import io
import json
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any

from bento_compile.runtimes.manifest import SCHEMA_VERSION, Manifest
from bento_compile.runtimes.records import Record, has_default, is_record, optional_inner, record_fields, type_hints

SCHEMA_ID = "https://bento-compile.dev/schemas/bento-manifest.schema.json"
# The checkout's copy; compiler/ sits at the repository's top level (bento_compile/compiler links to it).
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schemas" / "bento-manifest.schema.json"

_SCALARS = {str: {"type": "string"}, int: {"type": "integer"}, float: {"type": "number"},
            bool: {"type": "boolean"}}


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a Bento's manifest.json."""
    defs: dict[str, Any] = {}
    root = _record_schema(Manifest, defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Bento manifest",
        "description": f"manifest.json of a Bento (schema {SCHEMA_VERSION}), as bento-compile writes and reads it. "
                       f"{root.pop('description')} Generated from bento_compile/runtimes/manifest.py by "
                       "bento_compile/compiler/manifest_schema.py; do not edit by hand.",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def schema_text() -> str:
    """The schema as the checked-in file holds it."""
    return json.dumps(manifest_schema(), indent=2, sort_keys=False) + "\n"


def _record_schema(cls: type[Record], defs: dict[str, Any]) -> dict[str, Any]:
    hints = type_hints(cls)
    # A class object is hashable; mypy checks the frozen dataclass's instance __hash__ against Hashable instead.
    notes = field_comments(cls)  # type: ignore[arg-type]
    properties: dict[str, Any] = {}
    required: list[str] = []
    for spec in record_fields(cls):
        prop = _type_schema(hints[spec.name], defs)
        if spec.name in notes:
            prop = {"description": notes[spec.name], **prop}
        default = _default(spec)
        if default is not _NO_DEFAULT:
            prop = {**prop, "default": default}
        properties[spec.name] = prop
        if not has_default(spec):
            required.append(spec.name)
    out: dict[str, Any] = {"type": "object", "description": _doc(cls), "properties": properties}
    if required:
        out["required"] = required
    out["additionalProperties"] = True  # unknown keys: written by a newer version, kept as they are
    return out


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """Each field's comments in the class source (the lines just above it and the end of its own lines):
    the manifest module documents its fields there, and the schema carries them as descriptions."""
    source = inspect.getsource(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    notes: dict[str, str] = {}
    pending: list[str] = []
    current: str | None = None  # the field whose statement is being read
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        starts_line = token.line[:token.start[1]].strip() == ""
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if current is not None:
                notes[current] = f"{notes[current]} {text}" if current in notes else text
            else:
                pending.append(text)
        elif token.type == tokenize.NAME and starts_line and token.start[1] == 4 and token.string in fields:
            current = token.string
            if pending:
                notes[current] = " ".join(pending)
            pending = []
        elif token.type == tokenize.NEWLINE:
            current = None
        elif token.type == tokenize.NL and not token.line.strip():
            pending = []  # a blank line: the comments above it belong to no field
    return notes


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if tp is Any:
        return {}
    inner = optional_inner(tp)
    if inner is not None:
        return {"anyOf": [_type_schema(inner, defs), {"type": "null"}]}
    if is_record(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # placeholder first: records may refer to each other
            defs[tp.__name__] = _record_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    origin = typing.get_origin(tp)
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(typing.get_args(tp)[1], defs)}
    if origin in (list, tuple):
        return {"type": "array", "items": _type_schema(typing.get_args(tp)[0], defs)}
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    raise TypeError(f"no JSON Schema for {tp!r}: add it to compiler/manifest_schema.py")


_NO_DEFAULT = object()


def _default(spec: dataclasses.Field[Any]) -> Any:
    """A field's default as JSON, for scalar defaults (record and container defaults are left implicit)."""
    if spec.default is dataclasses.MISSING or spec.default is None:
        return _NO_DEFAULT
    if isinstance(spec.default, (str, int, float, bool)):
        return spec.default
    return _NO_DEFAULT


def _doc(cls: type) -> str:
    return " ".join((cls.__doc__ or cls.__name__).split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bento_compile.compiler.manifest_schema",
                                     description="Print, write or check the manifest's JSON Schema.")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"write it to {SCHEMA_FILE}")
    action.add_argument("--check", action="store_true", help="exit 1 when the checked-in file is out of date")
    args = parser.parse_args(argv)
    text = schema_text()
    if args.write:
        SCHEMA_FILE.parent.mkdir(parents=True, exist_ok=True)
        SCHEMA_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {SCHEMA_FILE}", file=sys.stderr)
    elif args.check:
        current = SCHEMA_FILE.read_text(encoding="utf-8") if SCHEMA_FILE.is_file() else ""
        if current != text:
            print(f"{SCHEMA_FILE} is out of date: run python -m bento_compile.compiler.manifest_schema --write",
                  file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
