"""The `bento-compile` command line: one command table over the command modules.

Each module defines its commands and knows nothing of where they hang; this table
is the only place that says which group holds which command.
"""

from __future__ import annotations

from bento_compile.cli import aws_lambda, batch, bentos, containers, deploy, edge, monitor, trust
from bento_compile.cli.app import main, target

COMMANDS: dict = {
    main: (*bentos.COMMANDS, *trust.COMMANDS, edge.flash_command, aws_lambda.invoke, batch.batch,
           monitor.monitor),
    target: (*containers.COMMANDS, edge.edge, aws_lambda.lambda_zip),
    deploy.deploy: tuple(deploy.COMMANDS),
}
main.add_command(target)
main.add_command(deploy.deploy)
for group, commands in COMMANDS.items():
    for command in commands:
        group.add_command(command)

__all__ = ["main"]
