"""The files of ours that ship inside every artifact: the runtime and the adapters.

Nothing else of bento-compile goes in (not the compiler, not the CLI), so an
artifact carries only what serving needs. Paths come from the installed
package, so this works from a checkout and from a wheel alike.
"""

from __future__ import annotations

from pathlib import Path

import bento_compile
from bento_compile import adapters, runtimes


def runtime_package_files() -> list[tuple[str, Path]]:
    """(archive name, source path) pairs, sorted: `bento_compile/__init__.py`, runtimes, adapters."""
    files = [("bento_compile/__init__.py", Path(bento_compile.__file__))]
    for package, prefix in ((runtimes, "bento_compile/runtimes"), (adapters, "bento_compile/adapters")):
        root = Path(package.__path__[0])
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            files.append((f"{prefix}/{path.relative_to(root).as_posix()}", path))
    return sorted(files)
