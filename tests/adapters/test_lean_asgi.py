"""The lean protocol's ASGI side (adapters/lean_asgi.py): every route but POST /predict goes to an ASGI app.
A real uvicorn Server with the lean protocol on a real socket, serving the Bento's app behind a small test
app that streams, reads bodies as they arrive and fails on purpose."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from bento_compile.adapters.asgi import ServingApp
from bento_compile.adapters.http_guard import GuardSettings
from bento_compile.adapters.lean_http import lean_protocol
from tests.adapters.test_lean_http import Reader, connect, predict
from tests.support.helpers import free_port

CHUNK = 1 << 20
sent_chunks: list[int] = []


def make_app(bento_app: ServingApp):
    async def app(scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/t/"):
            await bento_app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/t/scope":
            body = json.dumps({key: scope[key] for key in ("method", "path", "query_string", "http_version",
                                                            "client", "server", "scheme", "root_path")},
                              default=lambda v: v.decode()).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif path == "/t/stream":  # no content-length: chunked, one piece per send
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            for piece in (b"one ", b"two ", b"three"):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/t/echo":  # the body as it arrives: how many messages, how many bytes
            messages, size = 0, 0
            while True:
                message = await receive()
                assert message["type"] == "http.request"
                messages += 1
                size += len(message["body"])
                if not message["more_body"]:
                    break
            body = json.dumps({"messages": messages, "bytes": size}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
        elif path == "/t/big":  # 64 MiB to a client that does not read: send must wait for it
            sent_chunks.clear()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"%d" % (64 * CHUNK))]})
            for index in range(64):
                await send({"type": "http.response.body", "body": b"x" * CHUNK, "more_body": index < 63})
                sent_chunks.append(index)
        elif path == "/t/fail":
            raise RuntimeError("the test app fails on purpose")
    return app


@pytest.fixture(scope="module")
def served(built_example) -> Iterator[int]:
    bento_app = ServingApp(built_example, load_mode="eager", prebuild=False)
    port = free_port()
    config = uvicorn.Config(make_app(bento_app), host="127.0.0.1", port=port, log_level="critical",
                            http=lean_protocol(GuardSettings(), bento_app.service))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


def ask(port: int, request: bytes, head_only: bool = False) -> tuple[int, dict, bytes]:
    sock = connect(port)
    try:
        sock.sendall(request)
        return Reader(sock).response(head_only)
    finally:
        sock.close()


def test_the_scope_is_the_one_uvicorn_gives(served):
    status, _headers, body = ask(served, b"GET /t/scope?a=1&b=%20 HTTP/1.1\r\nhost: x\r\n\r\n")
    scope = json.loads(body)
    assert status == 200 and scope["method"] == "GET" and scope["path"] == "/t/scope"
    assert scope["query_string"] == "a=1&b=%20" and scope["http_version"] == "1.1" and scope["scheme"] == "http"
    assert scope["server"] == ["127.0.0.1", served] and scope["client"][0] == "127.0.0.1" and scope["root_path"] == ""
    status, _headers, body = ask(served, b"GET /t/sc%6fpe HTTP/1.0\r\n\r\n")  # percent-decoded, like uvicorn
    assert json.loads(body)["path"] == "/t/scope" and json.loads(body)["http_version"] == "1.0"


def test_a_streamed_response_is_chunked_and_a_head_request_gets_no_body(served):
    sock = connect(served)
    reader = Reader(sock)
    sock.sendall(b"GET /t/stream HTTP/1.1\r\nhost: x\r\n\r\n")
    status, headers, body = reader.response()
    assert status == 200 and headers["transfer-encoding"] == "chunked" and body == b"one two three"
    sock.sendall(b"HEAD /t/stream HTTP/1.1\r\nhost: x\r\n\r\nGET /t/scope HTTP/1.1\r\nhost: x\r\n\r\n")
    status, headers, _ = reader.response(head_only=True)
    assert status == 200 and "transfer-encoding" not in headers
    status, _headers, body = reader.response()  # right after the HEAD answer: no stray body in between
    assert status == 200 and json.loads(body)["method"] == "GET"
    sock.close()


def test_the_app_reads_a_body_as_it_arrives(served):
    sock = connect(served)
    sock.sendall(b"POST /t/echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nexpect: 100-continue\r\n\r\n")
    reader = Reader(sock)
    assert reader.response()[0] == 100  # asked for by the app's first receive()
    for _ in range(3):
        sock.sendall(b"5\r\nhello\r\n")
        time.sleep(0.05)
    sock.sendall(b"0\r\n\r\n")
    status, _headers, body = reader.response()
    assert status == 200 and json.loads(body)["bytes"] == 15 and json.loads(body)["messages"] >= 3
    sock.close()


def test_a_failing_app_gets_a_500_and_the_server_goes_on(served):
    status, headers, body = ask(served, b"GET /t/fail HTTP/1.1\r\nhost: x\r\n\r\n")
    assert status == 500 and body == b"Internal Server Error" and headers["connection"] == "close"
    assert ask(served, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")[0] == 200


def test_a_client_that_does_not_read_holds_the_app_back(served):
    sock = connect(served)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(b"GET /t/big HTTP/1.1\r\nhost: x\r\n\r\n")
    time.sleep(1.0)
    waited = len(sent_chunks)
    assert waited < 32, f"{waited} MiB handed to the transport of a client that read nothing"
    received = 0
    sock.settimeout(30)
    while received < 64 * CHUNK:
        chunk = sock.recv(1 << 20)
        assert chunk
        received += len(chunk)
    assert len(sent_chunks) == 64
    sock.close()


def test_predict_still_goes_to_the_service(served, example_model):
    import numpy as np

    row = [None if np.isnan(v) else float(v) for v in np.load(example_model / "sample.npy")[0]]
    status, _headers, body = ask(served, predict(json.dumps({"inputs": [row]}).encode()))
    assert status == 200 and len(json.loads(body)["outputs"]["label"]) == 1



def test_each_predict_answer_is_one_write(built_example, example_model):
    """Head and body in one write() (what a socket cannot show: the transport records the calls)."""
    import asyncio

    import numpy as np

    from tests.adapters.test_one_write import RecordingTransport

    row = [None if np.isnan(v) else float(v) for v in np.load(example_model / "sample.npy")[0]]
    request = predict(json.dumps({"inputs": [row]}).encode())
    bento_app = ServingApp(built_example, load_mode="eager", prebuild=False)

    async def scenario() -> RecordingTransport:
        config = uvicorn.Config(bento_app, lifespan="off", log_level="warning")
        config.load()
        protocol = lean_protocol(GuardSettings(), bento_app.service)(
            config=config, server_state=uvicorn.server.ServerState(), app_state={})
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(request * 2)
        for _ in range(200):
            await asyncio.sleep(0.005)
            if len(transport.writes) == 2:
                break
        protocol.connection_lost(None)
        return transport

    transport = asyncio.run(scenario())
    assert len(transport.writes) == 2, transport.writes  # two pipelined requests, one write each
    for write in transport.writes:
        assert write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(b"}") and b'"outputs"' in write
