"""The Lambda Runtime API server the tests (and `bento-compile invoke`) drive awslambdaric with.

The implementation lives in `bento_compile.tools.lambda_rapi` so that `bento-compile invoke`
runs a zip through the very same path locally; this module keeps the tests' import path stable.
See that module's docstring for the API (RuntimeAPI, start_ric, InitError, InvokeResult).
"""

from bento_compile.tools.lambda_rapi import (
    FUNCTION_ARN,
    InitError,
    InvokeResult,
    RuntimeAPI,
    start_ric,
)

__all__ = ["FUNCTION_ARN", "InitError", "InvokeResult", "RuntimeAPI", "start_ric"]
