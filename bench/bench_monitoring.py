"""What drift monitoring costs: the same monitored Bento served and batch-scored with monitoring on
(histograms + a 1 % sampled prediction log to a file) and off (BENTO_COMPILE_MONITORING=off), in the
same run, alternated ROUNDS times, medians compared (the machine is shared: the ratio is the result).

  HTTP: `bento-compile serve` (the shipped server), single-row JSON requests at c=32 (wrk, or
        bench_serving's socket generator), requests/s and cold start (spawn → first 200);
  batch: the batch scorer on 8192-row record batches of the breast-cancer rows, rows/s.

Goal (issue): on costs ≤ 5 % of c=32 throughput and of batch rows/s; cold start unchanged within noise.

Usage: python bench/bench_monitoring.py [--duration S] [--rounds N] [--workers N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_serving as bs  # the shared server wrapper and load generators
import numpy as np


def build(folder: Path) -> Path:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from tests.monitoring.conftest import build_monitored
    from tests.support.helpers import load_example_script

    example = folder / "example"
    example.mkdir()
    load_example_script("breast_cancer").main(example)
    (example / "bento.yaml").write_text((bs.REPO / "examples/breast_cancer/bento.yaml").read_text())
    X, y = load_breast_cancer(return_X_y=True)
    X_train = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)[0].astype(np.float32)
    target = folder / "bento"
    target.mkdir()
    return build_monitored(example, target, X_train, f"""
monitoring:
  baseline: baseline.npy
  log:
    sample_rate: 0.01
    to: file:{folder / 'predictions.jsonl'}
""")


def batch_rows_per_second(bento: Path, monitoring: str, rounds: int = 5) -> float:
    import pyarrow as pa
    from sklearn.datasets import load_breast_cancer

    from bento_compile.batch.scorer import ScoreOptions, Scorer

    os.environ["BENTO_COMPILE_MONITORING"] = monitoring
    X = np.tile(load_breast_cancer(return_X_y=True)[0].astype(np.float32), (15, 1))[:8192]
    names = [f"c{j}" for j in range(30)]
    table = pa.table({n: X[:, j] for j, n in enumerate(names)})
    scorer = Scorer(bento, ScoreOptions(features=tuple(names)))
    scorer.score(table)
    best = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(5):
            scorer.score(table)
        best.append(5 * len(X) / (time.perf_counter() - started))
    os.environ.pop("BENTO_COMPILE_MONITORING")
    return statistics.median(best)


def per_run_cost(bento: Path) -> dict[str, dict[str, float]]:
    """Microseconds per model run, session alone vs the monitored session (binning + 1 % log offer), by rows:
    the part of the cost that does not depend on the HTTP stack or the machine's neighbours as much."""
    from sklearn.datasets import load_breast_cancer

    from bento_compile.runtimes.model import BentoModel

    os.environ["BENTO_COMPILE_MONITORING"] = "on"
    monitored = BentoModel.load(bento).backend
    os.environ.pop("BENTO_COMPILE_MONITORING")
    bare = monitored._backend
    X = np.tile(load_breast_cancer(return_X_y=True)[0].astype(np.float32), (15, 1))
    found = {}
    for rows in (1, 32, 256, 8192):
        feeds = {"input": X[:rows]}
        times = {}
        for label, backend in (("bare", bare), ("monitored", monitored)):
            runs = max(20, 20000 // rows)
            backend.run(feeds)
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(runs):
                    backend.run(feeds)
                best = min(best, (time.perf_counter() - started) / runs * 1e6)
            times[label] = round(best, 1)
        times["cost"] = round(times["monitored"] / times["bare"] - 1, 3)
        found[str(rows)] = times
    monitored.prediction_log.close()
    return found


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its live children (the serve supervisor and its workers)."""
    def stat(p: str) -> list[str]:
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()

    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = stat(entry)
            if int(entry) == pid or int(fields[1]) == pid:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
    return total


def http_point(bento: Path, monitoring: str, wrk, seconds: float, workers: str = "") -> tuple[float, float, float]:
    """Requests/s at c=32, cold start, and the server's CPU µs per request (all its processes)."""
    port = bs.free_port()
    body = json.dumps({"inputs": [[14.0] * 30]}).encode()
    server = bs.Server(f"monitoring {monitoring}", [sys.executable, "-m", "bento_compile.cli", "serve", "cancer:latest",
                                                    "--port", str(port)], port, body,
                       env={"BENTO_COMPILE_MONITORING": monitoring, "BENTO_COMPILE_HOME": str(bento.parents[2]),
                            **({"BENTO_COMPILE_WORKERS": workers} if workers else {})})
    try:
        cold = server.start()
        bs.load(wrk, port, body, 32, 1)  # warm (the batcher's latency model, the FastAPI build)
        cpu = tree_cpu_seconds(server.proc.pid)
        result = bs.load(wrk, port, body, 32, seconds)
        cpu = tree_cpu_seconds(server.proc.pid) - cpu
        return result.rps, cold, cpu * 1e6 / max(1.0, result.rps * seconds)
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workers", default="", help="server worker processes (default: as shipped, one per CPU)")
    args = parser.parse_args()
    wrk = bs.ensure_wrk(lambda message: print(message, file=sys.stderr))
    bs.WORK.mkdir(parents=True, exist_ok=True)  # wrk's request script lives there
    # Servers and log threads may still be closing their files when the run ends.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        bento = build(Path(tmp))
        per_run = per_run_cost(bento)
        figures: dict[str, list[float]] = {k: [] for k in ("rps_on", "rps_off", "cold_on", "cold_off",
                                                             "cpu_us_on", "cpu_us_off", "batch_on", "batch_off")}
        for round_ in range(args.rounds):
            # Alternated, and which goes first alternates too: neither always meets the busier half of a round.
            for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                rps, cold, cpu_us = http_point(bento, mode, wrk, args.duration, args.workers)
                figures[f"rps_{mode}"].append(rps)
                figures[f"cold_{mode}"].append(cold)
                figures[f"cpu_us_{mode}"].append(cpu_us)
                figures[f"batch_{mode}"].append(batch_rows_per_second(bento, mode))
    medians = {k: statistics.median(v) for k, v in figures.items()}
    result = {**medians, "http_cost": 1 - medians["rps_on"] / medians["rps_off"],
              "batch_cost": 1 - medians["batch_on"] / medians["batch_off"],
              "cpu_per_request_cost": medians["cpu_us_on"] / medians["cpu_us_off"] - 1, "per_run_us": per_run,
              "rounds": figures, "load_average": os.getloadavg(),
              "machine": bs.machine(),
              "load": "wrk" if wrk else "socket generator", "workers": args.workers or "auto"}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
