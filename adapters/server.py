"""`python -m bento_compile.adapters.server`: the HTTP server every container and device runs.

Configured by environment, the way platforms configure containers:
BENTO_COMPILE_BENTO (the Bento folder), PORT (Cloud Run / Knative set it),
HOST (default 127.0.0.1; containers pass 0.0.0.0), BENTO_COMPILE_LOAD (background),
BENTO_COMPILE_GRACE_SECONDS (how long SIGTERM waits for in-flight requests; default: until done).
"""

from __future__ import annotations

import os

from .asgi import create_server_app


def run(bento_dir: str, host: str = "127.0.0.1", port: int = 3000, load_mode: str = "background",
        log_level: str = "info", grace_seconds: float | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain: stop accepting, let in-flight requests finish
    (at most `grace_seconds`; Knative and Cloud Run kill the container after their own grace
    period anyway), and exit 0."""
    import uvicorn

    _log_to_stderr(log_level)
    app = create_server_app(bento_dir, load_mode=load_mode)  # /predict first; FastAPI built off the cold path
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=grace_seconds)
    _graceful_server_class()(config).run()


def _log_to_stderr(level: str) -> None:
    """The runtime's own lines (model loaded, device and providers in use, thread plan) next to uvicorn's."""
    import logging

    logger = logging.getLogger("bento_compile")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level.upper())


def _graceful_server_class():
    import contextlib
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

    return GracefulServer


def main() -> None:
    bento = os.environ.get("BENTO_COMPILE_BENTO")
    if not bento:
        raise SystemExit("set BENTO_COMPILE_BENTO to the Bento folder to serve")
    grace = os.environ.get("BENTO_COMPILE_GRACE_SECONDS")
    run(bento, os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "3000")),
        os.environ.get("BENTO_COMPILE_LOAD", "background"), grace_seconds=float(grace) if grace else None)


if __name__ == "__main__":
    main()
