"""Option values more than one command takes: Lambda's Python versions, and KEY=VALUE environment pairs."""

from __future__ import annotations

from bento_compile.core.errors import BentoCompileError

LAMBDA_PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def parse_env_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    """`--env KEY=VALUE` options as a dict; a pair without `=` or a key is a clear error."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BentoCompileError(f"--env {pair!r} is not KEY=VALUE.", "Write e.g. --env BENTO_COMPILE_LOAD=lazy.")
        env[key] = value
    return env
