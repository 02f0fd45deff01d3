"""Slow and oversized clients: deadlines for a request's headers and body, and a bound on header size.

uvicorn has a keep-alive timeout and nothing else: a client that sends half a header (or a
body at a byte every few seconds) holds its connection, its memory and, if the app counted
it, an in-flight slot for as long as it likes, and httptools buffers a header of any size.
These protocol subclasses (one over httptools, one over h11; same rules for both) add:

- a header deadline (from the connection's start, or from the end of the previous response on
  a kept-alive connection): past it a request that has begun gets `408` and the connection is
  closed; an idle connection that sent nothing is closed without an answer;
- a body deadline from the end of the headers: past it `408`, closed (the app, waiting for the
  body, sees a disconnect and counts nothing);
- a header-size bound: past it `431`, closed, before the parser buffers more;
- uvicorn's own `400` for a malformed request as `{"error": ...}` JSON, like every other answer.

The in-flight limit is the app's (adapters/fastpath.py takes a slot only once the body is read),
so a slow client can hold a connection until its deadline, never a slot.
Configured by env (see `GuardSettings.from_env`); ships inside every HTTP artifact.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("bento_compile.http")

_HEADERS, _BODY, _DONE = "headers", "body", "done"
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


@dataclass(frozen=True)
class GuardSettings:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 32 * 1024

    @classmethod
    def from_env(cls) -> GuardSettings:
        """BENTO_COMPILE_HEADER_TIMEOUT_S, BENTO_COMPILE_BODY_TIMEOUT_S, BENTO_COMPILE_MAX_HEADER_BYTES."""
        return cls(header_timeout_s=_positive("BENTO_COMPILE_HEADER_TIMEOUT_S", cls.header_timeout_s),
                   body_timeout_s=_positive("BENTO_COMPILE_BODY_TIMEOUT_S", cls.body_timeout_s),
                   max_header_bytes=int(_positive("BENTO_COMPILE_MAX_HEADER_BYTES", cls.max_header_bytes)))


def _positive(key: str, default: float) -> float:
    text = os.environ.get(key, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{key} must be a number above 0, got {text!r}")
    return value


def json_response(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection: status line, JSON headers, body."""
    body = json.dumps({"error": message}).encode()
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, _REASONS[status], len(body))) + body


class _Guard:
    """Mixed in before a uvicorn HTTP protocol class. The steady state costs one check per read: a request
    that arrives whole finds the guard already disarmed (DONE) and changes nothing."""

    guard: GuardSettings = GuardSettings()
    transport: Any
    loop: Any
    cycle: Any

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._guard_bytes = 0
        self._guard_timer: Any = None
        self._guard_timer_at = 0.0
        self._guard_deadline: float | None = None
        self._guard_armed: str | None = None
        self._guard_arm(_HEADERS)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard_timer is not None:
            self._guard_timer.cancel()
            self._guard_timer = None
        self._guard_deadline = None
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self.transport.is_closing():
            return
        phase = self._phase()
        if phase == _HEADERS:
            if self._guard_armed != _HEADERS:  # the next request on a kept-alive connection has begun
                self._guard_bytes = 0
                self._guard_arm(_HEADERS)
            # Counted after parsing: when this chunk also finished the headers, its bytes were body.
            self._guard_bytes += len(data)
            if self._guard_bytes > self.guard.max_header_bytes:
                self._refuse(431, f"the request headers are over {self.guard.max_header_bytes} bytes "
                                  "(BENTO_COMPILE_MAX_HEADER_BYTES)")
        elif phase != self._guard_armed:  # a request that came whole stays DONE -> DONE: nothing to do
            self._guard_arm(phase)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, f"malformed HTTP request: {msg}")

    def _phase(self) -> str:
        """From uvicorn's own request cycle (the same attributes under httptools and h11): no request yet, or
        the last one answered and its body read: headers are arriving; a body still arriving (even after an
        early answer such as a 413); else the request is whole and the app has it."""
        cycle = self.cycle
        if cycle is None:
            return _HEADERS
        if cycle.more_body:
            return _BODY
        return _HEADERS if cycle.response_complete else _DONE

    def _guard_arm(self, phase: str) -> None:
        """Set the deadline of a phase. The per-request cost is one clock read: the connection keeps one
        lazy timer that, when it fires early (the deadline moved on), sleeps again until the deadline."""
        self._guard_armed = phase
        if phase == _DONE:
            self._guard_deadline = None
            return
        timeout = self.guard.header_timeout_s if phase == _HEADERS else self.guard.body_timeout_s
        deadline = self.loop.time() + timeout
        self._guard_deadline = deadline
        if self._guard_timer is None or self._guard_timer_at > deadline:
            self._guard_schedule(deadline)

    def _guard_schedule(self, when: float) -> None:
        if self._guard_timer is not None:
            self._guard_timer.cancel()
        self._guard_timer_at = when
        self._guard_timer = self.loop.call_at(when, self._guard_expired)

    def _guard_expired(self) -> None:
        self._guard_timer = None
        deadline, phase = self._guard_deadline, self._guard_armed
        if deadline is None or self.transport.is_closing():
            return
        if self.loop.time() < deadline:  # the deadline moved since this timer was set
            self._guard_schedule(deadline)
            return
        if self._phase() != phase:
            return
        answered = self.cycle is not None and getattr(self.cycle, "response_started", False)
        if answered or (phase == _HEADERS and self._guard_bytes == 0):
            self.transport.close()  # idle, or already answered (e.g. a 413 before the body): nobody to tell
            return
        if phase == _HEADERS:
            self._refuse(408, f"the request headers did not arrive within {self.guard.header_timeout_s:g} s "
                              "(BENTO_COMPILE_HEADER_TIMEOUT_S)")
        else:
            self._refuse(408, f"the request body did not arrive within {self.guard.body_timeout_s:g} s "
                              "(BENTO_COMPILE_BODY_TIMEOUT_S)")

    def _refuse(self, status: int, message: str) -> None:
        log.info("refused a client: %d %s", status, message)
        self._guard_arm(_DONE)
        self.transport.write(json_response(status, message))
        self.transport.close()


