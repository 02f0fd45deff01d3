"""What trust costs at cold start: loading a Bento with and without a public key configured.

Each measurement is a fresh interpreter (a cold start: imports included) that loads the Bento
and predicts once, timed inside the process from before the first bento_compile import. Three
model sizes (the example, and ONNX models padded to ~30 MB and ~120 MB with a large initializer)
show where the time goes: importing `cryptography` and one Ed25519 check are constant, hashing
every file (done with or without a key) grows with the model.

    .venv/bin/python bench/bench_trust.py          # prints a markdown table
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("BENCH_RUNS", "7"))

CHILD = textwrap.dedent("""
    # The steps of BentoModel.load, timed one by one (a cold process: imports included).
    import time, json, sys
    from pathlib import Path
    t0 = time.perf_counter()
    from bento_compile.runtimes.backends import open_backend
    from bento_compile.runtimes.manifest import read_manifest, verify_files
    from bento_compile.runtimes.model import BentoModel
    from bento_compile.runtimes.trust import enforce_trust
    t1 = time.perf_counter()
    root = Path(sys.argv[1])
    manifest = read_manifest(root)
    enforce_trust(root, manifest)
    t2 = time.perf_counter()
    verify_files(root, manifest)
    t3 = time.perf_counter()
    model = BentoModel(root, manifest, open_backend(root, manifest), 0.0)
    model.predict({"inputs": json.loads(sys.argv[2])})
    t4 = time.perf_counter()
    print(json.dumps({"trust": t2 - t1, "hashes": t3 - t2, "first": t4 - t0, "crypto": "cryptography" in sys.modules}))
""")


def padded_onnx(folder: Path, megabytes: int) -> Path:
    """x[N,4] -> MatMul with a [4, K] weight -> ReduceSum: a real model whose file is ~`megabytes` MB."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = megabytes * 1024 * 1024 // 16
    weight = np.random.default_rng(0).standard_normal((4, k)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("ReduceSum", ["h", "axes"], ["y"])],
        "padded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / f"padded-{megabytes}.onnx"
    onnx.save(model, path)
    return path


def build(store, model: Path, name: str, config_dir: Path | None = None):
    from bento_compile.compiler.build import BuildRequest
    from bento_compile.compiler.build import build as run_build
    from bento_compile.core.config import load_config

    config, cdir = load_config(config_dir / "bento.yaml" if config_dir else None)
    return run_build(BuildRequest(None if config_dir else model, config, cdir, name=name, tolerance=1e-2),
                     store).path


def measure(bento: Path, rows: list, public_key: str) -> dict[str, dict[str, float]]:
    """Alternate runs without and with the key (so a busy neighbour hits both alike); medians."""
    samples: dict[str, list[dict]] = {"plain": [], "trusted": []}
    for _ in range(RUNS):
        for kind, key in (("plain", ""), ("trusted", public_key)):
            out = subprocess.run([sys.executable, "-c", CHILD, str(bento), json.dumps(rows)], capture_output=True,
                                 text=True, env={**os.environ, "BENTO_COMPILE_PUBLIC_KEY": key}, check=True)
            samples[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert all(not s["crypto"] for s in samples["plain"]) and all(s["crypto"] for s in samples["trusted"])
    return {kind: {k: statistics.median(s[k] for s in runs) for k in ("trust", "hashes", "first")}
            for kind, runs in samples.items()}


def main() -> None:
    sys.path.insert(0, str(REPO / "examples" / "breast_cancer"))
    import train

    from bento_compile.core.signing import generate_keypair, load_private_key, sign_bento
    from bento_compile.core.store import BentoStore

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = BentoStore(tmp / "store")
        train.main(tmp)
        (tmp / "bento.yaml").write_text((REPO / "examples/breast_cancer/bento.yaml").read_text())
        bentos = [("breast-cancer example", build(store, tmp / "model.joblib", "cancer", tmp), [[0.1] * 30])]
        for mb in (30, 120):
            bentos.append((f"ONNX padded to {mb} MB", build(store, padded_onnx(tmp, mb), f"padded{mb}"),
                           [[0.1, 0.2, 0.3, 0.4]]))
        keys = generate_keypair(tmp / "keys")
        key = load_private_key(keys.private_path)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
              f"python {platform.python_version()}; runs: {RUNS} cold starts each (median)\n")
        print("| model | size | signature check (key set) | sha256 of every file (always) | "
              "cold start → 1st prediction, no key | same, key set |")
        print("|---|---|---|---|---|---|")
        for label, bento, rows in bentos:
            sign_bento(bento, key)
            size = sum(p.stat().st_size for p in bento.iterdir())
            m = measure(bento, rows, str(keys.public_path))
            print(f"| {label} | {size / 1e6:.1f} MB | {m['trusted']['trust'] * 1e3:.1f} ms | "
                  f"{m['plain']['hashes'] * 1e3:.0f} ms | {m['plain']['first'] * 1e3:.0f} ms | "
                  f"{m['trusted']['first'] * 1e3:.0f} ms |")

if __name__ == "__main__":
    main()
