"""The on-device entry of an edge bundle: `run serve | predict | lines | check | rollback | info`.

One process per mode, each for a different way a device uses a model:

- `serve`: the HTTP server, the same contract as every other platform (`create_app`).
- `predict`: one-shot; reads one JSON request on stdin (or `--input FILE`), writes one
  JSON answer on stdout. Exit 0 on success, 2 for a bad request (what HTTP calls
  422 / 413), 1 when the model cannot be loaded.
- `lines`: a stdin/stdout JSON-lines loop for embedding in another program: one
  request per line in, one answer per line out, in order, flushed after each. A bad
  line answers `{"error": ..., "status": 422}` and the loop goes on. An `"id"` in a
  request is echoed back in its answer.
- `check`: loads the model (verifying every hash) and runs the Bento's recorded example;
  `install.sh` runs it before it switches `current`, so a broken release never goes live.
- `rollback`: points `current` back at the previous release, atomically.

Import-light on purpose (stdlib argparse, not click): a device pays for every import
at every start. FastAPI and uvicorn are imported only by `serve`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

CONFIG_NAME = "config.env"
EXIT_OK, EXIT_LOAD, EXIT_INPUT = 0, 1, 2


# ---------------------------------------------------------------- layout and config

class Layout:
    """Where things are on the device: PREFIX/releases/ID/{bento,app,venv,run}, PREFIX/current."""

    def __init__(self, release: Path):
        self.release = release.resolve()
        self.bento = self.release / "bento"
        # An installed release lives in PREFIX/releases/ID; an unpacked bundle lives anywhere.
        parent = self.release.parent
        self.prefix: Path | None = parent.parent if parent.name == "releases" else None

    @property
    def config_file(self) -> Path:
        base = self.prefix if self.prefix is not None else self.release
        return base / CONFIG_NAME


def read_config(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (the systemd EnvironmentFile format); `#` comments and blank lines ignored."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise SystemExit(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def setting(config: dict[str, str], key: str, default: str) -> str:
    """The environment wins over the config file (systemd passes the file as environment anyway)."""
    return os.environ.get(key) or config.get(key) or default


# ---------------------------------------------------------------- JSON in and out

def _dumps(value: Any) -> str:
    try:
        import orjson  # faster, and it writes NaN as null instead of invalid JSON

        return orjson.dumps(value).decode()
    except ImportError:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_default)


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot encode {type(value).__name__}")


def _load_model(bento: Path):
    from bento_compile.runtimes.model import BentoModel

    return BentoModel.load(bento)


def _answer(model: Any, text: str, limit: int) -> tuple[dict[str, Any], int, Any]:
    """One request (JSON text) to (answer, HTTP-like status, the parsed request or None)."""
    from bento_compile.runtimes.errors import InputError, PayloadTooLarge

    if len(text.encode("utf-8")) > limit:
        return {"error": f"request is over {limit} bytes (runtime.max_body_bytes): send fewer rows"}, 413, None
    try:
        payload = json.loads(text)
    except ValueError as exc:
        return {"error": f"the request is not valid JSON: {exc}"}, 422, None
    try:
        return model.predict(payload), 200, payload
    except InputError as exc:
        return {"error": str(exc)}, 422, payload
    except PayloadTooLarge as exc:
        return {"error": str(exc)}, 413, payload


def _predict_image(model: Any, path: Path, limit: int, stdout: TextIO) -> int:
    """`run predict --image FILE`: the file's bytes as the Bento's one image input."""
    from bento_compile.runtimes.errors import RuntimeFault

    images = [i.name for i in model.manifest.pipeline.inputs if i.kind == "image"] if model.manifest.pipeline else []
    if len(images) != 1:
        stdout.write(_dumps({"error": "--image needs a Bento with one image input (inputs: kind: image)"}) + "\n")
        return EXIT_INPUT
    if not path.is_file() or path.stat().st_size > limit:
        stdout.write(_dumps({"error": f"{path} does not exist or is over {limit} bytes (--image)"}) + "\n")
        return EXIT_INPUT
    try:
        answer = model.predict({"inputs": {images[0]: [path.read_bytes()]}})
    except RuntimeFault as exc:
        stdout.write(_dumps({"error": str(exc)}) + "\n")
        return EXIT_INPUT
    stdout.write(_dumps(answer) + "\n")
    return EXIT_OK


def cmd_predict(layout: Layout, args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    try:
        model = _load_model(layout.bento)
    except Exception as exc:
        stdout.write(_dumps({"error": f"the model failed to load: {exc}"}) + "\n")
        return EXIT_LOAD
    limit = model.manifest.runtime.max_body_bytes
    if getattr(args, "image", None):  # an image file, for Bentos that declare an image input
        return _predict_image(model, Path(args.image), limit, stdout)
    if args.input:
        path = Path(args.input)
        if not path.is_file():
            stdout.write(_dumps({"error": f"{path} does not exist (--input)"}) + "\n")
            return EXIT_INPUT
        if path.stat().st_size > limit:
            stdout.write(_dumps({"error": f"{path} is over {limit} bytes (runtime.max_body_bytes)"}) + "\n")
            return EXIT_INPUT
        text = path.read_text(encoding="utf-8")
    else:
        text = stdin.read(limit + 1)
    answer, status, _payload = _answer(model, text, limit)
    stdout.write(_dumps(answer) + "\n")
    return EXIT_OK if status == 200 else EXIT_INPUT


def cmd_lines(layout: Layout, args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    try:
        model = _load_model(layout.bento)
    except Exception as exc:
        stdout.write(_dumps({"error": f"the model failed to load: {exc}", "status": 503}) + "\n")
        stdout.flush()
        return EXIT_LOAD
    limit = model.manifest.runtime.max_body_bytes
    print(f"ready: {model.manifest.tag}", file=sys.stderr, flush=True)
    while True:
        line = stdin.readline(limit + 2)
        if not line:
            return EXIT_OK
        answer: dict[str, Any]
        if not line.endswith("\n") and len(line) > limit:
            # Over the bound: answer once, then skip the rest of that line without holding it.
            while (rest := stdin.readline(1 << 16)) and not rest.endswith("\n"):
                pass
            answer, status, payload = {"error": f"line is over {limit} bytes (runtime.max_body_bytes)"}, 413, None
        elif not line.strip():
            continue
        else:
            answer, status, payload = _answer(model, line, limit)
        if status != 200:
            answer["status"] = status
        if isinstance(payload, dict) and payload.get("id") is not None:
            answer = {"id": payload["id"], **answer}
        stdout.write(_dumps(answer) + "\n")
        stdout.flush()


def cmd_check(layout: Layout, args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    """Load (hash check included) and run the recorded example: the smoke test before going live."""
    started = time.perf_counter()
    try:
        model = _load_model(layout.bento)
        example = model.manifest.example
        if example:
            model.predict(example if isinstance(example, dict) and "inputs" in example else {"inputs": example})
        if _bundle_info(layout).get("http", False):
            import uvicorn  # noqa: F401  (the server must start too, not only the model)

            from bento_compile.adapters import server  # noqa: F401
            from bento_compile.adapters.http_app import create_app

            create_app(layout.bento, load_mode="lazy")
    except Exception as exc:
        stdout.write(_dumps({"ok": False, "error": str(exc)}) + "\n")
        return EXIT_LOAD
    stdout.write(_dumps({"ok": True, "tag": model.manifest.tag, "providers": model.backend.providers,
                         "seconds": round(time.perf_counter() - started, 3)}) + "\n")
    return EXIT_OK


def cmd_serve(layout: Layout, args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    """The same server every container runs (adapters/server.py): the HTTP contract, graceful SIGTERM
    (systemctl stop drains in-flight requests and exits 0), the runtime's log lines on stderr."""
    config = read_config(layout.config_file)
    try:
        import uvicorn  # noqa: F401

        from bento_compile.adapters.server import run
    except ImportError as exc:
        print(f"run serve: this bundle was built without the HTTP server ({exc.name} is missing); "
              "use `run predict` or `run lines`, or rebuild without --no-http", file=sys.stderr)
        return EXIT_LOAD
    host = args.host or setting(config, "HOST", "127.0.0.1")
    port = int(args.port or setting(config, "PORT", "3000"))
    grace = setting(config, "BENTO_COMPILE_GRACE_SECONDS", "")
    run(str(layout.bento), host=host, port=port, load_mode=setting(config, "BENTO_COMPILE_LOAD", "background"),
        log_level=setting(config, "LOG_LEVEL", "info"), grace_seconds=float(grace) if grace else None)
    return EXIT_OK


