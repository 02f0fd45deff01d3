"""The one error type the CLI shows to a user: what went wrong, and how to fix it."""

from __future__ import annotations


class BentoCompileError(Exception):
    """A failure the user can act on. `fix` is advice, printed after the problem."""

    def __init__(self, problem: str, fix: str = ""):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.problem} {self.fix}".strip()
