"""bento-compile: a compiler for ML model serving.

This file ships inside every artifact (the runtime's modules live under this
namespace), so it must stay tiny: a version string, and the public Python API
(bento_compile/api.py) reached lazily, on first use of one of its names, so
that `import bento_compile` imports nothing else.
"""

__version__ = "0.1.0"

# The standard-library TYPE_CHECKING would import typing; type checkers honour this name just the same.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from bento_compile.api import Answer, Bento, BentoCompileError, Model, build, invoke, load, target

__all__ = ["Answer", "Bento", "BentoCompileError", "Model", "__version__", "build", "invoke", "load", "target"]
_API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> object:
    if name in _API:
        from bento_compile import api  # not in artifacts: the runtime never asks for these names

        return getattr(api, name)
    raise AttributeError(f"module 'bento_compile' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
