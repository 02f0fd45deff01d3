"""Batch scoring benchmark: `bento-compile batch` (local, Spark, Ray) vs the naive ways, on one file.

Side by side in ONE run (the machine is shared and noisy: read the ratios, not the absolutes). Every
variant runs in a process of its own, reads the same Parquet file (N rows: an id and the 30
breast-cancer features, 64k-row groups) and is timed from the end of its imports to its last row
scored (engine start-up included: a Spark session, a Ray cluster, worker processes, an HTTP server);
the peak RSS is that process's own (VmHWM):
  - local engine, `--workers` = CPUs (the default) and 1 worker;
  - raw `session.run` over the same record batches, nothing written (the floor);
  - scikit-learn `predict_proba` on the same batches (the model the Bento was compiled from);
  - naive HTTP: the Bento's own HTTP server, every batch POSTed as JSON in chunks of 1,000 rows
    (how a "serve it, then call it" batch job scores);
  - naive per-row loop: scikit-learn `predict_proba` one row at a time (on a 2,000-row slice; rows/s only);
  - Spark, local[2]: our engine (mapInArrow, in-process session) vs the BentoML way
    (`bentoml.batch.run_in_spark`'s design: each task starts an HTTP server for the Bento and sends it
    its Arrow batches over HTTP; built here on the same Spark and our server, since BentoML itself does
    not install into this environment's Spark 4);
  - Ray: our engine (map_batches, one actor per CPU).
A second part scores growing files with the local engine (1 worker) and prints peak RSS per size.
A third part (`--workers-part`, or alone with `--workers-only`) runs the local engine with the default
(measured) --workers, --workers 1 and --workers 2 on the cheap model above and on a heavier one
(RandomForest, 300 trees), in interleaved rounds (the fastest of each kept), and prints which the
default chose and why. A fourth (`--spark-part`, or alone with `--spark-only`) runs our Spark engine and
BentoML's own `bentoml.batch.run_in_spark` (BentoML 1.1.11 + pyspark 3.5.3 in their own venv under
bench/.work/batch) on local[2], on the same files at two sizes, and prints end-to-end and marginal rows/s.

Usage: python bench/bench_batch.py [--quick] [--rows N] [--memory-rows N,N,...] [--no-spark] [--no-ray]
                                   [--workers-part | --workers-only] [--heavy-rows N] [--repeat N]
                                   [--spark-part | --spark-only] [--spark-rows N,N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / ".work" / "batch"
PY = sys.executable

# Peak RSS: this process's VmHWM (ru_maxrss would carry the parent's peak over fork and exec), and the
# largest of its children's (the HTTP server, worker processes) where it has some.
PRELUDE = """
import json, os, re, resource, sys, time
started = time.perf_counter()
def done(rows, **extra):
    own = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print("RESULT " + json.dumps({"rows": rows, "seconds": time.perf_counter() - started,
                                  "rss_mib": own / 1024, "children_rss_mib": kids / 1024, **extra}))
"""

VARIANTS = {
    "local": """
from bento_compile.batch.local import score_files
started = time.perf_counter()
s = score_files(BENTO, DATA, OUT + f"/local-{WORKERS}.parquet", workers=WORKERS)
done(s.rows, workers=s.workers, threads=s.intra_op_threads, reason=s.extra.get("workers_reason", ""))
""",
    "raw": """
import numpy as np, onnxruntime as ort, pyarrow.parquet as pq
options = ort.SessionOptions(); options.intra_op_num_threads = CPUS
options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the runtime: fair on a busy machine
started = time.perf_counter()
session = ort.InferenceSession(BENTO + "/model.onnx", options, providers=["CPUExecutionProvider"])
names = [c for c in pq.read_schema(DATA).names if c != "id"]
rows = 0
for batch in pq.ParquetFile(DATA, buffer_size=1 << 20, pre_buffer=False).iter_batches(batch_size=8192, columns=names):
    X = np.column_stack([c.to_numpy() for c in batch.columns]).astype(np.float32)
    session.run(None, {"input": X}); rows += len(X)
done(rows)
""",
    "sklearn": """
