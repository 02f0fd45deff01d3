"""A response's head and body leave the server in one write (adapters/http_guard.py).

The protocol is uvicorn's real httptools protocol with the guard mixed in, fed real request bytes;
only the transport is a recorder (what a socket would have been asked to send), because the number
of write() calls cannot be observed through a real socket."""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.server import ServerState

from bento_compile.adapters.http_guard import GuardSettings, guarded_protocol


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 3000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope, receive, send) -> None:
    await receive()
    body = b'{"outputs": [1]}' if scope["method"] != "HEAD" else b""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"16")]})
    await send({"type": "http.response.body", "body": body})


def exchange(*chunks: bytes) -> RecordingTransport:
    async def scenario() -> RecordingTransport:
        config = uvicorn.Config(app, lifespan="off", log_level="warning")
        config.load()
        protocol_class = guarded_protocol("httptools", GuardSettings())
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        transport = RecordingTransport()
        protocol.connection_made(transport)
        for chunk in chunks:
            protocol.data_received(chunk)
            for _ in range(20):
                await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport

    return asyncio.run(scenario())


def test_head_and_body_are_one_write_and_a_head_only_answer_is_still_sent():
    post = b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
    transport = exchange(post, post)
    assert len(transport.writes) == 2, transport.writes  # two responses, one write each
    for write in transport.writes:
        assert write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(b'\r\n\r\n{"outputs": [1]}')
    transport = exchange(b"HEAD /predict HTTP/1.1\r\nhost: x\r\n\r\n")
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"\r\n\r\n"), transport.writes


def test_a_100_continue_goes_out_before_the_response():
    transport = exchange(b"POST /predict HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n",
                         b"{}")
    assert transport.writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert len(transport.writes) == 2 and transport.writes[1].endswith(b'{"outputs": [1]}'), transport.writes
