"""A connection's deadlines for the lean HTTP protocol (adapters/lean_http.py): one lazy timer each.

The rules are adapters/http_guard.py's: the headers of a request within the header timeout (from the
connection's start, or from the first byte of a request on a kept-alive connection), its body within
the body timeout (from the end of its headers), and a kept-alive connection that sends nothing is
closed once idle for the keep-alive timeout. While the app works on a whole request nothing is timed.

Why one lazy timer: arming a deadline happens on every request, a timer handle per request (uvicorn
arms and cancels one) costs an allocation and a heap push each time. Here arming is one clock read;
the one timer a connection has, when it fires early (the deadline moved on), sleeps again until it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

IDLE, HEADERS, BODY, DONE = "idle", "headers", "body", "done"


class Deadlines:
    """The deadline of the phase a connection is in; `on_expiry(phase)` once it passes."""

    __slots__ = ("_loop", "_on_expiry", "_timer", "_timer_at", "deadline", "phase")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expiry: Callable[[str], None]):
        self._loop = loop
        self._on_expiry = on_expiry
        self._timer: Any = None
        self._timer_at = 0.0
        self.deadline: float | None = None
        self.phase = DONE

    def arm(self, phase: str, seconds: float) -> None:
        deadline = self._loop.time() + seconds
        self.phase = phase
        self.deadline = deadline
        if self._timer is None or self._timer_at > deadline:
            self._schedule(deadline)

    def disarm(self) -> None:
        """The app has a whole request: nothing is timed until it is answered."""
        self.phase = DONE
        self.deadline = None

    def cancel(self) -> None:
        self.disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._fired)

    def _fired(self) -> None:
        self._timer = None
        deadline = self.deadline
        if deadline is None:
            return
        if self._loop.time() < deadline:  # moved on since this timer was set
            self._schedule(deadline)
            return
        self.deadline = None
        self._on_expiry(self.phase)
