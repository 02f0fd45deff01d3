"""Several worker processes on one port (adapters/workers.py): real servers, real signals, real sockets."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from bento_compile.adapters import workers
from bento_compile.runtimes import threads
from bento_compile.runtimes.manifest import read_manifest
from tests.support.helpers import free_port, stop_process, wait_http


def start_workers(bento, count: int, tmp_path, **env) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - the child writes to it; closed with the test
    proc = subprocess.Popen([sys.executable, "-m", "bento_compile.adapters.server"], stdout=log, stderr=log,
                            env={**os.environ, "BENTO_COMPILE_BENTO": str(bento), "PORT": str(port),
                                 "BENTO_COMPILE_WORKERS": str(count), "BENTO_COMPILE_LOAD": "eager", **env})
    wait_http(f"http://127.0.0.1:{port}/readyz", timeout=90, proc=proc)
    return proc, port


def post(port: int, body: bytes, timeout: float = 30) -> int:
    """One request on a connection of its own (so the kernel picks a worker for each)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/predict", body, {"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (r"\{" + labels + r"\}" if labels else r"(\{\})?") + r" ([0-9.e+-]+)"
    found = re.search("^" + pattern + "$", text, re.M)
    assert found, f"{name}{{{labels}}} not in /metrics"
    return float(found[1])


@pytest.mark.slow
def test_two_workers_share_the_port_sum_their_metrics_and_drain_on_sigterm(built_example, tmp_path):
    metrics_dir = tmp_path / "metrics"
    proc, port = start_workers(built_example, 2, tmp_path, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                               BENTO_COMPILE_GRACE_SECONDS="20")
    body = json.dumps(read_manifest(built_example).example).encode()
    try:
        # The workers accept from one queue: whichever is free takes the next connection. Send 8 at a time
        # until both have answered (each writes its own counter file), then any /metrics must sum both.
        from concurrent.futures import ThreadPoolExecutor

        sent = 0
        with ThreadPoolExecutor(8) as pool:
            while sent < 400 and len(list(metrics_dir.glob("counter_*.db"))) < 2:
                assert list(pool.map(lambda _: post(port, body), range(40))) == [200] * 40
                sent += 40
        assert len(list(metrics_dir.glob("counter_*.db"))) == 2, sorted(p.name for p in metrics_dir.iterdir())

        def scrape() -> str:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
            conn.close()
            return text

        # Each worker adds its observations to its files in bulk, at the latest half a second after them
        # (runtimes/metrics.py): the sum reaches every request sent, then stays there.
        deadline = time.monotonic() + 5
        while metric(scrape(), "bento_request_total", 'route="/predict",status="200"') != sent:
            assert time.monotonic() < deadline, scrape()
            time.sleep(0.1)
        for _ in range(6):
            text = scrape()
            assert metric(text, "bento_request_total", 'route="/predict",status="200"') == sent
            assert metric(text, "bento_request_duration_seconds_count", 'route="/predict",status="200"') == sent
        log = (tmp_path / "server.log").read_text()
        assert len(set(re.findall(r"worker (\d) \(pid \d+\): \d+ MiB resident", log))) == 2, log

        # SIGTERM under load: every request a worker accepted is answered; the supervisor exits 0.
        outcomes: list[str] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                try:
                    outcomes.append(f"http{post(port, body)}")
                except ConnectionRefusedError:
                    outcomes.append("refused")  # never accepted: every worker had stopped listening
                    time.sleep(0.01)
                except Exception as exc:  # reset, disconnected, timed out: an accepted request was lost
                    outcomes.append(f"lost:{type(exc).__name__}:{exc}")

        clients = [threading.Thread(target=client) for _ in range(8)]
        for thread in clients:
            thread.start()
        time.sleep(1.0)
        code = stop_process(proc, timeout=40)
        stop.set()
        for thread in clients:
            thread.join(30)
        lost = [o for o in outcomes if o.startswith("lost")]
        assert outcomes.count("http200") > 20, outcomes[:20]
        assert lost == [], lost[:5]
        assert set(outcomes) <= {"http200", "refused", "http503"}, set(outcomes)
        assert code == 0, (tmp_path / "server.log").read_text()[-3000:]
    finally:
        stop_process(proc)


@pytest.mark.slow
def test_a_worker_that_cannot_start_stops_the_server_with_its_reason(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "bento_compile.adapters.server"], stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "BENTO_COMPILE_BENTO": str(tmp_path / "missing"),
                                            "PORT": str(free_port()), "BENTO_COMPILE_WORKERS": "2"})
    try:
        _out, err = proc.communicate(timeout=60)
    finally:
        stop_process(proc)
    assert proc.returncode != 0
    assert "right after starting: stopping the server" in err


