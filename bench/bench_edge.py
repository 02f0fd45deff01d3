"""Edge bundle: build, offline install, and the three `run` modes on the device (native x86_64,
and with --arm64 an arm64 Debian root under qemu-user).

What a device owner pays: bundle size and installed size; install time; a one-shot `run predict`
(a process per request) against the `run lines` loop and the HTTP server (one process, many
requests); the memory the estimate promised against the peak the process really reached (VmHWM).

    python bench/bench_edge.py [--arm64] [--requests 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import edge_support as es  # noqa: E402  (the tiny model and its bundles)

ROW = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f} µs"


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def hwm(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) * 1024


def lines_latency(command: list[str], n: int, env: dict | None = None) -> tuple[list[float], int]:
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1, env=env)
    line = json.dumps(ROW) + "\n"
    proc.stdin.write(line)
    proc.stdin.flush()
    proc.stdout.readline()  # warm
    times = []
    for _ in range(n):
        started = time.perf_counter()
        proc.stdin.write(line)
        proc.stdin.flush()
        proc.stdout.readline()
        times.append(time.perf_counter() - started)
    peak = 0
    try:
        # the python process is the one exec'd by `run` (or a child of chroot)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        peak = max([hwm(proc.pid)] + [hwm(int(c)) for c in children])
    except (OSError, AttributeError, ValueError):
        pass
    proc.stdin.close()
    proc.wait(timeout=60)
    return times, peak


def one_shot(command: list[str], n: int, env: dict | None = None) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        subprocess.run(command, input=json.dumps(ROW), capture_output=True, text=True, check=True, env=env)
        times.append(time.perf_counter() - started)
    return times


def http_latency(port: int, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps(ROW)
    times = []
    for i in range(n + 1):
        started = time.perf_counter()
        conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
        conn.getresponse().read()
        if i:
            times.append(time.perf_counter() - started)
    return times


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 2 else values[0]


def native(n: int, rows: list[tuple[str, str, str]]) -> None:
    from bento_compile.targets.edge import EdgeOptions, build_edge_bundle

    python = es.system_python_version() or "3.11"
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        built = build_edge_bundle(es.tiny_bento(), EdgeOptions(arch="x86_64", python=python), Path(tmp) / "dist")
        rows.append(("x86_64", "build (wheels from pip's cache)", ms(time.perf_counter() - started)))
        rows.append(("x86_64", "bundle / installed size", f"{mib(built.size)} / ≈ {mib(built.installed_size)}"))
        folder = es.unpack(built.path, Path(tmp) / "unpacked")
        prefix = Path(tmp) / "opt"
        started = time.perf_counter()
        subprocess.run(["unshare", "-n", "sh", str(folder / "install.sh"), "--prefix", str(prefix), "--python",
                        str(es.SYSTEM_PYTHON), "--no-service"], check=True, capture_output=True)
        rows.append(("x86_64", "install.sh, offline (verify + venv + pip + check)", ms(time.perf_counter() - started)))
        run = str(prefix / "current" / "run")
        shots = one_shot([run, "predict"], 5)
        rows.append(("x86_64", "one-shot `run predict` (process per request), median", ms(statistics.median(shots))))
        times, peak = lines_latency([run, "lines"], n)
        rows.append(("x86_64", f"`run lines`, 1 row, p50 / p99 of {n}", f"{ms(p(times, 50))} / {ms(p(times, 99))}"))
        port = es_free_port()
        server = subprocess.Popen([run, "serve"], env={**os.environ, "PORT": str(port),
                                                        "BENTO_COMPILE_LOAD": "eager"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait(port)
            times_http = http_latency(port, n)
            rows.append(("x86_64", f"`run serve` HTTP /predict, 1 row, p50 / p99 of {n}",
                         f"{ms(p(times_http, 50))} / {ms(p(times_http, 99))}"))
            children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
            serve_peak = max([hwm(server.pid)] + [hwm(int(c)) for c in children])
        finally:
            server.terminate()
            server.wait(timeout=30)
        rows.append(("x86_64", "memory: estimate (in bundle.json) / peak `lines` / peak `serve`",
                     f"{mib(built.memory_bytes)} / {mib(peak)} / {mib(serve_peak)}"))


def es_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(port: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server on {port} not ready")


def arm64(n: int, rows: list[tuple[str, str, str]]) -> None:
    from bento_compile.tools.flash import flash
    from tests.support import edge_rootfs

    bundle = es.bundle("arm64", "3.11")
    with edge_rootfs.arm64_chroot() as ch:
        flash(bundle, str(ch.root), service=False)
        started = time.perf_counter()
        result = ch.run("/opt/tiny/current/install.sh --finish", offline=True, timeout=1800)
        assert result.returncode == 0, result.stderr
        rows.append(("arm64 (qemu)", "first boot: install.sh --finish, offline", ms(time.perf_counter() - started)))
        env = ch._env(None)
        prefix = ["chroot", str(ch.root)]
        shots = one_shot([*prefix, "/opt/tiny/current/run", "predict"], 3, env=env)
        rows.append(("arm64 (qemu)", "one-shot `run predict`, median", ms(statistics.median(shots))))
        times, _ = lines_latency([*prefix, "/opt/tiny/current/run", "lines"], max(20, n // 5), env=env)
        rows.append(("arm64 (qemu)", f"`run lines`, 1 row, p50 / p99 of {len(times)}",
                     f"{ms(p(times, 50))} / {ms(p(times, 99))}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm64", action="store_true", help="also measure under qemu-user (root, a few minutes)")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    import onnxruntime

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; python "
          f"{platform.python_version()}; onnxruntime {onnxruntime.__version__}; device python "
          f"{es.system_python_version()}")
    rows: list[tuple[str, str, str]] = []
    try:
        native(args.requests, rows)
        if args.arm64:
            arm64(args.requests, rows)
    finally:
        es.cleanup()
    print("\n| where | what | result |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
