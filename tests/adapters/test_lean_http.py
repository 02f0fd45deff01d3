"""The lean HTTP/1.1 protocol (adapters/lean_http.py) on the wire: a real server process
(`python -m bento_compile.adapters.server`, BENTO_COMPILE_HTTP=lean), raw bytes over real sockets.
Deadlines, the header bound, 100-continue and malformed requests are also run under every protocol
by test_hardening_server.py; here is what the lean protocol does itself."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import free_port, stop_process, wait_http

pytestmark = pytest.mark.slow

HEADER_TIMEOUT, BODY_TIMEOUT, MAX_HEADER = 0.8, 1.0, 8192


def start_server(bento: Path, log: Path, **env: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    handle = open(log, "w")  # noqa: SIM115 - the child writes to it; closed when the test's tmp dir goes
    proc = subprocess.Popen([sys.executable, "-m", "bento_compile.adapters.server"], stdout=handle, stderr=handle,
                            env={**os.environ, "BENTO_COMPILE_BENTO": str(bento), "PORT": str(port),
                                 "BENTO_COMPILE_HTTP": "lean", "BENTO_COMPILE_WORKERS": "1",
                                 "BENTO_COMPILE_LOAD": "eager", **env})
    wait_http(f"http://127.0.0.1:{port}/readyz", timeout=90, proc=proc)
    return proc, port


@pytest.fixture(scope="module")
def server(built_example, tmp_path_factory) -> Iterator[tuple[int, Path]]:
    log = tmp_path_factory.mktemp("lean") / "server.log"
    proc, port = start_server(built_example, log, BENTO_COMPILE_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT),
                              BENTO_COMPILE_BODY_TIMEOUT_S=str(BODY_TIMEOUT),
                              BENTO_COMPILE_MAX_HEADER_BYTES=str(MAX_HEADER))
    try:
        yield port, log
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def max_body(built_example) -> int:
    from bento_compile.runtimes.manifest import read_manifest

    return read_manifest(built_example).runtime.max_body_bytes


@pytest.fixture(scope="module")
def row(example_model) -> list:
    import numpy as np

    return [None if np.isnan(v) else float(v) for v in np.load(example_model / "sample.npy")[0]]


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Reader:
    """Responses read off one socket, one at a time (content-length or chunked bodies)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.data = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed by the server; unread: {self.data!r}")
        self.data += chunk

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.data:
            self._fill()
        head, _, self.data = self.data.partition(marker)
        return head

    def _take(self, size: int) -> bytes:
        while len(self.data) < size:
            self._fill()
        taken, self.data = self.data[:size], self.data[size:]
        return taken

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        head = self._until(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            assert name.lower() not in headers or name.lower() == "set-cookie", f"{name} twice in {head!r}"
            headers[name.lower()] = value.strip()
        status = int(status_line.split(" ")[1])
        if head_only or status == 100:
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self._until(b"\r\n"), 16)
                body += self._take(size)
                assert self._take(2) == b"\r\n"
                if size == 0:
                    return status, headers, body
        return status, headers, self._take(int(headers["content-length"]))

    def closed(self, within: float = 5.0) -> bool:
        """Whether the server closes the connection (EOF or reset) within `within` seconds."""
        self.sock.settimeout(within)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.data += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


def predict(body: bytes, *extra: bytes, version: bytes = b"1.1") -> bytes:
    head = b"POST /predict HTTP/%s\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
        version, len(body))
    return head + b"".join(line + b"\r\n" for line in extra) + b"\r\n" + body


def rows_body(row: list, n: int) -> bytes:
    return json.dumps({"inputs": [row] * n}).encode()


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def count(text: str, status: int) -> float:
    found = re.search(rf'^bento_request_total\{{route="/predict",status="{status}"\}} ([0-9.e+]+)$', text, re.M)
    return float(found[1]) if found else 0.0


def test_the_server_says_which_protocol_it_runs(server):
    _port, log = server
    assert "HTTP protocol: lean" in log.read_text()


