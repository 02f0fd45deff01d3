"""The names that cross a trust boundary, checked once, where they enter.

A Bento travels through shared buckets and onto devices, so every name it carries is
someone else's text until proven otherwise: the Bento's name and version become folder
names in the store and on the device, a file entry becomes a path the runtime opens, a
stage name becomes an S3 key, a prefix becomes where an install lands. Each check here
says which field broke which rule, so the error can be acted on without reading code.

Ships inside every artifact: standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from bento_compile.runtimes.errors import IntegrityError
from bento_compile.runtimes.names import BENTO_NAME

# The Bento name rule (runtimes/names.py, the one the compiler enforces), so it is also a valid
# folder name, systemd unit suffix and label value everywhere it is pasted.
NAME_RULE = re.compile(BENTO_NAME)
# Versions are content hashes today; the rule leaves room for other schemes but never a
# leading dot (".", "..", hidden folders), a separator or a control character.
VERSION_RULE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
STAGE_RULE = re.compile(r"[a-z][a-z0-9._-]{0,62}")
# One path segment of a file inside a Bento: printable, no separators, not "." or "..".
_SEGMENT_RULE = re.compile(r"[A-Za-z0-9_+@=,-][A-Za-z0-9._+@=,-]{0,254}")
MAX_FILE_ENTRY = 1024
MAX_FILES = 10_000
# An absolute device path with no "." / ".." segment and nothing a shell, sed or systemd reads.
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9_+@:-][A-Za-z0-9._+@:-]{0,254}")
MAX_PREFIX = 512


class UnsafeName(IntegrityError):
    """A name from outside breaks the rule for its field; nothing was written or loaded."""

    def __init__(self, field: str, value: object, rule: str):
        shown = repr(value) if not isinstance(value, str) or len(value) <= 80 else repr(value[:80]) + "…"
        super().__init__(f"{field} is {shown}, which is not allowed: {rule}")
        self.field = field
        self.rule = rule


def check_name(value: object, field: str = "name") -> str:
    if not isinstance(value, str) or not NAME_RULE.fullmatch(value):
        raise UnsafeName(field, value, "a Bento name is 1-63 lowercase letters, digits, '.', '_' or '-', "
                                       "starting with a letter or digit")
    return value


def check_version(value: object, field: str = "version") -> str:
    if not isinstance(value, str) or not VERSION_RULE.fullmatch(value):
        raise UnsafeName(field, value, "a version is 1-128 letters, digits, '.', '_' or '-', not starting with "
                                       "'.' (no '/', '..', spaces or control characters)")
    return value


def check_stage(value: object, field: str = "stage") -> str:
    if not isinstance(value, str) or not STAGE_RULE.fullmatch(value):
        raise UnsafeName(field, value, "a stage is 1-63 lowercase letters, digits, '.', '_' or '-', starting with a "
                                       "letter")
    return value


def check_file_entry(value: object, field: str = "files entry") -> str:
    """A file inside a Bento: relative, normalized ('a/b', never 'a//b', './a', 'a/../b'), printable."""
    if not isinstance(value, str) or not value or len(value) > MAX_FILE_ENTRY:
        raise UnsafeName(field, value, f"a file name is a non-empty relative path of at most {MAX_FILE_ENTRY} "
                                       "characters")
    if value.startswith("/") or "\\" in value:
        raise UnsafeName(field, value, "a file name is relative to the Bento folder, with '/' separators "
                                       "(no absolute paths, no backslashes)")
    for segment in value.split("/"):
        if not _SEGMENT_RULE.fullmatch(segment):
            raise UnsafeName(field, value, "every part of a file name is letters, digits or . _ + @ = , - and "
                                           "not '.' or '..': the file must lie inside the Bento folder")
    return value


def check_prefix(value: object, field: str = "prefix") -> str:
    """An install prefix on a device: absolute, normalized, no '.'/'..' parts, no shell/sed/systemd characters."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > MAX_PREFIX:
        raise UnsafeName(field, value, f"a prefix is an absolute path of at most {MAX_PREFIX} characters, "
                                       "e.g. /opt/churn")
    parts = value.rstrip("/").split("/")[1:]
    if not parts or not all(_PREFIX_SEGMENT.fullmatch(p) for p in parts):
        raise UnsafeName(field, value, "a prefix is /-separated parts of letters, digits or . _ + @ : -, none of "
                                       "them empty, '.' or '..' (it must not climb out of the device root)")
    return value


def check_bento_names(name: object, version: object, model_file: object, files: object,
                      extra_model_files: Iterable[object] = ()) -> None:
    """Every name a manifest carries: its name, version, each file entry, and the model file(s),
    which must be among the hashed files (else the runtime would load bytes nobody hashed)."""
    check_name(name, "manifest name")
    check_version(version, "manifest version")
    if not isinstance(files, Mapping) or not files:
        raise UnsafeName("manifest files", type(files).__name__, "files is an object naming every file of the "
                                                                 "Bento with its sha256 and size")
    if len(files) > MAX_FILES:
        raise UnsafeName("manifest files", f"{len(files)} entries", f"a Bento lists at most {MAX_FILES} files")
    for entry, meta in files.items():
        check_file_entry(entry, "manifest files entry")
        _check_file_meta(entry, meta)
    for field, value in (("manifest model.file", model_file),
                         *(("manifest model file", v) for v in extra_model_files)):
        check_file_entry(value, field)
        if value not in files:
            raise UnsafeName(field, value, "the model file must be one of the files the manifest hashes")


def _check_file_meta(entry: str, meta: Any) -> None:
    """sha256 and size of one entry, from the JSON object or the parsed record alike."""
    if isinstance(meta, Mapping):
        digest, size = meta.get("sha256"), meta.get("size")
    else:
        digest, size = getattr(meta, "sha256", None), getattr(meta, "size", None)
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise UnsafeName(f"manifest files[{entry!r}].sha256", digest, "a sha256 is 64 lowercase hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UnsafeName(f"manifest files[{entry!r}].size", size, "a size is a whole number of bytes, 0 or more")
