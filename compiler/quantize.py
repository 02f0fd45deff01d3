"""Quantization and precision variants, each measured and gated against the ORIGINAL model.

One step per variant, each a small function from fp32 ONNX bytes to new bytes
(the shape of onnxruntime.quantization itself):

- `dynamic`: int8 weights, activations quantized at run time. ONNX Runtime only
  rewrites MatMul / Gemm-style nodes (and Conv, Attention, LSTM...): everything
  else stays fp32, so a tree ensemble does not shrink at all, and we say so.
- `static`: int8 QDQ with activation ranges calibrated on sample rows
  (`CalibrationDataReader`), weights per channel, after `quant_pre_process`.
- `fp16`: weights and compute in float16, inputs and outputs kept float32 so the
  API does not change.

`select()` builds every requested variant, measures its size and latency (one
row, and a batch of 64, with one intra-op thread as it is served), runs it on
HELD-OUT sample rows and compares it with the original model (the frontend's
`reference`, e.g. the scikit-learn estimator) through the gate. A variant that
fails the gate is reported and never shipped; `auto` keeps the smallest (or
fastest) that passes.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bento_compile.compiler import gate as gates
from bento_compile.core.config import QuantizeConfig
from bento_compile.core.errors import BentoCompileError

Feeds = dict[str, np.ndarray]
Runner = Callable[[Feeds], dict[str, np.ndarray]]
Progress = Callable[[str], None]

# The node types onnxruntime's int8 quantizers rewrite (its registry, CPU provider).
INT8_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "LSTM", "GRU", "EmbedLayerNormalization",
            "Gather", "MatMulInteger"}
BATCH_ROWS = 64
LIMITS = [
    "int8 (dynamic and static) only rewrites MatMul/Gemm/Conv-style nodes; other nodes stay fp32.",
    "Tree ensembles (TreeEnsemble*, i.e. forests and gradient boosting) do not shrink under int8 or fp16: "
    "their thresholds stay float32.",
    "Latencies are measured on the build machine with one intra-op thread; they rank variants, they do not "
    "predict the serving machine.",
]
TFLITE_LIMITS = [
    "TFLite dynamic-range and full-integer int8 quantize FullyConnected/Conv/... weights; ops without int8 kernels "
    "stay float (full-integer conversion fails instead, and the variant is reported as failed).",
    "Latencies are measured with LiteRT (XNNPACK, one thread) on the build machine; they rank variants, they do not "
    "predict the serving device.",
]


class QuantizationGateError(BentoCompileError):
    """No variant the user asked for passed the gate: nothing is stored."""

    def __init__(self, problem: str, fix: str, table: dict[str, Any]):
        super().__init__(problem, fix)
        self.quantization = table


@dataclass
class Variant:
    """One candidate model: its bytes, how it measured, and whether the gate let it through."""

    name: str
    data: bytes | None
    runner_factory: Callable[[bytes], Runner] | None = None
    size: int = 0
    ms_row: float | None = None
    ms_batch: float | None = None
    report: dict[str, Any] | None = None
    passed: bool = False
    chosen: bool = False
    note: str = ""
    measured: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {"variant": self.name, "size": self.size, "latency_ms_row": _round(self.ms_row),
                "latency_ms_batch64": _round(self.ms_batch), **self.measured, "passed": self.passed,
                "chosen": self.chosen, "note": self.note}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


# ---------------------------------------------------------------- the ONNX steps

def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    """The op types int8 quantization would touch, with their count (e.g. ['MatMul×3'])."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in INT8_OPS and node.domain in ("", "ai.onnx"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return [f"{op}×{n}" for op, n in sorted(counts.items())]


