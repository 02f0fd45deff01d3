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