import joblib, pyarrow.parquet as pq
model = joblib.load(MODEL)
started = time.perf_counter()
names = [c for c in pq.read_schema(DATA).names if c != "id"]
rows = 0
for batch in pq.ParquetFile(DATA).iter_batches(batch_size=8192, columns=names):
    frame = batch.to_pandas(); model.predict(frame); model.predict_proba(frame); rows += len(frame)
done(rows)
""",
    "per-row": """
import joblib, pyarrow.parquet as pq
model = joblib.load(MODEL)
names = [c for c in pq.read_schema(DATA).names if c != "id"]
frame = next(pq.ParquetFile(DATA).iter_batches(batch_size=2000, columns=names)).to_pandas()
started = time.perf_counter()
for i in range(len(frame)):
    model.predict_proba(frame.iloc[i:i + 1])
done(len(frame))
""",
    "http": """
import socket, subprocess, urllib.request, orjson, pyarrow as pa, pyarrow.parquet as pq
started = time.perf_counter()
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
server = subprocess.Popen([sys.executable, "-m", "bento_compile.adapters.server"], env={**os.environ,
    "BENTO_COMPILE_BENTO": BENTO, "PORT": str(port), "BENTO_COMPILE_LOAD": "eager"},
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1); break
        except OSError:
            time.sleep(0.05)
    names = [c for c in pq.read_schema(DATA).names if c != "id"]
    rows = 0; labels = []
    for batch in pq.ParquetFile(DATA).iter_batches(batch_size=1000, columns=names):
        body = orjson.dumps({"inputs": [list(r.values()) for r in batch.to_pylist()]})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request) as response:
            labels.extend(orjson.loads(response.read())["outputs"]["label"])
        rows += batch.num_rows
    pq.write_table(pa.table({"label": labels}), OUT + "/http.parquet")
finally:
    server.terminate(); server.wait(30)
done(rows)
""",
    "spark": """
from bento_compile.batch.spark import score_files
started = time.perf_counter()
s = score_files(BENTO, DATA, OUT + "/spark", master="local[2]")
done(s.rows)
""",
    "spark-sparkio": """
from bento_compile.batch.spark import score_files
started = time.perf_counter()
s = score_files(BENTO, DATA, OUT + "/spark", master="local[2]", io="spark")
done(s.rows)
""",
    "spark-http": """
import pyspark
from pyspark.sql import SparkSession
import pyarrow as pa
started = time.perf_counter()
os.environ.setdefault("PYSPARK_PYTHON", sys.executable); os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
         .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
bento = BENTO
def per_task(batches):
    # BentoML's run_in_spark: a server for the Bento in every task, every Arrow batch sent to it over HTTP.
    import socket, subprocess, sys, time, urllib.request, orjson, pyarrow as pa
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
    server = subprocess.Popen([sys.executable, "-m", "bento_compile.adapters.server"], env={**os.environ,
        "BENTO_COMPILE_BENTO": bento, "PORT": str(port), "BENTO_COMPILE_LOAD": "eager"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1); break
            except OSError:
                time.sleep(0.05)
        for batch in batches:
            features = batch.drop_columns(["id"]) if "id" in batch.schema.names else batch
            labels = []
            for start in range(0, features.num_rows, 1000):
                part = features.slice(start, 1000)
                body = orjson.dumps({"inputs": [list(r.values()) for r in part.to_pylist()]})
                request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body,
                                                 headers={"content-type": "application/json"})
                with urllib.request.urlopen(request) as response:
                    labels.extend(orjson.loads(response.read())["outputs"]["label"])
            yield pa.RecordBatch.from_arrays([batch.column("id"), pa.array(labels, pa.int64())], ["id", "label"])
    finally:
        server.terminate(); server.wait(30)
df = spark.read.parquet(DATA)
df.mapInArrow(per_task, "id long, label long").write.mode("overwrite").parquet(OUT + "/spark-http")
rows = spark.read.parquet(OUT + "/spark-http").count()
spark.stop()
done(rows)
""",
    # BentoML's own run_in_spark (1.1.x), in its own venv with pyspark 3.5: the model saved to a BentoML store, a
    # bento built around a PandasDataFrame -> NumpyNdarray API; each Spark task imports the bento, starts
    # `bentoml serve` and POSTs its Arrow batches to it. Building the bento is set-up, not timed.
    "bentoml-spark": """
