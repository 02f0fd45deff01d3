"""The `bento-compile` command line.

Progress and tables go to stderr (rich); stdout carries only what scripts
consume: the tag as the last line of `build`, or one JSON object with --json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .cli_quantize import print_variants
from .errors import BentoCompileError
from .store import BentoStore

err = Console(stderr=True, highlight=False)


class Group(click.Group):
    """Turns BentoCompileError into one clear paragraph and exit code 1 — never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BentoCompileError as exc:
            err.print(f"[bold red]error:[/] {escape(exc.problem)}")
            if exc.fix:
                err.print(f"[bold]fix:[/] {escape(exc.fix)}")
            report = getattr(exc, "report", None)
            if report:
                _print_parity(report)
            if getattr(exc, "quantization", None):
                print_variants(exc.quantization, err)
            sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bento-compile")
def main() -> None:
    """Compile a trained model into a verified, content-addressed Bento, and serve it.

    \b
    Typical flow:
      bento-compile build model.joblib --name churn --sample sample.npy
      bento-compile list
      bento-compile show churn:latest
      bento-compile serve churn:latest --port 3000

    The store lives in $BENTO_COMPILE_HOME (default ~/.bento-compile).
    """


@main.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("-f", "--file", "config_file", type=click.Path(path_type=Path),
              help="bento.yaml with name, model, sample, inputs, parity and runtime settings.")
@click.option("--name", help="Bento name (lowercase; default: from bento.yaml or the model file name).")
@click.option("--sample", type=click.Path(path_type=Path),
              help=".npy or .csv rows for the parity check; a few become the API example.")
@click.option("--tolerance", type=float, help="Max |difference| on continuous outputs (default 1e-4).")
@click.option("--quantize", type=click.Choice(["none", "dynamic", "static", "fp16", "auto"]),
              help="Quantization method (overrides quantize.method); every variant is gated against the original.")
@click.option("--format", "model_format", type=click.Choice(["onnx", "ort"]),
              help="ort: ship ONNX Runtime's .ort format plus required_operators.config.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (tag, path, parity) on stdout.")
def build(model: Path | None, config_file: Path | None, name: str | None, sample: Path | None,
          tolerance: float | None, quantize: str | None, model_format: str | None, as_json: bool) -> None:
    """Compile MODEL into a Bento and store it.

    \b
    MODEL: scikit-learn (.joblib/.pkl, LightGBM/XGBoost models too), .onnx,
    PyTorch (.pt/.pth), a LightGBM .txt / XGBoost .json booster, Keras
    (.keras/.h5) or a SavedModel folder (→ TFLite), or a .tflite/.ort file.

    \b
    The compiled model is checked against the original on the sample rows;
    past the tolerance the build fails and nothing is stored. The last line
    of stdout is the tag, NAME:VERSION, where VERSION is a content hash.
    \b
    Example:
      bento-compile build model.joblib --name churn --sample sample.npy
      bento-compile build -f examples/breast_cancer/bento.yaml
      bento-compile build mlp.joblib --sample sample.npy --quantize auto
    """
    from .compiler.build import BuildRequest
    from .compiler.build import build as run_build
    from .config import load_config

    config, config_dir = load_config(config_file)
    request = BuildRequest(model_path=model, config=config, config_dir=config_dir, name=name,
                           sample_path=sample, tolerance=tolerance, quantize=quantize, format=model_format)
    with err.status("Compiling…") as status:
        def progress(message: str) -> None:
            if message.startswith("No --sample"):
                err.print(f"[yellow]note:[/] {message}")
            else:
                status.update(message + "…")
                err.print(f"[dim]•[/] {message}")

        result = run_build(request, BentoStore(), progress)
    if as_json:
        click.echo(json.dumps({"tag": result.tag, "path": str(result.path), "created": result.created_new,
                               "parity": result.parity, "quantization": result.manifest.get("quantization")},
                              sort_keys=True))
        return
    if result.manifest.get("quantization"):
        print_variants(result.manifest["quantization"], err)
    _print_parity(result.parity)
    verb = "Stored" if result.created_new else "Already stored (same content)"
    err.print(f"[green]{verb}[/] {result.tag} at {result.path}")
    click.echo(result.tag)


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--remote", "remote_url", help="List a remote store instead: s3://bucket/prefix.")
@click.option("--endpoint-url", help="S3-compatible endpoint for --remote (default: $AWS_ENDPOINT_URL or AWS).")
def list_bentos(as_json: bool, remote_url: str | None, endpoint_url: str | None) -> None:
    """List the Bentos in the local store (or, with --remote, in S3), oldest first."""
    if remote_url:
        from .cli_trust import list_remote

        return list_remote(remote_url, endpoint_url, as_json)
    bentos = BentoStore().list()
    if as_json:
        click.echo(json.dumps([{"tag": b.tag, "created": b.created, "size": b.size, "path": str(b.path)}
                               for b in bentos]))
        return
    if not bentos:
        err.print("The store is empty. Build one: bento-compile build model.joblib --name NAME")
        return
    table = Table("tag", "created", "size", "parity", box=None)
    for b in bentos:
        table.add_row(b.tag, b.created, _size(b.size), "ok" if b.manifest.raw["parity"]["passed"] else "FAIL")
    Console().print(table)


