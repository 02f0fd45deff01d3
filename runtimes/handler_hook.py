"""The Bento's `handler.py`: optional `preprocess(request)` and `postprocess(outputs, request)`.

The file is one of the Bento's hashed (and signed) files, verified before this imports it; it is loaded
under a fixed module name from that path only. Its `InputError` (re-exported as
`bento_compile.runtimes.handler_hook.InputError`) is a 422 with its message; anything else it raises
becomes HandlerFault, answered as a 500 whose body never carries the traceback (that goes to the log).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bento_compile.runtimes.errors import InputError, PayloadTooLarge, RuntimeFault

__all__ = ["HandlerFault", "Hooks", "InputError", "load_hooks"]

log = logging.getLogger("bento_compile.handler")
MODULE_NAME = "bento_handler"


class HandlerFault(RuntimeFault):
    """handler.py raised something other than InputError: a 500, message kept out of the answer."""


class Hooks:
    def __init__(self, preprocess: Callable[..., Any] | None, postprocess: Callable[..., Any] | None):
        self.preprocess_fn = preprocess
        self.postprocess_fn = postprocess

    def _call(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except (InputError, PayloadTooLarge):
            raise
        except Exception as exc:
            log.exception("handler.py %s failed", stage)
            raise HandlerFault(f"handler.py {stage} failed ({type(exc).__name__}); see the server log") from None

    def preprocess(self, request: Any) -> Any:
        return request if self.preprocess_fn is None else self._call("preprocess", self.preprocess_fn, request)

    def postprocess(self, outputs: Any, request: Any) -> Any:
        if self.postprocess_fn is None:
            return outputs
        return self._call("postprocess", self.postprocess_fn, outputs, request)


def load_hooks(path: Path) -> Hooks:
    """Import handler.py from `path` (already hash-checked) and pick its two functions."""
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pre, post = getattr(module, "preprocess", None), getattr(module, "postprocess", None)
    for name, fn in (("preprocess", pre), ("postprocess", post)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{path.name}: {name} is not a function")
    return Hooks(pre, post)
