"""Putting text into generated files by each file's own rules, never by pasting.

A value that came from a manifest or a command line is data; in a systemd unit, a shell
file or an EnvironmentFile it must stay data. Each helper here knows one format's rules:
systemd expands `%` specifiers and ends a setting at a newline; a POSIX shell needs single
quotes (shlex); an EnvironmentFile is read both by systemd and by the edge runner, so its
values are kept to characters both read alike. YAML and JSON files go through their
serializers (yaml.safe_dump, json.dumps) where they are written, and the Dockerfile writer
quotes its own words (targets/docker_builder.py).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from bento_compile.core.errors import BentoCompileError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
_ENV_VALUE = re.compile(r"[A-Za-z0-9._:\[\]/+-]{1,253}")
_MEMORY_MAX = re.compile(r"(?:[1-9][0-9]{0,15}[KMGT]?|infinity)")
_CPU_QUOTA = re.compile(r"[1-9][0-9]{0,5}%")


def one_line(value: str, field: str) -> str:
    """Text that must stay on its line (a comment, a Description): no control characters at all."""
    if _CONTROL.search(value):
        raise BentoCompileError(f"{field} {value[:80]!r} holds a control character (a newline, tab or escape).",
                                "Use printable text only: it is written into generated files line by line.")
    return value


def systemd_text(value: str, field: str) -> str:
    """A value inside a unit file: one line, and `%` doubled so systemd does not expand it as a specifier."""
    return one_line(value, field).replace("%", "%%")


def shell_assign(key: str, value: str) -> str:
    """`KEY='value'` for a file a POSIX shell sources (bundle.env): the value is one quoted word, whatever it is."""
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
        raise ValueError(f"not a shell variable name: {key!r}")
    return f"{key}={shlex.quote(value)}\n"


def env_file_value(value: str, field: str) -> str:
    """A value for config.env, which systemd (EnvironmentFile) and the edge runner both read: kept to
    characters both read the same way, unquoted."""
    if not _ENV_VALUE.fullmatch(value):
        raise BentoCompileError(f"{field} {value[:80]!r} cannot go into config.env.",
                                "Use letters, digits and . _ : [ ] / + - only (a host name or address, a number).")
    return value


def memory_max(value: str) -> str:
    if not _MEMORY_MAX.fullmatch(value):
        raise BentoCompileError(f"--memory-max {value[:80]!r} is not a systemd MemoryMax value.",
                                "Use bytes with an optional K, M, G or T suffix (e.g. 512M), or infinity.")
    return value


def cpu_quota(value: str) -> str:
    if not _CPU_QUOTA.fullmatch(value):
        raise BentoCompileError(f"--cpu-quota {value[:80]!r} is not a systemd CPUQuota value.",
                                "Use a whole percentage: 100% is one core, 250% two and a half.")
    return value


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace @KEY@ placeholders in ONE pass (a value holding '@OTHER@' stays as it is); placeholders
    not in `values` are left for a later stage (install.sh fills @PREFIX@ on the device)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m[1], m[0]), template)
