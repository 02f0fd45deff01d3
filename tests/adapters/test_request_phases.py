"""Where a /predict request's server time goes (runtimes/metrics.py: request_phase_seconds, gc_pause_seconds)."""

from __future__ import annotations

import asyncio
import gc
import re

import httpx

from bento_compile.adapters.http_app import create_app
from bento_compile.runtimes.manifest import read_manifest


def counts(text: str, name: str, label: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(rf'^{name}_count\{{{label}="([^"]+)"\}} ([0-9.e+-]+)$', text, re.M)}


def test_every_answered_request_is_timed_by_phase_and_gc_pauses_are_counted(built_example):
    app = create_app(built_example, load_mode="eager")
    body = read_manifest(built_example).example

    async def scenario() -> str:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bento") as client:
            # 24 at once on one event loop: the tiny model's runs go inline, so some requests wait behind others
            for _ in range(3):
                answers = await asyncio.gather(*(client.post("/predict", json=body) for _ in range(8)))
                assert {a.status_code for a in answers} == {200}
            assert (await client.post("/predict", json={"inputs": [[1.0]]})).status_code == 422
            gc.collect()
            return (await client.get("/metrics")).text

    text = asyncio.run(scenario())
    phases = counts(text, "bento_request_phase_seconds", "phase")
    # read and write for all 25; parse, loop_blocked and encode only for the 24 whose body was valid
    assert phases == {"read": 25, "parse": 24, "loop_blocked": 24, "encode": 24, "write": 25}, phases
    assert counts(text, "bento_gc_pause_seconds", "generation").get("2", 0) >= 1


def test_the_server_collects_young_garbage_less_often_once_loaded(monkeypatch):
    from bento_compile.adapters import asgi

    saved = gc.get_threshold()
    try:
        monkeypatch.delenv("BENTO_COMPILE_GC_GEN0", raising=False)
        asgi._tune_gc()
        assert gc.get_threshold() == (asgi.GC_GEN0_DEFAULT, *saved[1:])
        monkeypatch.setenv("BENTO_COMPILE_GC_GEN0", "700")  # CPython's own, for comparison runs
        asgi._tune_gc()
        assert gc.get_threshold()[0] == 700
    finally:
        gc.set_threshold(*saved)


def test_a_collection_inside_a_metrics_lock_does_not_deadlock():
    """A collection can start in any allocation, also while prometheus-client holds a metric's lock (its
    locks are not reentrant): the GC callback must not touch a metric itself."""
    import threading

    from bento_compile.runtimes.metrics import Metrics

    metrics = Metrics()

    def collect_holding_the_lock() -> None:
        with metrics.gc_pause._lock:  # what labels() and a scrape take
            gc.collect()

    worker = threading.Thread(target=collect_holding_the_lock, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the GC callback deadlocked on a metric's lock"
    assert 'bento_gc_pause_seconds_count{generation="2"}' in metrics.render().decode()
