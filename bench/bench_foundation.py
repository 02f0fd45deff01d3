"""Foundation benchmark: the compiled Bento vs the same model served the naive way.

Prints, for each model, in ONE run (ratios are what to read; the machines are
shared and noisy):
  - cold start: process start → first prediction, in a fresh interpreter
    (Bento: runtime import + hash check + session; naive: joblib + scikit-learn);
  - HTTP cold start: server process start → first 200 from /predict;
  - per-request latency over HTTP with keep-alive, single-row JSON requests
    (Bento server vs a naive FastAPI + joblib/scikit-learn server), median and p99;
  - in-process predict latency for one row (JSON-shaped in, lists out).

Usage: python bench/bench_foundation.py [--quick]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "breast_cancer"))
import train  # noqa: E402  (the README's example pipeline)

NAIVE_SERVER = textwrap.dedent("""
    import sys, joblib, numpy as np, uvicorn
    from fastapi import FastAPI, Request
    model = joblib.load(sys.argv[1])
    app = FastAPI()
    @app.post("/predict")
    async def predict(request: Request):
        X = np.asarray((await request.json())["inputs"], dtype=np.float64)
        return {"outputs": {"label": model.predict(X).tolist(), "probabilities": model.predict_proba(X).tolist()}}
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
""")

BENTO_COLD = "import sys,time;from bento_compile.runtimes.model import BentoModel;" \
    "m=BentoModel.load(sys.argv[1]);m.predict({'inputs':[[0.1]*30]})"
NAIVE_COLD = "import sys,joblib,numpy as np;m=joblib.load(sys.argv[1]);" \
    "m.predict_proba(np.full((1,30),0.1))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cold_start(code: str, arg: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, arg], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def post(conn: http.client.HTTPConnection, body: bytes) -> int:
    conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def http_run(command: list[str], port: int, body: bytes, requests: int) -> tuple[float, float, float]:
    """(cold start to first 200, median latency, p99 latency) for one server process."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                if post(conn, body) == 200:
                    break
            except OSError:
                time.sleep(0.005)
            if time.perf_counter() - started > 60:
                raise RuntimeError(f"{command} did not answer in 60 s")
        cold = time.perf_counter() - started
        latencies = []
        for _ in range(requests):
            t = time.perf_counter()
            assert post(conn, body) == 200
            latencies.append(time.perf_counter() - t)
        latencies.sort()
        return cold, statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def in_process(fn, runs: int) -> float:
    for _ in range(50):
        fn()
    started = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - started) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args()
    cold_runs, requests, inproc = (2, 200, 500) if args.quick else (5, 2000, 5000)

    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import BentoConfig
    from bento_compile.core.store import BentoStore
    from bento_compile.runtimes.model import BentoModel

    X, y = load_breast_cancer(return_X_y=True)
    models = {
        "pipeline+logreg": train.make_pipeline().fit(X, y),
        "random forest(100)": RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1).fit(X, y),
    }
    row = X[:1].astype(np.float32)
    body = json.dumps({"inputs": row.tolist()}).encode()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = BentoStore(Path(tmp) / "store")
        for label, model in models.items():
            path = Path(tmp) / f"{len(rows)}.joblib"
            joblib.dump(model, path)
            bento = build(BuildRequest(path, BentoConfig(), name="bench"), store).path
            loaded = BentoModel.load(bento)
            payload = {"inputs": row.tolist()}
            port_b, port_n = free_port(), free_port()
            bento_http = http_run([sys.executable, "-c",
                                   "import os,sys;from bento_compile.adapters.server import run;"
                                   f"run(sys.argv[1], port={port_b}, load_mode='eager', log_level='warning')",
                                   str(bento)], port_b, body, requests)
            naive_http = http_run([sys.executable, "-c", NAIVE_SERVER, str(path), str(port_n)], port_n, body,
                                  requests)
            rows.append({
                "model": label,
                "cold_bento": cold_start(BENTO_COLD, str(bento), cold_runs),
                "cold_naive": cold_start(NAIVE_COLD, str(path), cold_runs),
                "http_cold_bento": bento_http[0], "http_cold_naive": naive_http[0],
                "p50_bento": bento_http[1], "p50_naive": naive_http[1],
                "p99_bento": bento_http[2], "p99_naive": naive_http[2],
                "inproc_bento": in_process(lambda m=loaded, p=payload: m.predict(p), inproc),
                "inproc_naive": in_process(lambda m=model: (m.predict(row), m.predict_proba(row)), inproc),
            })
    print_table(rows, args.quick)


def print_table(rows: list[dict], quick: bool) -> None:
    import onnxruntime
    import sklearn

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; python "
          f"{platform.python_version()}; onnxruntime {onnxruntime.__version__}; scikit-learn {sklearn.__version__}"
          f"{' (quick run)' if quick else ''}")
    print()
    head = ("model", "metric", "bento", "naive", "naive/bento")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    metrics = [("cold start → 1st prediction", "cold", 1e3, "ms"),
               ("HTTP cold start → 1st 200", "http_cold", 1e3, "ms"),
               ("HTTP latency p50 (1 row)", "p50", 1e6, "µs"),
               ("HTTP latency p99 (1 row)", "p99", 1e6, "µs"),
               ("in-process predict (1 row)", "inproc", 1e6, "µs")]
    for r in rows:
        for title, key, scale, unit in metrics:
            bento, naive = r[f"{key}_bento"], r[f"{key}_naive"]
            print(f"| {r['model']} | {title} | {bento * scale:.0f} {unit} | {naive * scale:.0f} {unit} | "
                  f"{naive / bento:.2f}× |")


if __name__ == "__main__":
    main()