import joblib
os.environ["BENTOML_HOME"] = BENTOML_HOME; os.environ["BENTOML_DO_NOT_TRACK"] = "true"
import bentoml
from pyspark.sql import SparkSession
model = joblib.load(MODEL)
bentoml.sklearn.save_model("cancer", model)
service = os.path.join(OUT, "bentoml-service"); os.makedirs(service, exist_ok=True)
open(os.path.join(service, "service.py"), "w").write('''
import bentoml
from bentoml.io import NumpyNdarray, PandasDataFrame
runner = bentoml.sklearn.get("cancer:latest").to_runner()
svc = bentoml.Service("cancer", runners=[runner])
@svc.api(input=PandasDataFrame(), output=NumpyNdarray(dtype="int64", shape=(-1,)))
async def predict(frame):
    frame = frame.drop(columns=[c for c in ("id",) if c in frame.columns])
    return await runner.predict.async_run(frame)
''')
bento = bentoml.bentos.build("service:svc", build_ctx=service, include=["service.py"])
started = time.perf_counter()
os.environ.setdefault("PYSPARK_PYTHON", sys.executable); os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
         .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
# The output schema given, as run_in_spark's docs allow: inferring it imports pyspark.pandas, whose 3.5 line
# still reads np.NaN (gone in NumPy 2).
from pyspark.sql.types import LongType, StructField, StructType
schema = StructType([StructField("out", LongType(), False)])
scored = bentoml.batch.run_in_spark(bento, spark.read.parquet(DATA), spark, output_schema=schema)
scored.write.mode("overwrite").parquet(OUT + "/bentoml-spark")
rows = spark.read.parquet(OUT + "/bentoml-spark").count()
spark.stop()
result = dict(bentoml=bentoml.__version__, pyspark=__import__("pyspark").__version__)
# run_in_spark never stops the servers its tasks start (they outlive Spark, on 0.0.0.0): stop this bento's.
import psutil
for proc in psutil.process_iter(["cmdline"]):
    if str(bento.tag) in " ".join(proc.info["cmdline"] or []):
        proc.kill()
done(rows, **result)
""",
    "ray": """