def cmd_rollback(layout: Layout, args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    prefix = Path(args.prefix) if args.prefix else layout.prefix
    if prefix is None:
        print("run rollback: this is not an installed release (no PREFIX/releases/ID); pass --prefix",
              file=sys.stderr)
        return EXIT_LOAD
    return rollback(prefix, stdout)


def rollback(prefix: Path, stdout: TextIO) -> int:
    """Swap `current` and `previous` with two atomic renames of fresh symlinks."""
    current, previous = prefix / "current", prefix / "previous"
    if not previous.is_symlink():
        print(f"run rollback: {prefix} has no previous release to go back to", file=sys.stderr)
        return EXIT_LOAD
    old, new = os.readlink(current), os.readlink(previous)
    if not (prefix / new / ".installed").is_file():
        print(f"run rollback: the previous release {new} is not completely installed; refusing",
              file=sys.stderr)
        return EXIT_LOAD
    for link, target in ((current, new), (previous, old)):
        tmp = link.with_name(f".{link.name}.tmp")
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)
    stdout.write(_dumps({"current": new, "previous": old}) + "\n")
    print(f"rolled back: current -> {new} (was {old}); restart the service to serve it "
          "(systemctl restart, or it restarts on the next boot)", file=sys.stderr)
    return EXIT_OK


