"""The lean HTTP/1.1 protocol: POST /predict answered straight from the parser, the rest through ASGI.

BENTO_COMPILE_HTTP=lean (the default, `auto`, when httptools is installed; adapters/server.py).

Why: under uvicorn's httptools protocol about 85 µs of a /predict request's ~220 µs of server CPU
were the protocol's own request cycle around the app: scope and cycle objects, an asyncio.Event, a
task and the receive/send messages of every request, and a keep-alive timer armed and cancelled per
request (bench/RESULTS.md, "Serving tail and workers"). Here a /predict request is the parser's
callbacks over httptools (llhttp), the body gathered in the callbacks, one task that calls
`PredictService.respond_to_body` (adapters/fastpath.py: the same checks, statuses, bodies and metrics
as the ASGI path) and ONE write of head and body. Every other route is served by the ASGI app
(adapters/lean_asgi.py), as under uvicorn.

It is a uvicorn HTTP protocol class (same constructor, `shutdown()`, the server state's connections
and tasks), so uvicorn's Server still runs the lifespan, the signals, the startup lines and the
graceful drain of adapters/server.py, and a worker serves its supervisor's socket unchanged.

Kept from adapters/http_guard.py: the header deadline (and the kept-alive idle one), the body
deadline (408), the header-size bound (431), a malformed request as a JSON 400. And HTTP/1.1 itself:
keep-alive, HTTP/1.0 and `Connection: close`, pipelined requests answered in order (reading pauses
while one waits), `Expect: 100-continue` (sent only once the head passed the /predict checks), chunked
request bodies, a body never buffered past `runtime.max_body_bytes` (past it a 413 and the connection
closed, without reading the rest), llhttp's strictness (Content-Length with Transfer-Encoding, or two
Content-Lengths: 400), and reading paused while the transport's write buffer is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import httptools

from bento_compile.adapters.fastpath import JSON_HEADERS, PredictService
from bento_compile.adapters.http_guard import GuardSettings, json_response
from bento_compile.adapters.lean_asgi import CONTINUE, STATUS_LINES, AsgiExchange, http_scope
from bento_compile.adapters.lean_deadlines import BODY, DONE, HEADERS, IDLE, Deadlines

log = logging.getLogger("bento_compile.http")

_JSON_BLOCK = b"content-type: application/json\r\n"
# An early answer (413, 415) leaves the rest of the body unread: up to this much is read and dropped to
# keep the connection; past it the connection closes after the answer.
_DISCARD_BYTES = 64 * 1024
# Closing a socket with unread bytes in it sends a reset, and a reset can destroy an answer still on its
# way: after a refusal the server sends EOF and drops what arrives for at most this long / this much.
_LINGER_S = 1.0
_LINGER_BYTES = 1 << 20


class _Predict:
    """A POST /predict request: its head, and its body as it arrives (never past the body bound)."""

    __slots__ = ("body", "body_complete", "chunks", "expect_continue", "headers", "keep_alive", "response_started",
                 "size", "started", "too_large")

    def __init__(self, headers: list[tuple[bytes, bytes]], keep_alive: bool, expect_continue: bool):
        self.headers = headers
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.body_complete = False
        self.response_started = False
        self.started = 0.0


class LeanHttpProtocol(asyncio.Protocol):
    """One connection. `guard` and `service` are set on the class `lean_protocol` returns."""

    guard: GuardSettings = GuardSettings()
    service: PredictService

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None):
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.app_state = app_state
        self.parser = httptools.HttpRequestParser(self)
        # Answer the request before a Connection: close and ignore what was pipelined after it (httptools >= 0.6.3).
        with contextlib.suppress(AttributeError):
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.limit = self.service.settings.max_body_bytes
        self.transport: Any = None
        self.deadlines = Deadlines(self.loop, self._expired)
        self.queue: deque[Any] = deque()  # requests not answered yet, in order; queue[0] is being served
        self.parsing: Any = None  # the request whose body is arriving
        self.keep_alive = True  # False once the server is shutting down
        self.write_paused = False
        self.read_paused = False
        self._drained: asyncio.Future | None = None
        self._gone: asyncio.Future | None = None
        self._lost = False
        self._lingering = 0  # bytes still dropped before a refused connection closes (0: not lingering)
        self._unread = False  # the connection closes with a body left unread: linger
        self._stopped = False  # no more requests are read (refused, upgraded, closing)
        self._last_words: bytes | None = None  # a refusal waiting for the answers queued before it
        self._in_head = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._head_bytes = 0
        self._oversized = False
        self._expect = False
        self._base_scope: dict[str, Any] = {}

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        self.server_state.connections.add(self)
        self.transport = transport
        sockname, peername = transport.get_extra_info("sockname"), transport.get_extra_info("peername")
        self._base_scope = {
            "type": "http", "asgi": {"version": self.config.asgi_version, "spec_version": "2.3"},
            "server": tuple(sockname[:2]) if isinstance(sockname, tuple) else None,
            "client": tuple(peername[:2]) if isinstance(peername, tuple) else None,
            "scheme": "https" if transport.get_extra_info("sslcontext") else "http",
            "root_path": self.config.root_path}
        self.deadlines.arm(HEADERS, self.guard.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self.deadlines.cancel()
        self._stopped = self._lost = True
        for request in self.queue:
            if isinstance(request, _Predict):
                if (request is self.queue[0] and request.started and not request.body_complete
                        and not request.response_started):
                    self.service.body_read(request.started)  # counted as the ASGI path counts it
                    self.service.client_gone(request.started)
            else:
                request.gone()
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
        self.resume_writing()
        if exc is None:
            self.transport.close()
        self.parser = None  # type: ignore[assignment]

    def eof_received(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingering -= len(data)
            if self._lingering <= 0:
                self.abort()
            return
        if self._stopped:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # no upgrades here: what came before is answered, then the end
            self._stopped = True
            self.keep_alive = False
        except httptools.HttpParserError as exc:
            if isinstance(exc, httptools.HttpParserCallbackError):
                log.warning("reading a request failed", exc_info=exc)
            self._refuse(400, f"malformed HTTP request: {exc}")
            return
        if self._stopped:
            return
        if self._oversized:
            self._refuse_oversized()
            return
        deadlines = self.deadlines
        if self._in_head:
            if deadlines.phase != HEADERS:  # a new request has begun on a kept-alive connection
                self._head_bytes = 0
                deadlines.arm(HEADERS, self.guard.header_timeout_s)
            # Counted after parsing: when this chunk also finished the headers, its bytes were body.
            self._head_bytes += len(data)
            if self._head_bytes > self.guard.max_header_bytes:
                self._refuse_oversized()
        elif self.parsing is not None:
            if deadlines.phase != BODY:
                deadlines.arm(BODY, self.guard.body_timeout_s)
        elif self.queue:
            if deadlines.phase != DONE:  # the request is whole: the app has it
                deadlines.disarm()
        elif deadlines.phase != IDLE:  # an early answer's body, now read and dropped
            deadlines.arm(IDLE, self._idle_timeout())

    def pause_writing(self) -> None:
        """The transport's write buffer is full: take no more requests until the client reads."""
        self.write_paused = True
        self.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        drained = self._drained
        if drained is not None:
            self._drained = None
            if not drained.done():
                drained.set_result(None)
        self.resume_reading()

    # ---- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._expect = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp keeps trailing whitespace, which is not part of the value
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self._head_size += len(name) + len(value) + 4
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._stopped or self._oversized:  # refused or closing: what follows is not served
            return
        if self._head_size > self.guard.max_header_bytes:
            self._oversized = True
            return
        parser = self.parser
        version = parser.get_http_version()
        keep_alive = version != "1.0" and parser.should_keep_alive()
        method, url = parser.get_method(), self._url
        scope = None
        if url != b"/predict":
            scope = http_scope(method, url, self._headers, version, self._base_scope)
            scope["state"] = self.app_state.copy()
        if method == b"POST" and (scope is None or scope["path"] == "/predict"):
            request: Any = _Predict(self._headers, keep_alive, self._expect)
        else:
            if scope is None:
                scope = http_scope(method, url, self._headers, version, self._base_scope)
                scope["state"] = self.app_state.copy()
            request = AsgiExchange(self, scope, keep_alive, self._expect)
        self.parsing = request
        self.queue.append(request)
        if len(self.queue) == 1:
            self._begin(request)
        else:  # pipelined behind an answer still to come: read no further until it is out
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        if request is None:
            return
        if not isinstance(request, _Predict):
            request.feed(body)
            return
        if request.too_large or request.response_started:  # dropped: never buffered past the bound
            return
        request.size += len(body)
        if request.size > self.limit:
            request.too_large = True
            request.chunks = []
            if request is self._first():
                self._answer_early(request, self.service.too_large())
            return
        request.chunks.append(body)

    def on_message_complete(self) -> None:
        request = self.parsing
        if request is None:
            return
        self.parsing = None
        if not isinstance(request, _Predict):
            request.finish()
            return
        request.body_complete = True
        if request is self._first() and not request.response_started and request.started:
            self._start_predict(request)

    # ---- serving ------------------------------------------------------------------------

    def _begin(self, request: Any) -> None:
        """`request` is first in line: serve it."""
        if not isinstance(request, _Predict):
            self._spawn(request.run(self.app))
            return
        request.started = time.perf_counter()
        refusal = self.service.refusal(request.headers)
        if refusal is None and request.too_large:
            refusal = self.service.too_large()
        if refusal is not None:
            self._answer_early(request, refusal)
        elif request.body_complete:
            self._start_predict(request)
        elif request.expect_continue:
            self.transport.write(CONTINUE)

    def _start_predict(self, request: _Predict) -> None:
        self.service.body_read(request.started)
        self._spawn(self._predict(request))

    def _spawn(self, work: Any) -> None:
        tasks = self.server_state.tasks  # what uvicorn's graceful shutdown waits for
        task = self.loop.create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _predict(self, request: _Predict) -> None:
        chunks = request.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        request.chunks = []
        answer = await self.service.respond_to_body(body, request.headers, self._receive, request.started)
        if answer is not None:
            self._send_answer(request, *answer)

    async def _receive(self) -> dict[str, Any]:
        """ASGI `receive` after the body: the disconnect, for the batcher's watcher (adapters/fastpath.py)."""
        if self._lost:
            return {"type": "http.disconnect"}
        if self._gone is None:
            self._gone = self.loop.create_future()
        await asyncio.shield(self._gone)  # a cancelled watcher must not cancel the connection's future
        return {"type": "http.disconnect"}

    def _answer_early(self, request: _Predict, answer: tuple) -> None:
        """An answer before the body is read (413, 415): the rest is dropped, or the connection closed."""
        self.service.body_read(request.started)
        if not request.body_complete:
            declared = next((int(v) for n, v in request.headers if n == b"content-length" and v.isdigit()), None)
            if declared is None or declared - request.size > _DISCARD_BYTES or request.too_large:
                request.keep_alive = False
                self._stopped = self._unread = True
                self.pause_reading()
        self._send_answer(request, *answer)

    def _send_answer(self, request: _Predict, status: int, body: bytes, headers: Any) -> None:
        writing = time.perf_counter()
        request.response_started = True
        keep_alive = request.keep_alive and self.keep_alive
        if headers is None or headers is JSON_HEADERS:
            block = _JSON_BLOCK
        else:
            block = b"".join([b"%s: %s\r\n" % (name, value) for name, value in headers])
        head = b"%s%s%scontent-length: %d\r\n%s\r\n" % (
            STATUS_LINES[status], self.default_headers(), block, len(body),
            b"" if keep_alive else b"connection: close\r\n")
        if not self.transport.is_closing():
            self.transport.write(head + body)
        self.service.written(status, request.started, writing)
        self.response_done(request, keep_alive)

    # ---- the connection, for requests -----------------------------------------------------

    def response_done(self, request: Any, keep_alive: bool) -> None:
        """`request` is answered (its last byte handed to the transport): the next one, or the end."""
        self.server_state.total_requests += 1
        queue = self.queue
        if queue and queue[0] is request:
            queue.popleft()
        if not keep_alive or self.transport.is_closing():
            self._stopped = True
            self._close_lingering() if self._unread else self.transport.close()
            return
        if not queue:
            if self._last_words is not None:
                self.transport.write(self._last_words)
                self._close_lingering()
                return
            if self.parsing is None and not self._in_head:
                self.deadlines.arm(IDLE, self._idle_timeout())
        self.resume_reading()
        if queue:
            self._begin(queue[0])

    def _first(self) -> Any:
        return self.queue[0] if self.queue else None

    def _idle_timeout(self) -> float:
        """A kept-alive connection that sends nothing: uvicorn's keep-alive timeout, within the header deadline."""
        return min(self.guard.header_timeout_s, self.config.timeout_keep_alive)

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def abort(self) -> None:
        self._stopped = True
        self._lingering = 0
        self.transport.close()

    def _close_lingering(self) -> None:
        """Close after a refusal with bytes still coming: EOF first, what still arrives dropped, then the
        close (after `_LINGER_S` or `_LINGER_BYTES`), so that the answer reaches the client before a reset."""
        transport = self.transport
        if transport.is_closing() or not transport.can_write_eof():
            transport.close()
            return
        self._stopped = True
        transport.write_eof()
        self._lingering = _LINGER_BYTES
        self.read_paused = False
        transport.resume_reading()
        self.loop.call_later(_LINGER_S, self.abort)

    async def drain(self) -> None:
        if self.write_paused and not self.transport.is_closing():
            if self._drained is None:
                self._drained = self.loop.create_future()
            await asyncio.shield(self._drained)

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again, unless a pipelined request waits, the client is not reading our answers, or an
        app has not taken the body it was given."""
        if not self.read_paused or self.write_paused or len(self.queue) > 1 or self._stopped:
            return
        parsing = self.parsing
        if parsing is not None and not isinstance(parsing, _Predict) and len(parsing.body) > 65536:
            return
        self.read_paused = False
        self.transport.resume_reading()

    def default_headers(self) -> bytes:
        """uvicorn's default headers (date, server), updated by its Server once a second, as one block."""
        defaults = self.server_state.default_headers
        cached = _DEFAULTS
        if cached[0] is not defaults:
            cached[0] = defaults
            cached[1] = b"".join([b"%s: %s\r\n" % (name, value) for name, value in defaults])
        return cached[1]

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close an idle connection now, a busy one after its answer."""
        self.keep_alive = False
        if not self.queue:
            self._stopped = True
            self.transport.close()

    # ---- the guard ----------------------------------------------------------------------

    def _expired(self, phase: str) -> None:
        if self.transport.is_closing():
            return
        if phase == IDLE or (phase == HEADERS and not self._in_head):
            self.abort()  # nothing asked: nobody to tell
        elif phase == HEADERS:
            self._refuse(408, f"the request headers did not arrive within {self.guard.header_timeout_s:g} s "
                              "(BENTO_COMPILE_HEADER_TIMEOUT_S)")
        elif phase == BODY:
            request = self.parsing
            if request is not None and request.response_started:  # already answered (a 413): just close
                self.abort()
            else:
                self._refuse(408, f"the request body did not arrive within {self.guard.body_timeout_s:g} s "
                                  "(BENTO_COMPILE_BODY_TIMEOUT_S)")

    def _refuse_oversized(self) -> None:
        self._refuse(431, f"the request headers are over {self.guard.max_header_bytes} bytes "
                          "(BENTO_COMPILE_MAX_HEADER_BYTES)")

    def _refuse(self, status: int, message: str) -> None:
        """Answer the request being read with `status` and close; after the answers queued before it."""
        log.info("refused a client: %d %s", status, message)
        self._stopped = True
        self.deadlines.cancel()
        self.pause_reading()
        request = self.parsing
        if request is not None:  # its body was arriving: it is the one refused, never served
            self.parsing = None
            if request in self.queue:
                self.queue.remove(request)
            if not isinstance(request, _Predict):
                request.gone()
        words = json_response(status, message)
        if self.queue:
            self._last_words = words
        else:
            self.transport.write(words)
            if status == 408:  # a slow client: nothing much is coming
                self.transport.close()
            else:
                self._close_lingering()


_DEFAULTS: list[Any] = [None, b""]  # uvicorn's default-headers list last seen, and its encoding


def lean_protocol(settings: GuardSettings, service: PredictService) -> type:
    """The protocol class uvicorn's Server runs (`http=` in its Config) for this app's /predict service."""

    class LeanHttp(LeanHttpProtocol):
        guard = settings

    LeanHttp.service = service
    return LeanHttp