def test_worker_count_reads_the_flag_then_the_environment_then_the_cpu_quota(monkeypatch):
    monkeypatch.delenv("BENTO_COMPILE_WORKERS", raising=False)
    monkeypatch.setattr(threads, "cpu_quota", lambda: 2.5)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)))
    assert workers.worker_count() == 2  # 2.5 CPUs of quota: two whole ones
    monkeypatch.setenv("BENTO_COMPILE_WORKERS", "3")
    assert workers.worker_count() == 3
    assert workers.worker_count(5) == 5
    monkeypatch.setenv("BENTO_COMPILE_WORKERS", "many")
    with pytest.raises(SystemExit, match="BENTO_COMPILE_WORKERS must be a whole number"):
        workers.worker_count()
    with pytest.raises(SystemExit, match="between 1 and"):
        workers.worker_count(0)


def test_a_bento_that_runs_on_the_gpu_gets_one_worker_by_default(built_example, tmp_path, monkeypatch):
    """With onnxruntime-gpu installed, each worker would open its own CUDA session on the one device.
    The GPU wheel cannot be installed here: a real dist-info folder on sys.path stands in for it."""
    monkeypatch.delenv("BENTO_COMPILE_WORKERS", raising=False)
    monkeypatch.delenv("BENTO_COMPILE_DEVICE", raising=False)
    monkeypatch.setattr(threads, "cpu_quota", lambda: 4.0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)))
    bento = str(built_example)
    assert workers.worker_count(None, bento) == 4  # the CPU wheel: no GPU, one worker per CPU
    dist = tmp_path / "site" / "onnxruntime_gpu-1.23.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.23.0\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert workers.wants_gpu(bento) and workers.worker_count(None, bento) == 1
    assert workers.worker_count(3, bento) == 3  # asked for: given
    monkeypatch.setenv("BENTO_COMPILE_DEVICE", "cpu")
    assert not workers.wants_gpu(bento) and workers.worker_count(None, bento) == 4


def test_a_workers_share_of_the_cpus_bounds_its_thread_plan(monkeypatch):
    monkeypatch.setattr(threads, "cpu_quota", lambda: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.delenv("BENTO_COMPILE_INTRA_OP_THREADS", raising=False)
    monkeypatch.setenv(threads.WORKER_CPUS_ENV, "2")
    assert threads.available_cpus() == 2
    assert threads.plan_threads(0, batching=True).intra_op_threads == 1  # 2 CPUs, one for the event loop
    assert [threads.worker_count_for(c) for c in (0.5, 1, 1.5, 2, 4.0)] == [1, 1, 1, 2, 4]


def test_the_in_flight_limit_is_the_containers_split_over_its_workers():
    assert workers.concurrency_shares(5, 2) == [3, 2]
    assert workers.concurrency_shares(8, 4) == [2, 2, 2, 2]
    assert workers.concurrency_shares(0, 3) == [0, 0, 0]  # unlimited stays unlimited
    assert sum(workers.concurrency_shares(7, 3)) == 7


@pytest.mark.slow
def test_no_more_workers_than_requests_allowed_in_flight(built_example, tmp_path):
    proc, port = start_workers(built_example, 2, tmp_path, BENTO_COMPILE_MAX_CONCURRENCY="1")
    try:
        body = json.dumps(read_manifest(built_example).example).encode()
        assert post(port, body) == 200
    finally:
        assert stop_process(proc, timeout=30) == 0
    log = (tmp_path / "server.log").read_text()
    assert "starting 1 worker(s)" in log and "in-flight limit 1 for the server: 1 per worker" in log, log


def children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
        return {int(p) for p in handle.read().split()}


@pytest.mark.slow
def test_a_worker_killed_later_is_started_again(built_example, tmp_path):
    import signal

    proc, port = start_workers(built_example, 2, tmp_path)
    try:
        body = json.dumps(read_manifest(built_example).example).encode()
        time.sleep(workers._EARLY_DEATH_S + 0.5)  # past the "broken at start" window
        first = children(proc.pid)
        assert len(first) == 2
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (len(children(proc.pid)) == 2 and victim not in children(proc.pid)):
            time.sleep(0.1)
        now = children(proc.pid)
        assert len(now) == 2 and victim not in now, now
        assert proc.poll() is None
        assert all(post(port, body) == 200 for _ in range(10))
    finally:
        assert stop_process(proc, timeout=30) == 0
    assert "exited with -9: starting it again" in (tmp_path / "server.log").read_text()
