"""`bento-compile deploy lambda|cloudrun|knative`: put a Bento live, with versions, canary, promote and rollback.

The group lives here; each platform's command is defined in this module (or imported
into it) and listed in COMMANDS, which the command table registers under `deploy`.
"""

from __future__ import annotations

import click

from bento_compile.cli.deploy_lambda import deploy_lambda
from bento_compile.cli.deploy_services import cloudrun, knative


@click.group("deploy")
def deploy() -> None:
    """Deploy a stored Bento to a function platform, with a canary, promotion and instant rollback.

    \b
    A Lambda deploy smoke-tests the new version with the Bento's recorded example
    before any traffic moves to it; Cloud Run and Knative wait until the new
    revision is ready (its probes pass) before it takes traffic.
    \b
    Example:
      bento-compile deploy lambda churn:latest --function churn --canary 10
      bento-compile deploy lambda --function churn --promote
      bento-compile deploy lambda --function churn --rollback
      bento-compile deploy cloudrun churn:latest --image REGISTRY/churn --project P --region R --canary 10
      bento-compile deploy knative churn:latest --image REGISTRY/churn -n ml --promote
    """


# Commands of the `deploy` group; cli/__init__.py adds each one to the group.
COMMANDS: list[click.Command] = [deploy_lambda, cloudrun, knative]