@main.command()
@click.argument("tag")
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def show(tag: str, as_json: bool) -> None:
    """Show a Bento: files, signature, parity report, versions. TAG may be NAME:latest."""
    bento = BentoStore().resolve(tag)
    raw = bento.manifest.raw
    if as_json:
        click.echo(json.dumps(raw, indent=2, sort_keys=True))
        return
    out = Console()
    out.print(f"[bold]{bento.tag}[/]  created {bento.created}  at {bento.path}")
    out.print(f"source: {raw['source']['description']} (sha256 {raw['source']['sha256'][:12]}…)")
    from .cli_trust import signature_summary

    out.print(signature_summary(bento.path))
    files = Table("file", "size", "sha256", title="files", box=None)
    for name, meta in sorted(raw["files"].items()):
        files.add_row(name, _size(meta["size"]), meta["sha256"][:16] + "…")
    out.print(files)
    sig = Table("", "name", "dtype", "shape", title="signature", box=None)
    for kind in ("inputs", "outputs"):
        for spec in raw["model"][kind]:
            shape = "[" + ", ".join("N" if d is None else str(d) for d in spec["shape"]) + "]"
            sig.add_row(kind[:-1], spec["name"], spec["dtype"], shape)
    out.print(sig)
    if raw.get("quantization"):
        print_variants(raw["quantization"], out)
    _print_parity(raw["parity"], out)
    out.print("versions: " + ", ".join(f"{k} {v}" for k, v in sorted(raw["versions"].items())))


@main.command()
@click.argument("tag")
def delete(tag: str) -> None:
    """Delete a Bento from the local store."""
    bento = BentoStore().delete(tag)
    err.print(f"Deleted {bento.tag}")


@main.command()
@click.argument("tag")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=3000, show_default=True, type=int, help="Port to listen on.")
def serve(tag: str, host: str, port: int) -> None:
    """Serve a Bento over HTTP: POST /predict, GET /healthz /readyz /metadata /docs.

    \b
    Example:
      bento-compile serve churn:latest --port 3000
      curl -s localhost:3000/predict -d '{"inputs": [[...]]}'
    """
    from .adapters.server import run

    bento = BentoStore().resolve(tag)
    err.print(f"Serving {bento.tag} on http://{host}:{port} (docs at /docs)")
    run(str(bento.path), host=host, port=port, load_mode="eager")


@main.group()
def target() -> None:
    """Turn a stored Bento into deployable files for a platform.

    \b
    Each target states its platform's limits and fails the build with a clear
    message when an artifact would break one.
    """


def _print_parity(report: dict[str, Any], console: Console | None = None) -> None:
    from .compiler.parity import table_rows

    table = Table("output", "measured", "bound", "", box=None,
                  title=f"parity on {report['rows']} rows ({report['sample']})")
    for row in table_rows(report):
        table.add_row(*row)
    (console or err).print(table)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


from .cli_trust import COMMANDS as _TRUST_COMMANDS  # noqa: E402  (issue 8: keygen sign verify push pull tag)

for _command in _TRUST_COMMANDS:
    main.add_command(_command)


from .cli_containers import COMMANDS as _CONTAINER_COMMANDS  # noqa: E402  (issue 4: cloudrun knative lambda-image)

for _command in _CONTAINER_COMMANDS:
    target.add_command(_command)

from .cli_edge import edge as _edge_target  # noqa: E402  (issue 7: target edge, flash)
from .cli_edge import flash_command as _flash_command  # noqa: E402

target.add_command(_edge_target)
main.add_command(_flash_command)

from .cli_lambda import invoke as _lambda_invoke  # noqa: E402  (issue 3: target lambda-zip, invoke)
from .cli_lambda import lambda_zip as _lambda_zip  # noqa: E402

target.add_command(_lambda_zip)
main.add_command(_lambda_invoke)

if __name__ == "__main__":
    main()
