"""The optional packages batch scoring needs, each named with the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from bento_compile.core.errors import BentoCompileError

EXTRAS = {"pyarrow": "batch", "pyspark": "spark", "ray": "ray"}


def require(module: str) -> ModuleType:
    """Import an optional package, or say which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS.get(module.split(".")[0], "batch")
        raise BentoCompileError(f"Batch scoring here needs {module.split('.')[0]}, which is not installed.",
                                f"Install it: pip install 'bento-compile[{extra}]'.") from None
