"""GPU check for the runtime's execution providers; driven by bench/gpu_check.sh (read that first).

prepare (here, with the project's .venv): build a Bento of an MLP with four 1024-wide layers
  and download the runtime's wheels for Python 3.12 into bench/.work/gpu/, so the GPU machine
  (which has no registry) needs nothing else.
run (on the GPU machine): serve that Bento twice, BENTO_COMPILE_DEVICE=cpu and =cuda; check that
  /metadata of the cuda one reports CUDAExecutionProvider (the provider the session REALLY
  uses); print a latency/throughput table CPU vs CUDA over HTTP (single-row JSON, c=1 and
  c=32, adaptive batching) and raw session.run times for batches of 1 and 64. Exit status:
  0 = CUDA in use, 2 = no CUDA-capable onnxruntime (said why), 1 = anything else failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GPU_WORK = REPO / "bench" / ".work" / "gpu"
SECONDS = float(os.environ.get("GPU_CHECK_SECONDS", "5"))


def prepare() -> None:
    import warnings

    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import BentoConfig
    from bento_compile.core.store import BentoStore

    GPU_WORK.mkdir(parents=True, exist_ok=True)
    X, y = load_breast_cancer(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_pipeline(StandardScaler(), MLPClassifier((1024,) * 4, max_iter=20, random_state=0)).fit(X, y)
    import joblib

    joblib.dump(model, GPU_WORK / "mlp4x1024.joblib")
    np.save(GPU_WORK / "sample.npy", X[:64].astype(np.float32))
    config = BentoConfig.model_validate({"name": "mlp4x1024", "runtime": {"device": "auto"}})
    built = build(BuildRequest(GPU_WORK / "mlp4x1024.joblib", config, None, sample_path=GPU_WORK / "sample.npy"),
                  BentoStore(GPU_WORK / "store"))
    bento = GPU_WORK / "bento"
    subprocess.run(["rm", "-rf", str(bento)], check=True)
    subprocess.run(["cp", "-r", str(built.path), str(bento)], check=True)
    (GPU_WORK / "mlp4x1024.joblib").unlink()
    subprocess.run(["rm", "-rf", str(GPU_WORK / "store")], check=True)  # the copy in bento/ is what travels
    wheels = GPU_WORK / "wheels"
    subprocess.run(["rm", "-rf", str(wheels)], check=True)
    platforms = [a for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                               "manylinux2014_x86_64", "manylinux1_x86_64") for a in ("--platform", tag)]
    from importlib.metadata import version

    pins = [f"{name}=={version(name)}" for name in ("fastapi", "starlette", "uvicorn", "httptools", "orjson",
                                                     "prometheus-client", "pydantic", "pydantic-core")]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", *platforms, "-d", str(wheels), *pins], check=True)
    for heavy in wheels.glob("numpy-*"):  # the GPU machine has its own numpy
        heavy.unlink()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(REPO)], check=True)
    size = sum(p.stat().st_size for p in GPU_WORK.rglob("*") if p.is_file() and "store" not in p.parts)
    print(f"prepared {bento} and {len(list(wheels.glob('*.whl')))} wheels; carry bench/.work/gpu "
          f"(about {size / 2**20:.0f} MiB, the store/ folder excluded)")


def prepare_ort_gpu(version: str = "1.31.1", part_mib: int = 48) -> None:
    """Download onnxruntime-gpu (a CUDA 13 build; 255 MB) for Python 3.12 and split it into parts of
    `part_mib` MiB, one folder each (bench/.work/gpu-ort-1, -2, ...): the device tool carries at most
    64 MiB a call, so each part travels in its own call (`gpu_check.sh stage`) and `run` joins them."""
    import hashlib
    import shutil

    download = REPO / "bench" / ".work" / "gpu-ort-download"
    platforms = [a for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64")
                 for a in ("--platform", tag)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(download),
                    f"onnxruntime-gpu=={version}"], check=True)
    wheel = next(download.glob("onnxruntime_gpu-*.whl"))
    for old in (REPO / "bench" / ".work").glob("gpu-ort-[0-9]*"):
        shutil.rmtree(old)
    data = wheel.read_bytes()
    size = part_mib * 2**20
    count = 0
    for count, start in enumerate(range(0, len(data), size), start=1):
        folder = REPO / "bench" / ".work" / f"gpu-ort-{count}"
        folder.mkdir(parents=True)
        (folder / f"part-{count:02d}").write_bytes(data[start:start + size])
    GPU_WORK.mkdir(parents=True, exist_ok=True)
    (GPU_WORK / "ort-gpu.json").write_text(json.dumps({"name": wheel.name, "parts": count,
                                                       "sha256": hashlib.sha256(data).hexdigest()}))
    print(f"{wheel.name}: {count} parts in bench/.work/gpu-ort-1..{count}; carry each in its own call "
          "(bash bench/gpu_check.sh stage), then run")


def join_ort_gpu(parts_dir: Path, out_dir: Path) -> Path:
    """Join the staged parts into the wheel, checking the sha256 recorded by prepare_ort_gpu."""
    import hashlib

    meta = json.loads((GPU_WORK / "ort-gpu.json").read_text())
    parts = sorted(parts_dir.glob("part-*"))
    if len(parts) != meta["parts"]:
        raise SystemExit(f"{len(parts)} of {meta['parts']} onnxruntime-gpu parts staged in {parts_dir}: "
                         "stage the missing ones (bash bench/gpu_check.sh stage with each bench/.work/gpu-ort-K)")
    data = b"".join(p.read_bytes() for p in parts)
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise SystemExit("the joined onnxruntime-gpu wheel does not match its sha256: re-stage the parts")
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / meta["name"]
    wheel.write_bytes(data)
    print(wheel)
    return wheel


# ---- run -----------------------------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(device: str, port: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "BENTO_COMPILE_BENTO": str(GPU_WORK / "bento"), "PORT": str(port),
           "BENTO_COMPILE_DEVICE": device, "BENTO_COMPILE_LOAD": "eager",
           "BENTO_COMPILE_INTRA_OP_THREADS": "0" if device == "cpu" else "1"}
    # cwd outside the repository: its bento_compile/ folder (the CLI half) would shadow the installed package
    return subprocess.Popen([sys.executable, "-m", "bento_compile.adapters.server"], env=env, cwd=GPU_WORK,
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server not ready in time")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


async def socket_load(port: int, body: bytes, connections: int, seconds: float) -> tuple[float, float, float, int]:
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
            await reader.readexactly(int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1)))
            latencies.append(time.perf_counter() - t)
            errors += not head.startswith(b"HTTP/1.1 200")
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1e3  # noqa: E731
    return len(latencies) / elapsed, pick(0.5), pick(0.99), errors


def raw_session_times(providers: list[str]) -> dict[int, float]:
    """Median ms of session.run for batches of 1 and 64 on exactly these providers."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(GPU_WORK / "bento" / "model.onnx"), providers=providers)
    name = session.get_inputs()[0].name
    sample = np.load(GPU_WORK / "sample.npy")
    out = {}
    for n in (1, 64):
        x = sample[:n]
        for _ in range(5):
            session.run(None, {name: x})
        times = []
        for _ in range(50):
            t = time.perf_counter()
            session.run(None, {name: x})
            times.append(time.perf_counter() - t)
        out[n] = sorted(times)[len(times) // 2] * 1e3
    return out


def run() -> int:
    import numpy as np
    import onnxruntime as ort

    print(f"python {sys.version.split()[0]}; onnxruntime {ort.__version__} from {Path(ort.__file__).parent}; "
          f"available providers: {ort.get_available_providers()}")
    try:
        gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip() or "none listed"
    except FileNotFoundError:
        gpu = "no nvidia-smi on this machine"
    print(f"GPU: {gpu}")
    sample = np.load(GPU_WORK / "sample.npy")
    body = json.dumps({"inputs": [sample[0].astype(float).tolist()]}).encode()
    rows = []
    cuda_in_use = False
    for device in ("cpu", "cuda"):
        port = free_port()
        log_path = Path(os.environ.get("OUT", "/tmp")) / f"server-{device}.log"
        proc = start_server(device, port, log_path)
        try:
            try:
                ready = wait_ready(port, proc)
            except RuntimeError:
                print(f"server log ({device}):\n" + log_path.read_text(errors="replace")[-3000:])
                raise
            meta = get_json(f"http://127.0.0.1:{port}/metadata")
            asyncio.run(socket_load(port, body, 8, 1.0))  # warm-up (CUDA kernels, batch sizes)
            c1 = asyncio.run(socket_load(port, body, 1, SECONDS))
            c32 = asyncio.run(socket_load(port, body, 32, SECONDS))
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            info = re.search(r'bento_model_info\{[^}]*\}', metrics)
            rows.append((device, meta["device"], ",".join(meta["providers"]), ready, c1, c32))
            print(f"device={device}: /metadata providers {meta['providers']} (device {meta['device']}); "
                  f"metrics: {info.group(0) if info else 'no bento_model_info'}")
            if device == "cuda":
                cuda_in_use = meta["providers"][0] == "CUDAExecutionProvider"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if device == "cuda" and not cuda_in_use:
            print("server log (cuda):\n" + log_path.read_text(errors="replace")[-2000:])
    print("\n| asked | in use | providers | ready s | c=1 rps | c=1 p50 ms | c=32 rps | c=32 p50 ms | c=32 p99 ms "
          "| non-200 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for device, used, providers, ready, c1, c32 in rows:
        print(f"| {device} | {used} | {providers} | {ready:.2f} | {c1[0]:,.0f} | {c1[1]:.2f} | {c32[0]:,.0f} | "
              f"{c32[1]:.2f} | {c32[2]:.2f} | {c1[3] + c32[3]} |")
    print("\nraw session.run, median ms (batch 1 / batch 64):")
    print(f"- CPU: {raw_session_times(['CPUExecutionProvider'])}")
    if cuda_in_use:
        print(f"- CUDA: {raw_session_times(['CUDAExecutionProvider', 'CPUExecutionProvider'])}")
        print("\nCUDA CHECK: PASS — the session runs on CUDAExecutionProvider and /metadata says so")
        return 0
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("\nCUDA CHECK: NOT RUN — this onnxruntime has no CUDAExecutionProvider (the CPU wheel). The runtime "
              "reported the truth (CPUExecutionProvider) for device=cuda. Install onnxruntime-gpu built for this "
              "machine's CUDA (never beside onnxruntime in one environment) and run again.")
        return 2
    print("\nCUDA CHECK: FAIL — onnxruntime-gpu is installed but the session fell back to the CPU (CUDA/cuDNN "
          "libraries of the wrong major version, or no GPU); see the server log above")
    return 1


if __name__ == "__main__":
    if sys.argv[1:] == ["prepare"]:
        prepare()
    elif sys.argv[1:] == ["prepare-ort-gpu"]:
        prepare_ort_gpu()
    elif sys.argv[1:2] == ["join-ort-gpu"] and len(sys.argv) == 4:
        join_ort_gpu(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1:] == ["run"]:
        sys.exit(run())
    else:
        sys.exit("usage: python bench/gpu_check.py prepare|prepare-ort-gpu|join-ort-gpu PARTS OUT|run")
