"""The store commands: build a Bento, list, show and delete them, serve one over HTTP.

Progress and tables go to stderr (rich); stdout carries only what scripts
consume: the tag as the last line of `build`, or one JSON object with --json.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from bento_compile.cli.console import err, human_size, print_parity
from bento_compile.cli.quantize import print_variants
from bento_compile.core.store import BentoStore


@click.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("-f", "--file", "config_file", type=click.Path(path_type=Path),
              help="bento.yaml with name, model, sample, inputs, parity and runtime settings.")
@click.option("--name", help="Bento name (lowercase; default: from bento.yaml or the model file name).")
@click.option("--sample", type=click.Path(path_type=Path),
              help="Inputs for the parity check: .npy/.csv rows, .npz (one array per input, scalars too) or a "
                   ".json request body; a few become the API example. Without it: synthesized from the graph.")
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
      bento-compile build silero_vad.onnx --sample chunk.npz   # input, state, sr
    """
    from bento_compile import api

    with err.status("Compiling…") as status:
        def progress(message: str) -> None:
            if message.startswith("No --sample"):
                err.print(f"[yellow]note:[/] {message}")
            else:
                status.update(message + "…")
                err.print(f"[dim]•[/] {message}")

        result = api.build(model, name=name, sample=sample, config=config_file, tolerance=tolerance,
                           quantize=quantize, format=model_format, progress=progress)
    if as_json:
        click.echo(json.dumps({"tag": result.tag, "path": str(result.path), "created": result.created_new,
                               "parity": result.parity, "quantization": result.quantization}, sort_keys=True))
        return
    if result.quantization:
        print_variants(result.quantization, err)
    print_parity(result.parity)
    verb = "Stored" if result.created_new else "Already stored (same content)"
    err.print(f"[green]{verb}[/] {result.tag} at {result.path}")
    click.echo(result.tag)


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--remote", "remote_url", help="List a remote store instead: s3://bucket/prefix.")
@click.option("--endpoint-url", help="S3-compatible endpoint for --remote (default: $AWS_ENDPOINT_URL or AWS).")
def list_bentos(as_json: bool, remote_url: str | None, endpoint_url: str | None) -> None:
    """List the Bentos in the local store (or, with --remote, in S3), oldest first."""
    if remote_url:
        from bento_compile.cli.trust import list_remote

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
        table.add_row(b.tag, b.created, human_size(b.size), "ok" if b.manifest.parity.passed else "FAIL")
    Console().print(table)


@click.command()
@click.argument("tag")
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
def show(tag: str, as_json: bool) -> None:
    """Show a Bento: files, signature, parity report, versions. TAG may be NAME:latest."""
    bento = BentoStore().resolve(tag)
    manifest = bento.manifest
    if as_json:
        click.echo(json.dumps(manifest.to_dict(), indent=2, sort_keys=True))
        return
    out = Console()
    out.print(f"[bold]{bento.tag}[/]  created {bento.created}  at {bento.path}")
    out.print(f"source: {manifest.source.description} (sha256 {manifest.source.sha256[:12]}…)")
    from bento_compile.cli.trust import signature_summary

    out.print(signature_summary(bento.path))
    files = Table("file", "size", "sha256", title="files", box=None)
    for name, meta in sorted(manifest.files.items()):
        files.add_row(name, human_size(meta.size), meta.sha256[:16] + "…")
    out.print(files)
    sig = Table("", "name", "dtype", "shape", title="signature", box=None)
    for kind, specs in (("input", manifest.inputs), ("output", manifest.outputs)):
        for spec in specs:
            shape = "[" + ", ".join("N" if d is None else str(d) for d in spec.shape) + "]"
            sig.add_row(kind, spec.name, spec.dtype, shape)
    out.print(sig)
    if manifest.quantization:
        print_variants(manifest.quantization.to_dict(), out)
    print_parity(manifest.parity.to_dict(), out)
    from bento_compile.cli.pipeline_view import print_pipeline

    print_pipeline(manifest.pipeline, out)
    from bento_compile.cli.monitor import print_baseline

    print_baseline(manifest.monitoring, out)
    out.print("versions: " + ", ".join(f"{k} {v}" for k, v in sorted(manifest.versions.items())))


@click.command()
@click.argument("tag")
def delete(tag: str) -> None:
    """Delete a Bento from the local store."""
    bento = BentoStore().delete(tag)
    err.print(f"Deleted {bento.tag}")


@click.command()
@click.argument("tag")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=3000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="HTTP worker processes, one model session each, accepting from one listening socket. "
                   "Default: $BENTO_COMPILE_WORKERS, else one per whole CPU of this process's quota.")
def serve(tag: str, host: str, port: int, workers: int | None) -> None:
    """Serve a Bento over HTTP: POST /predict, GET /healthz /readyz /metadata /docs /metrics.

    \b
    Examples:
      bento-compile serve churn:latest --port 3000
      bento-compile serve churn:latest --workers 4      # four processes on one port
      curl -s localhost:3000/predict -d '{"inputs": [[...]]}'
    """
    from bento_compile.adapters.server import run

    bento = BentoStore().resolve(tag)
    err.print(f"Serving {bento.tag} on http://{host}:{port} (docs at /docs)")
    run(str(bento.path), host=host, port=port, load_mode="eager", workers=workers)


COMMANDS = (build, list_bentos, show, delete, serve)
