"""One feature of real data shifted: that feature, and only it, crosses the alert in the HTTP server, the
Lambda handler and the batch engine; unshifted held-out rows cross nothing."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bento_compile.adapters.aws_lambda import LambdaRuntime
from bento_compile.adapters.http_app import create_app
from bento_compile.runtimes.monitoring import monitor_of
from tests.monitoring.conftest import SHIFTED

DRIFTED = f"input[{SHIFTED}]"


def _send(client: TestClient, rows: np.ndarray, size: int = 16) -> None:
    for start in range(0, len(rows), size):
        answer = client.post("/predict", json={"inputs": rows[start:start + size].tolist()})
        assert answer.status_code == 200, answer.text


def test_http_monitoring_and_metrics_name_only_the_shifted_feature(monitored_bento, shifted_rows, cancer_split):
    with TestClient(create_app(monitored_bento, "eager")) as client:
        _send(client, cancer_split[1])
        calm = client.get("/monitoring").json()
        assert calm["enabled"] and calm["drifting"] == [] and calm["window_rows"] == len(cancer_split[1])
        _send(client, shifted_rows)
        view = client.get("/monitoring").json()
        assert view["drifting"] == [DRIFTED]
        assert view["window_rows"] == len(cancer_split[1]) + len(shifted_rows)
        assert set(view["features"][DRIFTED]) >= {"psi", "missing_ratio", "out_of_range"}
        text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    psi = {s.labels["feature"]: s.value for s in families["bento_feature_psi"].samples}
    assert len(psi) == 30 and [n for n, v in psi.items() if v > 0.2] == [DRIFTED]
    outside = {s.labels["feature"]: s.value for s in families["bento_feature_out_of_range"].samples
               if s.name.endswith("_total")}
    assert outside[DRIFTED] > 50
    assert {s.labels["feature"] for s in families["bento_feature_missing_ratio"].samples} == set(psi)
    shares = {s.labels["label"]: s.value for s in families["bento_label_share"].samples}
    assert set(shares) == {"0", "1"} and sum(shares.values()) == pytest.approx(1, abs=1e-3)
    assert "bento_output_psi" in families


def test_monitoring_off_by_env_costs_nothing_and_says_so(monitored_bento, monkeypatch):
    monkeypatch.setenv("BENTO_COMPILE_MONITORING", "off")
    with TestClient(create_app(monitored_bento, "eager")) as client:
        assert client.post("/predict", json={"inputs": [[1.0] * 30]}).status_code == 200
        answer = client.get("/monitoring")
        assert answer.status_code == 404 and "switched off" in answer.json()["error"]
        assert monitor_of(client.app.state.holder.get().backend) is None  # the bare session
        assert "bento_feature_psi" not in client.get("/metrics").text


def _emf(out: str) -> list[dict]:
    return [line for line in map(json.loads, filter(None, out.splitlines())) if "_aws" in line]


def test_lambda_handler_flushes_aggregated_emf_naming_only_the_shifted_feature(monitored_bento, shifted_rows,
                                                                               capsys, monkeypatch):
    monkeypatch.setenv("BENTO_COMPILE_MONITORING_FLUSH_EVENTS", "10")
    runtime = LambdaRuntime(monitored_bento, "eager")
    events = [{"inputs": shifted_rows[i:i + 19].tolist()} for i in range(0, 19 * 20, 19)]
    for event in events:
        runtime.handle(event, None)
    lines = _emf(capsys.readouterr().out)
    drift_lines = [x for x in lines if "FeaturePSI" in x or "DriftingFeatures" in x]
    assert len(drift_lines) == 2 * 31  # two flushes (every 10 events) of 30 features + a summary; not per event
    for line in drift_lines:  # the EMF specification's shape
        directive = line["_aws"]["CloudWatchMetrics"][0]
        assert isinstance(line["_aws"]["Timestamp"], int) and directive["Namespace"]
        assert all(d in line for dims in directive["Dimensions"] for d in dims)
        assert all(isinstance(line[m["Name"]], (int, float)) for m in directive["Metrics"])
    last = {x["Feature"]: x["FeaturePSI"] for x in drift_lines[31:] if "Feature" in x}
    assert [name for name, value in last.items() if value > 0.2] == [DRIFTED]
    assert drift_lines[-1]["DriftingFeatures"] == 1 and drift_lines[-1]["drifting"] == [DRIFTED]


def test_batch_engine_gets_monitoring_from_the_session(monitored_bento, shifted_rows, cancer_split):
    from bento_compile.batch.scorer import ScoreOptions, Scorer

    names = [f"c{j}" for j in range(30)]
    scorer = Scorer(monitored_bento, ScoreOptions(features=tuple(names)))
    monitor = monitor_of(scorer.bento.backend)
    assert monitor is not None
    scorer.score(pa.table({n: cancer_split[1][:, j] for j, n in enumerate(names)}))
    assert monitor.snapshot()["drifting"] == []
    out = scorer.score(pa.table({n: shifted_rows[:, j] for j, n in enumerate(names)}))
    assert out.num_rows == len(shifted_rows)
    assert monitor.snapshot()["drifting"] == [DRIFTED]


def test_local_batch_engine_workers_log_every_sampled_row(monitored_bento, shifted_rows, tmp_path, monkeypatch):
    """Worker processes each hold a monitored session; their prediction logs reach the file before they exit."""
    import pyarrow.parquet as pq

    from bento_compile.batch.local import score_files
    from bento_compile.batch.scorer import ScoreOptions

    names = [f"c{j}" for j in range(30)]
    pq.write_table(pa.table({n: shifted_rows[:, j] for j, n in enumerate(names)}), tmp_path / "rows.parquet",
                   row_group_size=100)
    log = tmp_path / "worker-log" / "predictions.jsonl"
    monkeypatch.setenv("BENTO_COMPILE_MONITORING_LOG", f"file:{log}")
    monkeypatch.setenv("BENTO_COMPILE_MONITORING_SAMPLE_RATE", "1")
    summary = score_files(monitored_bento, str(tmp_path / "rows.parquet"), str(tmp_path / "out.parquet"),
                          ScoreOptions(features=tuple(names)), batch_rows=100, workers=2)
    assert summary.rows == len(shifted_rows)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == len(shifted_rows)
    assert sorted(r["inputs"][DRIFTED] for r in records) == pytest.approx(sorted(shifted_rows[:, SHIFTED].tolist()))


def test_lambda_log_records_carry_the_invocation_request_id(monitored_bento, tmp_path, monkeypatch):
    log = tmp_path / "lambda.jsonl"
    monkeypatch.setenv("BENTO_COMPILE_MONITORING_LOG", f"file:{log}")
    monkeypatch.setenv("BENTO_COMPILE_MONITORING_SAMPLE_RATE", "1")
    runtime = LambdaRuntime(monitored_bento, "eager")

    class Context:
        aws_request_id = "req-123"

    runtime.handle({"inputs": [[14.0] * 30] * 2}, Context())
    runtime.model().backend.prediction_log.close()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["request_id"] for r in records] == ["req-123", "req-123"]


def test_a_window_in_seconds_forgets_old_traffic(monitored_bento, shifted_rows, monkeypatch):
    from dataclasses import replace

    from bento_compile.runtimes import monitoring
    from bento_compile.runtimes.manifest import read_manifest
    from bento_compile.runtimes.monitoring import Monitor

    clock = [1000.0]
    monkeypatch.setattr(monitoring.time, "monotonic", lambda: clock[0])
    manifest = read_manifest(monitored_bento)
    monitor = Monitor(replace(manifest.monitoring, window_seconds=60.0), manifest.tag)
    monitor.observe({"input": shifted_rows[:200]}, {})
    assert monitor.snapshot()["drifting"] == [DRIFTED]
    clock[0] += 61  # past the window, plus one segment
    monitor.observe({"input": shifted_rows[:0]}, {})
    clock[0] += 7
    assert monitor.snapshot()["window_rows"] == 0 and monitor.snapshot()["drifting"] == []


@pytest.mark.slow
def test_the_shipped_server_reports_the_drift(monitored_bento, shifted_rows):
    """`bento-compile serve` (uvicorn, the batcher, the guard): concurrent traffic, then /monitoring and /metrics."""
    import os
    import subprocess
    import sys
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    from tests.support.helpers import free_port, stop_process, wait_http

    port = free_port()
    # One worker: with several, each worker process holds its own window (README: Monitoring and drift).
    env = {**os.environ, "BENTO_COMPILE_HOME": str(monitored_bento.parents[2]), "BENTO_COMPILE_WORKERS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "bento_compile.cli", "serve", "cancer:latest", "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    base = f"http://127.0.0.1:{port}"

    def post(start: int) -> int:
        body = json.dumps({"inputs": shifted_rows[start:start + 8].tolist()}).encode()
        request = urllib.request.Request(base + "/predict", data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    try:
        wait_http(base + "/readyz", timeout=60, proc=server)
        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(post, range(0, len(shifted_rows), 8))) == {200}
        with urllib.request.urlopen(base + "/monitoring", timeout=5) as response:
            view = json.loads(response.read())
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        stop_process(server)
    assert view["drifting"] == [DRIFTED] and view["window_rows"] == len(shifted_rows)
    psi = {s.labels["feature"]: s.value for f in text_string_to_metric_families(text) if f.name == "bento_feature_psi"
           for s in f.samples}
    assert [n for n, v in psi.items() if v > 0.2] == [DRIFTED]
