"""Tail benchmark: the Bento's HTTP server vs the naive FastAPI + ONNX Runtime server, in alternating rounds.

Each round starts each server fresh (the order flips every round), loads it at c = 1, 8, 32 and 128
connections with `wrk` (closed loop, single-row JSON, GradientBoosting(100) on breast-cancer), and
reads the Bento server's own /metrics before and after every point, so each point also says where
the server spent the time of its slow requests: the p99 of each phase (read, parse, queue wait,
run, loop_blocked: waiting behind other batches' runs on the event loop, encode, write) and the
cyclic-GC pauses (count per second, longest bucket). The Bento runs with 1 and 2 worker processes
(`--workers 1 2 4` for more), each under the lean HTTP protocol and under uvicorn's httptools one
(`--http`, BENTO_COMPILE_HTTP: an A/B of the protocol in the same rounds); the naive server is one
process, as in bench_serving.py, whose naive server and wrk helpers this reuses. Medians over rounds;
the machine's load average is printed with the results (a shared machine: read the ratios within one run).

Every point also reports the server's CPU time per request: utime + stime of every process of the
server (the supervisor and its workers) from /proc/<pid>/stat before and after the point, over the
requests wrk completed. It is the figure that does not move with the neighbours' load: on a server
that has a core to itself, rps is one core over it.

`--pin` gives the load generator and the servers CPUs of their own (sched affinity, inherited by
every worker and thread): by default wrk gets the first quarter of this process's CPUs (at least
one, one wrk thread per CPU) and every server the rest; `--wrk-cpus 0` / `--server-cpus 1` choose.
On a 2-core machine that is wrk on one core and each server on the other, the naive one alike.
`--nice -10` (root) runs wrk and every server at that priority, so that other processes on a shared
machine take less of their CPUs (the same for every server). On a many-core machine,
`--pin --workers 1 2 4 8` measures how workers scale: `bench/gpu_check.sh prepare-tail` packs the
Bento, the request, wrk and its library for a machine with no registry, `bench/gpu_check.sh tail` runs
it there (`--bento`, `--body`, `--wrk` take the packed ones).

Usage: python bench/bench_tail.py [--rounds 5] [--duration 3] [--workers 1 2] [--http lean httptools]
                                  [--concurrency 1 8 32 128]
                                  [--pin [--wrk-cpus LIST] [--server-cpus LIST]] [--nice N] [--json OUT]
                                  [--bento DIR --body FILE] [--wrk PATH] [--prepare-kit DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serving as serving  # the naive server, Server, ensure_wrk, free_port

WORK = serving.REPO / "bench" / ".work" / "tail"
CONCURRENCY = (1, 8, 32, 128)
# wrk prints p50/p99 with --latency but not p99.9: ask its own histogram, in microseconds.
WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = %s
done = function(summary, latency, requests)
  io.write(string.format("TAIL %%d %%d %%d %%d %%f %%f %%f\\n", summary.requests,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout, latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"""
PHASES = ("read", "parse", "loop_blocked", "encode", "write")
# The Bento server's HTTP protocols compared by default (adapters/server.py): the lean one (the default) and
# uvicorn's httptools protocol it replaced, as an A/B within each round.
PROTOCOLS = ("lean", "httptools")


def build() -> tuple[Path, bytes]:
    import joblib
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import GradientBoostingClassifier

    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import BentoConfig
    from bento_compile.core.store import BentoStore

    WORK.mkdir(parents=True, exist_ok=True)
    X, y = load_breast_cancer(return_X_y=True)
    X = X.astype(np.float32)
    model_path = WORK / "gb100.joblib"
    if not model_path.exists():
        joblib.dump(GradientBoostingClassifier(n_estimators=100, random_state=0).fit(X, y), model_path)
    np.save(WORK / "sample.npy", X[:64])
    config = BentoConfig.model_validate({"name": "gbtail"})
    bento = build(BuildRequest(model_path, config, None, sample_path=WORK / "sample.npy"),
                  BentoStore(WORK / "store")).path
    return bento, json.dumps({"inputs": X[:1].tolist()}).encode()


