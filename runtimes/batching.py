"""Micro-batching: concurrent requests coalesced into one model run, with bounded waiting.

The style reference is BentoML's `_internal/marshal/dispatcher.py` (learn the latency of a
batch size from what is observed); the shape here is simpler and stricter:

- One asyncio dispatcher per event loop owns a FIFO of pending requests. Each request is
  already validated (`tensors.decode_inputs`) and counts as its number of ROWS.
- While a batch runs, the next one fills up by itself ("continuous batching"): under load
  batches form with no added wait at all; at low load a lone request runs at once.
- A batch closes at `max_batch_size` rows, or:
  fixed    when its oldest request has waited `max_latency_ms`;
  adaptive when waiting for the next arrival (expected gap, learned) would push the oldest
           request past `max_latency_ms` counting the predicted run time of the bigger
           batch, or when the wait costs the queued rows more than one run's fixed overhead
           saves (run time is learned as `overhead + per_row × rows`).
- Bounded: a request that would put more than `max_queue_rows` in the queue, or whose
  predicted completion is past `timeout_ms`, is refused at once with `Overloaded`
  (HTTP: 503 + Retry-After); one still queued at its deadline is refused then. Nothing
  waits forever. A request whose caller went away (future cancelled) is dropped.
- Only batched inputs are stacked. Whole-tensor inputs (a bias, a scalar, a recurrent state:
  `runtimes.tensors.stack_key`) are never concatenated: requests share a run only when they
  send the very same whole tensors, and the others run apart. A model whose outputs do not
  follow the batch axis (stateful models among them) is recorded not batchable and runs one
  request per run (mode "off").
- Outputs are split back by row offsets, in order. A model whose outputs do not have one
  row per input row is detected on the first batch and served one request per run from
  then on; a failing batch is retried request by request so one bad request cannot fail
  its neighbours.
- Runs go to the inference thread pool; once the run time is learned and is below
  `inline_below_s` (tiny models: a few µs), batches run on the event loop itself, which is
  cheaper than a thread hand-off.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bento_compile.runtimes.errors import Overloaded
from bento_compile.runtimes.manifest import BATCHING_MODES as MODES
from bento_compile.runtimes.manifest import BatchingSettings
from bento_compile.runtimes.stacking import run_stacked
from bento_compile.runtimes.tensors import stack_key

log = logging.getLogger("bento_compile.runtime")

Feeds = dict[str, np.ndarray]
RunFn = Callable[[Feeds], Feeds]
# A request's id for the prediction log: the client's (str, or bytes as the header came), or a number the
# log turns into the server's own id (runtimes/prediction_log.py), or none.
RequestId = str | bytes | int | None
AfterRun = Callable[[Feeds, Feeds, float, list[tuple[RequestId, int]]], None]


class BatchObserver(Protocol):
    """What the batcher reports (metrics). Every method must be cheap and never raise."""

    def batch(self, rows: int, requests: int, run_seconds: float) -> None: ...

    def queue_wait(self, seconds: float) -> None: ...

    def queue_depth(self, rows: int) -> None: ...

    def rejected(self, reason: str) -> None: ...


class _NoObserver:
    def batch(self, rows: int, requests: int, run_seconds: float) -> None:
        pass

    def queue_wait(self, seconds: float) -> None:
        pass

    def queue_depth(self, rows: int) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass


@dataclass(frozen=True)
class BatchPolicy:
    mode: str = "adaptive"
    max_batch_size: int = 64
    max_latency_s: float = 0.005
    max_queue_rows: int = 2048
    timeout_s: float = 2.0

    @classmethod
    def from_settings(cls, settings: BatchingSettings, batchable: bool = True) -> BatchPolicy:
        if settings.mode not in MODES:
            raise ValueError(f"runtime.batching.mode must be one of {MODES}, got {settings.mode!r}")
        return cls(mode=settings.mode if batchable else "off", max_batch_size=settings.max_batch_size,
                   max_latency_s=settings.max_latency_ms / 1000.0, max_queue_rows=settings.max_queue_rows,
                   timeout_s=settings.timeout_ms / 1000.0)


class LatencyModel:
    """Run time as `overhead + per_row × rows`, fitted by exponentially weighted least squares.

    Recent observations weigh more (decay per observation), so the fit follows a machine
    that gets busier. With too little spread in batch sizes to separate the two terms, it
    predicts by scaling the mean run time with the row count (pessimistic for big batches,
    which is the safe side for admission control).
    """

    def __init__(self, decay: float = 0.97):
        self.decay = decay
        self.count = 0
        self._w = self._n = self._t = self._nn = self._nt = 0.0
        # The fit changes only when a run is observed, and is read several times per request: keep it.
        self._fitted: tuple[float, float] | None = None

    def observe(self, rows: int, seconds: float) -> None:
        d = self.decay
        self.count += 1
        self._w = self._w * d + 1.0
        self._n = self._n * d + rows
        self._t = self._t * d + seconds
        self._nn = self._nn * d + rows * rows
        self._nt = self._nt * d + rows * seconds
        self._fitted = self._solve()

    def _fit(self) -> tuple[float, float] | None:
        return self._fitted

    def _solve(self) -> tuple[float, float] | None:
        if self._w == 0:
            return None
        mean_n, mean_t = self._n / self._w, self._t / self._w
        var = self._nn / self._w - mean_n * mean_n
        if var < 0.25:  # all batches about one size: the two terms cannot be separated
            return None
        slope = (self._nt / self._w - mean_n * mean_t) / var
        slope = max(slope, 0.0)
        return max(mean_t - slope * mean_n, 0.0), slope

    def predict(self, rows: int) -> float:
        """Expected seconds to run a batch of `rows` (0 when nothing has been observed yet)."""
        if self._w == 0:
            return 0.0
        fit = self._fit()
        if fit is None:
            mean_n, mean_t = self._n / self._w, self._t / self._w
            return mean_t * max(1.0, rows / max(mean_n, 1.0))
        return fit[0] + fit[1] * rows

    def predict_work(self, rows: int, batches: int) -> float:
        """Expected seconds to run `rows` rows in `batches` runs (admission control: a sum, not one run).
        Without a fit, the observed time per row, scaled linearly (pessimistic for tiny models, whose
        queue bound then still drains in milliseconds)."""
        if self._w == 0:
            return 0.0
        fit = self._fit()
        if fit is None:
            mean_n, mean_t = self._n / self._w, self._t / self._w
            return max(mean_t, mean_t * rows / max(mean_n, 1.0))
        return batches * fit[0] + fit[1] * rows

    def overhead(self) -> float:
        """The fixed cost of one run, which merging two requests into one batch saves."""
        fit = self._fit()
        if fit is None:
            return self._t / self._w if self._w else 0.0
        return fit[0]


class _Pending:
    __slots__ = ("deadline", "enqueued", "feeds", "future", "key", "request_id", "rows", "timing")

    def __init__(self, feeds: Feeds, rows: int, future: asyncio.Future, enqueued: float, deadline: float,
                 timing: dict | None = None, key: tuple = (), request_id: RequestId = None):
        self.timing = timing
        self.request_id = request_id
        self.feeds = feeds
        self.rows = rows
        self.future = future
        self.enqueued = enqueued
        self.deadline = deadline
        # Requests stack only when the batched inputs' trailing axes agree and the whole tensors are equal.
        self.key = key


class Batcher:
    """Coalesces `submit()` calls on one event loop into batched `run()` calls (see module doc)."""

    def __init__(self, run: RunFn, policy: BatchPolicy, executor: Executor, *, workers: int = 1,
                 observer: BatchObserver | None = None, inline_below_s: float = 0.0002,
                 whole_inputs: frozenset[str] = frozenset(), after_run: AfterRun | None = None):
        """`after_run(feeds, outputs, seconds, [(request id, rows), ...])`: called after each run, outside its
        timing (drift monitoring: runtimes/monitoring.py), with the requests that shared the run."""
        self._run_fn = run
        self._after_run = after_run
        self._whole = whole_inputs
        self.policy = policy
        self._executor = executor
        self._workers = max(1, workers) if policy.mode == "off" else 1
        self._observer = observer or _NoObserver()
        self._inline_below_s = inline_below_s
        self.latency = LatencyModel()
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._busy = 0
        self._running_rows = 0
        self._split_ok = policy.mode != "off"
        self._arrival_gap = 0.0  # EWMA seconds between arrivals
        self._last_arrival = 0.0
        self._wakeup: asyncio.Future | None = None
        self._closed = False
        self.loop = asyncio.get_running_loop()
        self._task: asyncio.Task | None = None  # runs only while there is work: no task outlives its loop
        # Seconds of runs done on the event loop itself, ever: what a request waited behind is the growth of
        # this while it was in flight, less its own batch's run (`timing["inline_s"]`).
        self.inline_seconds = 0.0

    # ---- the caller's side -------------------------------------------------------------

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def submit(self, feeds: Feeds, rows: int, timing: dict | None = None,
                     request_id: RequestId = None) -> Feeds:
        """Queue one validated request; returns its own rows of every output.

        Raises Overloaded at once when the queue is full or the deadline cannot be met.
        Cancelling the awaiting task drops the request from its batch. `timing`, when given (tracing),
        receives wall-clock ns of enqueue, dispatch and the batch's run, and the batch's size.
        """
        if self._closed:
            raise Overloaded("the server is shutting down; retry on another instance", 1, "shutdown")
        policy = self.policy
        if self._queued_rows and self._queued_rows + rows > policy.max_queue_rows:  # alone, any size may wait
            self._reject("queue_full")
            raise Overloaded(
                f"the batching queue is full ({self._queued_rows} rows waiting, limit "
                f"{policy.max_queue_rows}: runtime.batching.max_queue_rows); retry shortly",
                self._retry_after(), "queue_full")
        expected = self._expected_completion(rows)
        if expected > policy.timeout_s:
            self._reject("deadline")
            raise Overloaded(
                f"this request cannot be answered within {policy.timeout_s * 1000:.0f} ms "
                f"(runtime.batching.timeout_ms; about {expected * 1000:.0f} ms of work is queued); retry shortly",
                self._retry_after(expected), "deadline")
        now = time.perf_counter()
        if self._last_arrival:
            gap = now - self._last_arrival
            self._arrival_gap = gap if not self._arrival_gap else 0.8 * self._arrival_gap + 0.2 * gap
        self._last_arrival = now
        future = self.loop.create_future()
        if timing is not None:
            timing["enqueued_ns"] = time.time_ns()
        key = stack_key(feeds, self._whole) if policy.mode != "off" else ()
        self._queue.append(_Pending(feeds, rows, future, now, now + policy.timeout_s, timing, key, request_id))
        self._queued_rows += rows
        self._observer.queue_depth(self._queued_rows)
        task = self._task
        if task is None or task.done():
            self._task = self.loop.create_task(self._dispatch(), name="bento-batcher")
        else:
            wakeup = self._wakeup
            if wakeup is not None and not wakeup.done():
                wakeup.set_result(True)
        return await future

    def _expected_completion(self, rows: int) -> float:
        """Predicted seconds until a request of `rows` queued now is answered (0 = unknown yet)."""
        if self.latency.count < 3:
            return 0.0
        ahead = self._queued_rows + rows
        if self._split_ok:  # queued rows run max_batch_size at a time; a bigger request runs alone
            batches = max(1, math.ceil(ahead / max(self.policy.max_batch_size, rows)))
        else:
            batches = len(self._queue) + 1
        running = self.latency.predict(self._running_rows) if self._busy else 0.0
        return running + self.latency.predict_work(ahead, batches) / self._workers

    def _retry_after(self, expected: float = 0.0) -> int:
        drain = expected or self._expected_completion(0)
        return max(1, math.ceil(drain))

    def _reject(self, reason: str) -> None:
        self._observer.rejected(reason)

    async def close(self) -> None:
        """Stop taking requests; answer what is queued with Overloaded (for shutdown)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(Overloaded("the server is shutting down; retry", 1, "shutdown"))
        self._queued_rows = 0

    # ---- the dispatcher ----------------------------------------------------------------

    async def _wait(self, timeout: float | None) -> bool:
        """Sleep until a request arrives (True) or `timeout` seconds pass (False)."""
        future = self.loop.create_future()
        self._wakeup = future
        handle = self.loop.call_later(timeout, _resolve, future, False) if timeout is not None else None
        try:
            return await future
        finally:
            self._wakeup = None
            if handle is not None:
                handle.cancel()

    async def _wait_worker(self) -> None:
        while self._busy >= self._workers:
            future = self.loop.create_future()
            self._worker_free = future
            await future

    _worker_free: asyncio.Future | None = None

    async def _dispatch(self) -> None:
        """Form and launch batches until the queue is empty, then end (the next submit starts it again)."""
        queue = self._queue
        while queue:
            try:
                if self._busy >= self._workers:
                    await self._wait_worker()
                if self.policy.mode != "off" and self._split_ok:
                    await self._gather()
                batch = self._take()
                if batch:
                    self._launch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # the dispatcher must never die: log, and go on with the next batch
                log.exception("batch dispatcher error")

    async def _gather(self) -> None:
        """Wait for more rows while the policy says it pays (see module doc)."""
        policy = self.policy
        while self._queued_rows < policy.max_batch_size and self._queue:
            waited = time.perf_counter() - self._queue[0].enqueued
            left = policy.max_latency_s - waited
            if left <= 0:
                return
            if policy.mode == "fixed":
                if not await self._wait(left):
                    return
                continue
            gap = self._arrival_gap
            if not gap or self.latency.count < 3:
                return
            step = min(gap * 2.0, left)
            if waited + step + self.latency.predict(self._queued_rows + 1) > policy.max_latency_s:
                return  # the oldest request would miss its latency budget
            if self._queued_rows * gap >= self.latency.overhead():
                return  # waiting costs the queued rows more than one run's overhead saves
            if not await self._wait(step):
                return

    def _take(self) -> list[_Pending]:
        """Pop the next batch: FIFO, up to max_batch_size rows, dropping cancelled and expired requests."""
        queue = self._queue
        now = time.perf_counter()
        limit = self.policy.max_batch_size if self._split_ok else 0
        batch: list[_Pending] = []
        rows = 0
        key = None
        skipped: list[_Pending] = []
        while queue:
            item = queue[0]
            if item.future.done():  # cancelled by its caller
                queue.popleft()
                self._queued_rows -= item.rows
                continue
            if now > item.deadline:
                queue.popleft()
                self._queued_rows -= item.rows
                self._reject("timeout")
                item.future.set_exception(Overloaded(
                    f"waited longer than {self.policy.timeout_s * 1000:.0f} ms in the queue "
                    "(runtime.batching.timeout_ms); retry shortly", 1, "timeout"))
                continue
            if batch and (rows + item.rows > limit):
                break
            if key is None:
                key = item.key
            elif item.key != key:  # cannot stack with this batch: leave it for the next one
                skipped.append(queue.popleft())
                continue
            queue.popleft()
            batch.append(item)
            rows += item.rows
            self._queued_rows -= item.rows
            self._observer.queue_wait(now - item.enqueued)
            if item.timing is not None:
                item.timing["dispatched_ns"] = time.time_ns()
        queue.extendleft(reversed(skipped))
        self._observer.queue_depth(self._queued_rows)
        return batch

    def _launch(self, batch: list[_Pending]) -> None:
        rows = sum(item.rows for item in batch)
        if self.latency.count >= 3 and self.latency.predict(rows) < self._inline_below_s:
            started = time.perf_counter()
            outcome = self._execute(batch)
            elapsed = time.perf_counter() - started
            self.inline_seconds += elapsed
            for item in batch:
                if item.timing is not None:
                    item.timing["inline_s"] = elapsed
            self._finish(batch, *outcome)
            return
        self._busy += 1
        self._running_rows = rows
        future = self.loop.run_in_executor(self._executor, self._execute, batch)
        future.add_done_callback(lambda f: self._done(batch, f))

    def _done(self, batch: list[_Pending], future: asyncio.Future) -> None:
        self._busy -= 1
        waiter = self._worker_free
        if waiter is not None and not waiter.done():
            waiter.set_result(True)
        if future.cancelled():
            error: Any = Overloaded("the inference run was cancelled; retry", 1, "shutdown")
            results = None
        else:
            error = future.exception()
            results = None if error else future.result()[0]
            if error is None:
                error = future.result()[1]
        self._finish(batch, results, error)

    def _execute(self, batch: list[_Pending]) -> tuple[list[Any] | None, BaseException | None]:
        """Run one batch (any thread). Returns per-request results (Feeds or an exception)."""
        try:
            if len(batch) == 1:
                return [self._timed(batch[0].feeds, batch[0].rows, batch)], None

            def run(feeds: Feeds, members: Sequence[int]) -> Feeds:
                items = [batch[i] for i in members]
                return self._timed(feeds, sum(item.rows for item in items), items)

            results, outcome = run_stacked(run, [item.feeds for item in batch], [item.rows for item in batch],
                                           self._whole)
            if outcome == "not_per_row":
                log.warning("the model's outputs do not have one row per input row; batching is off for it")
                self._split_ok = False
            return list(results), None
        except BaseException as exc:
            return None, exc

    def _timed(self, feeds: Feeds, rows: int, items: list[_Pending]) -> Feeds:
        started = time.perf_counter()
        outputs = self._run_fn(feeds)
        elapsed = time.perf_counter() - started
        self.latency.observe(rows, elapsed)
        self._observer.batch(rows, len(items), elapsed)
        if self._after_run is not None:
            self._after_run(feeds, outputs, elapsed, [(item.request_id, item.rows) for item in items])
        for item in items:
            if item.timing is not None:
                end_ns = time.time_ns()
                item.timing.update(run_start_ns=end_ns - int(elapsed * 1e9), run_end_ns=end_ns, batch_rows=rows,
                                   batch_requests=len(items))
        return outputs

    def _finish(self, batch: list[_Pending], results: list[Any] | None, error: BaseException | None) -> None:
        for index, item in enumerate(batch):
            future = item.future
            if future.done():
                continue
            outcome = error if results is None else results[index]
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


def _resolve(future: asyncio.Future, value: bool) -> None:
    if not future.done():
        future.set_result(value)