def _bundle_info(layout: Layout) -> dict[str, Any]:
    path = layout.release / "bundle.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def cmd_info(layout: Layout, args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    info = _bundle_info(layout)
    info.pop("files", None)
    stdout.write(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return EXIT_OK


COMMANDS = {"serve": cmd_serve, "predict": cmd_predict, "lines": cmd_lines, "check": cmd_check,
            "rollback": cmd_rollback, "info": cmd_info}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run", description="Run a bento-compile edge bundle on this device.",
        epilog="examples:\n  run serve --port 3000\n  run predict < request.json\n  run predict --image photo.jpg\n"
               "  producer | run lines | consumer\n  run rollback",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--release", default=os.environ.get("BENTO_EDGE_RELEASE", "."),
                   help="the release folder (the `run` script passes it)")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="HTTP server: POST /predict, GET /healthz /readyz /metadata /docs")
    serve.add_argument("--host", help="address to listen on (config HOST; default 127.0.0.1)")
    serve.add_argument("--port", help="port (config PORT; default 3000)")
    predict = sub.add_parser("predict", help="one JSON request on stdin -> one JSON answer on stdout")
    predict.add_argument("--input", help="read the request from this file instead of stdin")
    predict.add_argument("--image", help="an image file (JPEG/PNG/WebP) for a Bento with an image input")
    sub.add_parser("lines", help="JSON-lines loop: one request per stdin line, one answer per stdout line")
    sub.add_parser("check", help="load the model (hash check) and run the recorded example")
    rb = sub.add_parser("rollback", help="switch `current` back to the previous release")
    rb.add_argument("--prefix", help="the install folder (default: the one this release is in)")
    sub.add_parser("info", help="print the bundle's manifest (without the file list)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    layout = Layout(Path(args.release))
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")  # bytes that are not UTF-8 make a 422, not a crash
    return COMMANDS[args.command](layout, args, sys.stdin, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
