"""Lambda benchmark: the Bento's lambda-zip vs the same model deployed the naive way.

Naive = the scikit-learn pipeline pickled with joblib, and a handler that
unpickles it at import; its bundle is scikit-learn + scipy + numpy + joblib
wheels for the same target (x86_64, Python 3.12), as installed (with bytecode,
as pip writes it), zipped the same way.

Prints, in ONE run (ratios are what to read; the machine is shared):
  - deployment package size, zipped and unzipped, vs Lambda's 50 / 250 MiB;
  - cold start through the real awslambdaric on a clean interpreter: process
    start → first response (init + first invoke), median of N fresh processes
    (Bento and naive alternated);
  - warm invoke latency (queue → answer through the Runtime API), p50 / p99.

Usage: python bench/bench_lambda.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "bench" / ".work" / "lambda"
sys.path.insert(0, str(REPO / "examples" / "breast_cancer"))
sys.path.insert(0, str(REPO))

PYTHON = "3.12"
MIB = 1024 * 1024
NAIVE_HANDLER = textwrap.dedent("""
    import os
    import joblib
    import numpy as np

    MODEL = joblib.load(os.path.join(os.path.dirname(__file__), "model.joblib"))

    def handler(event, context):
        X = np.asarray(event["inputs"], dtype=np.float64)
        return {"outputs": {"label": MODEL.predict(X).tolist(), "probabilities": MODEL.predict_proba(X).tolist()}}
