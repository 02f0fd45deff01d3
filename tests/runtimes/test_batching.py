"""The micro-batcher on its own: order, splitting by rows, bounds, deadlines, cancellation, fallbacks.

The run function is a real numpy computation whose first run can be held on an Event, so
requests pile up behind it deterministically (no sleeps to "let a batch form", no timing
asserts): what is asserted is which rows went into which run and what each caller got.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bento_compile.runtimes.batching import Batcher, BatchPolicy, LatencyModel
from bento_compile.runtimes.errors import Overloaded
from bento_compile.runtimes.manifest import BatchingSettings, effective_settings


class Recorder:
    """y = 2x + 1 per row; records the rows of every run; the first run can be held."""

    def __init__(self, hold_first: bool = True):
        self.batches: list[list[float]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.hold_first = hold_first

    def __call__(self, feeds):
        x = feeds["x"]
        self.batches.append(x[:, 0].tolist())
        self.started.set()
        if self.hold_first and len(self.batches) == 1:
            assert self.release.wait(10), "test never released the first run"
        return {"y": x * 2 + 1, "label": (x[:, 0] > 0).astype(np.int64)}


def rows(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.float32).reshape(count, 1)


def policy(**kw) -> BatchPolicy:
    return BatchPolicy(**{"mode": "adaptive", "max_batch_size": 64, "max_latency_s": 0.005,
                          "max_queue_rows": 1024, "timeout_s": 10.0, **kw})


async def wait_started(recorder: Recorder) -> None:
    while not recorder.started.is_set():
        await asyncio.sleep(0.001)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def pool():
    with ThreadPoolExecutor(1) as executor:
        yield executor


def test_outputs_are_split_back_in_order_with_mixed_row_counts(pool):
    async def main():
        rec = Recorder()
        batcher = Batcher(rec, policy(max_batch_size=64), pool)
        first = asyncio.ensure_future(batcher.submit({"x": rows(0, 1)}, 1))
        await wait_started(rec)  # the first run is held: everything below queues behind it
        sizes = [3, 1, 5, 2, 4]
        starts = [100 * (i + 1) for i in range(len(sizes))]
        tasks = [asyncio.ensure_future(batcher.submit({"x": rows(s, n)}, n))
                 for s, n in zip(starts, sizes, strict=True)]
        await asyncio.sleep(0.01)
        rec.release.set()
        results = await asyncio.gather(first, *tasks)
        return rec, results, sizes, starts

    rec, results, sizes, starts = run(main())
    assert rec.batches[0] == [0.0]
    # all five queued requests went into ONE run, in arrival order
    assert rec.batches[1] == [float(s + k) for s, n in zip(starts, sizes, strict=True) for k in range(n)]
    for result, start, n in zip(results[1:], starts, sizes, strict=True):
        assert result["y"].shape == (n, 1)
        np.testing.assert_array_equal(result["y"][:, 0], np.arange(start, start + n) * 2 + 1)
        assert result["label"].tolist() == [1] * n


def test_a_batch_closes_at_max_batch_size_rows_not_requests(pool):
    async def main():
        rec = Recorder()
        batcher = Batcher(rec, policy(max_batch_size=5), pool)
        first = asyncio.ensure_future(batcher.submit({"x": rows(0, 1)}, 1))
        await wait_started(rec)
        sizes = [3, 3, 2, 1, 4, 7]  # the 7-row request is bigger than a batch: it runs alone
        tasks = [asyncio.ensure_future(batcher.submit({"x": rows(10 * (i + 1), n)}, n))
                 for i, n in enumerate(sizes)]
        await asyncio.sleep(0.01)
        rec.release.set()
        await asyncio.gather(first, *tasks)
        return rec

    rec = run(main())
    sizes_per_run = [len(b) for b in rec.batches[1:]]
    assert sizes_per_run == [3, 5, 5, 7]  # [3] | [3,2] | [1,4] | [7]: FIFO, never over 5 unless one request is
    assert rec.batches[2] == [20.0, 21.0, 22.0, 30.0, 31.0]


def test_off_mode_runs_one_request_per_run(pool):
    async def main():
        rec = Recorder()
        batcher = Batcher(rec, policy(mode="off"), pool)
        first = asyncio.ensure_future(batcher.submit({"x": rows(0, 1)}, 1))
        await wait_started(rec)
        tasks = [asyncio.ensure_future(batcher.submit({"x": rows(10 * i, 2)}, 2)) for i in range(1, 4)]
        await asyncio.sleep(0.01)
        rec.release.set()
        await asyncio.gather(first, *tasks)
        return rec

    assert [len(b) for b in run(main()).batches] == [1, 2, 2, 2]


def test_non_batchable_models_are_never_batched():
    settings = BatchingSettings(mode="adaptive")
    assert BatchPolicy.from_settings(settings, batchable=False).mode == "off"
    assert BatchPolicy.from_settings(settings, batchable=True).mode == "adaptive"
    with pytest.raises(ValueError, match="must be one of"):
        BatchPolicy.from_settings(BatchingSettings(mode="sometimes"))


def test_env_overrides_the_batching_mode(monkeypatch):
    monkeypatch.setenv("BENTO_COMPILE_BATCHING", "off")
    assert effective_settings(BatchingSettings(mode="adaptive")).mode == "off"
    monkeypatch.setenv("BENTO_COMPILE_BATCHING", "turbo")
    with pytest.raises(ValueError, match="BENTO_COMPILE_BATCHING must be one of"):
        effective_settings(BatchingSettings())


def test_full_queue_is_refused_at_once_with_retry_after(pool):
    async def main():
        rec = Recorder()
        batcher = Batcher(rec, policy(max_queue_rows=4), pool)
        first = asyncio.ensure_future(batcher.submit({"x": rows(0, 1)}, 1))
        await wait_started(rec)
        queued = asyncio.ensure_future(batcher.submit({"x": rows(10, 3)}, 3))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as info:
            await batcher.submit({"x": rows(20, 2)}, 2)  # 3 + 2 > 4 rows
        rec.release.set()
        await asyncio.gather(first, queued)
        return info.value, rec

    error, rec = run(main())
    assert error.reason == "queue_full" and error.retry_after >= 1
    assert "max_queue_rows" in str(error)
    assert [20.0, 21.0] not in rec.batches


def test_a_request_bigger_than_the_queue_bound_still_runs_when_the_queue_is_empty(pool):
    async def main():
        batcher = Batcher(Recorder(hold_first=False), policy(max_queue_rows=4), pool)
        return await batcher.submit({"x": rows(0, 6)}, 6)

    assert run(main())["y"].shape == (6, 1)


def test_unmeetable_deadline_is_refused_at_admission(pool):
    async def main():
        rec = Recorder(hold_first=False)
        batcher = Batcher(rec, policy(timeout_s=0.5, max_batch_size=4), pool)
        for _ in range(5):  # the batcher has learned that a run of 4 rows takes 1 s
            batcher.latency.observe(4, 1.0)
        with pytest.raises(Overloaded) as info:
            await batcher.submit({"x": rows(0, 1)}, 1)
        return info.value, rec

    error, rec = run(main())
    assert error.reason == "deadline" and "timeout_ms" in str(error)
    assert rec.batches == []  # refused before any work


def test_a_big_request_is_admitted_when_its_own_run_fits_the_deadline(pool):
    """Regression: a 1000-row request (bigger than a batch) runs as ONE run, not as 16 batches of 64."""
    async def main():
        batcher = Batcher(Recorder(hold_first=False), policy(timeout_s=2.0, max_batch_size=64), pool)
        for _ in range(3):
            batcher.latency.observe(1000, 0.13)
        return await batcher.submit({"x": rows(0, 1000)}, 1000)

    assert run(main())["y"].shape == (1000, 1)


def test_a_request_that_outlives_its_deadline_in_the_queue_gets_503_not_a_hang(pool):
    async def main():
        rec = Recorder()
        batcher = Batcher(rec, policy(timeout_s=0.05), pool)
        first = asyncio.ensure_future(batcher.submit({"x": rows(0, 1)}, 1))
        await wait_started(rec)
        late = asyncio.ensure_future(batcher.submit({"x": rows(10, 1)}, 1))
        await asyncio.sleep(0.2)  # held past the 50 ms deadline
        rec.release.set()
        await first
        with pytest.raises(Overloaded) as info:
            await late
        return info.value, rec

    error, rec = run(main())
    assert error.reason == "timeout"
    assert rec.batches == [[0.0]]  # the expired request never reached the model


def test_a_cancelled_request_is_dropped_from_its_batch(pool):
    async def main():
        rec = Recorder()
        batcher = Batcher(rec, policy(), pool)
        first = asyncio.ensure_future(batcher.submit({"x": rows(0, 1)}, 1))
        await wait_started(rec)
        keep = asyncio.ensure_future(batcher.submit({"x": rows(10, 1)}, 1))
        gone = asyncio.ensure_future(batcher.submit({"x": rows(20, 1)}, 1))
        keep2 = asyncio.ensure_future(batcher.submit({"x": rows(30, 1)}, 1))
        await asyncio.sleep(0)
        gone.cancel()
        rec.release.set()
        results = await asyncio.gather(first, keep, keep2)
        return rec, results, batcher

    rec, results, batcher = run(main())
    assert rec.batches == [[0.0], [10.0, 30.0]]
    assert results[2]["y"][0, 0] == 61.0
    assert batcher.queued_rows == 0


def test_outputs_without_a_row_per_input_row_fall_back_to_one_run_per_request(pool):
    def summed(feeds):  # one value per RUN, not per row: cannot be split
        return {"total": np.asarray([feeds["x"].sum()], dtype=np.float32)}

    async def main():
        gate = threading.Event()

        def held(feeds):
            gate.wait(10)
            return summed(feeds)

        batcher = Batcher(held, policy(), pool)
        tasks = [asyncio.ensure_future(batcher.submit({"x": rows(10 * i, 2)}, 2)) for i in range(4)]
        await asyncio.sleep(0.01)
        gate.set()
        return await asyncio.gather(*tasks)

    results = run(main())
    assert [r["total"].tolist() for r in results] == [[1.0], [21.0], [41.0], [61.0]]


def test_one_failing_request_does_not_fail_its_batch(pool):
    def picky(feeds):
        if (feeds["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": feeds["x"] + 1}

    async def main():
        gate = threading.Event()
        calls = []

        def held(feeds):
            calls.append(len(feeds["x"]))
            if len(calls) == 1:
                gate.wait(10)
            return picky(feeds)

        batcher = Batcher(held, policy(), pool)
        first = asyncio.ensure_future(batcher.submit({"x": rows(0, 1)}, 1))
        await asyncio.sleep(0.01)
        good = asyncio.ensure_future(batcher.submit({"x": rows(5, 1)}, 1))
        bad = asyncio.ensure_future(batcher.submit({"x": -rows(1, 1)}, 1))
        good2 = asyncio.ensure_future(batcher.submit({"x": rows(7, 1)}, 1))
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(first, good, bad, good2, return_exceptions=True), calls

    (first, good, bad, good2), calls = run(main())
    assert good["y"][0, 0] == 6.0 and good2["y"][0, 0] == 8.0
    assert isinstance(bad, ValueError)
    assert calls[1] == 3  # tried as one batch first, then one by one
    assert isinstance(first, dict)


def test_fixed_mode_waits_for_company_up_to_max_latency(pool):
    async def main():
        rec = Recorder(hold_first=False)
        batcher = Batcher(rec, policy(mode="fixed", max_batch_size=2, max_latency_s=5.0), pool)
        a = asyncio.ensure_future(batcher.submit({"x": rows(0, 1)}, 1))
        await asyncio.sleep(0.02)
        b = asyncio.ensure_future(batcher.submit({"x": rows(1, 1)}, 1))  # joins: the batch is now full (2 rows)
        await asyncio.gather(a, b)
        return rec

    assert run(main()).batches == [[0.0, 1.0]]


def test_requests_with_different_trailing_shapes_are_not_stacked(pool):
    async def main():
        rec = Recorder()
        batcher = Batcher(rec, policy(), pool)
        first = asyncio.ensure_future(batcher.submit({"x": rows(0, 1)}, 1))
        await wait_started(rec)
        wide = np.arange(4, dtype=np.float32).reshape(2, 2) + 50
        t1 = asyncio.ensure_future(batcher.submit({"x": rows(10, 1)}, 1))
        t2 = asyncio.ensure_future(batcher.submit({"x": wide}, 2))
        t3 = asyncio.ensure_future(batcher.submit({"x": rows(20, 1)}, 1))
        await asyncio.sleep(0)
        rec.release.set()
        results = await asyncio.gather(first, t1, t2, t3)
        return rec, results

    rec, results = run(main())
    assert rec.batches[1] == [10.0, 20.0] and rec.batches[2] == [50.0, 52.0]
    np.testing.assert_array_equal(results[2]["y"], np.arange(4).reshape(2, 2) * 2 + 101)


def test_latency_model_learns_overhead_and_per_row_cost():
    model = LatencyModel()
    assert model.predict(8) == 0.0
    for n in (1, 4, 16, 32, 8, 2, 64):
        model.observe(n, 0.002 + 0.0001 * n)
    assert model.overhead() == pytest.approx(0.002, rel=1e-3)
    assert model.predict(100) == pytest.approx(0.012, rel=1e-3)
    same = LatencyModel()
    for _ in range(5):
        same.observe(1, 0.001)  # one size only: scale the mean, never below it
    assert same.predict(4) == pytest.approx(0.004) and same.predict(1) == pytest.approx(0.001)


def test_close_refuses_new_and_queued_requests(pool):
    async def main():
        rec = Recorder()
        batcher = Batcher(rec, policy(), pool)
        first = asyncio.ensure_future(batcher.submit({"x": rows(0, 1)}, 1))
        await wait_started(rec)
        queued = asyncio.ensure_future(batcher.submit({"x": rows(1, 1)}, 1))
        await asyncio.sleep(0)
        await batcher.close()
        with pytest.raises(Overloaded):
            await queued
        with pytest.raises(Overloaded, match="shutting down"):
            await batcher.submit({"x": rows(2, 1)}, 1)
        rec.release.set()
        await first

    run(main())
