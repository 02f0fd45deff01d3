"""Errors the runtime raises, each mapped to one answer by every adapter."""

from __future__ import annotations


class RuntimeFault(Exception):
    """Base class: something the runtime refuses, with a message safe to show a client."""


class InputError(RuntimeFault):
    """The client's request is wrong (HTTP 422). The message says what and where."""


class PayloadTooLarge(RuntimeFault):
    """The request is over a configured bound (HTTP 413)."""


class IntegrityError(RuntimeFault):
    """A Bento file does not match its manifest; the model must not be loaded."""


class NotReady(RuntimeFault):
    """The model is not loaded (yet, or it failed to load) (HTTP 503)."""


class Overloaded(RuntimeFault):
    """The server cannot take this request now (queue full, deadline unmeetable, in-flight limit) (HTTP 503).

    `retry_after` is the server's estimate, in whole seconds, of when a retry may succeed; HTTP sends it
    as `Retry-After`, other adapters put it in their error result.
    """

    def __init__(self, message: str, retry_after: int = 1, reason: str = "overloaded"):
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
        self.reason = reason
