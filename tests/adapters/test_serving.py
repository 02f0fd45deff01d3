"""The HTTP request path: concurrent /predict through the real app (in-process, one event loop),
back-pressure (503 + Retry-After), client disconnects, metrics, providers, and a real server.

Concurrency in-process uses httpx's ASGI transport, so many requests really are in flight on
one event loop at once. Where a test must hold a model run to make requests pile up, it wraps
the REAL ONNX Runtime session's run with a gate (the model still computes every answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import urllib.request

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from bento_compile.adapters.http_app import create_app
from bento_compile.runtimes.model import BentoModel
from bento_compile.runtimes.providers import CPU, CUDA, TENSORRT, device_in_use, requested_providers
from bento_compile.runtimes.threads import available_cpus, plan_threads
from tests.support.helpers import free_port, wait_http


@pytest.fixture(scope="module")
def rows(example_model):
    sample = np.load(example_model / "sample.npy")
    return [[None if np.isnan(v) else float(v) for v in row] for row in sample]


def bento_with(built_example, tmp_path, **runtime) -> object:
    """A copy of the example Bento with some runtime settings changed in its manifest."""
    bento = tmp_path / "bento"
    shutil.copytree(built_example, bento)
    manifest = json.loads((bento / "manifest.json").read_text())
    batching = runtime.pop("batching", None)
    manifest["runtime"].update(runtime)
    if batching is not None:
        manifest["runtime"]["batching"] = {**manifest["runtime"].get("batching", {}), **batching}
    (bento / "manifest.json").write_text(json.dumps(manifest))
    return bento


class Gate:
    """Wraps a backend's real run: the first run waits for `release` so later requests pile up."""

    def __init__(self, backend):
        self.backend = backend
        self.real = backend.run
        self.release = threading.Event()
        self.started = threading.Event()
        self.batches: list[int] = []
        backend.run = self

    def __call__(self, feeds):
        self.batches.append(len(next(iter(feeds.values()))))
        self.started.set()
        if len(self.batches) == 1:
            assert self.release.wait(10), "the test never released the first run"
        return self.real(feeds)


def gated_app(bento, **kw):
    app = create_app(bento, load_mode="eager", **kw)
    gate = Gate(app.state.holder.get().backend)
    return app, gate


async def wait_for(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.001)


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bento")


def test_probes_answer_alike_from_the_server_app_the_fastapi_app_and_its_routes(built_example, tmp_path):
    """/healthz, /readyz and /metrics come from one place (adapters/probes.py): the raw server app, the
    FastAPI app (before routing) and its documented routes (reached under a root_path) answer alike."""
    from bento_compile.adapters.asgi import ServingApp

    broken = tmp_path / "broken"
    shutil.copytree(built_example, broken)
    (broken / "model.onnx").write_bytes(b"not the model the manifest names")
    kinds = {"server": (lambda bento: ServingApp(bento, load_mode="lazy", prebuild=False), ""),
             "fastapi": (lambda bento: create_app(bento, load_mode="lazy"), ""),
             "routes": (lambda bento: create_app(bento, load_mode="lazy"), "/api")}

    async def get(app, root: str, path: str):
        transport = httpx.ASGITransport(app=app, root_path=root)
        async with httpx.AsyncClient(transport=transport, base_url="http://bento") as client:
            response = await client.get(root + path)
        return response.status_code, response.content, response.headers.get("content-type"), \
            response.headers.get("retry-after")

    async def answers(make, root: str):
        loading_app, broken_app = make(built_example), make(broken)
        holder = broken_app.holder if isinstance(broken_app, ServingApp) else broken_app.state.holder
        with contextlib.suppress(Exception):
            holder.get()  # a lazy load, attempted and failed
        probes = [await get(loading_app, root, path) for path in ("/healthz", "/readyz")]
        probes.append(await get(broken_app, root, "/readyz"))
        return probes, await get(loading_app, root, "/metrics")

    seen = {name: asyncio.run(answers(make, root)) for name, (make, root) in kinds.items()}
    probes, metrics = seen["server"]
    assert probes[:2] == [(200, b'{"status":"ok"}', "application/json", None),
                          (503, b'{"error":"model is loading"}', "application/json", "1")]
    assert probes[2][0] == 503 and b"model failed to load" in probes[2][1] and b"model.onnx" in probes[2][1]
    assert metrics[0] == 200 and metrics[2].startswith("text/plain")
    for name in ("server", "fastapi"):  # answered before routing, and counted by route like any request
        assert b'bento_request_total{route="/readyz",status="503"} 1.0' in seen[name][1][1], name
    assert b'route="/readyz"' not in seen["routes"][1][1]  # under the root_path the FastAPI routes answered
    for name in ("fastapi", "routes"):
        assert seen[name][0] == probes, name
        assert seen[name][1][0] == 200 and seen[name][1][2] == metrics[2], name
    paths = create_app(built_example, load_mode="lazy").openapi()["paths"]
    assert {"/healthz", "/readyz", "/metrics"} <= set(paths)


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(built_example, rows):
    app, gate = gated_app(built_example)
    model = BentoModel.load(built_example)
    sizes = [1, 3, 2, 5, 1, 4, 2, 1]
    bodies, start = [], 0
    for n in sizes:
        bodies.append({"inputs": rows[start:start + n]})
        start += n

    async def main():
        async with client_for(app) as client:
            first = asyncio.ensure_future(client.post("/predict", json={"inputs": rows[-1:]}))
            await wait_for(gate.started)
            tasks = [asyncio.ensure_future(client.post("/predict", json=b)) for b in bodies]
            await asyncio.sleep(0.05)
            gate.release.set()
            return await first, await asyncio.gather(*tasks)

    first, responses = asyncio.run(main())
    assert first.status_code == 200
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, response.text
        expected = model.predict(body)["outputs"]
        got = response.json()["outputs"]
        assert got["label"] == expected["label"]
        np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-6)
    assert gate.batches[0] == 1 and max(gate.batches[1:]) > 1  # the queued requests shared runs
    assert sum(gate.batches[1:]) == sum(sizes)


