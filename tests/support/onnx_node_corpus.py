"""ONNX's own backend node tests as a corpus of "any model ONNX Runtime can run".

Each case is a one-operator model with its inputs and expected outputs
(`onnx/backend/test/data/node/<case>/model.onnx` + `test_data_set_0/*.pb`), taken
from the `onnx` wheel whose newest opset the compiler still serves (1.17: opset 22),
downloaded once with `pip download` and never installed. A case is built twice
(without a sample, and with its own inputs as an .npz sample), served through the
HTTP app, sent its inputs as JSON, and its answer compared with the expected outputs.

A case is excluded only for a reason that is named: plain ONNX Runtime does not run it
correctly, a value that is not a tensor (sequence, optional, map), an element type JSON
cannot carry, ±inf (JSON has no infinity), or an operator whose output is random.
"""

from __future__ import annotations

import glob
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.helpers import TEST_CACHE

ONNX_WHEEL = "onnx==1.17.0"  # opset 22, the newest the compiler serves (compiler/passes.py)
NODE_PREFIX = "onnx/backend/test/data/node/"
RANDOM_OPS = {"Bernoulli", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial"}
SERVED = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}  # float … string, bool, float16, double, uint32, uint64


def node_tests_root() -> Path | str:
    """The extracted node-test folder, or a reason string when the wheel cannot be fetched."""
    folder = TEST_CACHE / ONNX_WHEEL.replace("==", "-")
    root = folder / NODE_PREFIX
    if (folder / ".complete").is_file():
        return root
    folder.mkdir(parents=True, exist_ok=True)
    download = folder / "wheel"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", ONNX_WHEEL, "--no-deps", "--only-binary=:all:",
         "--python-version", "3.11", "--platform", "manylinux_2_17_x86_64", "-d", str(download), "-q"],
        capture_output=True, text=True, timeout=600)
    wheels = list(download.glob("onnx-*.whl"))
    if result.returncode != 0 or not wheels:
        return f"cannot download {ONNX_WHEEL} for its node tests: {result.stderr.strip()[-300:]}"
    with zipfile.ZipFile(wheels[0]) as archive:
        for member in archive.namelist():
            if member.startswith(NODE_PREFIX) and not member.endswith("/"):
                target = folder / member
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))
    for wheel in wheels:
        wheel.unlink()
    (folder / ".complete").write_text("ok\n")
    return root


@dataclass
class Case:
    name: str
    model_path: Path
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    float_case: bool = True  # every input and output is floating point


def _read_tensors(folder: Path, prefix: str) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    arrays = []
    for path in sorted(glob.glob(str(folder / f"{prefix}_*.pb")), key=lambda p: int(Path(p).stem.split("_")[1])):
        tensor = onnx.TensorProto()
        tensor.ParseFromString(Path(path).read_bytes())
        arrays.append(numpy_helper.to_array(tensor))
    return arrays


def load_case(root: Path, name: str) -> tuple[Case | None, str | None]:
    """The case, or None and the reason it is excluded."""
    import onnx

    path = root / name / "model.onnx"
    model = onnx.load(str(path))
    values = [*model.graph.input, *model.graph.output]
    if any(v.type.WhichOneof("value") != "tensor_type" for v in values):
        return None, "sequence-, optional- or map-typed value (JSON requests carry tensors)"
    if any(v.type.tensor_type.elem_type not in SERVED for v in values):
        return None, "element type JSON cannot carry (bfloat16, float8, int4, complex)"
    if any(node.op_type in RANDOM_OPS for node in model.graph.node):
        return None, "random output: nothing to compare with"
    if any(o.domain == "ai.onnx.preview.training" for o in model.opset_import):
        return None, "training-only operator"
    initializers = {i.name for i in model.graph.initializer}
    in_names = [v.name for v in model.graph.input if v.name not in initializers]
    ins = _read_tensors(root / name / "test_data_set_0", "input")
    outs = _read_tensors(root / name / "test_data_set_0", "output")
    if len(ins) != len(in_names) or len(outs) != len(model.graph.output):
        return None, "test data does not match the graph (optional inputs left out)"
    case = Case(name, path, dict(zip(in_names, ins, strict=True)),
                dict(zip([v.name for v in model.graph.output], outs, strict=True)))
    arrays = [*case.inputs.values(), *case.outputs.values()]
    if any(a.dtype.kind == "f" and np.isinf(a).any() for a in arrays):
        return None, "±inf in the data: JSON has no infinity"
    case.float_case = all(a.dtype.kind == "f" for a in arrays)
    reason = _plain_onnxruntime(case)
    return (None, reason) if reason else (case, None)


