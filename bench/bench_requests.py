"""Request-pipeline benchmark: JPEG in → label out, the Bento's server vs a naive FastAPI + PIL + ORT server.

In ONE run (ratios are what to read; the machines are shared and noisy):
  - throughput and latency (p50/p99) at concurrency 8 over HTTP keep-alive, one real JPEG per request
    (scikit-image's rocket.jpg), for
      bento: `python -m bento_compile.adapters.server` on the examples/image_classifier Bento
             (Pillow decode/resize in the runtime; softmax + top-5 folded into the ONNX graph);
      naive: FastAPI + `await request.body()` + PIL + the torchvision transforms written in numpy
             + onnxruntime + softmax/argsort in numpy + label lookup, the way such a server is written;
    both uvicorn with one worker process;
  - request body size: the JPEG vs the same image as a float JSON tensor (what the Bento took before);
  - with --sizes: Lambda zip sizes and edge bundle sizes (x86_64, Python 3.11) of a tabular Bento
    (breast_cancer) and of the image Bento, to show what image support adds and that a tabular
    artifact does not carry it; --sizes-only measures just these, without the throughput rounds.

Usage: python bench/bench_requests.py [--seconds 10] [--sizes | --sizes-only]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

NAIVE_SERVER = textwrap.dedent("""
    import io, sys
    import numpy as np, onnxruntime as ort, uvicorn
    from fastapi import FastAPI, Request
    from PIL import Image
    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    session.set_providers(["CPUExecutionProvider"])
    labels = open(sys.argv[3]).read().splitlines()
    MEAN = np.array([0.485, 0.456, 0.406], np.float32); STD = np.array([0.229, 0.224, 0.225], np.float32)
    def transform(image):  # torchvision: Resize(256), CenterCrop(224), ToTensor(), Normalize(MEAN, STD)
        w, h = image.size
        if w <= h: size = (256, int(256 * h / w))
        else: size = (int(256 * w / h), 256)
        image = image.resize(size, Image.BILINEAR)
        left, top = round((size[0] - 224) / 2), round((size[1] - 224) / 2)
        x = np.asarray(image.crop((left, top, left + 224, top + 224)), np.float32) / 255
        return ((x - MEAN) / STD).transpose(2, 0, 1)
    app = FastAPI()
    @app.post("/predict")
    async def predict(request: Request):
        image = Image.open(io.BytesIO(await request.body())).convert("RGB")
        logits = session.run(["output"], {"image": transform(image)[None]})[0][0]
        scores = np.exp(logits - logits.max()); scores /= scores.sum()
        top = np.argsort(-scores)[:5]
        return {"label": labels[top[0]], "score": float(scores[top[0]]),
                "top_k": [{"label": labels[i], "score": float(scores[i])} for i in top]}
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process, started and stopped by PID."""

    def __init__(self, label: str, argv: list[str], port: int, env: dict[str, str] | None = None):
        self.label, self.argv, self.port = label, argv, port
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, body: bytes, timeout: float = 120.0) -> float:
        started = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}")
            with contextlib.suppress(OSError):
                status, _ = post(self.port, body)
                if status == 200:
                    return time.perf_counter() - started
            time.sleep(0.02)
        raise RuntimeError(f"{self.label} gave no 200 within {timeout}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def post(port: int, body: bytes, connection: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/predict", body=body, headers={"content-type": "image/jpeg"})
    response = conn.getresponse()
    data = response.read()
    if connection is None:
        conn.close()
    return response.status, data


def load(port: int, body: bytes, seconds: float, concurrency: int) -> dict[str, float]:
    """Closed-loop clients on keep-alive connections; requests/s and latency percentiles."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status, _ = post(port, body, conn)
            mine.append(time.perf_counter() - started)
            if status != 200:
                errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000, "errors": errors[0]}


