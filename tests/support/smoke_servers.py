"""Real servers for the Cloud Run and Knative smoke checks: where a revision's tag URL really answers.

`bento_server` starts the runtime's own server (`python -m bento_compile.adapters.server`) for a
Bento on 127.0.0.1, as the image runs it. `FrontDoor` stands in front of one: it answers a number
of 503s first (a revision still warming up, as Cloud Run's front end answers), or always a fixed
status (403: the IAM front end refusing a caller without roles/run.invoker), otherwise it passes
the request through to the real server unchanged; it records each request's headers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.helpers import free_port, stop_process, wait_http

IAM_REFUSAL = (b"<html><head><title>403 Forbidden</title></head><body><h1>Error: Forbidden</h1><h2>Your client "
               b"does not have permission to get URL <code>/predict</code> from this server.</h2></body></html>")


@contextmanager
def bento_server(bento_dir: Path, log: Path) -> Iterator[str]:
    """The Bento served by the runtime's HTTP server on a free port; yields its base URL."""
    port = free_port()
    env = {**os.environ, "BENTO_COMPILE_BENTO": str(bento_dir), "PORT": str(port), "BENTO_COMPILE_WORKERS": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bento_compile.adapters.server"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/readyz", timeout=60, proc=proc)
            yield base
        finally:
            stop_process(proc)


class FrontDoor:
    """A proxy in front of `upstream`: `warming` 503s first, or always `status` when set."""

    def __init__(self, upstream: str, warming: int = 0, status: int | None = None):
        self.upstream, self.warming, self.status = upstream, warming, status
        self.seen: list[dict[str, str]] = []  # the headers of each request, in order
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self):
        door = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self, code: int, body: bytes, kind: str, extra: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with door.lock:
                    door.seen.append(dict(self.headers.items()))
                    warming = door.warming > 0
                    door.warming -= 1 if warming else 0
                if door.status is not None:
                    return self._answer(door.status, IAM_REFUSAL, "text/html; charset=UTF-8")
                if warming:
                    return self._answer(503, b"Service Unavailable", "text/plain", {"Retry-After": "0"})
                request = urllib.request.Request(door.upstream + self.path, data=body, method="POST",
                                                 headers={"Content-Type": self.headers.get("Content-Type", "")})
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        return self._answer(response.status, response.read(), response.headers["Content-Type"])
                except urllib.error.HTTPError as answer:
                    return self._answer(answer.code, answer.read(), answer.headers["Content-Type"])

        return Handler

    def __enter__(self) -> FrontDoor:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