def test_pipelined_requests_are_answered_in_order_on_one_kept_alive_connection(server, row):
    port, _ = server
    sock = connect(port)
    reader = Reader(sock)
    # Three /predict of 1, 2 and 3 rows and a probe in between, in ONE segment: answers in the order asked.
    sock.sendall(predict(rows_body(row, 1)) + predict(rows_body(row, 2)) + b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
                 + predict(rows_body(row, 3)))
    answers = [reader.response() for _ in range(4)]
    assert [status for status, _h, _b in answers] == [200, 200, 200, 200]
    assert [len(json.loads(b)["outputs"]["label"]) for _s, _h, b in (answers[0], answers[1], answers[3])] == [1, 2, 3]
    assert json.loads(answers[2][2]) == {"status": "ok"}
    # keep-alive: the same connection serves more, and nothing said it would close
    for n in (2, 1):
        sock.sendall(predict(rows_body(row, n)))
        status, headers, body = reader.response()
        assert status == 200 and len(json.loads(body)["outputs"]["label"]) == n
        assert "connection" not in headers and headers["content-type"] == "application/json"
        assert headers["content-length"] == str(len(body)) and "date" in headers
    sock.close()


def test_http_1_0_and_connection_close_get_one_answer_and_the_connection_closed(server, row):
    port, _ = server
    for request in (predict(rows_body(row, 1), version=b"1.0"), predict(rows_body(row, 1), b"connection: close")):
        sock = connect(port)
        reader = Reader(sock)
        sock.sendall(request + predict(rows_body(row, 2)))  # the second one must not be answered
        status, headers, body = reader.response()
        assert status == 200 and headers["connection"] == "close" and len(json.loads(body)["outputs"]["label"]) == 1
        assert reader.closed() and reader.data == b""
        sock.close()


def test_a_chunked_body_arriving_in_pieces_is_read_whole(server, row):
    port, _ = server
    body = rows_body(row, 2)
    sock = connect(port)
    sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"transfer-encoding: chunked\r\n\r\n")
    for start in range(0, len(body), 100):
        piece = body[start:start + 100]
        sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        time.sleep(0.01)
    sock.sendall(b"0\r\n\r\n")
    status, _headers, answer = Reader(sock).response()
    assert status == 200 and len(json.loads(answer)["outputs"]["label"]) == 2
    sock.close()


def test_100_continue_comes_only_for_a_head_the_server_will_read_a_body_for(server, row):
    port, _ = server
    body = rows_body(row, 1)
    sock = connect(port)
    reader = Reader(sock)
    sock.sendall(predict(body, b"expect: 100-continue")[:-len(body)])
    assert reader.response()[0] == 100
    sock.sendall(body)
    assert reader.response()[0] == 200
    # refused from the head (415): the answer instead of a 100, and the connection still serves
    sock.sendall(predict(body, b"expect: 100-continue").replace(b"application/json", b"text/xml")[:-len(body)])
    status, _headers, answer = reader.response()
    assert status == 415 and "application/json" in json.loads(answer)["error"]
    sock.sendall(body + predict(body))  # the refused body, dropped; then a request that is served
    assert reader.response()[0] == 200
    sock.close()


@pytest.mark.parametrize("head", [
    # both lengths: the classic smuggling pair (llhttp refuses it; nothing after it is served)
    b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ncontent-length: 40\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ncontent-length: 4\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: +4\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nhost: x\r\ntransfer-encoding:\x0bchunked\r\n\r\n",
])
def test_smuggling_attempts_get_a_json_400_and_nothing_after_them_is_served(server, head):
    port, _ = server
    sock = connect(port)
    reader = Reader(sock)
    sock.sendall(head + b"0\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    status, headers, body = reader.response()
    assert status == 400 and json.loads(body)["error"].startswith("malformed HTTP request")
    assert headers["connection"] == "close"
    assert reader.closed() and reader.data == b"", reader.data  # the smuggled GET got no answer
    sock.close()


def test_a_whole_header_over_the_bound_in_one_segment_gets_431(server):
    port, _ = server
    sock = connect(port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (MAX_HEADER + 10) + b"\r\n\r\n")
    status, _headers, body = Reader(sock).response()
    assert status == 431 and "BENTO_COMPILE_MAX_HEADER_BYTES" in json.loads(body)["error"]
    sock.close()


def test_a_kept_alive_connection_that_goes_quiet_is_closed_at_the_header_deadline(server, row):
    port, _ = server
    sock = connect(port)
    reader = Reader(sock)
    sock.sendall(predict(rows_body(row, 1)))
    assert reader.response()[0] == 200
    started = time.monotonic()
    assert reader.closed(within=HEADER_TIMEOUT + 3) and reader.data == b""  # closed without an answer
    assert HEADER_TIMEOUT - 0.2 < time.monotonic() - started < HEADER_TIMEOUT + 2
    sock.close()


def test_a_declared_body_over_the_bound_gets_413_without_being_read(server, max_body):
    port, _ = server
    before = count(metrics(port), 413)
    sock = connect(port)
    reader = Reader(sock)
    sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"content-length: %d\r\n\r\n" % (50 * max_body) + b"[" * 65536)
    status, headers, body = reader.response()
    assert status == 413 and "max_body_bytes" in json.loads(body)["error"] and headers["connection"] == "close"
    assert reader.closed()  # 50 times the bound declared, 64 KiB sent: the server did not wait for the rest
    sock.close()
    assert count(metrics(port), 413) == before + 1