def build_image_bento(work: Path, store_home: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import load_config
    from bento_compile.core.store import BentoStore
    from tests.support.helpers import load_example_script

    load_example_script("image_classifier").main(work)
    shutil.copyfile(REPO / "examples" / "image_classifier" / "bento.yaml", work / "bento.yaml")
    config, config_dir = load_config(work / "bento.yaml")
    return build(BuildRequest(None, config, config_dir), BentoStore(store_home)).path


def build_tabular_bento(work: Path, store_home: Path) -> Path:
    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import load_config
    from bento_compile.core.store import BentoStore
    from tests.support.helpers import load_example_script

    work.mkdir(parents=True, exist_ok=True)
    load_example_script("breast_cancer").main(work)
    shutil.copyfile(REPO / "examples" / "breast_cancer" / "bento.yaml", work / "bento.yaml")
    config, config_dir = load_config(work / "bento.yaml")
    return build(BuildRequest(None, config, config_dir), BentoStore(store_home)).path


def report_sizes(root: Path, image: Path) -> None:
    """Lambda zip and edge bundle sizes of a tabular Bento and of the image Bento, as Markdown tables."""
    from bento_compile.targets.edge import EdgeOptions, build_edge_bundle
    from bento_compile.targets.lambda_zip import build_lambda_zip

    tabular = build_tabular_bento(root / "tabular", root / "store")
    bentos = (("tabular (breast_cancer)", "tabular", tabular), ("image classifier", "image", image))
    print("\n| Bento | Lambda zip (zipped) | unzipped |\n|---|---|---|")
    for label, short, folder in bentos:
        built = build_lambda_zip(folder, "x86_64", "3.12", root / f"dist-lambda-{short}", template=False)
        print(f"| {label} | {built.zipped_bytes / 2**20:.1f} MiB | {built.unzipped_bytes / 2**20:.1f} MiB |")
    print("\n| Bento | edge bundle (x86_64, Python 3.11) | installed (estimate) | wheels beyond the tabular one's |"
          "\n|---|---|---|---|")
    first: set[str] | None = None
    for label, short, folder in bentos:
        # measure=False: the peak-RSS probe is printed only and is not what this table compares.
        bundle = build_edge_bundle(folder, EdgeOptions(arch="x86_64", python="3.11", measure=False),
                                   root / f"dist-edge-{short}")
        names = {f"{w.name} {w.version}" for w in bundle.wheels}
        extra = ", ".join(sorted(names - first)) if first is not None else f"({len(names)} wheels)"
        first = names if first is None else first
        print(f"| {label} | {bundle.size / 2**20:.1f} MiB | {bundle.installed_size / 2**20:.1f} MiB | {extra} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sizes", action="store_true",
                        help="also build the Lambda zips and edge bundles and report their sizes")
    parser.add_argument("--sizes-only", action="store_true",
                        help="only build the Lambda zips and edge bundles and report their sizes (no servers)")
    args = parser.parse_args()
    import numpy as np
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="bench-requests-") as tmp:
        root = Path(tmp)
        bento = build_image_bento(root / "image", root / "store")
        jpeg = (root / "image" / "images" / "rocket.jpg").read_bytes()
        tensor_json = json.dumps({"inputs": np.random.default_rng(0).normal(size=(1, 3, 224, 224))
                                  .astype(np.float32).tolist()})
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; python "
              f"{platform.python_version()}; onnxruntime {onnxruntime.__version__}")
        if args.sizes_only:
            report_sizes(root, bento)
            return
        print(f"body: JPEG {len(jpeg)} bytes; float32 tensor as JSON {len(tensor_json)} bytes "
              f"({len(tensor_json) / len(jpeg):.1f}x larger)")
        port_b, port_n = free_port(), free_port()
        servers = [
            Server("bento", [PY, "-m", "bento_compile.adapters.server"], port_b,
                   {"BENTO_COMPILE_BENTO": str(bento), "PORT": str(port_b), "BENTO_COMPILE_WORKERS": "1",
                    "BENTO_COMPILE_LOAD": "eager"}),
            Server("naive", [PY, "-c", NAIVE_SERVER, str(bento / "model.onnx"), str(port_n),
                             str(root / "image" / "labels.txt")], port_n),
        ]
        results = {}
        for server in servers:
            try:
                cold = server.start(jpeg)
                _status, answer = post(server.port, jpeg)
                print(f"{server.label}: first 200 after {cold:.2f}s; answer {answer[:120]!r}")
                load(server.port, jpeg, 2.0, args.concurrency)  # warm-up
                results[server.label] = load(server.port, jpeg, args.seconds, args.concurrency)
            finally:
                server.stop()
        print(f"\n| server | requests/s (c={args.concurrency}) | p50 | p99 | errors |")
        print("|---|---|---|---|---|")
        for label, r in results.items():
            print(f"| {label} | {r['rps']:.1f} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['errors']} |")
        print(f"\nthroughput bento/naive: {results['bento']['rps'] / results['naive']['rps']:.2f}x")
        if args.sizes:
            report_sizes(root, bento)

if __name__ == "__main__":
    main()
