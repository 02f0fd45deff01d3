"""The two command groups, `bento-compile` and `bento-compile target`, and how every command fails.

Commands live in their own modules and are registered in `bento_compile.cli` (the command table);
nothing here imports them.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.markup import escape

from bento_compile import __version__
from bento_compile.cli.console import err, print_parity
from bento_compile.cli.quantize import print_variants
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.errors import IntegrityError


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
                print_parity(report)
            quantization = getattr(exc, "quantization", None)
            if quantization:
                print_variants(quantization, err)
            sys.exit(1)
        except IntegrityError as exc:  # a Bento folder refused on reading (bad names, damaged manifest)
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            err.print("[bold]fix:[/] Rebuild the Bento (bento-compile build) or pull it again from a good copy.")
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


@click.group()
def target() -> None:
    """Turn a stored Bento into deployable files for a platform.

    \b
    Each target states its platform's limits and fails the build with a clear
    message when an artifact would break one.
    """
