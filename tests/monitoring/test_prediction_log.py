"""The prediction log: sampled, redacted, off the request path, to a rotating file, S3 (moto_server) or
nowhere reachable, and the offline `bento-compile monitor` report on what it wrote."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import numpy as np
import pytest

from bento_compile.runtimes.manifest import PredictionLogSettings
from bento_compile.runtimes.model import BentoModel
from bento_compile.runtimes.prediction_log import PredictionLog
from tests.monitoring.conftest import SHIFTED, build_monitored
from tests.support.helpers import run_cli

COLUMNS = [(f"input[{j}]", "input", j) for j in range(30)]


@pytest.fixture(scope="module")
def logged_bento(example_model, cancer_split, tmp_path_factory):
    folder = tmp_path_factory.mktemp("logged")
    log = folder / "log" / "predictions.jsonl"
    bento = build_monitored(example_model, folder, cancer_split[0], f"""
monitoring:
  baseline: baseline.npy
  log:
    sample_rate: 1.0
    redact: ["input[0]", "input[1]"]
    to: file:{log}
""")
    return bento, log


def test_file_log_holds_every_sampled_row_with_redaction(logged_bento, shifted_rows, monkeypatch):
    bento, log = logged_bento
    monkeypatch.setenv("BENTO_COMPILE_MONITORING_LOG", f"file:{log.parent / 'drift.jsonl'}")
    model = BentoModel.load(bento)
    for start in range(0, len(shifted_rows), 50):
        model.predict({"inputs": shifted_rows[start:start + 50].tolist()})
    model.backend.prediction_log.close()
    assert model.backend.prediction_log.figures()["written"] == len(shifted_rows)
    records = [json.loads(line) for line in (log.parent / "drift.jsonl").read_text().splitlines()]
    assert len(records) == len(shifted_rows)
    first = records[0]
    assert set(first) == {"time", "request_id", "bento", "latency_ms", "inputs", "outputs"}
    assert first["inputs"]["input[0]"].startswith("sha256:") and first["inputs"]["input[1]"].startswith("sha256:")
    assert first["inputs"][f"input[{SHIFTED}]"] == pytest.approx(float(shifted_rows[0, SHIFTED]))
    assert set(first["outputs"]) == {"label", "probabilities"}


def test_monitor_report_gates_on_the_shifted_feature(logged_bento, tmp_path, monkeypatch):
    bento, log = logged_bento
    monkeypatch.setenv("BENTO_COMPILE_HOME", str(bento.parents[2]))
    drift_log = log.parent / "drift.jsonl"
    if not drift_log.exists():
        pytest.skip("needs the log written by test_file_log_holds_every_sampled_row_with_redaction")
    result = run_cli("monitor", "cancer:latest", "--log", str(drift_log), "--json", "--html",
                     str(tmp_path / "report.html"), check=False)
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["drifting"] == [f"input[{SHIFTED}]"] and report["features"][0]["name"] == f"input[{SHIFTED}]"
    redacted = {r["name"]: r for r in report["features"]}["input[0]"]
    assert redacted["psi"] is None and "redacted" in redacted["note"]
    page = (tmp_path / "report.html").read_text()
    assert page.count("<svg") == 30 + 3 - 2 and "drifting" in page and "<script" not in page
    calm = log.parent / "calm.csv"
    X = np.load(bento.parents[3] / "baseline.npy")
    calm.write_text(",".join(f'"input[{j}]"' for j in range(30)) + "\n" +
                    "\n".join(",".join(map(str, row)) for row in X[:200]))
    ok = run_cli("monitor", "cancer:latest", "--log", str(calm), check=False)
    assert ok.returncode == 0 and "drifting: none" in ok.stdout
    bad = run_cli("monitor", "cancer:latest", "--log", str(tmp_path / "nope.jsonl"), check=False)
    assert bad.returncode == 1 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_html_report_renders_its_charts_in_headless_chromium(logged_bento, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    from bento_compile.cli.monitor_report import drift_report, read_records, render_html
    from bento_compile.runtimes.manifest import read_manifest

    bento, log = logged_bento
    source = log.parent / "drift.jsonl"
    if not source.exists():
        pytest.skip("needs the log written by test_file_log_holds_every_sampled_row_with_redaction")
    page = tmp_path / "report.html"
    page.write_text(render_html(drift_report(read_manifest(bento), read_records(str(source)))))
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,900", page.as_uri()], capture_output=True, timeout=60, check=False)
    assert shot.is_file()
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    blue = np.sum(abs(pixels - [0x1F, 0x77, 0xB4]).sum(axis=1) < 30)  # baseline bars
    orange = np.sum(abs(pixels - [0xFF, 0x7F, 0x0E]).sum(axis=1) < 30)  # live bars
    assert blue > 2000 and orange > 2000


class _SlowSink:
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, lines: list[bytes]) -> int:
        time.sleep(0.5)
        self.lines.extend(lines)
        return len(lines)

    def close(self) -> int:
        return 0


def test_a_full_queue_drops_and_counts_without_slowing_the_caller():
    log = PredictionLog(PredictionLogSettings(sample_rate=1.0, queue_size=5), "t:1", COLUMNS, sink=_SlowSink())
    rows = np.random.default_rng(0).random((200, 30)).astype(np.float32)
    started = time.perf_counter()
    log.offer_run({"input": rows}, {"label": np.zeros(200, dtype=np.int64)}, 0.001)
    assert time.perf_counter() - started < 0.5  # never waits for the sink
    assert log.dropped >= 190
    log.close()
    assert log.written + log.dropped == 200


def test_an_unreachable_sink_is_reported_and_counted_never_raised(caplog, monkeypatch):
    settings = PredictionLogSettings(to="s3://no-such-bucket-here/x/", sample_rate=1.0)
    for key, value in (("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9"),  # nothing listens
                       ("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                       ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_MAX_ATTEMPTS", "1")):
        monkeypatch.setenv(key, value)
    log = PredictionLog(settings, "t:1", COLUMNS)
    log.offer_run({"input": np.ones((3, 30), dtype=np.float32)}, {}, 0.001)
    log.close()
    assert log.written == 0 and log.failed == 3
    assert sum("prediction log" in r.getMessage() for r in caplog.records) >= 1


def test_s3_sink_writes_batched_objects_to_moto(s3):
    client, bucket = s3
    log = PredictionLog(PredictionLogSettings(to=f"s3://{bucket}/live/", sample_rate=1.0), "t:1", COLUMNS)
    for _ in range(5):
        log.offer_run({"input": np.ones((40, 30), dtype=np.float32)}, {"label": np.ones(40, dtype=np.int64)}, 0.001)
    log.close()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="live/")["Contents"]]
    assert 1 <= len(keys) < 200 and all(k.startswith("live/") and k.endswith(".jsonl") for k in keys)
    lines = b"".join(client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys).splitlines()
    assert len(lines) == 200 and json.loads(lines[0])["outputs"]["label"] == 1


def test_monitor_reads_a_prediction_log_from_s3(s3, logged_bento, shifted_rows):
    from bento_compile.cli.monitor_report import drift_report, read_records
    from bento_compile.runtimes.manifest import read_manifest

    _, bucket = s3
    log = PredictionLog(PredictionLogSettings(to=f"s3://{bucket}/p/", sample_rate=1.0), "t:1", COLUMNS)
    log.offer_run({"input": shifted_rows}, {}, 0.001)
    log.close()
    report = drift_report(read_manifest(logged_bento[0]), read_records(f"s3://{bucket}/p/"))
    assert report["records"] == len(shifted_rows) and report["drifting"] == [f"input[{SHIFTED}]"]


def test_otlp_sink_sends_records_to_a_real_receiver(otlp_receiver):
    """An OTLP/HTTP receiver on 127.0.0.1 gets the records as log bodies, decoded with the OTLP schema."""
    pytest.importorskip("opentelemetry.sdk._logs", reason="the otel extra is not installed")
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    received = otlp_receiver
    log = PredictionLog(PredictionLogSettings(to="otlp", sample_rate=1.0), "t:1", COLUMNS)
    log.offer_run({"input": np.full((4, 30), 2.5, dtype=np.float32)}, {"label": np.ones(4, dtype=np.int64)}, 0.002)
    log.close()
    assert received and all(path == "/v1/logs" for path, _ in received)
    bodies = [json.loads(record.body.string_value) for _, body in received
              for rl in ExportLogsServiceRequest.FromString(body).resource_logs
              for sl in rl.scope_logs for record in sl.log_records]
    assert len(bodies) == 4 and bodies[0]["inputs"]["input[7]"] == 2.5 and bodies[0]["outputs"]["label"] == 1


def test_a_one_shot_process_writes_its_queued_records_before_it_exits(logged_bento, tmp_path):
    """`run predict` on a device, a CLI: the process ends right after predicting; the log is still whole."""
    import os
    import sys

    bento, _log = logged_bento
    target = tmp_path / "one-shot.jsonl"
    script = ("from bento_compile.runtimes.model import BentoModel; import sys; "
              "BentoModel.load(sys.argv[1]).predict({'inputs': [[14.0] * 30] * 7})")
    env = {**os.environ, "BENTO_COMPILE_MONITORING_LOG": f"file:{target}"}
    subprocess.run([sys.executable, "-c", script, str(bento)], check=True, env=env, timeout=120)
    assert len(target.read_text().splitlines()) == 7


def test_stdout_sink_writes_one_json_line_per_record(capsys):
    log = PredictionLog(PredictionLogSettings(to="stdout", sample_rate=1.0, redact=["input[2]"], redact_mode="drop"),
                        "t:1", COLUMNS)
    rows = np.arange(90, dtype=np.float32).reshape(3, 30)
    rows[1, 5] = np.nan
    log.offer_run({"input": rows}, {"label": np.array([0, 1, 0])}, 0.001)
    log.close()
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["outputs"]["label"] for r in records] == [0, 1, 0]
    assert "input[2]" not in records[0]["inputs"] and records[1]["inputs"]["input[5]"] is None


def test_rows_are_logged_at_the_sample_rate_across_runs_of_any_size(tmp_path):
    """The sample is drawn as gaps between logged rows: over a stream of single rows, HTTP batches and large
    batch-scoring runs, the logged share is the rate, and each picked row lies inside its run."""
    log = PredictionLog(PredictionLogSettings(to=f"file:{tmp_path / 'x.jsonl'}", sample_rate=0.01), "t:1", COLUMNS)
    total = picked = 0
    for rows in [1] * 50_000 + [32] * 5_000 + [8192] * 100:
        chosen = log._pick(rows, 0.01)
        total += rows
        if chosen is not None:
            assert len(chosen) and chosen.min() >= 0 and chosen.max() < rows and (np.diff(chosen) > 0).all()
            picked += len(chosen)
    log.close()
    # 1,029,200 rows at 1 %: a binomial's standard deviation is ~101 rows; 5 of them either side
    assert abs(picked - 0.01 * total) < 5 * (total * 0.01 * 0.99) ** 0.5


def test_records_formatted_in_one_call_per_run_equal_the_records_made_row_by_row():
    """The fast path (one orjson call per tensor, one %-format per run) writes what the per-row path writes:
    names, redaction by hash, NaN and inf as null, whole tensors, 2-D outputs, per-request ids."""
    columns = [*COLUMNS[:4], ("weight", "weight", None)]
    settings = PredictionLogSettings(sample_rate=1.0, redact=["input[1]", "input[2]"])
    log = PredictionLog(settings, "t:1%", columns, sink=_SlowSink())
    rows = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    rows[1, 0], rows[2, 3] = np.nan, np.inf
    feeds = {"input": rows, "weight": np.arange(5, dtype=np.int64), "bias": np.array([0.5, 1.5], np.float32)}
    outputs = {"label": np.array([0, 1, 0, 1, 1]), "probabilities": np.random.default_rng(1).random((5, 2))}
    item = (feeds, outputs, 5, ["a", "b", "c", "d", "e"], 1700000000.123, 0.002)
    fast = [json.loads(line) for line in log._lines(item)]
    slow = [json.loads(line) for line in log._plain_lines(item)]
    log.close()
    assert [r["request_id"] for r in fast] == list("abcde")
    assert fast[1]["inputs"]["input[0]"] is None and fast[2]["inputs"]["input[3]"] is None
    assert fast[0]["inputs"]["input[1]"].startswith("sha256:") and fast[0]["inputs"]["bias"] == [0.5, 1.5]
    for got, want in zip(fast, slow, strict=True):
        assert set(got) == set(want) and set(got["inputs"]) == set(want["inputs"])
        for name, value in want["inputs"].items():
            assert got["inputs"][name] == (pytest.approx(value) if isinstance(value, float) else value), name
        assert got["outputs"]["label"] == want["outputs"]["label"]
        assert got["outputs"]["probabilities"] == pytest.approx(want["outputs"]["probabilities"])
        assert got["bento"] == "t:1%" and got["latency_ms"] == want["latency_ms"] == 2.0
