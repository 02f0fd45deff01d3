"""Slimming an unpacked set of wheels for a serving artifact, safely.

Every rule here was proven by running the built artifact (tests/targets/test_lambda_zip.py
drives every Lambda event through the slimmed zip with a clean interpreter):

- whole distributions the runtime never imports (UNNEEDED_DISTRIBUTIONS, each
  with the reason); onnxruntime declares protobuf, flatbuffers and packaging,
  but only its tools (quantization, .ort conversion, transformers) use them;
- `libonnxruntime.so`: the wheel ships the C API library for other languages
  next to the Python binding, which links the runtime statically and never
  loads it (33 MiB);
- onnxruntime's offline tools (quantization, transformers, tools, datasets,
  backend): they need onnx, which is not shipped either;
- test suites, C headers, Cython declarations, type stubs, build helpers.

Never removed: `*.libs` folders (auditwheel's vendored shared objects; numpy
fails to import without them), licence files, and the dist-info files that
`importlib.metadata` reads (METADATA, entry_points.txt, top_level.txt, WHEEL).
RECORD goes: after slimming it would list files that are not there.
"""

from __future__ import annotations

import fnmatch
import shutil
from dataclasses import dataclass
from pathlib import Path

# distribution (normalized name) -> why the runtime does not need it
UNNEEDED_DISTRIBUTIONS: dict[str, str] = {
    "protobuf": "onnxruntime's binding runs sessions without it (only its tools and quantization import it)",
    "flatbuffers": "only onnxruntime's .ort conversion tools import it",
    "packaging": "only onnxruntime's tools import it",
    "sympy": "only onnxruntime's symbolic shape inference tool imports it",
    "mpmath": "a dependency of sympy",
    "coloredlogs": "only onnxruntime's tools import it (older onnxruntime releases)",
    "humanfriendly": "a dependency of coloredlogs",
}

# (glob on the path relative to the package root, reason); a match on a folder removes the folder
UNNEEDED_PATHS: tuple[tuple[str, str], ...] = (
    ("onnxruntime/capi/libonnxruntime.so*", "the C API library; the Python binding never loads it"),
    ("onnxruntime/quantization", "offline tool (needs onnx)"),
    ("onnxruntime/transformers", "offline tool (needs onnx, torch)"),
    ("onnxruntime/tools", "offline tool (needs onnx)"),
    ("onnxruntime/datasets", "sample models"),
    ("onnxruntime/backend", "the ONNX backend-test API (needs onnx)"),
    ("numpy/f2py", "Fortran wrapper generator, a build tool"),
    ("numpy/_pyinstaller", "PyInstaller hooks"),
    ("numpy/_core/include", "C headers"),
    ("numpy/_core/lib/pkgconfig", "build metadata"),
    ("numpy/random/_examples", "Cython/numba examples"),
    ("*/tests", "test suite"),
    ("*/testing/tests", "test suite"),
    ("*.pyi", "type stubs"),
    ("*.pxd", "Cython declarations"),
    ("*.h", "C headers"),
    ("*.hpp", "C headers"),
    ("*.dist-info/RECORD", "lists files removed by slimming"),
    ("*.dist-info/INSTALLER", "installer name"),
    ("*.dist-info/REQUESTED", "installer marker"),
    ("*.dist-info/direct_url.json", "installer record"),
    ("*/__pycache__", "bytecode is compiled for the target Python afterwards"),
)

# Parts of numpy / pydantic that numpy imports lazily (on first attribute access) and that the
# ONNX Runtime serving path never touches: measured with sys.modules after serving every event
# (predict, /metadata, /openapi.json, /docs) and proven by the zip tests. Only for ONNX Bentos:
# another backend (TFLite) is not proven to do without them.
# numpy 1.x imports these eagerly in `import numpy`: the numpy rules apply to numpy >= 2 only.
NUMPY2_LAZY_SUBMODULES: tuple[tuple[str, str], ...] = (
    ("numpy/random", "random sampling; numpy 2 imports it lazily and the ONNX serving path never does"),
    ("numpy/fft", "FFTs; numpy 2 imports it lazily and the ONNX serving path never does"),
    ("numpy/polynomial", "polynomials; numpy 2 imports it lazily and the ONNX serving path never does"),
    ("numpy/ma", "masked arrays; numpy 2 imports it lazily and the ONNX serving path never does"),
    ("numpy/_core/_simd.*", "numpy's SIMD test helper"),
)
PYDANTIC_V1 = (("pydantic/v1", "the pydantic 1 compatibility layer; FastAPI treats its absence as 'no v1 models'"),)


