"""Serving benchmark: the Bento's HTTP server vs BentoML 1.x vs a naive FastAPI + ONNX Runtime server.

Side by side in ONE run (the machine is shared and noisy: read the ratios, not the absolutes):
  - BentoML 1.x, `@bentoml.api(batchable=True)` over the scikit-learn model, in its own venv
    under bench/.work/ (installed by this script with pip; skipped, and said so, if pip cannot);
  - naive FastAPI + ONNX Runtime: `await request.json()`, one `session.run` per request, inline
    (the friendliest naive variant: no thread hand-off); same venv, so the same uvloop/httptools;
  - the Bento: `python -m bento_compile.adapters.server` (raw-ASGI /predict, adaptive batching).
Models: RandomForest(100 trees), MLP(256,256), and an inference-heavy MLP(4 x 1024) where the
Bento runs twice: batching off (one run per request) and adaptive batching.
Load: single-row JSON requests on 127.0.0.1, closed loop with c connections (bounded: at most c
requests in flight) by `wrk` (Debian package; installed with apt-get when missing and root) or,
failing that, a small asyncio raw-socket generator. Cold start: process spawn to first 200 from
POST /predict. Every server is started and stopped by PID.

Usage: python bench/bench_serving.py [--quick] [--duration S] [--no-bentoml] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / ".work" / "serving"
PY = sys.executable

NAIVE_SERVER = textwrap.dedent("""
    import sys, numpy as np, onnxruntime as ort, uvicorn
    from fastapi import FastAPI, Request
    options = ort.SessionOptions(); options.intra_op_num_threads = 1
    session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = [o.name for o in session.get_outputs()]
    app = FastAPI()
    @app.post("/predict")
    async def predict(request: Request):
        X = np.asarray((await request.json())["inputs"], dtype=np.float32)
        values = session.run(outputs, {name: X})
        return {"outputs": {k: v.tolist() for k, v in zip(outputs, values)}}
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
""")

BENTOML_SERVICE = textwrap.dedent("""
    import os
    import bentoml
    import joblib
    import numpy as np

    @bentoml.service(workers=1)
    class Model:
        def __init__(self) -> None:
            self.model = joblib.load(os.environ["BENCH_MODEL"])

        @bentoml.api(batchable=True)
        def predict(self, inputs: np.ndarray) -> np.ndarray:
            return self.model.predict_proba(inputs)