class _OneWriteResponse:
    """A request cycle's transport that sends a response's head and its first body chunk in ONE write.

    uvicorn writes the status line and headers when the app sends `http.response.start`, and the body
    at `http.response.body`: two write() calls, so two segments on the wire, two wake-ups of the client
    and, on loopback, twice the kernel's delivery work on the server's CPU. Here the head (the first
    write once the response has started) is held and joined with the next write; a response that ends
    with no body write (HEAD) or a closed connection writes it then. Everything else (100 Continue comes
    before the response starts) goes through at once."""

    __slots__ = ("_cycle", "_finished", "_held", "_transport")

    def __init__(self, transport: Any, cycle: Any):
        self._transport = transport
        self._cycle = cycle  # None once the head went out: the rest of the response goes straight through
        self._held: bytes | None = None
        self._finished = cycle.on_response
        cycle.on_response = self._on_response

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif self._cycle is not None and self._cycle.response_started:
            self._held = data
            self._cycle = None
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def _on_response(self) -> None:
        self._flush()
        self._finished()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...: the transport's own
        return getattr(self._transport, name)


def guarded_protocol(kind: str, settings: GuardSettings) -> type:
    """The uvicorn protocol class for `kind` ('httptools' or 'h11') with the guard mixed in."""
    if kind == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        class GuardedHttpTools(_Guard, HttpToolsProtocol):
            guard = settings

            def on_headers_complete(self) -> None:
                super().on_headers_complete()
                cycle = self.cycle
                if cycle is not None and cycle.transport is self.transport:  # a new cycle (not an upgrade)
                    cycle.transport = _OneWriteResponse(self.transport, cycle)

        return GuardedHttpTools
    if kind == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol

        class GuardedH11(_Guard, H11Protocol):
            guard = settings

        return GuardedH11
    raise ValueError(f"uvicorn's HTTP protocols are httptools and h11, not {kind!r}")


def http_kind() -> str:
    """BENTO_COMPILE_HTTP: lean (adapters/lean_http.py), httptools or h11 (uvicorn's, with this guard mixed
    in); auto (the default): lean when httptools is installed, else h11."""
    kind = os.environ.get("BENTO_COMPILE_HTTP", "auto").strip() or "auto"
    if kind == "auto":
        try:
            import httptools  # noqa: F401
            kind = "lean"
        except ImportError:
            kind = "h11"
    if kind not in ("lean", "httptools", "h11"):
        raise ValueError(f"BENTO_COMPILE_HTTP must be auto, lean, httptools or h11, got {kind!r}")
    return kind