def onnx_serving_rules(numpy_version: str | None) -> tuple[tuple[str, str], ...]:
    """The extra rules proven for ONNX Bentos, given the numpy version being shipped."""
    major = int(numpy_version.split(".")[0]) if numpy_version else 0
    return PYDANTIC_V1 + (NUMPY2_LAZY_SUBMODULES if major >= 2 else ())

NEVER_REMOVE = ("*.libs", "*.libs/*", "*LICENSE*", "*LICENCE*", "*COPYING*", "*NOTICE*", "*/licenses/*",
                "*.dist-info/METADATA", "*.dist-info/entry_points.txt", "*.dist-info/top_level.txt",
                "*.dist-info/WHEEL")


@dataclass(frozen=True)
class Removal:
    path: str  # relative, posix; a folder ends with "/"
    bytes: int
    reason: str


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size


def _protected(relative: str) -> bool:
    return any(fnmatch.fnmatch(relative, pattern) for pattern in NEVER_REMOVE)


def remove_distributions(root: Path, names: dict[str, str]) -> list[Removal]:
    """Remove whole distributions: every file their RECORD lists, then their emptied folders.

    File by file, not by top-level folder: a namespace package (google/) may hold
    other distributions that stay."""
    removed: list[Removal] = []
    for dist_info in sorted(root.glob("*.dist-info")):
        name = dist_info.name.removesuffix(".dist-info").rsplit("-", 1)[0].lower().replace("_", "-")
        name = name.replace(".", "-")
        if name not in names:
            continue
        record = dist_info / "RECORD"
        sizes: dict[str, int] = {}
        folders: set[Path] = set()
        lines = record.read_text(encoding="utf-8").splitlines() if record.is_file() else []
        for line in lines:
            relative = line.split(",", 1)[0]
            target = (root / relative).resolve()
            if not relative or relative.startswith(dist_info.name) or root.resolve() not in target.parents:
                continue
            if target.is_file():
                top = relative.split("/", 1)[0]
                sizes[top] = sizes.get(top, 0) + target.stat().st_size
                target.unlink()
                folders.update(p for p in target.parents if root.resolve() in p.parents)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            for cache in folder.glob("__pycache__"):
                shutil.rmtree(cache)
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        for top, size in sorted(sizes.items()):
            removed.append(Removal(top + ("/" if (root / top).is_dir() or "." not in top else ""), size,
                                   names[name]))
        removed.append(Removal(dist_info.name + "/", _size(dist_info), names[name]))
        shutil.rmtree(dist_info)
    return removed


def _empty_but_licences(root: Path, folder: Path) -> int:
    """Remove every file under `folder` that NEVER_REMOVE does not protect; returns bytes freed."""
    freed = 0
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() and not _protected(path.relative_to(root).as_posix()):
            freed += path.stat().st_size
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return freed


def remove_paths(root: Path, rules: tuple[tuple[str, str], ...] = UNNEEDED_PATHS) -> list[Removal]:
    """Remove every file or folder matching a rule, never one that NEVER_REMOVE protects."""
    removed: list[Removal] = []
    # Walk top-down so a removed folder is not walked into.
    stack = [root]
    while stack:
        folder = stack.pop()
        for entry in sorted(folder.iterdir()):
            relative = entry.relative_to(root).as_posix()
            reason = next((why for pattern, why in rules if fnmatch.fnmatch(relative, pattern)), None)
            if reason is not None and not _protected(relative):
                size = _size(entry)
                if entry.is_dir() and not entry.is_symlink():
                    if any(_protected(p.relative_to(root).as_posix()) for p in entry.rglob("*")):
                        freed = _empty_but_licences(root, entry)  # holds a licence: keep only that
                        removed.append(Removal(relative + "/ (licences kept)", freed, reason))
                        continue
                    shutil.rmtree(entry)
                    removed.append(Removal(relative + "/", size, reason))
                else:
                    entry.unlink()
                    removed.append(Removal(relative, size, reason))
            elif entry.is_dir() and not entry.is_symlink():
                stack.append(entry)
    return sorted(removed, key=lambda r: r.path)


def slim(root: Path, keep: frozenset[str] = frozenset(),
         extra_rules: tuple[tuple[str, str], ...] = ()) -> list[Removal]:
    """Apply every rule to an unpacked package folder; returns what went and why.

    `keep` names distributions to keep even though they are listed as unneeded
    (e.g. a custom runtime that does import protobuf); `extra_rules` adds path
    rules proven for one backend (onnx_serving_rules)."""
    dists = {name: why for name, why in UNNEEDED_DISTRIBUTIONS.items() if name not in keep}
    return sorted(remove_distributions(root, dists) + remove_paths(root, UNNEEDED_PATHS + extra_rules),
                  key=lambda r: r.path)
