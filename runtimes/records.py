"""Typed JSON records: frozen dataclasses that read and write themselves from their own fields.

The manifest (runtimes/manifest.py) is built from these, so a field is declared once, as a dataclass
field with a type hint, and `from_dict`, `to_dict` and the JSON Schema (compiler/manifest_schema.py)
all follow from that declaration. Stdlib only: this ships inside every artifact.

Rules a field follows:
- a field without a default is required; a field with one reads its default when the key is absent
  (so Bentos built before the field existed keep loading);
- `field(metadata=OMIT_NONE)`: the key is left out of `to_dict` when the value is None (and may be
  absent when read), for keys the writer only sometimes sets;
- keys the record does not know (a manifest written by a newer bento-compile) are tolerated and kept
  in `extra`, written back unchanged by `to_dict`, so reading and rewriting never loses them.
Values are type-checked on read; the error names the dotted path of the bad key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

OMIT_NONE: Mapping[str, Any] = types.MappingProxyType({"omit_none": True})

R = TypeVar("R", bound="Record")


class RecordError(ValueError):
    """A record's JSON does not have the shape its dataclass declares; the message names the key."""


@dataclass(frozen=True)
class Record:
    """Base of every manifest section. Subclasses are `@dataclass(frozen=True)` with typed fields."""

    # Keys this version does not know, kept as they were. Never part of the hash, always of equality.
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, hash=False, repr=False)

    _hints_cache: ClassVar[dict[type, dict[str, Any]]] = {}

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any] | None, where: str = "") -> R:
        """Read this record from parsed JSON; None or a missing mapping reads every default."""
        return _decode_record(cls, {} if data is None else data, where or cls.__name__)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: known fields (OMIT_NONE ones only when set) plus the kept unknown keys."""
        out: dict[str, Any] = dict(self.extra)
        for spec in record_fields(type(self)):
            value = getattr(self, spec.name)
            if value is None and spec.metadata.get("omit_none"):
                continue
            out[spec.name] = _encode(value)
        return out


def record_fields(cls: type[Record]) -> list[dataclasses.Field[Any]]:
    """The JSON fields of a record class (everything but `extra`)."""
    return [f for f in dataclasses.fields(cls) if f.name != "extra"]


def type_hints(cls: type[Record]) -> dict[str, Any]:
    """Resolved type hints of a record class (the modules use `from __future__ import annotations`)."""
    cached = Record._hints_cache.get(cls)
    if cached is None:
        cached = Record._hints_cache[cls] = typing.get_type_hints(cls)
    return cached


def is_record(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Record)


def optional_inner(tp: Any) -> Any | None:
    """`X` for `X | None`, else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def has_default(spec: dataclasses.Field[Any]) -> bool:
    return spec.default is not dataclasses.MISSING or spec.default_factory is not dataclasses.MISSING


def _decode_record(cls: type[R], data: Any, where: str) -> R:
    if not isinstance(data, Mapping):
        raise RecordError(f"{where} must be an object, not {type(data).__name__}")
    hints = type_hints(cls)
    values: dict[str, Any] = {}
    known = set()
    for spec in record_fields(cls):
        known.add(spec.name)
        if spec.name not in data:
            if has_default(spec):
                continue
            raise RecordError(f"{where}.{spec.name} is missing")
        values[spec.name] = _decode(hints[spec.name], data[spec.name], f"{where}.{spec.name}")
    extra = {k: v for k, v in data.items() if k not in known}
    return cls(**values, extra=extra)


def _decode(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:
        return value
    inner = optional_inner(tp)
    if inner is not None:
        return None if value is None else _decode(inner, value, where)
    if is_record(tp):
        return _decode_record(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is dict:
        _key, item = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise RecordError(f"{where} must be an object, not {type(value).__name__}")
        return {str(k): _decode(item, v, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        item = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise RecordError(f"{where} must be a list, not {type(value).__name__}")
        items = [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:  # JSON writes 5.0 as 5 in some writers; the value is kept as it was read
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"{where}: records do not support the type {tp!r}")
    if not ok:
        raise RecordError(f"{where} must be {_type_word(tp)}, not {type(value).__name__} {value!r:.40}")
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _type_word(tp: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))
