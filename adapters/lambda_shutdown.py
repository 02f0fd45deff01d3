"""A Lambda execution environment's end: what it holds (the drift aggregate, queued prediction-log records)
is written when SIGTERM comes, before the process ends.

Lambda sends SIGTERM to the runtime only when the function has an extension registered (e.g. Lambda
Insights, the ADOT collector), then gives the runtime 300 ms (500 with an internal extension) before
SIGKILL. Without one, the environment is frozen between invocations and dropped with no signal at all:
that is why the drift aggregate also flushes every N events or seconds, and why nothing here may take long.

awslambdaric's main thread spends idle time blocked in its native long-poll for the next invocation, where
a Python signal handler does not run until an event comes (AWS's graceful-shutdown sample notes exactly
this for Python 3.8 to 3.11). So the Python handler is only a marker: the C-level handler writes the signal
number to a socket (signal.set_wakeup_fd) that a daemon thread waits on, and that thread flushes, then ends
the process with exit code 0. When the main thread is free (SIGTERM during an invocation), the Python
handler does the same; whichever comes first flushes, once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable

_installed: list[tuple[socket.socket, socket.socket]] = []  # the socket pair lives as long as the process


def flush_on_sigterm(flush: Callable[[], None]) -> bool:
    """Run `flush` once at SIGTERM, then exit 0. Only from the main thread (where signals are handled);
    False when it cannot be installed (then nothing changes)."""
    if _installed or threading.current_thread() is not threading.main_thread():
        return False
    reader, writer = socket.socketpair()
    writer.setblocking(False)  # the C handler must never block
    lock = threading.Lock()

    def finish() -> None:
        with lock:  # the other path waits here while the process ends
            try:
                flush()
            finally:
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):  # a closed stream: nothing more to write
                        stream.flush()
                os._exit(0)

    def on_sigterm(_signum: int, _frame: object) -> None:
        finish()

    def watch() -> None:
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGTERM in data:
                finish()

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except (ValueError, OSError):
        return False
    threading.Thread(target=watch, name="bento-lambda-shutdown", daemon=True).start()
    _installed.append((reader, writer))
    return True