def op_summary(model: onnx.ModelProto) -> str:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return ", ".join(f"{op}×{n}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1])[:6])


SYMBOLIC_DEBUG_FILES = ("sym_shape_infer_temp.onnx", "sym_shape_infer_temp.onnx.data")


def preprocess(fp32: bytes, tmp: Path) -> Path:
    """onnxruntime's `quant_pre_process` (symbolic shape inference + optimization); the input as-is if it fails.

    The symbolic shape pass only knows the default domain: on a graph with ai.onnx.ml nodes
    (scikit-learn's scalers, tree ensembles) it is skipped, because when it gives up it also
    writes a debug model into the current directory (removed here if it still appears).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, out = tmp / "fp32.onnx", tmp / "pre.onnx"
    src.write_bytes(fp32)
    model = onnx.load_from_string(fp32)
    default_only = all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    stray_before = {name for name in SYMBOLIC_DEBUG_FILES if Path(name).exists()}
    try:
        for skip_symbolic in ([False, True] if default_only else [True]):
            try:
                quant_pre_process(str(src), str(out), skip_symbolic_shape=skip_symbolic)
                return out
            except Exception:  # try without the symbolic pass, then give up on pre-processing
                continue
        return src
    finally:
        for name in SYMBOLIC_DEBUG_FILES:
            if name not in stray_before and Path(name).exists():
                Path(name).unlink()


# 7-bit int8 weights. x86 CPUs without VNNI (AVX2, plain AVX-512: many Lambda and Cloud Run hosts)
# multiply u8×s8 pairs into int16 sums that saturate with full-range weights, so the same int8 model
# agreed less with the original there than on the build machine (98.8 % vs ≥ 99.5 % on the MLP
# example). With one bit less no sum can saturate: every x86 and arm64 kernel computes exactly the
# same integer sums, so what the gate measured at build is what every host serves.
PORTABLE_INT8 = True


def dynamic_int8(fp32: bytes, per_channel: bool = True) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="bento-q-") as tmp_name:
        tmp = Path(tmp_name)
        pre = preprocess(fp32, tmp)
        out = tmp / "dynamic.onnx"
        quantize_dynamic(str(pre), str(out), per_channel=per_channel, weight_type=QuantType.QInt8,
                         reduce_range=PORTABLE_INT8, extra_options={"MatMulConstBOnly": True})
        return out.read_bytes()


class _Calibration:
    """A CalibrationDataReader over sample rows, one row per call (how the ranges are collected)."""

    def __init__(self, feeds: Feeds):
        rows = len(next(iter(feeds.values())))
        self._items = iter([{k: v[i : i + 1] for k, v in feeds.items()} for i in range(rows)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def rewind(self) -> None:  # pragma: no cover - the MinMax calibrator reads once
        pass


def static_int8(fp32: bytes, calibration: Feeds, per_channel: bool = True, method: str = "minmax") -> bytes:
    """int8 QDQ, symmetric int8 activations and weights (S8S8, which ONNX Runtime's CPU kernels favour)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(_Calibration, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="bento-q-") as tmp_name:
        tmp = Path(tmp_name)
        pre = preprocess(fp32, tmp)
        out = tmp / "static.onnx"
        calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                     "percentile": CalibrationMethod.Percentile}[method]
        quantize_static(str(pre), str(out), Reader(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        reduce_range=PORTABLE_INT8,
                        calibrate_method=calibrate,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        return out.read_bytes()


def fp16(fp32: bytes) -> bytes:
    """float16 weights and compute; inputs/outputs stay float32 (Cast nodes at the edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load_from_string(fp32)
    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    return converted.SerializeToString()


def onnx_runner(data: bytes) -> Runner:
    """An ONNX Runtime session set up as it is served (one intra-op thread, full online optimization)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(feeds: Feeds) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, feeds), strict=True))

    return run