""")


@dataclass
class Point:
    server: str
    model: str
    c1_rps: float | None = None
    c1_p99_ms: float | None = None
    c32_rps: float | None = None
    c32_p50_ms: float | None = None
    c32_p99_ms: float | None = None
    c32_errors: int = 0
    cold_start_s: float | None = None
    notes: list[str] = field(default_factory=list)


# ---- models and Bentos -------------------------------------------------------------------

def train_models() -> dict[str, Path]:
    import joblib  # here, not at the top: bench_tail.py imports this module on machines without it
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    X = X.astype(np.float32)
    models = {
        "rf100": RandomForestClassifier(n_estimators=100, random_state=0),
        "mlp256": make_pipeline(StandardScaler(), MLPClassifier((256, 256), max_iter=300, random_state=0)),
        "mlp4x1024": make_pipeline(StandardScaler(), MLPClassifier((1024,) * 4, max_iter=20, random_state=0)),
    }
    paths = {}
    WORK.mkdir(parents=True, exist_ok=True)
    np.save(WORK / "sample.npy", X[:64])
    for name, model in models.items():
        path = WORK / f"{name}.joblib"
        if not path.exists():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(X, y)
            joblib.dump(model, path)
        paths[name] = path
    return paths


def build_bentos(models: dict[str, Path]) -> dict[str, Path]:
    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import BentoConfig
    from bento_compile.core.store import BentoStore

    store = BentoStore(WORK / "store")
    bentos = {}
    for name, path in models.items():
        config = BentoConfig.model_validate({"name": name, "runtime": {"max_batch_rows": 1024}})
        result = build(BuildRequest(path, config, None, sample_path=WORK / "sample.npy"), store)
        bentos[name] = result.path
    return bentos


# ---- servers -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process, started and stopped by PID, with its cold start measured."""

    def __init__(self, label: str, argv: list[str], port: int, body: bytes, env: dict | None = None,
                 cwd: Path | None = None):
        self.label, self.argv, self.port, self.body = label, argv, port, body
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server; closed in stop())

    def start(self, timeout: float = 120.0) -> float:
        """Spawn, then POST /predict until the first 200; returns seconds from spawn to that 200."""
        started = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{self.port}/predict"
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                request = urllib.request.Request(url, data=self.body, headers={"content-type": "application/json"})
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.005)
        raise RuntimeError(f"{self.label} gave no 200 within {timeout}s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self._terminate()

    def close(self) -> None:
        self.stop()
        self.log.close()

    def _terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: workers (BentoML) go too
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def bentoml_venv(log) -> tuple[Path | None, str]:
    """bench/.work/serving/bentoml-venv with bentoml and the same scikit-learn as ours (to load the joblib)."""
    from importlib.metadata import version

    import sklearn

    venv = WORK / "bentoml-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists():
        log(f"installing BentoML into {venv} (once; about a minute)")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([PY, "-m", "venv", str(venv)], check=True)
        result = subprocess.run([str(python), "-m", "pip", "install", "-q", "bentoml>=1.2,<2",
                                 f"scikit-learn=={sklearn.__version__}", f"joblib=={version('joblib')}"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            return None, "pip could not install bentoml: " + result.stderr.strip().splitlines()[-1][:200]
        marker.touch()
    version = subprocess.run([str(python), "-c", "import bentoml; print(bentoml.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    return venv, version


# ---- load generation ---------------------------------------------------------------------

@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def ensure_wrk(log) -> str | None:
    if shutil.which("wrk"):
        return shutil.which("wrk")
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing wrk (Debian package)")
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "wrk"], capture_output=True)
    return shutil.which("wrk")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"wrk printed a latency this script cannot read: {text!r}")
    value, unit = match.groups()
    return float(value) * _UNITS[unit]


def run_wrk(wrk: str, port: int, body: bytes, connections: int, seconds: float) -> Load:
    script = WORK / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(body.decode())}\n")
    out = subprocess.run([wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
                          "-s", str(script), f"http://127.0.0.1:{port}/predict"],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"(?m)^\s+50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"(?m)^\s+99%\s+(\S+)", out).group(1))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return Load(rps, p50, p99, errors)


async def _socket_load(port: int, body: bytes, connections: int, seconds: float) -> Load:
    request = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Load(len(latencies) / elapsed, latencies[len(latencies) // 2] * 1e3,
                latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3, errors)


def load(wrk: str | None, port: int, body: bytes, connections: int, seconds: float) -> Load:
    if wrk:
        run_wrk(wrk, port, body, connections, 1)  # warm-up, not measured
        return run_wrk(wrk, port, body, connections, seconds)
    asyncio.run(_socket_load(port, body, connections, 1))
    return asyncio.run(_socket_load(port, body, connections, seconds))


# ---- the run -----------------------------------------------------------------------------

def measure(server: Server, model: str, wrk: str | None, seconds: float, cold_runs: int, log) -> Point:
    point = Point(server.label, model)
    colds = []
    try:
        for i in range(cold_runs):
            colds.append(server.start())
            if i < cold_runs - 1:
                server.stop()
        point.cold_start_s = statistics.median(colds)
        one = load(wrk, server.port, server.body, 1, seconds)
        point.c1_rps, point.c1_p99_ms = one.rps, one.p99_ms
        many = load(wrk, server.port, server.body, 32, seconds)
        point.c32_rps, point.c32_p50_ms, point.c32_p99_ms, point.c32_errors = (
            many.rps, many.p50_ms, many.p99_ms, many.errors)
        log(f"  {server.label:<22} {model:<10} cold {point.cold_start_s:.2f}s  c=1 {one.rps:8.0f} rps  "
            f"c=32 {many.rps:8.0f} rps p99 {many.p99_ms:6.1f} ms  errors {many.errors}")
    except Exception as exc:  # one failing server must not lose the others' numbers
        point.notes.append(f"failed: {str(exc).splitlines()[0][:200]}")
        log(f"  {server.label} {model}: {point.notes[-1]}")
    finally:
        server.close()
    return point


def machine() -> dict[str, str]:
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("onnxruntime", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "orjson",
                 "prometheus-client", "scikit-learn", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            versions[name] = version(name)
    return {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {cpu}", "python": platform.python_version(),
            "versions": ", ".join(f"{k} {v}" for k, v in versions.items())}


def fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.1f}×"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s per point, one cold start each")
    parser.add_argument("--duration", type=float, help="seconds per load point (default 15, quick 3)")
    parser.add_argument("--no-bentoml", action="store_true", help="skip BentoML (no venv install)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    seconds = args.duration or (3.0 if args.quick else 15.0)
    cold_runs = 1 if args.quick else 3

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    info = machine()
    log(f"machine: {info['machine']}")
    log("training models and building Bentos")
    models = train_models()
    bentos = build_bentos(models)
    wrk = ensure_wrk(log)
    info["load generator"] = (subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
                              if wrk else "asyncio raw sockets (wrk not available)")
    venv, bentoml_version = (None, "skipped (--no-bentoml)") if args.no_bentoml else bentoml_venv(log)
    info["bentoml"] = bentoml_version
    if venv is not None:
        (WORK / "bentoml_service").mkdir(exist_ok=True)
        (WORK / "bentoml_service" / "service.py").write_text(BENTOML_SERVICE)
    (WORK / "naive_server.py").write_text(NAIVE_SERVER)
    body = json.dumps({"inputs": [np.load(WORK / "sample.npy")[0].astype(float).tolist()]}).encode()

    points: list[Point] = []
    for model in ("rf100", "mlp256", "mlp4x1024"):
        log(f"model {model}")
        servers: list[Server] = []
        if venv is not None and model != "mlp4x1024":
            port = free_port()
            servers.append(Server("BentoML (batchable)", [str(venv / "bin" / "bentoml"), "serve", "service:Model",
                                                          "--host", "127.0.0.1", "--port", str(port)], port, body,
                                  {"BENCH_MODEL": str(models[model]), "BENTOML_HOME": str(WORK / "bentoml-home"),
                                   "BENTOML_DO_NOT_TRACK": "true"}, cwd=WORK / "bentoml_service"))
        port = free_port()
        servers.append(Server("naive FastAPI+ORT", [PY, str(WORK / "naive_server.py"),
                                                    str(bentos[model] / "model.onnx"), str(port)], port, body))
        bento_env = {"BENTO_COMPILE_BENTO": str(bentos[model]), "BENTO_COMPILE_LOAD": "background"}
        if model == "mlp4x1024":
            port = free_port()
            servers.append(Server("Bento (batching off)", [PY, "-m", "bento_compile.adapters.server"], port, body,
                                  {**bento_env, "PORT": str(port), "BENTO_COMPILE_BATCHING": "off"}))
        port = free_port()
        servers.append(Server("Bento (adaptive)", [PY, "-m", "bento_compile.adapters.server"], port, body,
                              {**bento_env, "PORT": str(port)}))
        for server in servers:
            points.append(measure(server, model, wrk, seconds, cold_runs, log))

    print_table(points, info, seconds)
    if args.json:
        args.json.write_text(json.dumps({"info": info, "seconds": seconds,
                                         "points": [asdict(p) for p in points]}, indent=2))


def print_table(points: list[Point], info: dict[str, str], seconds: float) -> None:
    print(f"\nmachine: {info['machine']}; python {info['python']}")
    print(f"versions: {info['versions']}; bentoml {info['bentoml']}; load: {info['load generator']}")
    print(f"single-row JSON POST /predict, {seconds:.0f} s per point, loopback, one worker process each\n")
    print("| server | model | c=1 rps | c=1 p99 ms | c=32 rps | c=32 p50 ms | c=32 p99 ms | non-2xx | cold start s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in points:
        note = f" ({'; '.join(p.notes)})" if p.notes else ""
        print(f"| {p.server}{note} | {p.model} | {fmt(p.c1_rps)} | {fmt(p.c1_p99_ms, 2)} | {fmt(p.c32_rps)} | "
              f"{fmt(p.c32_p50_ms, 2)} | {fmt(p.c32_p99_ms, 2)} | {p.c32_errors} | {fmt(p.cold_start_s, 2)} |")
    by = {(p.server, p.model): p for p in points}
    print("\nratios (same run):")
    for model in ("rf100", "mlp256"):
        bento, naive, bml = (by.get((s, model)) for s in ("Bento (adaptive)", "naive FastAPI+ORT",
                                                          "BentoML (batchable)"))
        if not bento:
            continue
        print(f"- {model}: c=32 throughput Bento/naive {ratio(bento.c32_rps, naive and naive.c32_rps)}, "
              f"Bento/BentoML {ratio(bento.c32_rps, bml and bml.c32_rps)}; c=32 p99 Bento {fmt(bento.c32_p99_ms, 2)} "
              f"ms; cold start BentoML/Bento {ratio(bml and bml.cold_start_s, bento.cold_start_s)}, "
              f"naive/Bento {ratio(naive and naive.cold_start_s, bento.cold_start_s)}")
    heavy = {s: by.get((s, "mlp4x1024")) for s in ("Bento (adaptive)", "Bento (batching off)", "naive FastAPI+ORT")}
    batched, off, naive = heavy["Bento (adaptive)"], heavy["Bento (batching off)"], heavy["naive FastAPI+ORT"]
    if batched:
        print(f"- mlp4x1024 (inference-heavy): c=32 adaptive batching vs one run per request: "
              f"{ratio(batched.c32_rps, off and off.c32_rps)} the Bento with batching off "
              f"(p99 {fmt(batched.c32_p99_ms, 1)} vs {fmt(off and off.c32_p99_ms, 1)} ms), "
              f"{ratio(batched.c32_rps, naive and naive.c32_rps)} the naive server "
              f"(p99 {fmt(naive and naive.c32_p99_ms, 1)} ms)")


if __name__ == "__main__":
    main()
