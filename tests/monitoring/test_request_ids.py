"""Prediction-log records carry the id of the request they came from, also when the HTTP micro-batcher ran
several requests as one model run; and the batcher learns the model's run time, not monitoring's."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bento_compile.runtimes.batching import Batcher, BatchPolicy
from tests.support.helpers import free_port, stop_process, wait_http


def test_the_batcher_times_the_run_alone_and_hands_monitoring_each_requests_rows():
    seen: list[list[tuple[str | None, int]]] = []

    def run(feeds):
        return {"y": feeds["x"] * 2}

    def after_run(feeds, outputs, seconds, requests):
        time.sleep(0.005)  # monitoring's work, however slow, is not the model's run time
        seen.append(requests)

    async def main() -> None:
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher(run, BatchPolicy(max_latency_s=0.05), executor, after_run=after_run)
            for i in range(5):  # one at a time: the latency model learns single runs
                await batcher.submit({"x": np.ones((1, 2), np.float32)}, 1, request_id=f"solo-{i}")
            answers = await asyncio.gather(*(batcher.submit({"x": np.full((rows, 2), rows, np.float32)}, rows,
                                                            request_id=f"r{rows}") for rows in (1, 2, 3)))
            assert [a["y"][:, 0].tolist() for a in answers] == [[2.0], [4.0, 4.0], [6.0, 6.0, 6.0]]
            assert batcher.latency.predict(1) < 0.002, batcher.latency.predict(1)

    asyncio.run(main())
    assert seen[:5] == [[(f"solo-{i}", 1)] for i in range(5)]
    shared = [requests for requests in seen[5:] if len(requests) > 1]
    assert shared and all(rows == int(rid[1:]) for requests in shared for rid, rows in requests)
    assert sorted(rid for requests in seen[5:] for rid, _ in requests) == ["r1", "r2", "r3"]


def _post(port: int, row: list[float], request_id: str | None) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"content-type": "application/json", **({"x-request-id": request_id} if request_id else {})}
        conn.request("POST", "/predict", json.dumps({"inputs": [row]}), headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        return response.getheader("x-request-id")
    finally:
        conn.close()


@pytest.mark.slow
def test_records_of_batched_http_requests_carry_each_requests_own_id(monitored_bento, cancer_split, tmp_path):
    log = tmp_path / "predictions.jsonl"
    port = free_port()
    env = {**os.environ, "BENTO_COMPILE_HOME": str(monitored_bento.parents[2]), "BENTO_COMPILE_WORKERS": "1",
           "BENTO_COMPILE_MONITORING_LOG": f"file:{log}", "BENTO_COMPILE_MONITORING_SAMPLE_RATE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "bento_compile.cli", "serve", "cancer:latest", "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    rows = cancer_split[1][:240].copy()
    rows[:, 0] = np.arange(len(rows))  # each request's row says which request it is
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60, proc=server)
        sent = {i: f"client-{i}" if i % 2 == 0 else None for i in range(len(rows))}  # half send no id
        with ThreadPoolExecutor(24) as pool:
            answered = list(pool.map(lambda i: _post(port, rows[i].tolist(), sent[i]), range(len(rows))))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        conn.close()
    finally:
        code = stop_process(server)  # SIGTERM: the queued records are written before the process ends
    assert code == 0
    assert all(answered[i] == sent[i] for i in sent)  # a client's id comes back as sent; none is made up
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == len(rows)
    ids = {int(r["inputs"]["input[0]"]): r["request_id"] for r in records}
    assert all(ids[i] == sent[i] for i in sent if sent[i])
    own = [ids[i] for i in sent if not sent[i]]  # the server's: one per request, never one per shared run
    assert len(set(own)) == len(own) and not any(i.startswith("client-") for i in own)
    batch_requests = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines()
                      if line.startswith("bento_batch_requests_")}
    assert batch_requests["bento_batch_requests_sum"] > batch_requests["bento_batch_requests_count"]  # shared runs
