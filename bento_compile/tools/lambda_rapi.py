"""A Lambda Runtime API server for tests: the real `awslambdaric` client talks to it.

No Lambda Runtime Interface Emulator can be installed here (see shared/INFRA-NOTES.md),
so the tests serve the Runtime API themselves, on 127.0.0.1 only. It speaks the
endpoints the runtime interface client uses:

    GET  /2018-06-01/runtime/invocation/next           long-polls for the next event
    POST /2018-06-01/runtime/invocation/{id}/response  the handler's answer
    POST /2018-06-01/runtime/invocation/{id}/error     the handler raised (errorType, errorMessage, stackTrace)
    POST /2018-06-01/runtime/init/error                the module failed to import / init
    GET  /2018-06-01/runtime/restore/next              SnapStart restore hook (answered at once)
    POST /2018-06-01/runtime/restore/error

Every accepted socket gets TCP_NODELAY: without it each invoke waits ~40 ms on
Nagle + delayed ACK between the client's small writes.

Use it (the handler process can be anything that reads AWS_LAMBDA_RUNTIME_API —
`python -m awslambdaric MODULE.FUNCTION`, or a container run with `--network host`):

    from bento_compile.tools.lambda_rapi import RuntimeAPI, start_ric   # (tests: tests.lambda_rapi)

    with RuntimeAPI() as api:                         # binds 127.0.0.1 on a free port
        env = {"AWS_LAMBDA_RUNTIME_API": api.address}   # "127.0.0.1:PORT"
        proc = start_ric(python="/usr/bin/python3", handler="bento_compile.adapters.aws_lambda.handler",
                         task_root=unzipped_dir, ric_path=folder_with_awslambdaric, api=api)
        api.wait_ready(timeout=30, proc=proc)         # init done: the client polled /next
        result = api.invoke({"inputs": [[...]]}, timeout=30, proc=proc)
        result.ok            # True for /response, False for /error
        result.body          # parsed JSON (or raw text if not JSON)
        result.error_type    # Lambda-Runtime-Function-Error-Type header / errorType, on errors
        result.seconds       # queue -> answer time
        proc.terminate()

    Init errors: if the handler module fails to import, awslambdaric POSTs
    /init/error and exits; `api.wait_ready()` raises `InitError` (with `.body`,
    `.error_type`), and `api.init_error` holds the same dict.

    Non-blocking use: `rid = api.submit(event)`, later `api.result(rid, timeout)`.
    `api.first_poll_at` is the time.monotonic() of the first GET /next (end of init),
    for measuring cold starts.

Only the standard library: the container engineer's tests and the bench use it too.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PREFIX = "/2018-06-01/runtime"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:bento-test"


class InitError(AssertionError):
    """The function reported an init error (POST /init/error) or exited before polling."""

    def __init__(self, message: str, body: Any = None, error_type: str | None = None):
        super().__init__(message)
        self.body = body
        self.error_type = error_type


@dataclass
class InvokeResult:
    """What the function answered for one event."""

    request_id: str
    ok: bool
    body: Any
    raw: bytes
    error_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _Pending:
    request_id: str
    payload: bytes
    headers: dict[str, str]
    queued_at: float
    done: threading.Event = field(default_factory=threading.Event)
    result: InvokeResult | None = None


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return raw.decode("utf-8", "replace")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connection
    disable_nagle_algorithm = True  # TCP_NODELAY on every accepted socket
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests print what matters

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        api = self.server.api
        if self.path == f"{PREFIX}/invocation/next":
            api._mark_polled()
            pending = api._next_pending()
            if pending is None:  # server stopping
                self._send(500, b'{"errorMessage": "runtime API stopping"}')
                self.close_connection = True
                return
            self._send(200, pending.payload, pending.headers)
        elif self.path == f"{PREFIX}/restore/next":
            self._send(200, b"")
        else:
            self._send(404, b'{"errorMessage": "unknown path"}')

    def do_POST(self) -> None:
        api = self.server.api
        body = self._body()
        parts = self.path[len(PREFIX):].strip("/").split("/") if self.path.startswith(PREFIX) else []
        error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
        if parts == ["init", "error"]:
            api._init_failed(body, error_type)
            self._send(202, b'{"status": "OK"}')
        elif parts == ["restore", "error"]:
            self._send(202, b'{"status": "OK"}')
        elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            headers = {k: v for k, v in self.headers.items()}
            if api._complete(parts[1], parts[2] == "response", body, error_type, headers):
                self._send(202, b'{"status": "OK"}')
            else:
                self._send(400, b'{"errorMessage": "unknown request id"}')
        else:
            self._send(404, b'{"errorMessage": "unknown path"}')


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: RuntimeAPI

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a stopped function hangs up: not news
            super().handle_error(request, client_address)


class RuntimeAPI:
    """The Runtime API on 127.0.0.1; one queue of events, one answer per event."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, deadline_seconds: float = 900.0):
        self._server = _Server((host, port), _Handler)
        self._server.api = self
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._polled = threading.Event()
        self._init_done = threading.Event()
        self._thread: threading.Thread | None = None
        self.deadline_seconds = deadline_seconds
        self.init_error: dict[str, Any] | None = None
        self.init_error_type: str | None = None
        self.first_poll_at: float | None = None
        self.polls = 0

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """host:port, the value of AWS_LAMBDA_RUNTIME_API."""
        host, port = self._server.server_address[:2]
        # An AF_INET server's host is a str; the stubs also allow the bytes of other families.
        return f"{host.decode() if isinstance(host, bytes) else host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> RuntimeAPI:
        self._thread = threading.Thread(target=self._server.serve_forever, name="runtime-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for _ in range(8):  # release any long-polling /next
            self._queue.put(None)
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RuntimeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- driving invocations ---------------------------------------------------------------
    def submit(self, event: Any, request_id: str | None = None, headers: dict[str, str] | None = None) -> str:
        """Queue one event (a JSON-able object, or bytes sent as they are); returns its request id."""
        rid = request_id or str(uuid.uuid4())
        payload = event if isinstance(event, bytes) else json.dumps(event).encode("utf-8")
        deadline_ms = int((time.time() + self.deadline_seconds) * 1000)
        sent = {
            "Lambda-Runtime-Aws-Request-Id": rid,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
            **(headers or {}),
        }
        pending = _Pending(rid, payload, sent, time.monotonic())
        with self._lock:
            self._pending[rid] = pending
        self._queue.put(pending)
        return rid

    def result(self, request_id: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> InvokeResult:
        """Wait for the answer to `request_id`; fails fast if `proc` exits or init failed."""
        pending = self._pending[request_id]
        deadline = time.monotonic() + timeout
        while not pending.done.wait(0.02):
            if self.init_error is not None:
                raise InitError(f"init error: {self.init_error}", self.init_error, self.init_error_type)
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the function process exited with {proc.returncode} before answering")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer to {request_id} within {timeout}s")
        assert pending.result is not None
        with self._lock:
            self._pending.pop(request_id, None)
        return pending.result

    def invoke(self, event: Any, timeout: float = 30.0, proc: subprocess.Popen | None = None,
               headers: dict[str, str] | None = None) -> InvokeResult:
        """Queue one event and wait for its answer."""
        return self.result(self.submit(event, headers=headers), timeout, proc)

    def wait_ready(self, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> float:
        """Wait until init finished (first GET /next); returns the monotonic time of that poll.

        Raises InitError when the function posted /init/error or its process exited first."""
        deadline = time.monotonic() + timeout
        while True:
            if self.init_error is not None:
                raise InitError(f"init error ({self.init_error_type}): {self.init_error}",
                                self.init_error, self.init_error_type)
            if self._polled.wait(0.01):
                assert self.first_poll_at is not None
                return self.first_poll_at
            if proc is not None and proc.poll() is not None:
                self._init_done.wait(0.2)  # an /init/error may still be in flight
                if self.init_error is not None:
                    continue
                raise InitError(f"the function process exited with {proc.returncode} during init")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the function did not poll for events within {timeout}s")

    def wait_init_error(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for POST /init/error; returns its JSON body (errorType, errorMessage, stackTrace)."""
        if not self._init_done.wait(timeout) or self.init_error is None:
            raise TimeoutError(f"no init error within {timeout}s")
        return self.init_error

    # --- called by the HTTP handler --------------------------------------------------------
    def _mark_polled(self) -> None:
        with self._lock:
            self.polls += 1
            if self.first_poll_at is None:
                self.first_poll_at = time.monotonic()
        self._polled.set()

    def _next_pending(self) -> _Pending | None:
        return self._queue.get()

    def _init_failed(self, body: bytes, error_type: str | None) -> None:
        parsed = _parse(body)
        self.init_error = parsed if isinstance(parsed, dict) else {"errorMessage": parsed}
        self.init_error_type = error_type or self.init_error.get("errorType")
        self._init_done.set()

    def _complete(self, rid: str, ok: bool, body: bytes, error_type: str | None, headers: dict[str, str]) -> bool:
        with self._lock:
            pending = self._pending.get(rid)
        if pending is None:
            return False
        parsed = _parse(body)
        if not ok and error_type is None and isinstance(parsed, dict):
            error_type = parsed.get("errorType")
        pending.result = InvokeResult(rid, ok, parsed, body, error_type, headers,
                                      time.monotonic() - pending.queued_at)
        pending.done.set()
        return True


def start_ric(python: str | Path, handler: str, task_root: str | Path, api: RuntimeAPI,
              ric_path: str | Path | None = None, env: dict[str, str] | None = None,
              isolated_env: bool = True, stdout: Any = None, stderr: Any = None) -> subprocess.Popen:
    """Start `python -m awslambdaric HANDLER` the way the Lambda Python runtime does.

    `task_root` plays LAMBDA_TASK_ROOT (the unzipped function: it goes first on
    sys.path); `ric_path` is a folder holding awslambdaric (in Lambda the managed
    runtime provides it), placed after the task root. With `isolated_env` the child
    sees only a minimal environment (no PYTHONPATH or venv of the caller), so a
    clean interpreter proves the artifact is self-contained.
    """
    task_root = str(Path(task_root).resolve())
    paths = [task_root] + ([str(Path(ric_path).resolve())] if ric_path else [])
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/tmp")} \
        if isolated_env else dict(os.environ)
    child_env = {
        **base,
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "LAMBDA_TASK_ROOT": task_root,
        "PYTHONPATH": os.pathsep.join(paths),
        "AWS_LAMBDA_FUNCTION_NAME": "bento-test",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "LAMBDA_DISABLE_PREVIEW_WARN": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # Lambda's task folder is read-only: never write .pyc at run time
        **(env or {}),
    }
    python = os.path.abspath(python) if os.sep in str(python) else str(python)  # not resolve(): keep venv links
    return subprocess.Popen([python, "-m", "awslambdaric", handler], cwd=task_root, env=child_env,
                            stdout=stdout if stdout is not None else subprocess.PIPE,
                            stderr=stderr if stderr is not None else subprocess.STDOUT)
