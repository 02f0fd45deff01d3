"""CLI for AWS Lambda: `bento-compile target lambda-zip` and `bento-compile invoke`.

Registered in cli.py (`target.add_command(lambda_zip)`, `main.add_command(invoke)`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from bento_compile.cli.console import err, mib
from bento_compile.cli.options import LAMBDA_PYTHONS, parse_env_pairs
from bento_compile.core.errors import BentoCompileError
from bento_compile.core.store import BentoStore


@click.command("lambda-zip")
@click.argument("tag")
@click.option("--arch", type=click.Choice(["x86_64", "arm64"]),
              help="Lambda architecture (default: targets.lambda.arch in bento.yaml, else x86_64).")
@click.option("--python", "python_version", type=click.Choice(LAMBDA_PYTHONS),
              help="Lambda Python runtime (default: targets.lambda.python, else 3.12).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("dist"), show_default=True,
              help="Folder for NAME-lambda.zip and template.yaml.")
@click.option("--require-bytecode", is_flag=True,
              help="Fail instead of shipping without .pyc when no interpreter of the target version is found.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (paths, sizes, sha256) on stdout.")
def lambda_zip(tag: str, arch: str | None, python_version: str | None, output: Path, require_bytecode: bool,
               as_json: bool) -> None:
    """Package the Bento TAG as an AWS Lambda zip (handler + runtime + wheels) and a SAM template.

    \b
    Wheels are resolved for the TARGET (--arch, --python, and that runtime's
    glibc), slimmed, precompiled for the target Python, and zipped
    deterministically (same inputs, same sha256). The build fails past
    Lambda's limits: 50 MiB zipped, 250 MiB unzipped. The last line of stdout
    is the zip's path.
    \b
    Example:
      bento-compile target lambda-zip churn:latest --arch arm64 --python 3.12 -o dist/
      bento-compile invoke dist/churn-lambda.zip --event event.json
      sam deploy -t dist/template.yaml --guided
    """
    from bento_compile.adapters.lambda_events import lambda_settings
    from bento_compile.targets.lambda_zip import UNZIPPED_LIMIT, ZIPPED_LIMIT, build_lambda_zip

    bento = BentoStore().resolve(tag)
    settings = lambda_settings(bento.manifest)
    arch = arch or settings.get("arch") or "x86_64"
    python_version = python_version or settings.get("python") or "3.12"
    err.print(f"Building the Lambda zip for {bento.tag} ({arch}, Python {python_version})")
    with err.status("building") as status:
        def progress(message: str) -> None:
            status.update(escape(message))
            err.print(f"  {escape(message)}")

        result = build_lambda_zip(bento.path, arch, python_version, output, settings,
                                  progress=progress, require_bytecode=require_bytecode)
    table = Table("", "size", "Lambda limit", box=None)
    table.add_row("zipped", mib(result.zipped_bytes), mib(ZIPPED_LIMIT))
    table.add_row("unzipped", mib(result.unzipped_bytes), mib(UNZIPPED_LIMIT))
    err.print(table)
    err.print(f"{result.files} files; bytecode: "
              f"{'Python ' + result.bytecode.version if result.bytecode else 'none (see the note above)'}; "
              f"sha256 {result.sha256}")
    if result.template:
        err.print(f"SAM template: {result.template}")
    if as_json:
        click.echo(json.dumps(result.summary(), indent=2))
    else:
        click.echo(str(result.path))


@click.command("invoke")
@click.argument("zip_path", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--event", "event_files", multiple=True, required=True, type=click.Path(path_type=Path),
              help="A JSON event file ('-' for stdin); repeat to send several to the same warm function.")
@click.option("--python", "python_path", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Interpreter to run it with (default: a Python of the zip's version found on this machine).")
@click.option("--env", "env_pairs", multiple=True, help="KEY=VALUE for the function (repeatable).")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds for init and each event.")
@click.option("--logs/--no-logs", default=True, show_default=True, help="Show the function's log lines on stderr.")
def invoke(zip_path: Path, event_files: tuple[Path, ...], python_path: Path | None, env_pairs: tuple[str, ...],
           timeout: float, logs: bool) -> None:
    """Run a Lambda zip locally the way Lambda does, and print its answer to each event.

    \b
    The zip is unpacked into an empty folder and run by the real awslambdaric
    client on a CLEAN interpreter of its Python version, against a Lambda
    Runtime API served on 127.0.0.1: nothing of this machine's packages is
    visible. Answers go to stdout, one JSON document per event; the
    function's logs (and EMF metric lines) to stderr. Exit code 1 when the
    function reports an error.
    \b
    Example:
      bento-compile invoke dist/churn-lambda.zip --event event.json
      bento-compile invoke dist/churn-lambda.zip --event warm.json --event event.json --env BENTO_COMPILE_LOAD=lazy
    """
    from bento_compile.tools.invoke import invoke_zip

    events = []
    for path in event_files:
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
            events.append(json.loads(text))
        except FileNotFoundError:
            raise BentoCompileError(f"{path} does not exist.", "Pass a JSON event file with --event.") from None
        except ValueError as exc:
            raise BentoCompileError(f"{path} is not valid JSON: {exc}", "Fix the event file.") from None
    answers, init_seconds = invoke_zip(zip_path, events, python_path, parse_env_pairs(env_pairs), timeout,
                                       log_file=sys.stderr if logs else None)
    err.print(f"init: {init_seconds:.3f} s")
    failed = False
    for answer in answers:
        result = answer.result
        click.echo(json.dumps(result.body, indent=2))
        if not result.ok:
            failed = True
            err.print(f"[bold red]function error:[/] {escape(str(result.error_type))}")
        err.print(f"answered in {result.seconds * 1000:.1f} ms")
    if failed:
        sys.exit(1)