def test_in_flight_limit_gives_503_with_retry_after(built_example, rows, monkeypatch):
    monkeypatch.setenv("BENTO_COMPILE_MAX_CONCURRENCY", "2")
    app, gate = gated_app(built_example)

    async def main():
        async with client_for(app) as client:
            held = [asyncio.ensure_future(client.post("/predict", json={"inputs": rows[:1]})) for _ in range(2)]
            await wait_for(gate.started)
            await asyncio.sleep(0.02)
            over = await client.post("/predict", json={"inputs": rows[:1]})
            gate.release.set()
            return over, await asyncio.gather(*held), await client.get("/metrics")

    over, held, metrics = asyncio.run(main())
    assert over.status_code == 503
    assert int(over.headers["retry-after"]) >= 1
    assert "BENTO_COMPILE_MAX_CONCURRENCY" in over.json()["error"]
    assert [r.status_code for r in held] == [200, 200]
    assert 'bento_rejected_total{reason="concurrency"} 1.0' in metrics.text
    assert 'bento_request_total{route="/predict",status="503"} 1.0' in metrics.text


def test_full_queue_gives_503_at_once(built_example, rows, tmp_path):
    bento = bento_with(built_example, tmp_path, batching={"max_queue_rows": 3})
    app, gate = gated_app(bento)

    async def main():
        async with client_for(app) as client:
            first = asyncio.ensure_future(client.post("/predict", json={"inputs": rows[:1]}))
            await wait_for(gate.started)
            queued = asyncio.ensure_future(client.post("/predict", json={"inputs": rows[:3]}))
            await asyncio.sleep(0.02)
            refused = await client.post("/predict", json={"inputs": rows[:1]})
            gate.release.set()
            return refused, await first, await queued

    refused, first, queued = asyncio.run(main())
    assert refused.status_code == 503 and refused.headers["retry-after"].isdigit()
    assert "max_queue_rows" in refused.json()["error"]
    assert first.status_code == queued.status_code == 200
    assert len(queued.json()["outputs"]["label"]) == 3


