"""`serve --workers 2`: drift sent through the port shows in every /monitoring and /metrics answer, whichever
worker gives it (each publishes its window, the answering one sums them: runtimes/monitoring_share.py)."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.adapters.test_workers import post, start_workers
from tests.monitoring.conftest import SHIFTED
from tests.support.helpers import stop_process

DRIFTED = f"input[{SHIFTED}]"


def _get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # a connection each: any worker may answer
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


@pytest.mark.slow
def test_every_worker_answers_with_the_drift_of_all_workers_traffic(monitored_bento, shifted_rows, tmp_path):
    metrics_dir = tmp_path / "metrics"
    proc, port = start_workers(monitored_bento, 2, tmp_path, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    try:
        sent = 0
        with ThreadPoolExecutor(8) as pool:  # until both workers have served (each writes its own counter file)
            while sent < 20 * len(shifted_rows) and len(list(metrics_dir.glob("counter_*.db"))) < 2:
                bodies = [json.dumps({"inputs": shifted_rows[i:i + 8].tolist()}).encode()
                          for i in range(0, len(shifted_rows), 8)]
                assert set(pool.map(lambda body: post(port, body), bodies)) == {200}
                sent += len(shifted_rows)
        assert len(list(metrics_dir.glob("counter_*.db"))) == 2
        assert len(list((metrics_dir / "monitoring").glob("window-*.bin"))) == 2

        # A sibling's part is at most PUBLISH_SECONDS old: wait until one answer holds every row sent.
        deadline = time.monotonic() + 10
        while json.loads(_get(port, "/monitoring"))["window_rows"] != sent:
            assert time.monotonic() < deadline, _get(port, "/monitoring")
            time.sleep(0.1)
        for _ in range(8):
            view = json.loads(_get(port, "/monitoring"))
            assert view["window_rows"] == sent and view["drifting"] == [DRIFTED], view["window_rows"]
            psi = {s.labels["feature"]: s.value for f in text_string_to_metric_families(_get(port, "/metrics"))
                   if f.name == "bento_feature_psi" for s in f.samples}
            assert [n for n, v in psi.items() if v > 0.2] == [DRIFTED], psi
    finally:
        stop_process(proc)
