"""One drift window across HTTP worker processes (`serve --workers N`): each worker publishes its own.

Every worker holds its own Monitor (its session's runs), but GET /monitoring and the bento_feature_*
metrics are answered by whichever worker the accept queue gave the request to: alone, each would show
its share of the traffic. So each worker publishes its window (the bin counts of its segments, summed)
and its cumulative counters to a small memory-mapped file of its own in a folder the supervisor made
for the run (env BENTO_COMPILE_MONITORING_SHARE, adapters/workers.py), and the answering worker sums
every worker's file: the figures then cover all the traffic. The baseline is the same in every worker
(one manifest), so summed counts compare with it as one worker's would.

A worker publishes after every binning and, from a thread, every PUBLISH_SECONDS (it bins what small
runs it has gathered and lets a window in seconds age), so a sibling's figures are at most that late.
A file is named by the worker's index: a worker started again in place of a dead one takes its file
over. Writes are guarded by a sequence number (odd while writing), so a reader never sums a half-
written window; it retries, then skips that worker for this answer.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# numpy is imported where it is used: the supervisor (adapters/workers.py) imports this module for SHARE_ENV
# only, and its start is on the cold path, before any worker exists.
SHARE_ENV = "BENTO_COMPILE_MONITORING_SHARE"
PUBLISH_SECONDS = 0.5
_HEADER = 3  # sequence number, runs, errors
_READ_TRIES = 20


class WindowShare:
    """This worker's published window (one file) and the sum over every worker's."""

    def __init__(self, folder: Path, worker: str, size: int):
        self.folder, self.size = folder, size
        self.values = _HEADER + 2 * size
        self.path = folder / f"window-{worker}.bin"
        with open(self.path, "wb") as handle:  # a restarted worker's predecessor's figures are dropped
            handle.truncate(self.values * 8)
        self._file = open(self.path, "r+b")  # noqa: SIM115 (mapped for the process's life)
        self._map = mmap.mmap(self._file.fileno(), self.values * 8)
        import numpy as np

        self._own = np.frombuffer(self._map, dtype=np.float64)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_env(cls, size: int) -> WindowShare | None:
        """The share of a worker of several (None for a single server, whose window is already whole)."""
        folder = os.environ.get(SHARE_ENV, "").strip()
        worker = os.environ.get("BENTO_COMPILE_WORKER_ID", "").strip()
        if not folder or not worker.isdigit():
            return None
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path, worker, size)

    def publish(self, window: np.ndarray, cumulative: np.ndarray, runs: int, errors: int) -> None:
        with self._lock:
            own = self._own
            own[0] += 1  # odd: being written
            own[1], own[2] = runs, errors
            own[_HEADER:_HEADER + self.size] = window
            own[_HEADER + self.size:] = cumulative
            own[0] += 1

    def totals(self) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Window and cumulative counts, runs and errors, summed over every worker's published file."""
        import numpy as np

        window = np.zeros(self.size)
        cumulative = np.zeros(self.size)
        runs = errors = 0
        for path in sorted(self.folder.glob("window-*.bin")):
            values = self._read(path)
            if values is None:
                continue
            runs += int(values[1])
            errors += int(values[2])
            window += values[_HEADER:_HEADER + self.size]
            cumulative += values[_HEADER + self.size:]
        return window, cumulative, runs, errors

    def _read(self, path: Path) -> np.ndarray | None:
        try:
            with open(path, "rb") as handle:
                if os.fstat(handle.fileno()).st_size != self.values * 8:
                    return None  # not this Bento's layout (or being created)
                with mmap.mmap(handle.fileno(), self.values * 8, access=mmap.ACCESS_READ) as mapped:
                    import numpy as np

                    shared = np.frombuffer(mapped, dtype=np.float64)
                    try:
                        for _ in range(_READ_TRIES):
                            before = shared[0]
                            copy = shared.copy()
                            if before % 2 == 0 and shared[0] == before:
                                return copy
                        return None
                    finally:
                        del shared  # the map cannot close while an array still points into it
        except OSError:  # a worker's file removed meanwhile
            return None

    def keep_publishing(self, publish: Callable[[], None]) -> None:
        """Publish every PUBLISH_SECONDS from a daemon thread (gathered runs binned, a window in seconds aged)."""
        if self._thread is not None:
            return
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(PUBLISH_SECONDS):
                publish()

        self._thread = threading.Thread(target=loop, name="bento-monitoring-share", daemon=True)
        self._thread.start()
