"""`python -m bento_compile.adapters.server`: the HTTP server every container and device runs.

Configured by environment, the way platforms configure containers:
BENTO_COMPILE_BENTO (the Bento folder), PORT (Cloud Run / Knative set it),
HOST (default 127.0.0.1; containers pass 0.0.0.0), BENTO_COMPILE_LOAD (background),
BENTO_COMPILE_GRACE_SECONDS (how long SIGTERM waits for in-flight requests; default: until done),
BENTO_COMPILE_HEADER_TIMEOUT_S / _BODY_TIMEOUT_S / _MAX_HEADER_BYTES (slow and oversized clients,
adapters/http_guard.py), BENTO_COMPILE_HTTP (the HTTP protocol, below),
BENTO_COMPILE_WORKERS (HTTP worker processes; default one per whole CPU the process may use:
adapters/workers.py).

The HTTP protocol (BENTO_COMPILE_HTTP), under uvicorn's Server (lifespan, signals, the drain below):
- `lean` (what `auto`, the default, picks when httptools is installed): adapters/lean_http.py, which
  answers POST /predict from the parser's callbacks and the other routes through the ASGI app; about
  a third less server CPU per request than uvicorn's own protocol (bench/RESULTS.md);
- `httptools`, `h11`: uvicorn's protocols with adapters/http_guard.py's deadlines and bounds mixed in;
  h11 (pure Python) is what `auto` picks without httptools.
All three give the same answers, deadlines and bounds; the startup log names the one in use.
"""

from __future__ import annotations

import os

from bento_compile.adapters.asgi import ServingApp, create_server_app
from bento_compile.adapters.http_guard import GuardSettings, guarded_protocol, http_kind


def run(bento_dir: str, host: str = "127.0.0.1", port: int = 3000, load_mode: str = "background",
        log_level: str = "info", grace_seconds: float | None = None, workers: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain: stop accepting, let in-flight requests finish
    (at most `grace_seconds`; Knative and Cloud Run kill the container after their own grace
    period anyway), and exit 0. `workers`: processes (None: BENTO_COMPILE_WORKERS, else one per
    whole CPU); more than one runs the supervisor of adapters/workers.py."""
    from bento_compile.adapters import workers as worker_pool

    count = worker_pool.worker_count(workers, bento_dir)
    if count > 1 and not worker_pool.is_worker():
        raise SystemExit(worker_pool.supervise(bento_dir, host, port, load_mode, log_level, grace_seconds, count))
    serve_one(bento_dir, host, port, load_mode, log_level, grace_seconds)


def serve_one(bento_dir: str, host: str, port: int, load_mode: str, log_level: str,
              grace_seconds: float | None) -> None:
    """One process: one event loop, one session (a worker of several, or the whole server)."""
    import uvicorn

    from bento_compile.adapters import workers as worker_pool

    if worker_pool.is_worker():
        worker_pool.die_with_supervisor()
        load_mode = worker_pool.worker_load_mode(load_mode)
    worker_pool.log_to_stderr(log_level)
    app = create_server_app(bento_dir, load_mode=load_mode)  # /predict first; FastAPI built off the cold path
    guard = GuardSettings.from_env()
    # h11 buffers a header up to its own limit before the guard sees the bytes: keep that limit above the
    # guard's by more than one read, so an oversized header gets the guard's 431, not h11's plain 400.
    # uvicorn annotates the grace period as int, but waits with asyncio.timeout, which takes any float.
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=grace_seconds,  # type: ignore[arg-type]
                            http=_protocol_class(app, guard),
                            h11_max_incomplete_event_size=guard.max_header_bytes + (1 << 20))
    # A worker accepts from the socket its supervisor listens on (adapters/workers.py says why not SO_REUSEPORT).
    inherited = worker_pool.inherited_socket()
    _graceful_server_class()(config).run(sockets=[inherited] if inherited is not None else None)


def _protocol_class(app: ServingApp, guard: GuardSettings) -> type:
    """The HTTP protocol BENTO_COMPILE_HTTP names (the module doc says which), logged."""
    import logging

    kind = http_kind()
    logging.getLogger("bento_compile.server").info("HTTP protocol: %s", _PROTOCOLS[kind])
    if kind == "lean":
        from bento_compile.adapters.lean_http import lean_protocol

        return lean_protocol(guard, app.service)
    return guarded_protocol(kind, guard)


_PROTOCOLS = {"lean": "lean (httptools parser; POST /predict answered by the protocol, other routes by ASGI)",
              "httptools": "uvicorn httptools", "h11": "uvicorn h11"}


def _graceful_server_class():
    import contextlib
    import logging
    import signal

    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn re-raises the signal it stopped on once it has drained, so a SIGTERM'd server dies
        with 143. For a platform, SIGTERM is "please stop": a drained shutdown is a clean exit (0)."""

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                try:
                    yield
                finally:
                    captured = getattr(self, "_captured_signals", None)
                    if isinstance(captured, list):
                        captured[:] = [s for s in captured if s != signal.SIGTERM]

        async def shutdown(self, sockets=None) -> None:
            try:
                await self._take_queued_connections()
            except Exception:  # never let the drain stop the shutdown itself
                logging.getLogger("bento_compile.server").exception("draining the accept queue failed")
            await super().shutdown(sockets)

        async def _take_queued_connections(self) -> None:
            """Closing a listening socket RESETS every connection still in its accept queue: a client
            that connected and sent its request would lose it. So accept what is queued and serve it,
            close the listeners at once (no await in between), then give those requests a moment to
            be read before uvicorn closes the connections that have not sent one."""
            import asyncio
            import os
            import socket

            loop = asyncio.get_running_loop()
            taken = []
            for server in getattr(self, "servers", []):
                for listener in list(server.sockets or ()):
                    fd = listener.fileno()
                    loop.remove_reader(fd)
                    with socket.socket(fileno=os.dup(fd)) as raw:
                        raw.setblocking(False)
                        while True:
                            try:
                                conn, _addr = raw.accept()
                            except (BlockingIOError, InterruptedError):
                                break
                            taken.append(conn)
                        server.close()
            if not taken and not self.server_state.connections:
                return

            def protocol():
                # uvicorn types the class as asyncio.Protocol; its HTTP protocols take these keywords.
                return self.config.http_protocol_class(  # type: ignore[call-arg]
                    config=self.config, server_state=self.server_state, app_state=self.lifespan.state, _loop=loop)

            for conn in taken:
                conn.setblocking(False)
                await loop.connect_accepted_socket(protocol, conn)
            await asyncio.sleep(0.2)

    return GracefulServer


def main() -> None:
    bento = os.environ.get("BENTO_COMPILE_BENTO")
    if not bento:
        raise SystemExit("set BENTO_COMPILE_BENTO to the Bento folder to serve")
    grace = os.environ.get("BENTO_COMPILE_GRACE_SECONDS")
    run(bento, os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "3000")),
        os.environ.get("BENTO_COMPILE_LOAD", "background"), log_level=os.environ.get("LOG_LEVEL", "info"),
        grace_seconds=float(grace) if grace else None)


if __name__ == "__main__":
    main()
