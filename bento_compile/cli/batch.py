"""`bento-compile batch`: score a file, folder, glob or S3 prefix with a Bento, locally, on Spark or on Ray.

Progress (rows/s and ETA, on a terminal) and the summary go to stderr; with --json, stdout carries one JSON
object with the summary.
"""

from __future__ import annotations

import json
import signal
from contextlib import nullcontext
from typing import Any

import click
from rich.markup import escape

from bento_compile.cli.console import err
from bento_compile.core.errors import BentoCompileError

ENGINES = ("local", "spark", "ray")


def _columns(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise click.BadParameter("list at least one column, e.g. --features age,income")
    return names


@click.command("batch")
@click.argument("bento")
@click.argument("input_uri", metavar="INPUT")
@click.argument("output_uri", metavar="OUTPUT")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local: worker processes here; spark: pyspark (extra [spark]); ray: Ray Data (extra [ray]).")
@click.option("--master", default="local[2]", show_default=True, help="Spark master for --engine spark.")
@click.option("--features", help="The feature columns, in the order the model takes them: COL,COL,...")
@click.option("--input-column", help="One list-valued column holding each row's features.")
@click.option("--keep", help="Columns copied to the output before the model's outputs (e.g. an id): COL,...")
@click.option("--set", "constants", multiple=True, metavar="NAME=JSON",
              help="A whole-tensor input (not one value per row, e.g. a scalar threshold), fed to every batch.")
@click.option("--batch-rows", type=int, default=8192, show_default=True, help="Rows per model run.")
@click.option("--workers", type=int, help="Worker processes (local) or actors (ray). Default, local: measured on "
              "the first batches (workers only when they pay); ray: the CPUs.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="fail: stop at the first bad row; skip: null outputs and an `error` column for it.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv", "jsonl"]),
              help="Output format (default: OUTPUT's suffix, else parquet).")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (only once the new one is complete).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object on stdout.")
def batch(bento: str, input_uri: str, output_uri: str, engine: str, master: str, features: str | None,
          input_column: str | None, keep: str | None, constants: tuple[str, ...], batch_rows: int,
          workers: int | None, on_error: str, fmt: str | None, overwrite: bool, as_json: bool) -> None:
    """Score INPUT with the Bento BENTO and write one output row per input row, in order, to OUTPUT.

    \b
    BENTO: NAME:VERSION or NAME:latest from the store, or a Bento folder.
    INPUT: a .parquet, .csv or .jsonl file (.gz too), a folder or glob of them
    (a folder of output parts then), or s3://bucket/key (AWS credentials, AWS_ENDPOINT_URL).
    Columns: the feature names the model was fitted on (DataFrame models), else
    --features or --input-column; multi-input Bentos take a column per input.
    OUTPUT: the --keep columns, then a column per model output (`probabilities`
    as a list); written under a temporary name, renamed only when complete.
    The Bento's signature and hashes are checked as the runtime checks them.
    \b
    Examples:
      bento-compile batch churn:latest customers.parquet scores.parquet --keep id
      bento-compile batch churn:latest 's3://lake/day=2026-01-01/*.parquet' s3://lake/scores/ --keep id
      bento-compile batch cancer:latest rows.csv out.csv --features f0,f1,f2 --on-error skip
      bento-compile batch churn:latest events/ scored/ --engine spark --master local[2]
      bento-compile batch churn:latest events/ scored/ --engine ray --workers 2
      bento-compile batch scaler:latest rows.parquet out.parquet --set threshold=0.5
    """
    from bento_compile.batch.extras import require

    require("pyarrow")  # before anything imports it: without the extra, say which one to install
    if engine != "local":
        require("pyspark" if engine == "spark" else "ray")
    from bento_compile.batch.scorer import ScoreOptions
    from bento_compile.runtimes.errors import RuntimeFault

    options = ScoreOptions(features=_columns(features), input_column=input_column,
                           keep=_columns(keep) or (), on_error=on_error, constants=_constants(constants))
    previous = signal.signal(signal.SIGTERM, _interrupted)  # a terminated run removes its partial output
    try:
        summary = _run(engine, bento, input_uri, output_uri, options, batch_rows, workers, fmt, overwrite,
                       master, show_progress=not as_json and err.is_terminal)
    except RuntimeFault as exc:  # the Bento's files or signature did not check out
        raise BentoCompileError(f"The Bento cannot be used: {exc}",
                                "Rebuild it, or pull it again from a good copy.") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    data = summary.to_dict()
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
        return
    errors = f", [yellow]{summary.errors} with errors[/]" if summary.errors else ""
    err.print(f"[green]Scored[/] {summary.rows:,} rows{errors} in {summary.seconds:.2f}s "
              f"({summary.rows_per_second:,.0f} rows/s, {summary.engine}, {summary.workers} × "
              f"{summary.intra_op_threads} thread(s)) → {escape(summary.output)}")
    reason = summary.extra.get("workers_reason")
    if reason and summary.extra.get("workers_chosen") == "measured":
        err.print(f"[dim]workers: {escape(reason)}[/]")


def _constants(values: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    parsed = []
    for value in values:
        name, equals, text = value.partition("=")
        if not equals or not name.strip():
            raise click.BadParameter(f"{value!r} is not NAME=JSON, e.g. --set threshold=0.5", param_hint="--set")
        try:
            parsed.append((name.strip(), json.loads(text)))
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"the value of {name.strip()!r} is not JSON ({exc.msg}): {text!r}",
                                     param_hint="--set") from None
    return tuple(parsed)


def _interrupted(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _run(engine: str, bento: str, input_uri: str, output_uri: str, options, batch_rows: int, workers: int | None,
         fmt: str | None, overwrite: bool, master: str, show_progress: bool):
    if engine == "spark":
        from bento_compile.batch.spark import score_files as spark_score

        with err.status("Scoring on Spark…", spinner="dots") if show_progress else nullcontext():
            return spark_score(bento, input_uri, output_uri, options, master=master, batch_rows=batch_rows,
                               fmt=fmt, overwrite=overwrite)
    if engine == "ray":
        from bento_compile.batch.ray import score_files as ray_score

        with err.status("Scoring on Ray…", spinner="dots") if show_progress else nullcontext():
            return ray_score(bento, input_uri, output_uri, options, workers=workers, batch_rows=batch_rows,
                             fmt=fmt, overwrite=overwrite)
    from bento_compile.batch.local import score_files, total_rows

    if not show_progress:
        return score_files(bento, input_uri, output_uri, options, batch_rows=batch_rows, workers=workers, fmt=fmt,
                           overwrite=overwrite)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    total = total_rows(input_uri)
    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"),
                  TextColumn("{task.fields[errors]}"), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=err, transient=True) as progress:
        task = progress.add_task("rows", total=total, speed="", errors="")
        started = progress.get_time()

        def report(rows: int, errors: int) -> None:
            elapsed = max(progress.get_time() - started, 1e-6)
            progress.update(task, completed=rows, speed=f"{rows / elapsed:,.0f} rows/s",
                            errors=f"{errors:,} errors" if errors else "")

        return score_files(bento, input_uri, output_uri, options, batch_rows=batch_rows, workers=workers, fmt=fmt,
                           overwrite=overwrite, progress=report)