def test_a_chunked_body_over_the_bound_is_cut_at_the_bound(server, max_body):
    port, _ = server
    sock = connect(port)
    reader = Reader(sock)
    sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"transfer-encoding: chunked\r\n\r\n")
    piece = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    sent = 0
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        while sent < 64 * max_body:  # the server answers at the bound, drops at most 1 MiB more and closes
            sock.sendall(piece)
            sent += 65536
    assert max_body <= sent
    status, _headers, body = reader.response()
    assert status == 413 and "max_body_bytes" in json.loads(body)["error"]
    sock.close()


def test_a_client_that_leaves_mid_body_is_counted_and_holds_nothing(server, row):
    port, _ = server
    before = count(metrics(port), 499)
    sock = connect(port)
    sock.sendall(predict(rows_body(row, 1))[:-10])
    time.sleep(0.1)
    sock.close()
    deadline = time.monotonic() + 5
    while count(metrics(port), 499) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count(metrics(port), 499) == before + 1
    assert 'bento_in_flight_requests 0.0' in metrics(port)


def test_other_routes_go_through_the_asgi_app_with_head_and_404(server):
    port, _ = server
    sock = connect(port)
    reader = Reader(sock)
    sock.sendall(b"GET /metadata HTTP/1.1\r\nhost: x\r\n\r\n")
    status, _headers, body = reader.response()
    assert status == 200 and json.loads(body)["providers"] == ["CPUExecutionProvider"]
    sock.sendall(b"HEAD /metadata HTTP/1.1\r\nhost: x\r\n\r\n")  # FastAPI's GET routes take no HEAD: its 405
    status, head_headers, _ = reader.response(head_only=True)
    assert status == 405 and int(head_headers["content-length"]) > 0  # the length of a body not sent
    sock.sendall(b"GET /nope?x=1 HTTP/1.1\r\nhost: x\r\n\r\nGET /predict HTTP/1.1\r\nhost: x\r\n\r\n")
    missing, method = reader.response(), reader.response()
    assert missing[0] == 404 and "error" in json.loads(missing[2])
    assert method[0] == 405
    sock.sendall(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
    status, _headers, body = reader.response()
    assert status == 200 and b"bento_request_total" in body
    assert reader.data == b""  # a HEAD answer carried no body: nothing left over on the connection
    sock.close()


def test_sigterm_under_load_drains_every_accepted_request_and_exits_0(built_example, row, tmp_path):
    log = tmp_path / "server.log"
    proc, port = start_server(built_example, log, BENTO_COMPILE_GRACE_SECONDS="20")
    body = rows_body(row, 1)
    outcomes: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:  # a connection per request: each one is either accepted (and answered) or refused
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            except ConnectionRefusedError:
                outcomes.append("refused")
                time.sleep(0.01)
                continue
            try:
                sock.sendall(predict(body, b"connection: close"))
                outcomes.append(f"http{Reader(sock).response()[0]}")
            except Exception as exc:  # reset, EOF, timeout: an accepted request was lost
                outcomes.append(f"lost:{type(exc).__name__}:{exc}")
            finally:
                sock.close()

    clients = [threading.Thread(target=client) for _ in range(16)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(40)
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
        stop_process(proc)
    lost = [o for o in outcomes if o.startswith("lost")]
    assert outcomes.count("http200") > 50, outcomes[:20]
    assert lost == [], lost[:5]
    assert set(outcomes) <= {"http200", "refused", "http503"}, set(outcomes)
    assert code == 0, log.read_text()[-3000:]
