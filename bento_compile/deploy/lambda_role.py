"""The function's execution role when no --role is given: least privilege, made (or refreshed) by us.

It may write its own log group's streams and nothing else, plus, when `targets.lambda`
names them, put objects under the result sink's S3 prefix or send to its SQS queue, and
read the SQS queue that triggers it. Broader managed policies (AWSLambdaBasicExecutionRole
covers every log group) are not used on purpose.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bento_compile.deploy.aws import aws_call, error_code

TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
POLICY_NAME = "bento-compile-least-privilege"
_SQS_URL = re.compile(r"^https?://sqs[.-]([a-z0-9-]+)\.[^/]+/(\d{12})/([A-Za-z0-9_-]{1,80}(?:\.fifo)?)/?$")


def role_name(function_name: str) -> str:
    """bento-compile-FUNCTION, cut to IAM's 64 characters (function names are already [A-Za-z0-9_-])."""
    return f"bento-compile-{function_name}"[:64]


def policy_document(partition: str, region: str, account: str, function_name: str,
                    settings: dict[str, Any]) -> dict[str, Any]:
    """The inline policy: logs for this function only, and the sink / trigger queue when configured."""
    log_group = f"arn:{partition}:logs:{region}:{account}:log-group:/aws/lambda/{function_name}"
    statements: list[dict[str, Any]] = [
        {"Sid": "CreateOwnLogGroup", "Effect": "Allow", "Action": "logs:CreateLogGroup", "Resource": log_group},
        {"Sid": "WriteOwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": f"{log_group}:*"},
    ]
    sink = settings.get("sink")
    if isinstance(sink, str) and sink.startswith("s3://"):
        bucket, _, prefix = sink[len("s3://"):].partition("/")
        statements.append({"Sid": "WriteResultsToSink", "Effect": "Allow", "Action": "s3:PutObject",
                           "Resource": f"arn:{partition}:s3:::{bucket}/{prefix}*"})
    elif isinstance(sink, str):
        statements.append({"Sid": "SendResultsToSink", "Effect": "Allow", "Action": "sqs:SendMessage",
                           "Resource": sqs_arn_from_url(sink, partition, region, account)})
    queue = settings.get("sqs_queue_arn")
    if isinstance(queue, str):
        statements.append({"Sid": "ReadTriggerQueue", "Effect": "Allow",
                           "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
                           "Resource": queue})
    return {"Version": "2012-10-17", "Statement": statements}


def sqs_arn_from_url(url: str, partition: str, region: str, account: str) -> str:
    """arn:…:sqs:REGION:ACCOUNT:NAME from a queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME); a URL
    of another shape (a local endpoint) keeps the deploying region and account with the URL's last part."""
    match = _SQS_URL.match(url)
    if match:
        return f"arn:{partition}:sqs:{match.group(1)}:{match.group(2)}:{match.group(3)}"
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return f"arn:{partition}:sqs:{region}:{account}:{name}"


def ensure_role(iam: Any, function_name: str, partition: str, region: str, account: str,
                settings: dict[str, Any]) -> tuple[str, bool]:
    """The role's ARN, and whether it was created now (then Lambda may need a few seconds to assume it).

    An existing role of that name is reused only when we made it (its tag says so); its inline
    policy is rewritten each time, so a changed sink takes effect on the next deploy."""
    name = role_name(function_name)
    created = False
    try:
        with aws_call("iam:GetRole", name):
            role = iam.get_role(RoleName=name)["Role"]
    except Exception as exc:
        if getattr(exc, "code", None) != "NoSuchEntity" and error_code(exc) != "NoSuchEntity":
            raise
        with aws_call("iam:CreateRole", name):
            role = iam.create_role(
                RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
                Description=f"Execution role of the Lambda function {function_name} (made by bento-compile)",
                Tags=[{"Key": "bento-compile:function", "Value": function_name}])["Role"]
        created = True
    else:
        with aws_call("iam:ListRoleTags", name):
            tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=name).get("Tags", [])}
        if tags.get("bento-compile:function") != function_name:
            from bento_compile.core.errors import BentoCompileError

            raise BentoCompileError(f"The IAM role {name} exists but was not made by bento-compile for "
                                    f"{function_name}.", "Pass --role ARN to use it, or delete or rename it.")
    document = policy_document(partition, region, account, function_name, settings)
    with aws_call("iam:PutRolePolicy", name):
        iam.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(document))
    return role["Arn"], created
