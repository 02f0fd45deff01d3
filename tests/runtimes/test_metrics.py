"""The serving metrics' deferred observations (runtimes/metrics.py): what a scrape shows is exactly what
observing every value directly would have shown, from any thread, and values reach the registry without
a scrape too."""

from __future__ import annotations

import random
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bento_compile.runtimes.metrics import _LATENCY_BUCKETS, _ROW_BUCKETS, _RUN_BUCKETS, PHASES, Metrics


def samples(text: str, names: set[str]) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name in names and not sample.name.endswith("_created"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_deferred_observations_scrape_exactly_as_direct_ones_from_several_threads():
    metrics = Metrics()
    reference = CollectorRegistry()
    phase = Histogram("bento_request_phase_seconds", "", ["phase"], buckets=(*_RUN_BUCKETS, 2.5, 5.0),
                      registry=reference)
    latency = Histogram("bento_request_duration_seconds", "", ["route", "status"], buckets=_LATENCY_BUCKETS,
                        registry=reference)
    requests = Counter("bento_request_total", "", ["route", "status"], registry=reference)
    rows = Histogram("bento_batch_size_rows", "", buckets=_ROW_BUCKETS, registry=reference)
    run = Histogram("bento_inference_duration_seconds", "", buckets=_RUN_BUCKETS, registry=reference)
    wait = Histogram("bento_queue_wait_seconds", "", buckets=_RUN_BUCKETS, registry=reference)
    lock = threading.Lock()

    def observe(seed: int) -> None:
        chance = random.Random(seed)
        for _ in range(500):
            # Values on bucket bounds too: a bound itself belongs to its bucket (value <= bound).
            seconds = chance.choice([0.0001, 0.005, 0.0, 7.0, chance.random() / 50])
            status = chance.choice([200, 422])
            name = chance.choice(PHASES)
            batch = chance.choice([1, 3, 64, 2000])
            metrics.phases[name].observe(seconds)
            metrics.request("/predict", status, seconds)
            metrics.batch(batch, 1, seconds)
            metrics.queue_wait(seconds)
            with lock:
                phase.labels(name).observe(seconds)
                latency.labels("/predict", str(status)).observe(seconds)
                requests.labels("/predict", str(status)).inc()
                rows.observe(batch)
                run.observe(seconds)
                wait.observe(seconds)

    threads = [threading.Thread(target=observe, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = {"bento_request_phase_seconds", "bento_request_duration_seconds", "bento_request",
             "bento_batch_size_rows", "bento_inference_duration_seconds", "bento_queue_wait_seconds"}
    got = samples(metrics.render().decode(), names)
    want = samples(generate_latest(reference).decode(), names)
    assert got.keys() == want.keys()
    assert len(want) > 60
    for key, value in want.items():
        assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), (key, got[key], value)


def test_observations_reach_the_registry_without_a_scrape():
    metrics = Metrics()
    for _ in range(64):
        metrics.request("/predict", 200, 0.002)
    assert metrics.registry is not None
    count = metrics.registry.get_sample_value("bento_request_duration_seconds_count",
                                              {"route": "/predict", "status": "200"})
    assert count == 64
    assert metrics.registry.get_sample_value("bento_request_total", {"route": "/predict", "status": "200"}) == 64