def test_a_disconnected_client_is_dropped_from_the_batch(built_example, rows):
    """The service watches the ASGI receive channel while a request waits; a disconnect cancels it."""
    app, gate = gated_app(built_example)
    service = app.predict_service
    body = json.dumps({"inputs": rows[:7]}).encode()

    async def main():
        held = asyncio.ensure_future(service.answer(json.dumps({"inputs": rows[:1]}).encode()))
        await wait_for(gate.started)
        service._batcher.latency.observe(7, 0.01)  # runs look costly: worth watching the client
        for _ in range(3):
            service._batcher.latency.observe(7, 0.01)
        gone = asyncio.Event()

        async def receive():
            await gone.wait()
            return {"type": "http.disconnect"}

        leaving = asyncio.ensure_future(service.answer(body, receive))
        await asyncio.sleep(0.01)
        gone.set()
        result = await leaving
        gate.release.set()
        return result, await held

    result, held = asyncio.run(main())
    assert result is None
    assert held[0] == 200
    assert 7 not in gate.batches  # its rows never reached the model


def test_non_batchable_bento_runs_one_request_per_run(built_example, rows, tmp_path):
    bento = tmp_path / "fixed"
    shutil.copytree(built_example, bento)
    manifest = json.loads((bento / "manifest.json").read_text())
    manifest["model"]["batchable"] = False  # what the compiler records for a fixed first axis
    (bento / "manifest.json").write_text(json.dumps(manifest))
    app, gate = gated_app(bento)

    async def main():
        async with client_for(app) as client:
            first = asyncio.ensure_future(client.post("/predict", json={"inputs": rows[:1]}))
            await wait_for(gate.started)
            tasks = [asyncio.ensure_future(client.post("/predict", json={"inputs": rows[:2]})) for _ in range(3)]
            await asyncio.sleep(0.02)
            gate.release.set()
            return [await first, *await asyncio.gather(*tasks)], await client.get("/metadata")

    responses, meta = asyncio.run(main())
    assert all(r.status_code == 200 for r in responses)
    assert gate.batches == [1, 2, 2, 2]
    assert meta.json()["serving"]["batching"]["mode"] == "off"
    assert meta.json()["serving"]["batching"]["batchable"] is False


def test_metrics_are_exposed_in_prometheus_format(built_example, rows):
    with TestClient(create_app(built_example, load_mode="eager")) as client:
        for _ in range(3):
            assert client.post("/predict", json={"inputs": rows[:2]}).status_code == 200
        assert client.post("/predict", json={"inputs": [[1.0]]}).status_code == 422
        client.get("/healthz")
        client.get("/nope")
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in ('bento_request_total{route="/predict",status="200"} 3.0',
                 'bento_request_total{route="/predict",status="422"} 1.0',
                 'bento_request_total{route="/healthz",status="200"} 1.0',
                 'bento_request_total{route="other",status="404"} 1.0',
                 "bento_batch_size_rows_sum 6.0",
                 "bento_batch_size_rows_count 3.0",
                 "bento_queue_depth_rows 0.0",
                 "bento_in_flight_requests 0.0"):
        assert line in text, line
    for name in ("bento_request_duration_seconds_bucket", "bento_inference_duration_seconds_bucket",
                 "bento_queue_wait_seconds_bucket", "bento_model_load_seconds", "bento_cold_start_seconds"):
        assert name in text, name
    assert 'bento_model_info{device="cpu",providers="CPUExecutionProvider",tag="cancer:' in text


def test_metadata_reports_the_provider_in_use_and_the_serving_plan(built_example, monkeypatch):
    # Asking for CUDA on this CPU-only onnxruntime must not lie: the session's providers are reported.
    monkeypatch.setenv("BENTO_COMPILE_DEVICE", "cuda")
    with TestClient(create_app(built_example, load_mode="eager")) as client:
        meta = client.get("/metadata").json()
    assert meta["providers"] == ["CPUExecutionProvider"] and meta["device"] == "cpu"
    serving = meta["serving"]
    assert serving["batching"]["mode"] == "adaptive" and serving["batching"]["batchable"] is True
    assert serving["threads"]["intra_op_threads"] >= 1 and serving["threads"]["inference_workers"] == 1
    assert serving["max_concurrency"] == 0


def test_provider_choice():
    assert requested_providers("cpu", [CUDA, CPU]) == [CPU]
    assert requested_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert requested_providers("auto", [CPU]) == [CPU]
    assert requested_providers("tensorrt", [TENSORRT, CUDA, CPU]) == [TENSORRT, CUDA, CPU]
    assert requested_providers("cuda", ["AzureExecutionProvider", CPU]) == [CPU]  # CPU wheel: warn, serve
    with pytest.raises(ValueError, match=r"runtime\.device"):
        requested_providers("tpu", [CPU])
    assert device_in_use([CUDA, CPU]) == "cuda" and device_in_use([CPU]) == "cpu"