""")


def build_bento(work: Path) -> Path:
    import train  # the README's example pipeline

    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import load_config
    from bento_compile.core.store import BentoStore

    model_dir = work / "example"
    model_dir.mkdir(parents=True, exist_ok=True)
    train.main(model_dir)
    (model_dir / "bento.yaml").write_text((REPO / "examples/breast_cancer/bento.yaml").read_text())
    config, config_dir = load_config(model_dir / "bento.yaml")
    return build(BuildRequest(None, config, config_dir), BentoStore(work / "store")).path


def naive_zip(work: Path, model_file: Path) -> tuple[Path, Path, int, int]:
    """scikit-learn + deps for the target, unpacked as installed (+ pyc), with the naive handler."""
    import joblib
    import sklearn

    from bento_compile.targets.bytecode import compile_tree, find_interpreter
    from bento_compile.targets.lambda_zip import lambda_platform
    from bento_compile.targets.reproducible_zip import tree_files, write_zip
    from bento_compile.targets.wheel_install import unpack_wheels
    from bento_compile.targets.wheels import resolve_wheels

    task = work / "naive-task"
    if not task.is_dir():
        staging = work / "naive-staging"
        wheels = resolve_wheels([f"scikit-learn=={sklearn.__version__}", f"joblib=={joblib.__version__}"],
                                lambda_platform("x86_64", PYTHON), work / "naive-wheels")
        unpack_wheels(wheels, staging)
        interpreter = find_interpreter(PYTHON)
        if interpreter:
            compile_tree(staging, interpreter)
        staging.rename(task)
    (task / "naive_handler.py").write_text(NAIVE_HANDLER)
    (task / "model.joblib").write_bytes(model_file.read_bytes())
    entries = tree_files(task)
    zip_path = work / "naive-lambda.zip"
    zipped = write_zip(entries, zip_path)
    return zip_path, task, zipped, sum(p.stat().st_size for _, p in entries)


def unpack(zip_path: Path, folder: Path) -> Path:
    if not folder.is_dir():
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(folder)
    return folder


def cold_start(runtime, task: Path, handler: str, event: dict, runs: int) -> list[float]:
    from bento_compile.tools.lambda_rapi import RuntimeAPI, start_ric

    times = []
    for _ in range(runs):
        with RuntimeAPI() as api:
            rid = api.submit(event)  # queued before the process starts: the first /next answers at once
            started = time.monotonic()
            proc = start_ric(runtime.python, handler, task, api, ric_path=runtime.provided,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                result = api.result(rid, 120, proc)
                assert result.ok, result.body
                times.append(time.monotonic() - started)
            finally:
                proc.terminate()
                proc.wait(10)
    return times


def warm_latency(runtime, task: Path, handler: str, event: dict, count: int) -> list[float]:
    from bento_compile.tools.lambda_rapi import RuntimeAPI, start_ric

    with RuntimeAPI() as api:
        proc = start_ric(runtime.python, handler, task, api, ric_path=runtime.provided,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            api.wait_ready(120, proc)
            for _ in range(20):
                api.invoke(event, 30, proc)
            results = [api.invoke(event, 30, proc) for _ in range(count)]
            assert all(r.ok for r in results)
            return sorted(r.seconds for r in results)
        finally:
            proc.terminate()
            proc.wait(10)


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cold starts and invokes")
    args = parser.parse_args()
    runs, count = (3, 100) if args.quick else (7, 500)
    WORK.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("BENTO_COMPILE_HOME", str(WORK / "home"))

    import numpy as np
    import onnxruntime
    import sklearn

    from bento_compile.targets.lambda_zip import build_lambda_zip
    from bento_compile.tools.invoke import local_runtime

    bento = build_bento(WORK)
    example = json.loads((bento / "manifest.json").read_text())["example"]
    print("building the Bento's lambda-zip ...", file=sys.stderr)
    built = build_lambda_zip(bento, "x86_64", PYTHON, WORK / "dist", template=False)
    bento_task = unpack(built.path, WORK / f"bento-task-{built.sha256[:12]}")
    print("building the naive scikit-learn bundle ...", file=sys.stderr)
    _naive_path, naive_task, naive_zipped, naive_unzipped = naive_zip(WORK, WORK / "example" / "model.joblib")
    runtime = local_runtime("x86_64", PYTHON)

    # Both answer the same event with the same labels.
    bento_handler, naive_handler = "bento_compile.adapters.aws_lambda.handler", "naive_handler.handler"
    print("cold starts ...", file=sys.stderr)
    bento_cold, naive_cold = [], []
    for _ in range(runs):  # alternated, so a busy neighbour weighs on both sides alike
        bento_cold += cold_start(runtime, bento_task, bento_handler, example, 1)
        naive_cold += cold_start(runtime, naive_task, naive_handler, example, 1)
    print("warm invokes ...", file=sys.stderr)
    bento_warm = warm_latency(runtime, bento_task, bento_handler, example, count)
    naive_warm = warm_latency(runtime, naive_task, naive_handler, example, count)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
          f"bench python {platform.python_version()}; function python {runtime.version} "
          f"(clean venv + awslambdaric); onnxruntime (zip) "
          f"{next(w.version for w in built.wheels if w.name == 'onnxruntime')}; "
          f"scikit-learn {sklearn.__version__}; numpy (here) {np.__version__}; onnxruntime (here) "
          f"{onnxruntime.__version__}")
    print(f"{runs} cold starts each (median), {count} warm invokes each; event: {len(example['inputs'])} rows\n")
    rows = [
        ("zip size", f"{built.zipped_bytes / MIB:.1f} MiB", f"{naive_zipped / MIB:.1f} MiB",
         naive_zipped / built.zipped_bytes, "50 MiB"),
        ("unzipped size", f"{built.unzipped_bytes / MIB:.1f} MiB", f"{naive_unzipped / MIB:.1f} MiB",
         naive_unzipped / built.unzipped_bytes, "250 MiB"),
        ("cold start → 1st response", f"{statistics.median(bento_cold) * 1000:.0f} ms",
         f"{statistics.median(naive_cold) * 1000:.0f} ms",
         statistics.median(naive_cold) / statistics.median(bento_cold), ""),
        ("warm invoke p50", f"{pct(bento_warm, 0.5) * 1e6:.0f} µs", f"{pct(naive_warm, 0.5) * 1e6:.0f} µs",
         pct(naive_warm, 0.5) / pct(bento_warm, 0.5), ""),
        ("warm invoke p99", f"{pct(bento_warm, 0.99) * 1e6:.0f} µs", f"{pct(naive_warm, 0.99) * 1e6:.0f} µs",
         pct(naive_warm, 0.99) / pct(bento_warm, 0.99), ""),
    ]
    print("| metric | bento lambda-zip | naive sklearn | naive/bento | Lambda limit |")
    print("|---|---|---|---|---|")
    for name, ours, theirs, ratio, limit in rows:
        print(f"| {name} | {ours} | {theirs} | {ratio:.2f}× | {limit} |")
    print(f"\ncold starts (s): bento {[round(t, 3) for t in bento_cold]}, naive {[round(t, 3) for t in naive_cold]}")
    print(f"naive bundle fits a direct upload: {naive_zipped <= 50 * MIB}; fits 250 MiB unzipped: "
          f"{naive_unzipped <= 250 * MIB}")


if __name__ == "__main__":
    main()
