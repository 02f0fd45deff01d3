"""The slow-client guard's cost on the fast path: the server as shipped (adapters/http_guard.py over httptools)
against the same server entry with only the protocol swapped back to uvicorn's stock httptools one, which has
no header/body deadlines and no header bound.

Same Bento (RandomForest(100) on breast cancer, from bench_serving.py), same process settings, single-row
JSON requests on 127.0.0.1 by wrk (or bench_serving's socket generator), c=1 and c=32. The two servers are
run in alternation, ROUNDS times each, and the medians compared: the machine is shared and noisy, so the
ratio is the result, not the absolutes. Beside requests/s it reports the server's own CPU time per request
at c=32 (utime + stime from /proc, divided by the requests wrk counted), which a busy neighbour disturbs far
less than throughput.

Usage: python bench/bench_http_guard.py [--duration S] [--rounds N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_serving as bs  # the benchmark's shared models, servers and load generators

# The same server entry (adapters/server.py: same uvicorn config, same app, same shutdown) with only the
# protocol class swapped back to uvicorn's own: the one difference measured is the guard.
STOCK = ("import bento_compile.adapters.server as server; "
         "from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol; "
         "server.http_protocol = lambda settings=None: HttpToolsProtocol; server.main()")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def servers(bento: Path, body: bytes) -> dict[str, bs.Server]:
    guarded_port, stock_port = bs.free_port(), bs.free_port()
    # One process each: the protocol is what is compared (the stock variant patches it in this process only).
    env = {"BENTO_COMPILE_LOAD": "eager", "LOG_LEVEL": "warning", "BENTO_COMPILE_WORKERS": "1"}
    return {
        "guarded (shipped)": bs.Server("guarded", [sys.executable, "-m", "bento_compile.adapters.server"], guarded_port,
                                       body, env={**env, "BENTO_COMPILE_BENTO": str(bento),
                                                  "PORT": str(guarded_port), "BENTO_COMPILE_HTTP": "httptools"}),
        "stock httptools": bs.Server("stock", [sys.executable, "-c", STOCK], stock_port, body,
                                     env={**env, "BENTO_COMPILE_BENTO": str(bento), "PORT": str(stock_port)}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load point")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two servers")
    parser.add_argument("--json", type=Path, help="write the medians here")
    args = parser.parse_args()

    wrk = bs.ensure_wrk(print)
    bento = bs.build_bentos({"rf100": bs.train_models()["rf100"]})["rf100"]
    import numpy as np

    body = json.dumps({"inputs": np.load(bs.WORK / "sample.npy")[:1].tolist()}).encode()
    results: dict[str, dict[str, list[float]]] = {}
    for round_number in range(args.rounds):
        for label, server in servers(bento, body).items():
            try:
                server.start()
                one = bs.load(wrk, server.port, body, 1, args.duration)
                bs.load(wrk, server.port, body, 32, 1)  # warm at this concurrency, not measured
                cpu_before = cpu_seconds(server.proc.pid)
                many = bs.run_wrk(wrk, server.port, body, 32, args.duration) if wrk else bs.load(
                    wrk, server.port, body, 32, args.duration)
                cpu_us = (cpu_seconds(server.proc.pid) - cpu_before) * 1e6 / max(1.0, many.rps * args.duration)
            finally:
                server.close()
            row = results.setdefault(label, {"c1_rps": [], "c32_rps": [], "c32_p99_ms": [], "c32_cpu_us": []})
            row["c1_rps"].append(one.rps)
            row["c32_rps"].append(many.rps)
            row["c32_p99_ms"].append(many.p99_ms)
            row["c32_cpu_us"].append(cpu_us)
            print(f"round {round_number + 1}: {label:<18} c=1 {one.rps:8.0f} rps   c=32 {many.rps:8.0f} rps "
                  f"p99 {many.p99_ms:6.2f} ms  {cpu_us:6.1f} us CPU/request   errors {many.errors}")
    medians = {label: {key: statistics.median(values) for key, values in row.items()} for label, row in results.items()}
    guarded, stock = medians["guarded (shipped)"], medians["stock httptools"]
    print(f"\nmedians over {args.rounds} rounds, load by {'wrk' if wrk else 'the socket generator'}")
    print(f"{'server':<18} {'c=1 rps':>9} {'c=32 rps':>9} {'c=32 p99':>9} {'CPU/req':>9}")
    for label, row in medians.items():
        print(f"{label:<18} {row['c1_rps']:9.0f} {row['c32_rps']:9.0f} {row['c32_p99_ms']:8.2f}ms "
              f"{row['c32_cpu_us']:7.1f}us")
    print(f"guarded / stock: c=1 {guarded['c1_rps'] / stock['c1_rps']:.3f}, "
          f"c=32 {guarded['c32_rps'] / stock['c32_rps']:.3f}, CPU per request "
          f"{guarded['c32_cpu_us'] / stock['c32_cpu_us']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(medians, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