def test_thread_plan_never_oversubscribes():
    assert available_cpus() >= 1
    assert plan_threads(1, batching=True, cpus=8).to_dict() == {"cpus": 8, "intra_op_threads": 1,
                                                                "inference_workers": 1}
    assert plan_threads(1, batching=False, cpus=8).inference_workers == 7  # the event loop keeps a core
    assert plan_threads(1, batching=False, cpus=1).inference_workers == 1
    assert plan_threads(0, batching=True, cpus=8).intra_op_threads == 7  # all but the event loop's
    off = plan_threads(4, batching=False, cpus=8)
    assert 1 + off.intra_op_threads * off.inference_workers <= 8
    assert plan_threads(16, batching=True, cpus=2).intra_op_threads == 2


def test_bad_concurrency_env_is_a_clear_error(built_example, monkeypatch):
    monkeypatch.setenv("BENTO_COMPILE_MAX_CONCURRENCY", "lots")
    with pytest.raises(ValueError, match="BENTO_COMPILE_MAX_CONCURRENCY must be a whole number"):
        create_app(built_example, load_mode="lazy")


def test_batching_config_is_validated_and_recorded(tmp_path, example_model):
    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import load_config
    from bento_compile.core.errors import BentoCompileError
    from bento_compile.core.store import BentoStore

    bad = tmp_path / "bad.yaml"
    bad.write_text("runtime:\n  batching: {max_batch_szie: 8}\n")
    with pytest.raises(BentoCompileError, match=r"unknown key .runtime\.batching\.max_batch_szie."):
        load_config(bad)
    bad.write_text("runtime: {device: gpu}\n")
    with pytest.raises(BentoCompileError, match=r"runtime\.device"):
        load_config(bad)
    good = tmp_path / "bento.yaml"
    good.write_text(f"name: tuned\nmodel: {example_model / 'model.joblib'}\nsample: {example_model / 'sample.npy'}\n"
                    "runtime:\n  device: cpu\n  max_concurrency: 8\n"
                    "  batching: {mode: fixed, max_batch_size: 16, max_latency_ms: 2}\n")
    config, config_dir = load_config(good)
    result = build(BuildRequest(None, config, config_dir), BentoStore(tmp_path / "store"))
    runtime = result.manifest["runtime"]
    assert runtime["device"] == "cpu" and runtime["max_concurrency"] == 8
    assert runtime["batching"]["mode"] == "fixed" and runtime["batching"]["max_batch_size"] == 16
    with TestClient(create_app(result.path, load_mode="eager")) as client:
        serving = client.get("/metadata").json()["serving"]
    assert serving["batching"]["mode"] == "fixed" and serving["batching"]["max_latency_ms"] == 2
    assert serving["max_concurrency"] == 8