def _plain_onnxruntime(case: Case) -> str | None:
    """None when ONNX Runtime, run directly, answers the case correctly."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(case.model_path), providers=["CPUExecutionProvider"])
        got = session.run(list(case.outputs), case.inputs)
    except Exception as exc:
        return f"ONNX Runtime itself cannot run it ({type(exc).__name__})"
    if not all(same(g, e) for g, e in zip(got, case.outputs.values(), strict=True)):
        return "ONNX Runtime itself answers differently from the expected outputs"
    return None


def same(got: Any, expected: np.ndarray) -> bool:
    """The issue's criterion: allclose(rtol=1e-4, atol=1e-5) for numbers, equality otherwise."""
    if expected.dtype.kind in "OUS":
        value = np.asarray(got, dtype=object)
        if value.size == 0 and expected.size == 0:
            return True
        return value.shape == expected.shape and bool(np.all(value.astype(str) == expected.astype(str)))
    value = np.asarray(got, dtype=np.float64 if expected.dtype.kind == "f" else expected.dtype)
    if value.size == 0 and expected.size == 0:
        return True
    if value.shape != expected.shape:
        return False
    if expected.dtype.kind == "f":
        return bool(np.allclose(value, expected.astype(np.float64), rtol=1e-4, atol=1e-5, equal_nan=True))
    return bool(np.array_equal(value, expected))


def eligible_cases(root: Path) -> tuple[list[Case], dict[str, str]]:
    """Every case ONNX Runtime runs correctly, and the excluded ones with their reasons."""
    cases, excluded = [], {}
    for name in sorted(p.name for p in root.iterdir() if (p / "model.onnx").is_file()):
        case, reason = load_case(root, name)
        if case is None:
            excluded[name] = reason or "excluded"
        else:
            cases.append(case)
    return cases, excluded


def spread(names: list[str], count: int) -> list[str]:
    """A deterministic, evenly spread subset of `count` names (every k-th of the sorted list)."""
    names = sorted(names)
    if len(names) <= count:
        return names
    step = len(names) / count
    return [names[int(i * step)] for i in range(count)]


def save_npz(case: Case, path: Path) -> Path:
    arrays = {k: (v.astype(str) if v.dtype.kind == "O" else v) for k, v in case.inputs.items()}
    np.savez(path, **arrays)
    return path


def request_body(case: Case) -> dict[str, Any]:
    return {"inputs": {name: value.tolist() for name, value in case.inputs.items()}}


@dataclass
class Outcome:
    name: str
    with_sample: str  # "ok" or what went wrong
    without_sample: str  # "ok", "refused: <message>" or what went wrong


def run_case(case: Case, work: Path) -> Outcome:
    """Build with the case's inputs as the sample and without one; serve each; compare the answers."""
    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import BentoConfig
    from bento_compile.core.errors import BentoCompileError
    from bento_compile.core.store import BentoStore

    work.mkdir(parents=True, exist_ok=True)
    store = BentoStore(work / "store")
    sample = save_npz(case, work / f"{case.name}.npz")
    name = case.name.lower().replace("test_", "t-", 1)[:60]
    results = []
    for sample_path in (sample, None):
        try:
            built = build(BuildRequest(case.model_path, BentoConfig(), name=name, sample_path=sample_path), store)
        except BentoCompileError as exc:
            results.append(f"refused: {exc}" if sample_path is None else f"build failed: {exc}")
            continue
        except Exception as exc:  # a traceback is a bug of ours, reported as such
            results.append(f"build crashed: {type(exc).__name__}: {exc}")
            continue
        results.append(_serve_and_compare(built.path, case))
    return Outcome(case.name, results[0], results[1])


def _serve_and_compare(bento: Path, case: Case) -> str:
    import orjson
    from fastapi.testclient import TestClient

    from bento_compile.adapters.http_app import create_app

    with TestClient(create_app(bento, load_mode="eager")) as client:
        response = client.post("/predict", content=orjson.dumps(request_body(case), option=orjson.OPT_SERIALIZE_NUMPY),
                               headers={"content-type": "application/json"})
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    outputs = response.json()["outputs"]
    wrong = [name for name, expected in case.outputs.items() if not same(outputs.get(name), expected)]
    return "ok" if not wrong else f"wrong answer for {', '.join(wrong)}"
