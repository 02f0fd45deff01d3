"""Slow and oversized clients against the real server (`python -m bento_compile.adapters.server`, uvicorn on
real sockets), under the lean protocol, httptools and h11: deadlines for headers and body, a header-size bound, and the
in-flight limit counted only once a body is whole. Timeouts are set small by env so the tests stay fast."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import free_port, stop_process, wait_http

pytestmark = pytest.mark.slow

HEADER_TIMEOUT, BODY_TIMEOUT, MAX_HEADER = 0.6, 1.0, 8192


@pytest.fixture(scope="module", params=["lean", "httptools", "h11"])
def server(request, built_example) -> Iterator[tuple[int, subprocess.Popen]]:
    port = free_port()
    env = {**os.environ, "BENTO_COMPILE_BENTO": str(built_example), "PORT": str(port),
           "BENTO_COMPILE_HTTP": request.param, "BENTO_COMPILE_MAX_CONCURRENCY": "4",
           "BENTO_COMPILE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT), "BENTO_COMPILE_BODY_TIMEOUT_S": str(BODY_TIMEOUT),
           "BENTO_COMPILE_MAX_HEADER_BYTES": str(MAX_HEADER), "BENTO_COMPILE_LOAD": "eager"}
    proc = subprocess.Popen([sys.executable, "-m", "bento_compile.adapters.server"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc)
        yield port, proc
    finally:
        stop_process(proc)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of one response (the server closes or sends content-length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed without a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(
        b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body[:length])


def predict_request(body: bytes, length: int | None = None) -> bytes:
    return (b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % (len(body) if length is None else length)) + body


def rows(example_model: Path) -> list:
    import numpy as np

    row = np.load(example_model / "sample.npy")[0]
    return [[None if np.isnan(v) else float(v) for v in row]]


def test_slow_bodies_hold_no_in_flight_slot_and_time_out_with_408(server, example_model):
    port, _ = server
    slow = [connect(port) for _ in range(4)]  # max_concurrency 4: the old code let these lock everyone out
    for sock in slow:
        sock.sendall(predict_request(b"{", length=200))
    time.sleep(0.2)
    fast = connect(port)
    fast.sendall(predict_request(json.dumps({"inputs": rows(example_model)}).encode()))
    status, body = read_response(fast)
    assert status == 200 and "outputs" in body
    started = time.monotonic()
    for sock in slow:
        status, body = read_response(sock)
        assert status == 408 and "BENTO_COMPILE_BODY_TIMEOUT_S" in body["error"]
    assert time.monotonic() - started < BODY_TIMEOUT + 2


def test_a_body_trickling_a_byte_at_a_time_is_cut_at_the_deadline(server):
    port, _ = server
    sock = connect(port)
    sock.sendall(predict_request(b"", length=1000))
    started = time.monotonic()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):  # the server stops reading and closes
        while time.monotonic() - started < BODY_TIMEOUT + 5:
            sock.sendall(b" ")
            time.sleep(0.1)
    assert time.monotonic() - started < BODY_TIMEOUT + 2


def test_half_sent_headers_get_408_and_an_idle_connection_is_closed(server):
    port, _ = server
    sock = connect(port)
    sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\nx-slow: ")
    status, body = read_response(sock)
    assert status == 408 and "BENTO_COMPILE_HEADER_TIMEOUT_S" in body["error"]
    idle = connect(port)
    started = time.monotonic()
    assert idle.recv(100) == b""  # closed without an answer: it never asked anything
    assert time.monotonic() - started < HEADER_TIMEOUT + 2


def test_oversized_headers_get_431_and_the_server_does_not_grow(server):
    port, proc = server

    def rss() -> int:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024

    before = rss()
    for _ in range(4):  # the finding: four 24 MB unfinished headers grew the server by 133 MiB
        sock = connect(port)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ")
        with pytest.raises((BrokenPipeError, ConnectionResetError)):  # refused and closed long before 24 MB
            for _ in range(24 * 16):
                sock.sendall(b"a" * 65536)
        sock.close()
    assert rss() - before < 16 * 1024 * 1024
    sock = connect(port)  # one just over the bound, small enough that the answer is not lost to a reset
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (MAX_HEADER + 100))
    status, body = read_response(sock)
    assert status == 431 and str(MAX_HEADER) in body["error"]


def test_malformed_requests_get_a_json_400(server):
    port, _ = server
    sock = connect(port)
    sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    status, body = read_response(sock)
    assert status == 400 and body["error"].startswith("malformed HTTP request")


def test_keep_alive_requests_still_work_under_the_guard(server, example_model):
    port, _ = server
    sock = connect(port)
    payload = json.dumps({"inputs": rows(example_model)}).encode()
    for _ in range(3):
        sock.sendall(predict_request(payload))
        status, _body = read_response(sock)
        assert status == 200
        time.sleep(HEADER_TIMEOUT / 2)  # idle between requests, under the header deadline


def test_a_number_past_float32_is_a_422_not_infinity(server, example_model):
    port, _ = server
    row = rows(example_model)[0]
    row[0] = 1e39
    sock = connect(port)
    sock.sendall(predict_request(json.dumps({"inputs": [row]}).encode()))
    status, body = read_response(sock)
    assert status == 422 and "outside the range of float32" in body["error"]


def test_a_body_that_is_not_labelled_json_gets_a_415(server, example_model):
    port, _ = server
    payload = json.dumps({"inputs": rows(example_model)}).encode()
    sock = connect(port)
    sock.sendall(predict_request(payload).replace(b"content-type: application/json", b"content-type: text/xml"))
    status, body = read_response(sock)
    assert status == 415 and "application/json" in body["error"]
    sock = connect(port)  # what `curl -d` sends is still accepted
    sock.sendall(predict_request(payload).replace(b"application/json", b"application/x-www-form-urlencoded"))
    assert read_response(sock)[0] == 200


def test_a_head_request_an_expect_100_continue_and_pipelined_requests_are_all_answered(server, example_model):
    """The response head is held until the body is written (adapters/http_guard.py): a HEAD answer (no body
    write), a 100 Continue (before the response) and two requests sent in one segment must all still arrive."""
    port, _ = server
    payload = json.dumps({"inputs": rows(example_model)}).encode()
    sock = connect(port)
    sock.sendall(b"HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        assert chunk, head
        head += chunk
    assert head.split(b" ", 2)[1] in (b"200", b"405"), head
    sock.sendall(b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nexpect: 100-continue\r\n"
                 b"content-length: %d\r\n\r\n" % len(payload))
    assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    sock.sendall(payload)
    assert read_response(sock)[0] == 200
    sock.sendall(predict_request(payload) * 2)
    data = b""
    while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    assert data.count(b'"outputs"') == 2, data
    sock.close()
