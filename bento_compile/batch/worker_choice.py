"""The default --workers, decided from a measurement instead of assumed.

Worker processes pay off only when the model's run dominates and a single process cannot keep the
CPUs busy: each worker costs a fresh interpreter, its imports, the Bento's hash check and its own
session, and a session with every CPU as intra-op threads already spreads many models (trees, matrix
products) over the cores. So the local engine scores the first batches in this process with every CPU's
threads, measures seconds per row and how many CPUs the run kept busy (process CPU time over wall
time), and fans out to one single-threaded worker per CPU only when the estimated time left with
workers (their start, plus the rows at the speed one busy CPU each gives) beats this process's
estimate by a clear margin.
"""

from __future__ import annotations

from dataclasses import dataclass

# A spawned worker's interpreter start and imports (numpy, pyarrow, onnxruntime, the runtime), measured
# at about 1.4 s on a 2-core machine; its hash check and session open are measured in this process.
SPAWN_SECONDS = 1.5
MARGIN = 0.75  # fan out only when the estimate with workers is under 75 % of the in-process one


@dataclass(frozen=True)
class Choice:
    workers: int  # 1: keep scoring in this process
    reason: str  # said in the summary and in --json


def choose_workers(cpus: int, rows_left: int | None, seconds_per_row: float, cpus_busy: float,
                   open_seconds: float, units_left: int) -> Choice:
    """How many processes should score the rest, from one measured in-process batch."""
    if cpus < 2:
        return Choice(1, "in this process: one CPU")
    if units_left < 2:
        return Choice(1, "in this process: the rest is not split into several row groups or files")
    if rows_left is None:
        return Choice(1, "in this process: the rows left are not known")
    busy = min(max(cpus_busy, 1.0), float(cpus))
    in_process = rows_left * seconds_per_row
    count = min(cpus, units_left)
    # One single-threaded worker scores a row in the CPU time a row took here; `count` of them in parallel.
    fanned = SPAWN_SECONDS + open_seconds + rows_left * seconds_per_row * busy / count
    measured = (f"{1 / seconds_per_row:,.0f} rows/s in this process keeping {busy:.1f} of {cpus} CPUs busy; "
                f"estimated {in_process:.1f}s here vs {fanned:.1f}s with {count} workers")
    if fanned < MARGIN * in_process:
        return Choice(count, f"{count} worker processes: {measured}")
    return Choice(1, f"in this process: {measured}")
