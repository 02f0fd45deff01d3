"""Running a built Lambda zip locally, through the same path Lambda uses.

`bento-compile invoke dist/churn-lambda.zip --event event.json`:
the zip is unpacked into an empty folder (Lambda's /var/task), a CLEAN
interpreter of the zip's Python version (a venv with nothing installed) runs
the real `awslambdaric` client, which polls a Runtime API server on 127.0.0.1
(targets/lambda_rapi.py) for the event and posts back the answer. Nothing of
this machine's site-packages is visible, so a zip that works here is
self-contained.

What the Lambda managed runtime provides (awslambdaric, boto3) is resolved as
wheels for the zip's platform into a cache folder, never taken from here.
Caches live in the `lambda/` folder of the build cache (core/files.py `cache_root`:
$BENTO_COMPILE_CACHE, else ~/.cache/bento-compile).
"""

from __future__ import annotations

import hashlib
import json
import platform as host_platform
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bento_compile.core.errors import BentoCompileError
from bento_compile.core.files import cache_root, cached_folder
from bento_compile.targets.bytecode import find_interpreter, interpreter_version
from bento_compile.targets.lambda_zip import HANDLER, lambda_platform
from bento_compile.targets.wheel_install import unpack_wheels
from bento_compile.targets.wheels import ARCHES, resolve_wheels
from bento_compile.tools.lambda_rapi import InitError, InvokeResult, RuntimeAPI, start_ric

# What the Lambda Python runtime provides to every function (not bundled in the zip).
MANAGED_RUNTIME_REQUIREMENTS = ["awslambdaric", "boto3"]


def lambda_cache() -> Path:
    return cache_root() / "lambda"


@dataclass(frozen=True)
class LocalRuntime:
    """A clean interpreter plus a folder holding what Lambda's managed runtime provides."""

    python: Path  # a venv interpreter with nothing installed
    provided: Path  # awslambdaric + boto3 for the target platform
    version: str


def local_runtime(arch: str, python: str) -> LocalRuntime:
    """The clean interpreter and managed-runtime folder for (arch, python), cached."""
    target = lambda_platform(arch, python)
    if target.machine != _host_machine():
        raise BentoCompileError(
            f"This zip is for {target.machine} but this machine is {_host_machine()}.",
            "Run it on a machine of that architecture (or under qemu-user with binfmt), or build "
            f"--arch {'arm64' if _host_machine() == 'aarch64' else 'x86_64'} to try it here.")
    interpreter = find_interpreter(python)
    if interpreter is None:
        raise BentoCompileError(f"No Python {python} interpreter found to run this zip with.",
                                f"Install Python {python} (e.g. pyenv install {python}), pass --python PATH, "
                                f"or set BENTO_COMPILE_PYTHON_{python.replace('.', '_')}.")
    return local_runtime_for(interpreter.path, arch, python)


def local_runtime_for(python_path: Path, arch: str, python: str) -> LocalRuntime:
    found = interpreter_version(Path(python_path))
    if found is None or found.rsplit(".", 1)[0] != python:
        raise BentoCompileError(f"{python_path} is Python {found or '(not runnable)'}, but this zip was built for "
                                f"Python {python}.", f"Pass a Python {python} interpreter with --python.")
    root = lambda_cache() / f"runtime-{lambda_platform(arch, python).machine}-{python}"

    def make_provided(folder: Path) -> None:
        wheels = resolve_wheels(MANAGED_RUNTIME_REQUIREMENTS, lambda_platform(arch, python), folder / "wheels")
        unpack_wheels(wheels, folder / "site")
        shutil.rmtree(folder / "wheels")

    def make_venv(folder: Path) -> None:
        shutil.rmtree(folder)
        result = subprocess.run([str(python_path), "-m", "venv", "--without-pip", str(folder)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise BentoCompileError(f"Could not create a clean venv with {python_path}: {result.stderr[-500:]}",
                                    "Pass another interpreter with --python.")

    provided = cached_folder(root / "provided", make_provided) / "site"
    digest = hashlib.sha256(str(Path(python_path).absolute()).encode()).hexdigest()[:12]
    venv = cached_folder(root / f"venv-{digest}", make_venv)
    return LocalRuntime(venv / "bin" / "python", provided, python)


def _host_machine() -> str:
    return ARCHES.get(host_platform.machine().lower(), host_platform.machine().lower())


def read_build_info(zip_path: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(zip_path) as archive:
            return json.loads(archive.read("bento-lambda.json"))
    except (OSError, zipfile.BadZipFile) as exc:
        raise BentoCompileError(f"{zip_path} is not a readable zip: {exc}",
                                "Build one with `bento-compile target lambda-zip TAG -o dist/`.") from None
    except KeyError:
        raise BentoCompileError(f"{zip_path} has no bento-lambda.json: it was not built by bento-compile.",
                                "Build one with `bento-compile target lambda-zip TAG -o dist/`.") from None


def unpack_task(zip_path: Path) -> Path:
    """The zip unpacked into an empty folder (cached by the zip's sha256), like Lambda's /var/task."""
    digest = hashlib.sha256(Path(zip_path).read_bytes()).hexdigest()[:16]

    def fill(folder: Path) -> None:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(folder)
        for info in zipfile.ZipFile(zip_path).infolist():
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                (folder / info.filename).chmod(mode)

    return cached_folder(lambda_cache() / f"task-{digest}", fill)


@dataclass
class Invocation:
    event: Any
    result: InvokeResult


def invoke_zip(zip_path: Path, events: list[Any], python_path: Path | None = None,
               env: dict[str, str] | None = None, timeout: float = 60.0,
               log_file: Any = None) -> tuple[list[Invocation], float]:
    """Run the zip with awslambdaric against a local Runtime API; answer each event in order.

    Returns the invocations and the seconds from process start to the end of init.
    Raises BentoCompileError on an init error (with Lambda's errorType and message)."""
    info = read_build_info(zip_path)
    arch, python = info["arch"], info["python"]
    runtime = local_runtime_for(python_path, arch, python) if python_path else local_runtime(arch, python)
    task = unpack_task(zip_path)
    with RuntimeAPI() as api:
        import time

        started = time.monotonic()
        process = start_ric(runtime.python, info.get("handler", HANDLER), task, api, ric_path=runtime.provided,
                            env=env, stdout=log_file or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            try:
                init_seconds = api.wait_ready(timeout, process) - started
            except InitError as exc:
                body = exc.body if isinstance(exc.body, dict) else {}
                raise BentoCompileError(
                    f"The function failed to initialise ({exc.error_type or 'init error'}): "
                    f"{body.get('errorMessage', exc)}",
                    "Rebuild the Bento or the zip; a hash mismatch means a file was changed after the build.",
                ) from None
            answers = [Invocation(event, api.invoke(event, timeout, process)) for event in events]
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    return answers, init_seconds