def onnx_variants(config: QuantizeConfig, fp32: bytes, calibration: Feeds) -> list[Variant]:
    """Build the ONNX variants the config asks for; a step that cannot apply becomes a noted, failed variant."""
    wanted = config.candidates if config.method == "auto" else [config.method]
    model = onnx.load_from_string(fp32)
    touchable = quantizable_nodes(model)
    variants = []
    for name in dict.fromkeys(["fp32", *wanted] if config.method == "auto" else wanted):
        variant = Variant(name, None, onnx_runner)
        try:
            if name == "fp32":
                variant.data, variant.note = fp32, "the converted model, unquantized"
            elif name in ("dynamic", "static") and not touchable:
                variant.note = (f"nothing to quantize: int8 only rewrites MatMul/Gemm/Conv-style nodes and this "
                                f"graph has none ({op_summary(model)}); tree ensembles do not shrink under int8")
            elif name == "dynamic":
                variant.data = dynamic_int8(fp32, config.per_channel)
                variant.note = "int8 weights on " + ", ".join(touchable)
                if any(op.startswith("Conv") for op in touchable):
                    variant.note += ("; dynamic Conv runs as ConvInteger, which is slow on ONNX Runtime's CPU "
                                     "provider: prefer static for convolutional models")
            elif name == "static":
                variant.data = static_int8(fp32, calibration, config.per_channel, config.calibration_method)
                variant.note = (f"int8 QDQ on {', '.join(touchable)}, {config.calibration_method} calibration on "
                                f"{len(next(iter(calibration.values())))} rows")
            elif name == "fp16":
                variant.data = fp16(fp32)
                if len(variant.data) > 0.9 * len(fp32):
                    variant.note = "fp16 barely changes this graph (tree ensembles and integer ops stay as they are)"
                else:
                    variant.note = "float16 weights; float32 inputs and outputs"
        except Exception as exc:  # a quantizer refusing a graph is a result to report, not a crash
            variant.data, variant.note = None, f"{name} failed: {type(exc).__name__}: {exc}"[:300]
        variants.append(variant)
    return variants


# ---------------------------------------------------------------- measuring and choosing

def time_ms(run: Runner, feeds: Feeds, budget_s: float = 0.4, max_iter: int = 200) -> float:
    """Median wall time of one call, after warm-up, within a small time budget."""
    for _ in range(3):
        run(feeds)
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_iter and (len(times) < 5 or time.perf_counter() < deadline):
        start = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _take(feeds: Feeds, rows: int) -> Feeds:
    """`rows` rows, cycling through the held-out ones."""
    n = len(next(iter(feeds.values())))
    index = np.arange(rows) % n
    return {k: v[index] for k, v in feeds.items()}


