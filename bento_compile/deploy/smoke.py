"""The smoke check: the new version (a Lambda version, a Cloud Run or Knative revision) must answer the
Bento's recorded example the way the Bento does, within the parity report's tolerance, before any
traffic moves to it. One comparison for every platform; only the way the example is sent differs
(a `Send`: the Lambda API here, an HTTP POST to the revision's tag URL in deploy/service_smoke.py).

What it should answer: the manifest's `example_outputs` when the Bento recorded them, else
the Bento itself run here by the runtime on that example (the same model files the
package carries, read back out of the zip). Continuous outputs must satisfy
|live − expected| ≤ tolerance × max(1, |expected|) (the parity rule; the tolerance of
each output as the parity report recorded it); labels must be equal.
"""

from __future__ import annotations

import json
import math
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bento_compile.core.errors import BentoCompileError

DEFAULT_TOLERANCE = 1e-4
# What comes back from the function is shown in an error, cut to this many characters.
_SHOWN = 600
_MAX_ANSWER = 6 * 1024 * 1024 + 1  # Lambda answers at most 6 MB synchronously

# (function name, qualifier, JSON payload bytes) -> (function error or None, payload bytes)
Invoker = Callable[[str, str, bytes], tuple[str | None, bytes]]
# JSON request bytes -> (what failed, or None; the answer's bytes): one new version, however it is reached
Send = Callable[[bytes], tuple[str | None, bytes]]


@dataclass
class SmokeResult:
    passed: bool
    example: Any
    expected: dict[str, Any]
    answer: Any
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"passed": self.passed, "problems": self.problems}


def example_of(manifest: dict[str, Any]) -> dict[str, Any]:
    example = manifest.get("example")
    if not isinstance(example, dict) or "inputs" not in example:
        raise BentoCompileError(
            f"{manifest.get('name')}:{manifest.get('version')} recorded no example (its inputs are too large "
            "to embed), so the new version cannot be smoke-tested.",
            "Deploy with --no-smoke (the alias moves without a check), or rebuild with a smaller --sample.")
    return example


def expected_outputs(manifest: dict[str, Any], package_zip: Path | None, bento_dir: Path | None = None
                     ) -> dict[str, Any]:
    """The example's outputs: recorded in the manifest, else computed here from the Bento (a folder, or the
    one inside the zip). The Bento is verified as the runtime verifies it, so a package whose files were
    changed after the build is refused here, before anything is uploaded."""
    from bento_compile.runtimes.errors import RuntimeFault

    recorded = manifest.get("example_outputs")
    if isinstance(recorded, dict):
        return recorded
    example = example_of(manifest)
    try:
        if package_zip is None:
            if bento_dir is None:
                raise BentoCompileError("No Bento to compute the example's outputs from.", "Pass the Bento TAG.")
            return _predict(bento_dir, example)
        with tempfile.TemporaryDirectory(prefix="bento-smoke-") as work:
            return _predict(_unpack_bento(package_zip, Path(work)), example)
    except RuntimeFault as exc:
        where = package_zip or bento_dir
        raise BentoCompileError(f"The Bento in {where} fails the runtime's checks: {exc}. Nothing was uploaded.",
                                "Rebuild the package (bento-compile target lambda-zip TAG), or pass the TAG.") from None


def _predict(bento_dir: Path, example: dict[str, Any]) -> dict[str, Any]:
    from bento_compile.runtimes.model import BentoModel

    return BentoModel.load(bento_dir).predict(example)["outputs"]


def _unpack_bento(package_zip: Path, root: Path) -> Path:
    """The zip's bento/ folder, unpacked under `root`."""
    with zipfile.ZipFile(package_zip) as archive:
        for info in archive.infolist():
            if not info.filename.startswith("bento/") or info.is_dir():
                continue
            # Names come from a zip: keep only plain relative paths inside bento/.
            relative = Path(info.filename)
            if relative.is_absolute() or ".." in relative.parts:
                raise BentoCompileError(f"{package_zip} holds an unsafe path {info.filename!r}.",
                                        "Rebuild the zip with `bento-compile target lambda-zip`.")
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(info))
    return root / "bento"


def tolerances(manifest: dict[str, Any]) -> dict[str, float]:
    """Each continuous output's tolerance as the parity report recorded it."""
    outputs = ((manifest.get("parity") or {}).get("outputs")) or {}
    found = {}
    for name, entry in outputs.items():
        if isinstance(entry, dict) and isinstance(entry.get("tolerance"), (int, float)):
            found[name] = float(entry["tolerance"])
    return found


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [item for part in value for item in _flatten(part)]
    return [value]


def _shape(value: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)


def compare(expected: dict[str, Any], answer: Any, tolerance: dict[str, float]) -> list[str]:
    """What differs between the expected outputs and the function's answer; empty when it agrees."""
    if not isinstance(answer, dict) or not isinstance(answer.get("outputs"), dict):
        return ["the answer has no 'outputs' object"]
    got = answer["outputs"]
    problems = []
    for name, want in expected.items():
        if name not in got:
            problems.append(f"output {name!r} is missing")
            continue
        if _shape(want) != _shape(got[name]):
            problems.append(f"output {name!r} has shape {_shape(got[name])}, expected {_shape(want)}")
            continue
        bound = tolerance.get(name, DEFAULT_TOLERANCE)
        for index, (a, b) in enumerate(zip(_flatten(want), _flatten(got[name]), strict=True)):
            if isinstance(a, (int, float)) and not isinstance(a, bool) and isinstance(b, (int, float)) \
                    and not isinstance(b, bool) and (isinstance(a, float) or isinstance(b, float)):
                if math.isnan(a) and math.isnan(b):
                    continue
                if not abs(a - b) <= bound * max(1.0, abs(a)):
                    problems.append(f"output {name!r}[{index}] is {b}, expected {a} (tolerance {bound:g})")
                    break
            elif a != b:
                problems.append(f"output {name!r}[{index}] is {b!r}, expected {a!r}")
                break
    return problems


def smoke_check(send: Send, manifest: dict[str, Any], expected: dict[str, Any], who: str = "function"
                ) -> SmokeResult:
    """Send the recorded example to the new version and compare with `expected` (from expected_outputs);
    never raises for a wrong answer. `who` names what answered in a failure ("function", "revision")."""
    example = example_of(manifest)
    error, payload = send(json.dumps(example).encode())
    try:
        answer: Any = json.loads(payload) if payload else None
    except ValueError:
        answer = payload.decode("utf-8", "replace")
    if error:
        return SmokeResult(False, example, expected, answer, [f"the {who} failed ({error}): {shown(answer)}"])
    problems = compare(expected, answer, tolerances(manifest))
    return SmokeResult(not problems, example, expected, answer, problems)


def shown(answer: Any) -> str:
    text = answer if isinstance(answer, str) else json.dumps(answer)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


def lambda_invoker(lam: Any) -> Invoker:
    """Invoke through the Lambda API (RequestResponse), returning the function error and the payload."""
    from bento_compile.deploy.aws import aws_call

    def invoke(function_name: str, qualifier: str, payload: bytes) -> tuple[str | None, bytes]:
        with aws_call("lambda:InvokeFunction", f"{function_name}:{qualifier}"):
            response = lam.invoke(FunctionName=function_name, Qualifier=qualifier, Payload=payload)
        return response.get("FunctionError"), response["Payload"].read(_MAX_ANSWER)

    return invoke