@pytest.mark.slow
def test_real_server_serves_metrics_and_logs_the_provider(built_example, rows):
    """`python -m bento_compile.adapters.server` under uvicorn (uvloop + httptools), real sockets."""
    port = free_port()
    env = {**os.environ, "BENTO_COMPILE_BENTO": str(built_example), "PORT": str(port),
           "BENTO_COMPILE_MAX_CONCURRENCY": "4", "BENTO_COMPILE_WORKERS": "1"}  # one process: test_workers.py has more
    server = subprocess.Popen([sys.executable, "-m", "bento_compile.adapters.server"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/readyz", proc=server)
        for n in (1, 4):
            request = urllib.request.Request(base + "/predict", data=json.dumps({"inputs": rows[:n]}).encode())
            with urllib.request.urlopen(request, timeout=5) as response:
                assert len(json.loads(response.read())["outputs"]["label"]) == n
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            text = response.read().decode()
        assert 'bento_request_total{route="/predict",status="200"} 2.0' in text
        assert "bento_batch_size_rows_sum 5.0" in text
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=15)
    assert "serving cancer:" in output and "on cpu (providers CPUExecutionProvider)" in output
    assert "in-flight limit 4" in output


def test_server_app_answers_the_same_contract_without_building_fastapi_first(built_example, rows):
    """`python -m ...server` runs ServingApp: /predict, probes and /metrics need no FastAPI; the rest
    (metadata, docs, OpenAPI, 404/405) goes to the FastAPI app, built off the cold path, same answers."""
    from bento_compile.adapters.asgi import ServingApp

    app = ServingApp(built_example, load_mode="lazy")
    assert app._fastapi is None

    async def main():
        async with client_for(app) as client:
            loading = await client.get("/readyz")
            predicted = await client.post("/predict", json={"inputs": rows[:2]})
            bad = await client.post("/predict", json={"inputs": [[1.0]]})
            early = {"health": await client.get("/healthz"), "ready": await client.get("/readyz"),
                     "metrics": await client.get("/metrics")}
            late = {"meta": await client.get("/metadata"), "docs": await client.get("/docs"),
                    "openapi": await client.get("/openapi.json"), "missing": await client.get("/nope"),
                    "method": await client.get("/predict")}
            return loading, predicted, bad, early, late

    loading, predicted, bad, early, late = asyncio.run(main())
    assert loading.status_code == 503 and loading.json() == {"error": "model is loading"}
    assert predicted.status_code == 200 and len(predicted.json()["outputs"]["label"]) == 2
    assert bad.status_code == 422 and "30 features, got 1" in bad.json()["error"]
    assert early["health"].json() == {"status": "ok"} and early["ready"].json() == {"status": "ready"}
    assert 'bento_request_total{route="/predict",status="200"} 1.0' in early["metrics"].text
    assert late["meta"].json()["providers"] == ["CPUExecutionProvider"]
    assert late["meta"].json()["serving"]["batching"]["mode"] == "adaptive"
    assert late["docs"].status_code == 200
    assert "/predict" in late["openapi"].json()["paths"]
    assert late["missing"].status_code == 404 and "error" in late["missing"].json()
    assert late["method"].status_code == 405
    with TestClient(create_app(built_example, load_mode="eager")) as reference:
        assert reference.post("/predict", json={"inputs": [[1.0]]}).json() == bad.json()
        assert reference.get("/openapi.json").json()["paths"] == late["openapi"].json()["paths"]


def test_the_cold_path_imports_no_fastapi(built_example):
    """What a scale-from-zero request pays for: /predict answered with FastAPI never imported."""
    script = textwrap.dedent(f"""
        import asyncio, json, sys
        from bento_compile.adapters.asgi import ServingApp
        app = ServingApp({str(built_example)!r}, load_mode="eager", prebuild=False)
        sent = []
        async def main():
            body = json.dumps({{"inputs": [[0.1] * 30]}}).encode()
            messages = [{{"type": "http.request", "body": body, "more_body": False}}]
            async def receive():
                return messages.pop(0) if messages else {{"type": "http.disconnect"}}
            async def send(message):
                sent.append(message)
            await app({{"type": "http", "path": "/predict", "method": "POST", "headers": []}}, receive, send)
        asyncio.run(main())
        print(json.dumps({{"status": sent[0]["status"], "fastapi": "fastapi" in sys.modules,
                          "otel_sdk": "opentelemetry.sdk" in sys.modules}}))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"status": 200, "fastapi": False, "otel_sdk": False}


def test_otlp_spans_around_queue_wait_and_inference_when_an_endpoint_is_set(built_example, rows, otlp_receiver):
    """A real OTLP/HTTP receiver on 127.0.0.1 gets the spans, decoded with the OTLP protobuf schema."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from bento_compile.runtimes import tracing

    received = otlp_receiver
    tracing.reset()
    try:
        with TestClient(create_app(built_example, load_mode="eager")) as client:
            assert client.post("/predict", json={"inputs": rows[:3]}).status_code == 200
        tracing.flush()
    finally:
        tracing.reset()
    assert received and all(path == "/v1/traces" for path, _ in received)
    spans = [span for _, body in received for rs in ExportTraceServiceRequest.FromString(body).resource_spans
             for ss in rs.scope_spans for span in ss.spans]
    by_name = {span.name: span for span in spans}
    assert {"bento.predict", "bento.queue_wait", "bento.inference"} <= set(by_name)
    root = by_name["bento.predict"]
    assert by_name["bento.queue_wait"].parent_span_id == root.span_id == by_name["bento.inference"].parent_span_id
    attributes = {a.key: a.value for a in by_name["bento.inference"].attributes}
    assert attributes["bento.batch.rows"].int_value == 3
    assert root.start_time_unix_nano <= by_name["bento.inference"].start_time_unix_nano <= root.end_time_unix_nano
