"""The error batch scoring stops with: a BentoCompileError that survives the trip back from a worker process."""

from __future__ import annotations

from bento_compile.core.errors import BentoCompileError


class BatchError(BentoCompileError):
    """A table or row the Bento cannot score (the batch form of the server's 422), or a bad option."""

    def __reduce__(self):  # pickled from worker processes and Spark/Ray tasks with both parts intact
        return (type(self), (self.problem, self.fix))
