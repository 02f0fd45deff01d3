"""Container image benchmark: size, build time, layer reuse, and container cold start.

For the README's example Bento on the tests' bookworm + python3 base (mmdebstrap,
cached; see tests/support/container_infra.py), in ONE run:
  - image size (compressed layers) and the size of each of our layers;
  - daemonless build time: first build (wheels cached) and a rebuild for a new model
    version, and which layers the new version reuses;
  - container cold start: `docker run` → first 200 from /readyz and from /predict, with
    and without precompiled bytecode (the image's site-packages is read-only for its
    non-root user, so without .pyc every start compiles every module it imports).

Needs root, dockerd, docker-registry, skopeo, mmdebstrap (as the container tests do).
Usage: python bench/bench_containers.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support import container_infra as infra  # noqa: E402


def build_bento(work: Path) -> Path:
    sys.path.insert(0, str(REPO / "examples" / "breast_cancer"))
    import train

    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import load_config
    from bento_compile.core.store import BentoStore

    train.main(work)
    (work / "bento.yaml").write_text((REPO / "examples/breast_cancer/bento.yaml").read_text())
    config, config_dir = load_config(work / "bento.yaml")
    return build(BuildRequest(None, config, config_dir), BentoStore(work / "store")).path


def first_200(url: str, body: bytes | None, started: float, timeout: float = 120) -> float:
    while time.perf_counter() - started < timeout:
        try:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"{url} never answered 200")


def cold_start(host: str, image: str, body: bytes) -> tuple[float, float]:
    port = infra.free_port()
    started = time.perf_counter()
    subprocess.run(["docker", "-H", host, "run", "-d", "--name", "bench", "--network", "host", "-e", f"PORT={port}",
                    image], check=True, capture_output=True)
    try:
        ready = first_200(f"http://127.0.0.1:{port}/readyz", None, started)
        predicted = first_200(f"http://127.0.0.1:{port}/predict", body, started)
    finally:
        subprocess.run(["docker", "-H", host, "rm", "-f", "bench"], capture_output=True)
    return ready, predicted


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from bento_compile.targets.images import plan_http_image
    from bento_compile.targets.oci_builder import OciBuilder

    work = Path(tempfile.mkdtemp(prefix="bench-containers-"))
    docker_root = Path(tempfile.mkdtemp(prefix="bcd-", dir="/tmp"))
    try:
        bento = build_bento(work)
        body = json.dumps(json.loads((bento / "manifest.json").read_text())["example"]).encode()
        base = f"{infra.make_base_layout(work / 'base')}:python"
        rows = []
        with infra.registry(work / "registry") as registry, infra.dockerd(docker_root) as host:
            images = {}
            for label, bytecode in (("with bytecode", True), ("without bytecode", False)):
                plan_http_image(bento, base, bytecode=bytecode)  # warm the wheel / compile caches
                started = time.perf_counter()
                plan = plan_http_image(bento, base, bytecode=bytecode)
                built = OciBuilder().build(plan, work / label.replace(" ", "-"), f"{registry}/cancer:{bytecode}")
                seconds = time.perf_counter() - started
                OciBuilder().push(built)
                subprocess.run(["docker", "-H", host, "pull", built.pinned], check=True, capture_output=True)
                images[label] = built
                layers = json.loads((built.layout / "blobs/sha256" / built.digest.split(":")[1]).read_text())["layers"]
                rows.append((label, "image size (compressed)", f"{built.size / 1e6:.1f} MB"))
                rows.append((label, "deps / runtime / bento layers",
                             " / ".join(f"{x['size'] / 1e6:.2f} MB" for x in layers[-3:])))
                rows.append((label, "build (wheels and dependency layer cached)", f"{seconds:.1f} s"))
                if bytecode:  # a new model version, built at once (the tree others edit must not move)
                    other = work / "bento-v2"
                    shutil.copytree(bento, other)
                    (other / "extra.txt").write_text("v2\n")
                    raw = json.loads((other / "manifest.json").read_text())
                    raw["created"] = "2031-01-02T03:04:05Z"
                    (other / "manifest.json").write_text(json.dumps(raw))
                    started = time.perf_counter()
                    v2 = OciBuilder().build(plan_http_image(other, base), work / "v2", f"{registry}/cancer:v2")
                    v2_seconds = time.perf_counter() - started
                    names = ["base", "deps", "runtime", "bento"][-len(v2.layer_digests):]
                    reused = [n for n, a, b in zip(names, built.layer_digests, v2.layer_digests, strict=True)
                              if a == b]
                    v2_layers = json.loads((v2.layout / "blobs/sha256" / v2.digest.split(":")[1]).read_text())
                    v2_rows = [("new model version", "rebuild", f"{v2_seconds:.1f} s"),
                               ("new model version", "layers reused / new bytes to push",
                                f"{', '.join(reused)} / {v2_layers['layers'][-1]['size'] / 1e6:.2f} MB")]
                ready, predicted = zip(*(cold_start(host, built.pinned, body) for _ in range(args.runs)), strict=True)
                rows.append((label, f"docker run → /readyz 200 (median of {args.runs})",
                             f"{statistics.median(ready) * 1000:.0f} ms"))
                rows.append((label, f"docker run → 1st /predict 200 (median of {args.runs})",
                             f"{statistics.median(predicted) * 1000:.0f} ms"))
        rows += v2_rows
        import onnxruntime

        engine = subprocess.run(["dockerd", "--version"], capture_output=True, text=True).stdout.strip()
        print(f"machine: {platform.machine()}, {platform.platform()}; python {platform.python_version()}; "
              f"onnxruntime {onnxruntime.__version__}; {engine}")
        print("\n| image | metric | value |\n|---|---|---|")
        for row in rows:
            print(f"| {row[0]} | {row[1]} | {row[2]} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(docker_root, ignore_errors=True)


if __name__ == "__main__":
    main()
