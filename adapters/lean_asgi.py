"""One request served through the ASGI app, for the lean HTTP protocol (adapters/lean_http.py).

Every route but POST /predict (probes, /metrics, /metadata, /docs, /openapi.json, 404/405, media
bodies the app reads itself) goes to the server's ASGI app as under uvicorn: an `http` scope, `receive`
giving the body as it arrives (`http.request` with `more_body`, then `http.disconnect` once the response
is sent or the client left), `send` taking `http.response.start` / `http.response.body` (streamed with
chunked encoding when the app gives no content-length; nothing after the head for HEAD). The head is
held and joined with the first body chunk: one write for a whole response, as on the /predict path.
Rules and error answers follow uvicorn's httptools protocol, so the app cannot tell the difference.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
import urllib.parse
from typing import Any, Protocol

import httptools

log = logging.getLogger("bento_compile.http")

HIGH_WATER = 65536  # request body bytes buffered for the app before the connection stops reading
_HEADER_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_HEADER_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}


class Connection(Protocol):
    """What an exchange needs of its connection (adapters/lean_http.py's protocol)."""

    keep_alive: bool
    write_paused: bool

    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    async def drain(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def default_headers(self) -> bytes: ...
    def response_done(self, request: Any, keep_alive: bool) -> None: ...
    def abort(self) -> None: ...


def http_scope(method: bytes, url: bytes, headers: list[tuple[bytes, bytes]], http_version: str,
               base: dict[str, Any]) -> dict[str, Any]:
    """The ASGI scope of one request; `base`: what every request of the connection shares (server,
    client, scheme, root_path, asgi); an invalid URL raises httptools' error (a 400, like uvicorn)."""
    parsed = httptools.parse_url(url)
    raw_path = parsed.path
    path = raw_path.decode("ascii")
    if "%" in path:
        path = urllib.parse.unquote(path)
    root = base["root_path"]
    return {**base, "http_version": http_version, "method": method.decode("ascii"), "path": root + path,
            "raw_path": root.encode("ascii") + raw_path, "query_string": parsed.query or b"", "headers": headers}


class AsgiExchange:
    """One request's body as it arrives (fed by the protocol) and the app's answer as it is sent."""

    __slots__ = ("_chunked", "_delivered", "_head", "_is_head", "_remaining", "_waiter", "body", "body_complete",
                 "connection", "disconnected", "expect_continue", "keep_alive", "response_complete",
                 "response_started", "scope")

    def __init__(self, connection: Connection, scope: dict[str, Any], keep_alive: bool, expect_continue: bool):
        self.connection = connection
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.body = bytearray()
        self.body_complete = False
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self._delivered = False  # the last http.request message went out
        self._waiter: asyncio.Future | None = None
        self._head: bytes | None = None
        self._is_head = scope["method"] == "HEAD"
        self._chunked: bool | None = None
        self._remaining = 0

    # ---- fed by the protocol ------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        if self.response_complete:
            return
        self.body += chunk
        if len(self.body) > HIGH_WATER:
            self.connection.pause_reading()
        self._wake()

    def finish(self) -> None:
        self.body_complete = True
        self._wake()

    def gone(self) -> None:
        """The client disconnected (or the connection was refused): `receive` says so, `send` does nothing."""
        if not self.response_complete:
            self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---- ASGI ---------------------------------------------------------------------------

    async def run(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:  # the app's failure is logged and answered, never a dropped connection
            log.error("Exception in ASGI application", exc_info=exc)
            if not self.response_started:
                await self._send_500()
            else:
                self.connection.abort()
            if not isinstance(exc, Exception):
                raise
        else:
            if result is not None:
                log.error("ASGI callable should return None, but returned %r.", result)
                self.connection.abort()
            elif not self.response_started and not self.disconnected:
                log.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.response_complete and not self.disconnected:
                log.error("ASGI callable returned without completing response.")
                self.connection.abort()

    async def receive(self) -> dict[str, Any]:
        connection = self.connection
        if self.expect_continue and not self.response_started and not connection.is_closing():
            self.expect_continue = False
            connection.write(CONTINUE)
        while not (self.disconnected or self.response_complete or self._delivered):
            if self.body or self.body_complete:
                body = bytes(self.body)
                self.body = bytearray()
                self._delivered = self.body_complete
                connection.resume_reading()
                return {"type": "http.request", "body": body, "more_body": not self.body_complete}
            self._waiter = asyncio.get_running_loop().create_future()
            connection.resume_reading()
            try:
                await self._waiter
            finally:
                self._waiter = None
        while not (self.disconnected or self.response_complete):  # the body is read: wait for the end
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        connection = self.connection
        if connection.write_paused and not self.disconnected:
            await connection.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got {kind!r}.")
            self.response_started = True
            self.expect_continue = False
            self._head = self._encode_head(message["status"], message.get("headers", ()))
            return
        if self.response_complete:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} sent, after response already completed.")
        if kind != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got {kind!r}.")
        body = bytes(message.get("body", b""))
        more_body = message.get("more_body", False)
        if self._is_head:
            data = b""
            self._remaining = 0
        elif self._chunked:
            data = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            if not more_body:
                data += b"0\r\n\r\n"
        else:
            if len(body) > self._remaining:
                raise RuntimeError("Response content longer than Content-Length")
            self._remaining -= len(body)
            data = body
        head = self._head
        if head is not None:  # one write for the head and the first chunk
            self._head = None
            data = head + data
        if data:
            connection.write(data)
        if not more_body:
            if self._remaining != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self._wake()
            connection.response_done(self, self.keep_alive and connection.keep_alive)

    def _encode_head(self, status: int, headers: Any) -> bytes:
        parts = [STATUS_LINES[status], self.connection.default_headers()]
        keep_alive = self.keep_alive and self.connection.keep_alive
        closes = False
        for name, value in headers:
            if _HEADER_NAME.search(name):
                raise RuntimeError("Invalid HTTP header name.")
            if _HEADER_VALUE.search(value):
                raise RuntimeError("Invalid HTTP header value.")
            name = name.lower()
            if name == b"content-length" and self._chunked is None:
                self._remaining = int(value.decode())
                self._chunked = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self._remaining = 0
                self._chunked = True
            elif name == b"connection" and b"close" in [token.lower().strip() for token in value.split(b",")]:
                self.keep_alive = keep_alive = False
                closes = True
            parts.append(b"%s: %s\r\n" % (name, value))
        if not keep_alive and not closes:
            self.keep_alive = False
            parts.append(b"connection: close\r\n")
        if self._chunked is None and not self._is_head and status not in (204, 304):
            self._chunked = True
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    async def _send_500(self) -> None:
        await self.send({"type": "http.response.start", "status": 500,
                         "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21"),
                                     (b"connection", b"close")]})
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})