from bento_compile.batch.ray import score_files
started = time.perf_counter()
s = score_files(BENTO, DATA, OUT + "/ray", workers=WORKERS)
done(s.rows)
""",
}


def run_variant(name: str, settings: dict, timeout: float = 1800, python: str = PY) -> dict:
    header = "".join(f"{key} = {value!r}\n" for key, value in settings.items())
    code = PRELUDE + header + textwrap.dedent(VARIANTS[name])
    started = time.perf_counter()
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        return {"error": (result.stderr.strip().splitlines() or ["no output"])[-1][:300],
                "seconds": time.perf_counter() - started}
    return json.loads(lines[-1][len("RESULT "):])


def make_data(path: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer(as_frame=True).data
    rng = np.random.default_rng(0)
    schema = pa.schema([pa.field("id", pa.int64())] + [pa.field(c, pa.float64()) for c in X.columns])
    base = X.to_numpy()
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 65536):
            n = min(65536, rows - start)
            picked = base[rng.integers(0, len(base), n)] * rng.normal(1.0, 0.01, (n, base.shape[1]))
            writer.write_table(pa.Table.from_arrays([pa.array(np.arange(start, start + n))] +
                                                    [pa.array(picked[:, i]) for i in range(base.shape[1])],
                                                    schema=schema))


def make_bento(work: Path, kind: str = "logreg") -> tuple[Path, Path]:
    """logreg: StandardScaler + LogisticRegression (cheap); forest: RandomForest of 300 trees (heavier)."""
    import joblib
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import BentoConfig
    from bento_compile.core.store import BentoStore

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    if kind == "forest":
        model = RandomForestClassifier(n_estimators=300, random_state=0, n_jobs=1).fit(X, y)
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X, y)
    joblib.dump(model, work / f"{kind}.joblib")
    np.save(work / "sample.npy", X.to_numpy(np.float32)[:64])
    result = build(BuildRequest(model_path=work / f"{kind}.joblib", config=BentoConfig(), name=f"bench-{kind}",
                                sample_path=work / "sample.npy"), BentoStore(work / "store"))
    return result.path, work / f"{kind}.joblib"


def workers_part(work: Path, data: Path, settings: dict, heavy_rows: int, repeat: int) -> list[dict]:
    """The local engine with the default (measured) --workers vs 1 vs 2, on the cheap and the heavy model."""
    forest, _ = make_bento(work, "forest")
    heavy_data = work / "heavy.parquet"
    make_data(heavy_data, heavy_rows)
    found = []
    for model, bento, source in (("LogisticRegression", settings["BENTO"], data),
                                 ("RandomForest(300)", str(forest), heavy_data)):
        runs: dict = {}
        # Interleaved rounds, the fastest of each kept: on a shared machine a single run says little.
        for round_ in range(repeat):
            for workers in ((None, 1, 2) if round_ % 2 == 0 else (2, 1, None)):
                out = work / f"workers-{model[:6]}-{workers}-{round_}"
                out.mkdir()
                measured = run_variant("local", {**settings, "BENTO": bento, "DATA": str(source), "OUT": str(out),
                                                 "WORKERS": workers})
                setting = "default (measured)" if workers is None else f"--workers {workers}"
                print(f"  workers, {model}, {setting}, round {round_ + 1}: {_describe(measured)} "
                      f"[{measured.get('workers')} × {measured.get('threads')}; {measured.get('reason', '')}]",
                      flush=True)
                best = runs.get(setting)
                seen = [*(best or {}).get("all_seconds", []), round(measured.get("seconds", 0), 2)]
                if best is None or "error" in best or ("error" not in measured and
                                                       measured["seconds"] < best["seconds"]):
                    best = runs[setting] = {"model": model, "setting": setting, **measured}
                best["all_seconds"] = seen
        found += [runs[s] for s in ("default (measured)", "--workers 1", "--workers 2")]
    return found


def bentoml_spark_venv() -> tuple[str | None, str]:
    """bench/.work/batch/bentoml-venv: the last BentoML line with `bentoml.batch.run_in_spark` (1.1.x; checked in
    the 1.1.11 wheel: bentoml/_internal/batch/spark.py), the pyspark it runs on (3.5.x, on Java 17), and our
    scikit-learn (to load the same joblib); pandas 2.2 (pyspark 3.5 imports names pandas 3 removed)."""
    import sklearn

    venv = WORK / "bentoml-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists():
        print(f"installing BentoML 1.1 + pyspark 3.5 into {venv} (once; a few minutes)", flush=True)
        if not python.exists():
            subprocess.run([PY, "-m", "venv", str(venv)], check=True)
        result = subprocess.run([str(python), "-m", "pip", "install", "-q", "bentoml==1.1.11", "pyspark==3.5.3",
                                 f"scikit-learn=={sklearn.__version__}", "pandas==2.2.3", "pyarrow"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            return None, "pip could not install bentoml 1.1.11 + pyspark 3.5.3: " + \
                (result.stderr.strip().splitlines() or ["?"])[-1][:200]
        marker.touch()
    return str(python), "bentoml 1.1.11, pyspark 3.5.3"


def spark_part(work: Path, settings: dict, sizes: list[int]) -> list[dict]:
    """Our Spark engine vs BentoML's own `run_in_spark`, local[2], on the same Parquet files at two sizes: the
    difference between the sizes cancels what each pays once (a JVM, a session, a server per task)."""
    python, bentoml_version = bentoml_spark_venv()
    found = []
    for size in sizes:
        data = work / f"spark-{size}.parquet"
        make_data(data, size)
        for name, variant, runner in (("bento-compile CLI engine (Spark schedules row groups, pyarrow reads/writes)",
                                       "spark", PY),
                                      ("bento-compile on Spark's reader/writer (mapInArrow, as predict(df))",
                                       "spark-sparkio", PY),
                                      ("BentoML run_in_spark (a server per task, HTTP)", "bentoml-spark", python)):
            out = work / f"spark-{variant}-{size}"
            out.mkdir()
            if runner is None:
                measured = {"error": bentoml_version}
            else:
                measured = run_variant(variant, {**settings, "DATA": str(data), "OUT": str(out),
                                                 "BENTOML_HOME": str(work / f"bentoml-home-{size}")}, python=runner)
            found.append({"engine": name, "rows_in": size, **measured})
            print(f"  spark, {name}, {size:,} rows: {_describe(measured)}", flush=True)
        data.unlink()
    return found


def spark_table(found: list[dict]) -> list[str]:
    lines = ["", "| Spark local[2] | rows | seconds | rows/s | marginal rows/s (between the sizes) |",
             "|---|---|---|---|---|"]
    marginal = {}
    for engine in dict.fromkeys(f["engine"] for f in found):
        runs = sorted((f for f in found if f["engine"] == engine and "error" not in f), key=lambda f: f["rows"])
        if len(runs) >= 2 and runs[-1]["seconds"] > runs[0]["seconds"]:
            marginal[engine] = (runs[-1]["rows"] - runs[0]["rows"]) / (runs[-1]["seconds"] - runs[0]["seconds"])
        for f in (f for f in found if f["engine"] == engine):
            if "error" in f:
                lines.append(f"| {engine} | {f['rows_in']:,} | failed: {f['error'][:80]} | | |")
                continue
            rate = f"{marginal[engine]:,.0f}" if engine in marginal and f is runs[-1] else ""
            lines.append(f"| {engine} | {f['rows']:,} | {f['seconds']:.2f} | {f['rows'] / f['seconds']:,.0f} | "
                         f"{rate} |")
    theirs = next((engine for engine in marginal if engine.startswith("BentoML")), None)
    biggest = {f["engine"]: f for f in found if "error" not in f and f["rows_in"] == max(x["rows_in"] for x in found)}
    for engine in (e for e in dict.fromkeys(f["engine"] for f in found) if not e.startswith("BentoML")):
        if theirs and engine in marginal:
            lines.append(f"- marginal throughput, {engine} / BentoML: {marginal[engine] / marginal[theirs]:.1f}×")
        bentoml = next((f for name, f in biggest.items() if name.startswith("BentoML")), None)
        if bentoml and engine in biggest:
            lines.append(f"- end to end at {bentoml['rows']:,} rows (start-up included), {engine} / BentoML: "
                         f"{bentoml['seconds'] / biggest[engine]['seconds']:.1f}×")
    return lines


def versions() -> dict:
    import importlib.metadata as md

    found = {}
    for package in ("bento-compile", "onnxruntime", "pyarrow", "scikit-learn", "pyspark", "ray"):
        try:
            found[package] = md.version(package)
        except md.PackageNotFoundError:
            found[package] = "not installed"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200k rows, memory check at 100k / 1M")
    parser.add_argument("--rows", type=int, help="rows of the comparison file (default 1M; --quick 200k)")
    parser.add_argument("--memory-rows", help="comma-separated file sizes for the memory part "
                        "(default 100k,1M,10M; --quick 100k,1M)")
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--workers-part", action="store_true", help="also run the --workers comparison")
    parser.add_argument("--spark-part", action="store_true", help="also run ours vs BentoML's run_in_spark")
    parser.add_argument("--spark-only", action="store_true", help="run only ours vs BentoML's run_in_spark")
    parser.add_argument("--spark-rows", default="100000,500000", help="the two sizes of that comparison")
    parser.add_argument("--workers-only", action="store_true", help="run only the --workers comparison")
    parser.add_argument("--heavy-rows", type=int, default=1_000_000, help="rows for the heavy model (default 1M)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of the --workers comparison (fastest kept)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    memory_rows = [int(float(r)) for r in (args.memory_rows or ("1e5,1e6" if args.quick else "1e5,1e6,1e7")
                                           ).split(",")]
    WORK.mkdir(parents=True, exist_ok=True)
    cpus = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        work = Path(tmp)
        bento, model = make_bento(work)
        data = work / "data.parquet"
        make_data(data, rows)
        settings = {"BENTO": str(bento), "MODEL": str(model), "DATA": str(data), "OUT": str(work), "CPUS": cpus,
                    "WORKERS": None}
        plan = [("local engine (workers = CPUs)", "local", {}), ("local engine (1 worker)", "local", {"WORKERS": 1}),
                ("raw session.run (floor)", "raw", {}), ("scikit-learn predict_proba", "sklearn", {}),
                ("naive HTTP (server + JSON batches of 1,000)", "http", {}),
                ("naive per-row loop (scikit-learn)", "per-row", {})]
        if not args.no_spark:
            plan += [("Spark local[2]: bento-compile (CLI engine: pyarrow units)", "spark", {}),
                     ("Spark local[2]: bento-compile (Spark's reader/writer, mapInArrow)", "spark-sparkio", {}),
                     ("Spark local[2]: HTTP server per task (BentoML's way)", "spark-http", {})]
        if not args.no_ray:
            plan += [("Ray: bento-compile (map_batches, actor per CPU)", "ray", {})]
        results: list[dict] = []
        print(f"{rows:,} rows, {cpus} CPUs; {platform.machine()}, {platform.platform()}; {versions()}", flush=True)
        if args.workers_only or args.spark_only:
            plan, memory_rows = [], []
        for label, variant, extra in plan:
            measured = run_variant(variant, {**settings, **extra})
            results.append({"variant": label, **measured})
            print(f"  {label}: {_describe(measured)}", flush=True)
        memory = []
        for size in memory_rows:
            sized = work / f"memory-{size}.parquet"
            make_data(sized, size)
            measured = run_variant("local", {**settings, "DATA": str(sized), "WORKERS": 1,
                                             "OUT": str(work / f"memory-out-{size}")})
            memory.append({"rows": size, **measured})
            print(f"  memory, local engine (1 worker), {size:,} rows: {_describe(measured)}", flush=True)
            sized.unlink()
        workers, spark = [], []
        if args.workers_part or args.workers_only:
            workers = workers_part(work, data, settings, args.heavy_rows, args.repeat)
        if args.spark_part or args.spark_only:
            spark = spark_part(work, settings, [int(float(r)) for r in args.spark_rows.split(",")])
    report = {"rows": rows, "cpus": cpus, "machine": platform.platform(), "versions": versions(),
              "results": results, "memory": memory, "workers": workers, "spark": spark, "load": os.getloadavg()}
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def _describe(measured: dict) -> str:
    if "error" in measured:
        return f"failed: {measured['error']}"
    return (f"{measured['rows'] / measured['seconds']:,.0f} rows/s, {measured['seconds']:.2f} s, "
            f"peak RSS {measured['rss_mib']:.0f} MiB")


def table(report: dict) -> str:
    floor = next((r for r in report["results"] if r["variant"].startswith("raw") and "error" not in r), None)
    lines = ["| variant | rows/s | seconds | peak RSS | vs raw session.run |", "|---|---|---|---|---|"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error'][:80]} | | | |")
            continue
        speed = r["rows"] / r["seconds"]
        ratio = f"{(floor['rows'] / floor['seconds']) / speed:.2f}× slower" if floor else ""
        lines.append(f"| {r['variant']} | {speed:,.0f} | {r['seconds']:.2f} | {r['rss_mib']:.0f} MiB | {ratio} |")
    lines += ["", "| rows (local engine, 1 worker) | seconds | peak RSS |", "|---|---|---|"]
    for m in report["memory"]:
        if "error" not in m:
            lines.append(f"| {m['rows']:,} | {m['seconds']:.1f} | {m['rss_mib']:.0f} MiB |")
    if report.get("workers"):
        lines += ["", "| model | --workers | rows | rows/s (fastest round) | seconds (every round) | ran as | "
                  "vs --workers 1 |", "|---|---|---|---|---|---|---|"]
        for w in report["workers"]:
            if "error" in w:
                lines.append(f"| {w['model']} | {w['setting']} | failed: {w['error'][:80]} | | | | |")
                continue
            one = next((o for o in report["workers"] if o["model"] == w["model"] and o["setting"] == "--workers 1"
                        and "error" not in o), None)
            ratio = f"{one['seconds'] / w['seconds']:.2f}×" if one else ""
            lines.append(f"| {w['model']} | {w['setting']} | {w['rows']:,} | {w['rows'] / w['seconds']:,.0f} | "
                         f"{', '.join(f'{x:.2f}' for x in w['all_seconds'])} | {w['workers']} × {w['threads']} "
                         f"thread(s) | {ratio} |")
        lines += [f"- {w['model']}, {w['setting']}: {w.get('reason', '')}" for w in report["workers"]
                  if w["setting"].startswith("default")]
    if report.get("spark"):
        lines += spark_table(report["spark"])
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
