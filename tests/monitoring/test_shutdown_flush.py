"""SIGTERM ends a process without losing what monitoring holds: the Lambda runtime (the real awslambdaric,
idle in its long-poll for the next invocation) writes the drift aggregate as EMF lines and the queued
prediction-log records; the HTTP server writes its records. The S3 sink holds records for up to 30 s before
it writes an object (runtimes/prediction_log.py): only a flush at the end puts them in the bucket in time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.monitoring.conftest import SHIFTED
from tests.support.helpers import free_port, stop_process, wait_http
from tests.support.lambda_rapi import RuntimeAPI, start_ric

DRIFTED = f"input[{SHIFTED}]"


def _records(client, bucket: str, prefix: str) -> list[dict]:
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    body = b"".join(client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing)
    return [json.loads(line) for line in body.splitlines()]


@pytest.mark.slow
def test_lambda_sigterm_writes_the_drift_aggregate_and_the_queued_records(monitored_bento, shifted_rows, s3,
                                                                          tmp_path):
    client, bucket = s3
    out = tmp_path / "stdout.txt"
    env = {"BENTO_COMPILE_BENTO": str(monitored_bento), "BENTO_COMPILE_MONITORING_LOG": f"s3://{bucket}/fn/",
           "BENTO_COMPILE_MONITORING_SAMPLE_RATE": "1",
           # Nothing flushes on its own during the test: only the end of the environment does.
           "BENTO_COMPILE_MONITORING_FLUSH_EVENTS": "1000", "BENTO_COMPILE_MONITORING_FLUSH_SECONDS": "3600"}
    task_root = tmp_path / "task"
    task_root.mkdir()
    with RuntimeAPI() as api, open(out, "w") as stdout:
        proc = start_ric(python=sys.executable, handler="bento_compile.adapters.aws_lambda.handler",
                         task_root=task_root, api=api, isolated_env=False, env=env, stdout=stdout,
                         stderr=subprocess.STDOUT)
        try:
            api.wait_ready(timeout=90, proc=proc)
            results = [api.invoke({"inputs": shifted_rows[start:start + 60].tolist()}, timeout=30, proc=proc)
                       for start in range(0, len(shifted_rows), 60)]
            assert all(result.ok for result in results)
            time.sleep(1.0)  # back in awslambdaric's native long-poll for the next invocation
            assert _records(client, bucket, "fn/") == []  # still held by the sink
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=10)
        finally:
            stop_process(proc)
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
    drift = [line for line in lines if "FeaturePSI" in line or "DriftingFeatures" in line]
    assert len(drift) == 31, out.read_text()[-2000:]  # one flush: 30 features and the summary
    summary = drift[-1]
    assert summary["WindowRows"] == len(shifted_rows) and summary["drifting"] == [DRIFTED]
    records = _records(client, bucket, "fn/")  # fewer than an object's 1000: held until the end
    assert len(records) == len(shifted_rows)
    assert {r["request_id"] for r in records} == {result.request_id for result in results}


@pytest.mark.slow
def test_http_server_sigterm_writes_the_queued_records(monitored_bento, shifted_rows, s3):
    import http.client

    client, bucket = s3
    port = free_port()
    env = {**os.environ, "BENTO_COMPILE_HOME": str(monitored_bento.parents[2]), "BENTO_COMPILE_WORKERS": "1",
           "BENTO_COMPILE_MONITORING_LOG": f"s3://{bucket}/http/", "BENTO_COMPILE_MONITORING_SAMPLE_RATE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "bento_compile.cli", "serve", "cancer:latest", "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60, proc=server)
        for start in range(0, 40, 8):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/predict", json.dumps({"inputs": shifted_rows[start:start + 8].tolist()}),
                         {"content-type": "application/json"})
            assert conn.getresponse().status == 200
            conn.close()
        time.sleep(0.5)
        assert _records(client, bucket, "http/") == []  # still held by the sink
    finally:
        code = stop_process(server, timeout=30)
    assert code == 0
    assert len(_records(client, bucket, "http/")) == 40