def run_rows(run: Runner, feeds: Feeds, batchable: bool) -> dict[str, np.ndarray]:
    """All rows at once when the model has a free batch axis, else one by one."""
    if batchable:
        return run(feeds)
    n = len(next(iter(feeds.values())))
    parts = [run({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(n)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def measure(variant: Variant, held_out: Feeds, reference: dict[str, np.ndarray], config: QuantizeConfig,
            batchable: bool, sample_source: str) -> None:
    if variant.data is None or variant.runner_factory is None:
        return
    variant.size = len(variant.data)
    try:
        run = variant.runner_factory(variant.data)
        got = run_rows(run, held_out, batchable)
    except Exception as exc:
        variant.note = f"{variant.name} does not run: {type(exc).__name__}: {exc}"[:300]
        return
    rows = len(next(iter(held_out.values())))
    variant.report = gates.evaluate(config.gate, reference, got, rows, sample_source)
    variant.passed = variant.report["passed"]
    variant.measured = gates.summary(variant.report, config.gate)
    variant.ms_row = time_ms(run, _take(held_out, 1))
    if batchable:
        variant.ms_batch = time_ms(run, _take(held_out, BATCH_ROWS))
    if not variant.passed:
        variant.note = (variant.note + "; " if variant.note else "") + "FAILS the gate: " + gates.failures(
            variant.report)


def choose(variants: list[Variant], objective: str) -> Variant | None:
    passing = [v for v in variants if v.passed]
    if not passing:
        return None
    if objective == "latency":
        key: Callable[[Variant], Any] = lambda v: (v.ms_row if v.ms_row is not None else math.inf, v.size)  # noqa: E731
    else:
        key = lambda v: (v.size, v.ms_row if v.ms_row is not None else math.inf)  # noqa: E731
    return min(passing, key=key)


def split_rows(feeds: Feeds, calibration: Feeds | None) -> tuple[Feeds, Feeds]:
    """(calibration rows, held-out rows): a calibration file leaves the whole sample held out."""
    n = len(next(iter(feeds.values())))
    if calibration is not None:
        return calibration, feeds
    if n < 4:
        raise BentoCompileError(f"Quantization needs sample rows to calibrate on and to check against; the sample "
                                f"has {n}.", "Pass a sample of at least 100 real rows with --sample.")
    half = n // 2
    return {k: v[:half] for k, v in feeds.items()}, {k: v[half:] for k, v in feeds.items()}


def table(config: QuantizeConfig, variants: list[Variant], chosen: Variant | None, calibration_rows: int,
          held_out_rows: int, sample_source: str, limits: list[str] = LIMITS) -> dict[str, Any]:
    """The `quantization` section of the manifest and compile report."""
    return {
        "method": config.method,
        "objective": config.objective,
        "gate": config.gate.model_dump(),
        "calibration_rows": calibration_rows,
        "held_out_rows": held_out_rows,
        "sample": sample_source,
        "chosen": chosen.name if chosen else None,
        "variants": [v.row() for v in variants],
        "limits": limits,
    }


def select(config: QuantizeConfig, variants: list[Variant], held_out: Feeds, reference: dict[str, np.ndarray],
           batchable: bool, calibration_rows: int, sample_source: str, progress: Progress,
           limits: list[str] = LIMITS) -> tuple[Variant, dict[str, Any]]:
    """Measure every variant, gate it, pick one; raise QuantizationGateError if none the user asked for passes."""
    gates.check_gate_applies(config.gate, reference)
    held_rows = len(next(iter(held_out.values())))
    for variant in variants:
        if variant.data is not None:
            progress(f"Measuring the {variant.name} variant ({_kib(len(variant.data))}) on {held_rows} "
                     "held-out rows")
        measure(variant, held_out, reference, config, batchable, sample_source)
    chosen = choose(variants, config.objective)
    result = table(config, variants, chosen, calibration_rows, held_rows, sample_source, limits)
    if chosen is None:
        why = "; ".join(f"{v.name}: {v.note}" for v in variants)
        raise QuantizationGateError(
            f"No {config.method} variant passed the quantization gate, so nothing was stored ({why}).",
            "Keep the fp32 model (quantize: none), try another method (or auto), or loosen quantize.gate in "
            "bento.yaml if that drift is acceptable.", result)
    chosen.chosen = True
    result["variants"] = [v.row() for v in variants]
    return chosen, result


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def quantize_onnx(config, source, fp32: bytes, feeds: Feeds, outputs, inputs, calibration_path: Path | None,
                  fp32_report: dict[str, Any], sample_source: str, progress: Progress
                  ) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """The build step: variants of the fp32 ONNX model → (shipped bytes, quantization table, parity report).

    The returned parity report is the shipped variant's gate report against the
    original on ALL sample rows (the strict fp32 report stays in the table).
    """
    from bento_compile.compiler.samples import load_sample
    from bento_compile.compiler.signature import has_free_batch_axis

    qconfig: QuantizeConfig = config.quantize
    calibration = load_sample(calibration_path, inputs) if calibration_path is not None else None
    calib, held_out = split_rows(feeds, calibration)
    names = [o.name for o in outputs]
    reference = source.reference(held_out, names)
    gates.check_gate_applies(qconfig.gate, reference)
    progress(f"Quantizing ({qconfig.method}): building variants")
    variants = onnx_variants(qconfig, fp32, calib)
    batchable = has_free_batch_axis(inputs)
    source_text = sample_source + (" (calibration file)" if calibration is not None else ", second half")
    chosen, result = select(qconfig, variants, held_out, reference, batchable,
                            len(next(iter(calib.values()))), source_text, progress)
    result["fp32_parity"] = fp32_report
    if chosen.name == "fp32":
        return fp32, result, fp32_report
    assert chosen.data is not None and chosen.runner_factory is not None
    full = run_rows(chosen.runner_factory(chosen.data), feeds, batchable)
    all_reference = source.reference(feeds, names)
    report = gates.evaluate(qconfig.gate, all_reference, full, len(next(iter(feeds.values()))), sample_source)
    report["variant"] = chosen.name
    return chosen.data, result, report
