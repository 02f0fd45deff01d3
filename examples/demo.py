"""`make demo`: train the example, compile it into a Bento, serve it, send one request.

Every step is the public CLI a user would type; this script only strings them
together and stops the server it started.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE / "breast_cancer"
CLI = [sys.executable, "-m", "bento_compile.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step(title: str, cmd: list[str]) -> str:
    print(f"\n$ {' '.join(Path(c).name if c == sys.executable else c for c in cmd)}", flush=True)
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout


def main() -> None:
    step("train", [sys.executable, str(EXAMPLE / "train.py")])
    tag = step("build", [*CLI, "build", "-f", str(EXAMPLE / "bento.yaml")]).strip().splitlines()[-1]
    print(tag)
    port = free_port()
    print(f"\n$ bento-compile serve {tag} --port {port}", flush=True)
    server = subprocess.Popen([*CLI, "serve", tag, "--port", str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not become ready in 30 s") from None
                time.sleep(0.1)
        rows = np.load(EXAMPLE / "sample.npy")[:2]
        body = json.dumps({"inputs": [[None if np.isnan(v) else float(v) for v in row] for row in rows]})
        print(f"\n$ curl -s {base}/predict -d '{body[:60]}…'")
        request = urllib.request.Request(base + "/predict", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as r:
            answer = json.loads(r.read())
        print(json.dumps(answer))
        assert set(answer["outputs"]) == {"label", "probabilities"}, answer
        print(f"\nDemo OK. Store: {os.environ.get('BENTO_COMPILE_HOME', '~/.bento-compile')}")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