def wrk_point(wrk: str, port: int, body: bytes, connections: int, seconds: float, cpus: set[int] | None = None) -> dict:
    """One closed-loop point; `cpus`: the CPUs wrk runs on (one wrk thread each), None = anywhere, one thread."""
    script = WORK / "tail.lua"
    script.write_text(WRK_SCRIPT % json.dumps(body.decode()))
    threads = min(len(cpus), connections) if cpus else 1
    out = subprocess.run([*pinned(cpus), wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                          "-s", str(script), f"http://127.0.0.1:{port}/predict"],
                         capture_output=True, text=True, check=True).stdout
    found = re.search(r"TAIL (\d+) (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+)", out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests, status, socket_errors, timeouts = (int(found[i]) for i in range(1, 5))
    return {"rps": rps, "requests": requests, "non_2xx": status, "socket_errors": socket_errors,
            "timeouts": timeouts, "p50_ms": float(found[5]) / 1e3, "p99_ms": float(found[6]) / 1e3,
            "p999_ms": float(found[7]) / 1e3}


# ---- CPUs: pinning and the server's CPU time -------------------------------------------------

def parse_cpus(text: str) -> set[int]:
    """'0-3,8' → {0, 1, 2, 3, 8} (the list format of taskset and /sys)."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def cpu_split(wrk_cpus: str | None, server_cpus: str | None) -> tuple[set[int], set[int]]:
    """wrk's CPUs and the servers' (disjoint): given, else the first quarter (at least one) and the rest."""
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2 and not (wrk_cpus and server_cpus):
        raise SystemExit("--pin needs at least 2 CPUs (one for wrk, one for the servers)")
    load = parse_cpus(wrk_cpus) if wrk_cpus else set(mine[:max(1, len(mine) // 4)])
    serve = parse_cpus(server_cpus) if server_cpus else set(mine) - load
    if load & serve or not serve:
        raise SystemExit(f"wrk's CPUs {sorted(load)} and the servers' {sorted(serve)} must be disjoint and non-empty")
    return load, serve


NICE = 0  # --nice: the priority of wrk and every server alike


def pinned(cpus: set[int] | None) -> list[str]:
    """The argv prefix that runs a command on `cpus` at priority NICE (taskset and nice exec it: the pid
    stays the command's)."""
    prefix = ["nice", "-n", str(NICE)] if NICE else []
    return [*prefix, "taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else prefix


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of the process `root` and every live descendant (a server: its supervisor and its
    workers, which run in sessions of their own; every thread included)."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        pid = int(entry.name)
        parent[pid] = int(fields[1])  # field 4 of stat(5): the parent's pid
        ticks[pid] = int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime (clock ticks)
    total = 0
    for pid, spent in ticks.items():
        ancestor = pid
        while ancestor > 1 and ancestor != root:
            ancestor = parent.get(ancestor, 0)
        if ancestor == root:
            total += spent
    return total / _TICK


# ---- the server's own histograms ------------------------------------------------------------

_SAMPLE = re.compile(r'^(bento_[a-z_]+)_bucket\{([^}]*)\} ([0-9.e+-]+)$', re.M)
_LE = re.compile(r',?le="([^"]+)",?')


def scrape(port: int) -> dict[tuple[str, str], dict[float, float]]:
    """Cumulative bucket counts by (histogram, label set other than le)."""
    for attempt in range(5):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                text = response.read().decode()
            break
        except OSError as exc:  # a refused connect right after a load point: try again, then say so
            if attempt == 4:
                print(f"could not scrape /metrics on port {port}: {exc}", file=sys.stderr)
                return {}
            time.sleep(0.2)
    buckets: dict[tuple[str, str], dict[float, float]] = {}
    for name, labels, value in _SAMPLE.findall(text):
        le = _LE.search(labels)
        if le:
            rest = (labels[:le.start()] + "," + labels[le.end():]).strip(",")
            buckets.setdefault((name, rest), {})[float(le[1])] = float(value)
    return buckets


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> tuple[float | None, float]:
    """Upper bound (s) of the bucket holding the q-quantile of what was observed between two scrapes."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = delta[-1][1] if delta else 0.0
    if total <= 0:
        return None, 0.0
    for le, count in delta:
        if count >= q * total:
            return le, total
    return delta[-1][0], total


def breakdown(before: dict, after: dict, seconds: float) -> dict:
    out: dict[str, float | None] = {}
    for phase in PHASES:
        key = ("bento_request_phase_seconds", f'phase="{phase}"')
        out[f"{phase}_p99_ms"] = _ms(quantile(before.get(key, {}), after.get(key, {}), 0.99)[0])
    for name, short in (("bento_queue_wait_seconds", "queue"), ("bento_inference_duration_seconds", "run")):
        out[f"{short}_p99_ms"] = _ms(quantile(before.get((name, ""), {}), after.get((name, ""), {}), 0.99)[0])
    key = ("bento_request_phase_seconds", 'phase="loop_blocked"')
    blocked_any = _share_above(before.get(key, {}), after.get(key, {}), 0.0)
    out["blocked_share"] = blocked_any
    pauses = 0.0
    longest = None
    for (name, labels), series in after.items():
        if name == "bento_gc_pause_seconds":
            bound, count = quantile(before.get((name, labels), {}), series, 1.0)
            pauses += count
            if bound is not None and (longest is None or bound > longest):
                longest = bound
    out["gc_per_s"] = pauses / seconds
    out["gc_longest_ms"] = _ms(longest)
    return out


def _share_above(before: dict[float, float], after: dict[float, float], floor: float) -> float | None:
    """Share of observations above the smallest bucket (here: a request that waited behind a run at all)."""
    if not after:
        return None
    total = after[float("inf")] - before.get(float("inf"), 0.0)
    smallest = min(after)
    if total <= 0:
        return None
    return 1 - (after[smallest] - before.get(smallest, 0.0)) / total


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else (float("inf") if seconds == float("inf") else seconds * 1e3)


# ---- rounds ------------------------------------------------------------------------------------

def servers(bento: Path, body: bytes, workers: list[int], cpus: set[int] | None = None,
            protocols: tuple[str, ...] = PROTOCOLS) -> dict[str, serving.Server]:
    """The Bento server for every worker count and HTTP protocol (BENTO_COMPILE_HTTP), and the naive one."""
    found = {}
    for count in workers:
        for protocol in protocols:
            port = serving.free_port()
            name = f"bento w{count} {protocol}"
            found[name] = serving.Server(
                name, [*pinned(cpus), sys.executable, "-m", "bento_compile.adapters.server"], port, body,
                {"BENTO_COMPILE_BENTO": str(bento), "PORT": str(port), "BENTO_COMPILE_WORKERS": str(count),
                 "BENTO_COMPILE_LOAD": "eager", "BENTO_COMPILE_HTTP": protocol})
    port = serving.free_port()
    script = WORK / "naive.py"
    script.write_text(serving.NAIVE_SERVER)
    found["naive"] = serving.Server(
        "naive", [*pinned(cpus), sys.executable, str(script), str(bento / "model.onnx"), str(port)], port, body)
    return found


def run(rounds: int, seconds: float, workers: list[int], log, concurrency: tuple[int, ...] = CONCURRENCY,
        pin: tuple[set[int], set[int]] | None = None, given: tuple[Path, bytes] | None = None,
        wrk: str | None = None, protocols: tuple[str, ...] = PROTOCOLS) -> tuple[list[dict], dict]:
    """`pin`: (wrk's CPUs, the servers' CPUs), or None to let the scheduler place everything; `given`: a
    built Bento and its request body (else built here); `wrk`: its path (else found or installed)."""
    wrk = wrk or serving.ensure_wrk(log)
    if not wrk:
        raise SystemExit("bench_tail needs wrk (apt-get install wrk)")
    if pin and not shutil.which("taskset"):
        raise SystemExit("--pin needs taskset (util-linux)")
    wrk_cpus, server_cpus = pin or (None, None)
    WORK.mkdir(parents=True, exist_ok=True)
    bento, body = given or build()
    info = {"load average at start": " ".join(str(round(x, 2)) for x in os.getloadavg()),
            "cpus": str(os.cpu_count()), "wrk": subprocess.run([wrk, "-v"], capture_output=True, text=True)
            .stdout.split("\n")[0], "duration per point (s)": str(seconds), "rounds": str(rounds),
            "pinned": (f"wrk on CPU {sorted(wrk_cpus)} ({len(wrk_cpus)} thread(s)), every server on CPU "
                       f"{sorted(server_cpus)}" if pin else "no (wrk and the servers share every CPU)"),
            "nice (wrk and every server)": str(NICE)}
    rows: list[dict] = []
    pool = servers(bento, body, workers, server_cpus, protocols)
    names = list(pool)
    for index in range(rounds):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            server = pool[name]
            server.start()
            try:
                for connections in concurrency:
                    wrk_point(wrk, server.port, body, connections, 1, wrk_cpus)  # warm-up, not measured
                    before = scrape(server.port) if name != "naive" else {}
                    cpu_before = tree_cpu_seconds(server.proc.pid)
                    point = wrk_point(wrk, server.port, body, connections, seconds, wrk_cpus)
                    cpu = tree_cpu_seconds(server.proc.pid) - cpu_before
                    point["cpu_us_per_request"] = cpu / point["requests"] * 1e6 if point["requests"] else None
                    point["server_cpu_share"] = cpu / max(1, round(seconds))  # CPUs the server kept busy
                    if name != "naive":
                        point.update(breakdown(before, scrape(server.port), seconds))
                    point.update(server=name, c=connections, round=index)
                    rows.append(point)
                    log(f"round {index} {name:20} c={connections:<3} {point['rps']:8.0f} rps  p50 "
                        f"{point['p50_ms']:.2f}  p99 {point['p99_ms']:.2f}  p99.9 {point['p999_ms']:.2f} ms  "
                        f"cpu {fmt(point['cpu_us_per_request'], 1)} us/req ({point['server_cpu_share']:.2f} CPU)")
            finally:
                server.stop()
    for server in pool.values():
        server.close()
    info["load average at end"] = " ".join(str(round(x, 2)) for x in os.getloadavg())
    return rows, info


def summarize(rows: list[dict]) -> list[dict]:
    table = []
    keys = sorted({(r["server"], r["c"]) for r in rows}, key=lambda k: (k[1], k[0]))
    for server, c in keys:
        mine = [r for r in rows if r["server"] == server and r["c"] == c]
        entry: dict = {"server": server, "c": c, "rounds": len(mine)}
        for field in ("rps", "p50_ms", "p99_ms", "p999_ms", "cpu_us_per_request", "server_cpu_share",
                      "queue_p99_ms", "run_p99_ms", "gc_per_s",
                      "gc_longest_ms", "blocked_share", *(f"{p}_p99_ms" for p in PHASES)):
            values = [r[field] for r in mine if r.get(field) is not None]
            entry[field] = statistics.median(values) if values else None
        entry["errors"] = sum(r["non_2xx"] + r["socket_errors"] + r["timeouts"] for r in mine)
        table.append(entry)
    return table


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(table: list[dict], info: dict) -> None:
    for key, value in info.items():
        print(f"{key}: {value}")
    print("\n| c | server | rps | p50 ms | p99 ms | p99.9 ms | p99.9/p99 | errors | server CPU µs/req | "
          "server CPUs busy | vs naive rps | vs naive p99 | vs naive CPU/req |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    naive = {e["c"]: e for e in table if e["server"] == "naive"}
    for e in table:
        base = naive.get(e["c"]) if e["server"] != "naive" else None
        ratio = f"{e['rps'] / base['rps']:.2f}x" if base else ""
        tail = f"{e['p99_ms'] / base['p99_ms']:.2f}x" if base else ""
        cost = (f"{e['cpu_us_per_request'] / base['cpu_us_per_request']:.2f}x"
                if base and e["cpu_us_per_request"] and base["cpu_us_per_request"] else "")
        spread = f"{e['p999_ms'] / e['p99_ms']:.2f}" if e["p99_ms"] else "-"
        print(f"| {e['c']} | {e['server']} | {e['rps']:.0f} | {fmt(e['p50_ms'])} | {fmt(e['p99_ms'])} | "
              f"{fmt(e['p999_ms'])} | {spread} | {e['errors']} | {fmt(e['cpu_us_per_request'], 1)} | "
              f"{fmt(e['server_cpu_share'])} | {ratio} | {tail} | {cost} |")
    by_name = {(e["server"], e["c"]): e for e in table}
    pairs = [(e, by_name.get((e["server"][:-len(" lean")] + " httptools", e["c"]))) for e in table
             if e["server"].endswith(" lean")]
    if any(other for _e, other in pairs):
        print("\nThe lean protocol vs uvicorn's httptools protocol (same worker count, same rounds):\n")
        print("| c | server | rps | p99 | p99.9 | server CPU µs/req |")
        print("|---|---|---|---|---|---|")
        for e, other in pairs:
            if other:
                cost = (f"{e['cpu_us_per_request'] / other['cpu_us_per_request']:.2f}x"
                        if e["cpu_us_per_request"] and other["cpu_us_per_request"] else "-")
                print(f"| {e['c']} | {e['server']} | {e['rps'] / other['rps']:.2f}x | "
                      f"{e['p99_ms'] / other['p99_ms']:.2f}x | {e['p999_ms'] / other['p999_ms']:.2f}x | {cost} |")
    print("\nServer-side p99 by phase (ms, bucket upper bounds), GC pauses, share of requests that waited "
          "behind another batch's run on the event loop:\n")
    print("| c | server | read | parse | queue | run | loop_blocked | encode | write | blocked share | "
          "GC/s | longest GC ≤ ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for e in table:
        if e["server"] == "naive":
            continue
        print(f"| {e['c']} | {e['server']} | {fmt(e['read_p99_ms'], 3)} | {fmt(e['parse_p99_ms'], 3)} | "
              f"{fmt(e['queue_p99_ms'], 3)} | {fmt(e['run_p99_ms'], 3)} | {fmt(e['loop_blocked_p99_ms'], 3)} | "
              f"{fmt(e['encode_p99_ms'], 3)} | {fmt(e['write_p99_ms'], 3)} | {fmt(e['blocked_share'])} | "
              f"{fmt(e['gc_per_s'], 1)} | {fmt(e['gc_longest_ms'], 3)} |")


def prepare_kit(kit: Path) -> None:
    """What `bench/gpu_check.sh tail` needs on a machine with no registry: the Bento, the body, wrk."""
    wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("no wrk here to pack (apt-get install wrk)")
    bento, body = build()
    shutil.rmtree(kit, ignore_errors=True)
    (kit / "bin").mkdir(parents=True)
    (kit / "lib").mkdir()
    shutil.copytree(bento, kit / "bento")
    (kit / "body.json").write_bytes(body)
    shutil.copy2(wrk, kit / "bin" / "wrk")
    libraries = subprocess.run(["ldd", wrk], capture_output=True, text=True, check=True).stdout
    for path in re.findall(r"=> (\S*libluajit\S*) ", libraries):  # the one library a bare machine may lack
        shutil.copy2(path, kit / "lib" / Path(path).name)
    print(f"packed {kit}: {sorted(p.name for p in kit.iterdir())}; "
          f"lib: {sorted(p.name for p in (kit / 'lib').iterdir())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per server (alternating order); default 5")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per load point; default 3")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Bento worker counts; default 1 2")
    parser.add_argument("--http", nargs="+", default=list(PROTOCOLS), choices=["lean", "httptools", "h11"],
                        help="the Bento server's HTTP protocols (BENTO_COMPILE_HTTP); default lean httptools")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY),
                        help="connections per point; default 1 8 32 128")
    parser.add_argument("--pin", action="store_true",
                        help="wrk and the servers on CPUs of their own (see the module doc)")
    parser.add_argument("--wrk-cpus", help="with --pin: wrk's CPUs (e.g. 0 or 0-3); default the first quarter")
    parser.add_argument("--server-cpus", help="with --pin: the servers' CPUs; default every other one")
    parser.add_argument("--nice", type=int, default=0, help="priority of wrk and every server (root for < 0)")
    parser.add_argument("--bento", type=Path, help="serve this built Bento (with --body) instead of building one")
    parser.add_argument("--body", type=Path, help="with --bento: the request body (JSON)")
    parser.add_argument("--wrk", help="the wrk binary to use")
    parser.add_argument("--prepare-kit", type=Path, metavar="DIR",
                        help="build the Bento and copy it, the body, wrk and its LuaJIT library to DIR, then exit")
    parser.add_argument("--json", type=Path, help="also write every point and the summary as JSON here")
    args = parser.parse_args()
    if (args.wrk_cpus or args.server_cpus) and not args.pin:
        parser.error("--wrk-cpus / --server-cpus go with --pin")
    if bool(args.bento) != bool(args.body):
        parser.error("--bento and --body go together")
    if args.prepare_kit:
        prepare_kit(args.prepare_kit)
        return
    global NICE
    NICE = args.nice
    pin = cpu_split(args.wrk_cpus, args.server_cpus) if args.pin else None
    given = (args.bento.resolve(), args.body.read_bytes()) if args.bento else None
    started = time.time()
    rows, info = run(args.rounds, args.duration, args.workers, lambda m: print(m, file=sys.stderr, flush=True),
                     tuple(args.concurrency), pin, given, args.wrk, tuple(args.http))
    info["wall time (s)"] = f"{time.time() - started:.0f}"
    table = summarize(rows)
    print_table(table, info)
    if args.json:
        args.json.write_text(json.dumps({"info": info, "points": rows, "summary": table}, indent=1))


if __name__ == "__main__":
    main()
