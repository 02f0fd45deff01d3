"""`bento.yaml`: the schema (pydantic, strict) and its loader.

Unknown keys are errors that name the key: a typo such as `tolerence:` must
not silently fall back to a default and ship a model that was never checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.names import BENTO_NAME_PATTERN

DTYPES = ("float32", "float64", "int64", "int32", "string", "bool")
InputDtype = Literal["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                     "uint64", "string", "bool"]


ImageFormat = Literal["jpeg", "png", "webp", "gif", "bmp"]
DEFAULT_IMAGE_FORMATS: tuple[ImageFormat, ...] = ("jpeg", "png", "webp")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(Strict):
    """Overrides the input signature the frontend would infer (kind: tensor), or declares what a request
    sends for a model input: an image (decoded and laid out by the runtime) or text (tokenized)."""

    name: str
    dtype: InputDtype = "float32"
    shape: list[int | None] | None = Field(None, description="null (or -1) marks a free axis; [] is a scalar "
                                           "(required for kind: tensor)")
    kind: Literal["tensor", "image", "text"] = "tensor"
    # kind: image (runtimes/media.py): the model input is the decoded, resized, cropped, normalized batch.
    size: list[int] | None = Field(None, min_length=2, max_length=2, description="[height, width] the model takes")
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    color: Literal["RGB", "BGR", "L"] = "RGB"
    scale: float = Field(255.0, gt=0, description="pixel values are divided by this before mean/std")
    mean: list[float] | None = None
    std: list[float] | None = None
    resize: Literal["shorter-side", "exact", "none"] = "shorter-side"
    resize_to: int | None = Field(None, gt=0, description="shorter side after resizing (default: the crop's "
                                  "shorter side; 256 for the usual 224 ImageNet recipe)")
    crop: Literal["center", "none"] = "center"
    formats: list[ImageFormat] = Field(default_factory=lambda: list(DEFAULT_IMAGE_FORMATS),
                                       description="image formats a request may send")
    max_pixels: int = Field(40_000_000, gt=0, description="larger images are refused (413) before decoding")
    images: str | None = Field(None, description="a folder of real images (relative to bento.yaml) the build "
                               "preprocesses both ways to check parity with the torchvision/PIL reference")
    # kind: text (runtimes/text.py): a Hugging Face tokenizer.json shipped in the Bento.
    tokenizer: str | None = Field(None, description="tokenizer.json, relative to bento.yaml")
    max_length: int = Field(128, gt=0, le=65536)
    truncation: Literal["truncate", "refuse"] = "truncate"
    ids: str = Field("input_ids", description="the model input that takes the token ids")
    mask: str | None = Field("attention_mask", description="the model input that takes the attention mask "
                             "(null: the model has none)")

    @model_validator(mode="after")
    def _kind_fields(self) -> InputSpec:
        if self.kind == "tensor" and self.shape is None:
            raise ValueError(f"input '{self.name}': shape is required (or give kind: image / text)")
        if self.kind == "image" and self.size is None:
            raise ValueError(f"input '{self.name}': kind: image needs size: [height, width]")
        if self.kind == "text" and self.tokenizer is None:
            raise ValueError(f"input '{self.name}': kind: text needs tokenizer: tokenizer.json")
        channels = 1 if self.color == "L" else 3
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is not None and len(values) not in (1, channels):
                raise ValueError(f"input '{self.name}': {key} needs 1 or {channels} values for color {self.color}")
        if self.std is not None and any(v == 0 for v in self.std):
            raise ValueError(f"input '{self.name}': std values must not be 0")
        return self
    batch: bool | None = Field(None, description="true: the first axis is the batch axis (rows); false: a whole "
                               "tensor sent as it is; unset: the batch axis when the first axis is free")

    @field_validator("shape")
    @classmethod
    def _free_axes(cls, shape: list[int | None] | None) -> list[int | None] | None:
        return None if shape is None else [None if d is None or d < 0 else d for d in shape]

    @model_validator(mode="after")
    def _batch_needs_a_free_axis(self) -> InputSpec:
        if self.batch and not (self.shape and self.shape[0] is None):
            raise ValueError(f"input '{self.name}': batch: true needs a free first axis (shape: [null, ...])")
        return self


class OutputConfig(Strict):
    """`outputs.<name>`: what a model output means (runtimes/answers.py): class names, softmax, top-k."""

    labels: str | list[str] | None = Field(None, description="class names: a file (one a line, relative to "
                                           "bento.yaml) or a list; default for scikit-learn: classes_")
    softmax: bool = Field(False, description="the output is logits: answer scores after a softmax")
    top_k: int = Field(1, ge=1, le=1000, description="how many {label, score} each answer lists")


class ParityConfig(Strict):
    """How close the compiled model must stay to the original."""

    tolerance: float = Field(1e-4, ge=0, description="max abs difference on continuous outputs")
    label_agreement: float = Field(1.0, ge=0, le=1, description="share of labels that must match")


class BatchingConfig(Strict):
    """`runtime.batching`: coalescing concurrent requests into one model run (see runtimes/batching.py)."""

    mode: Literal["off", "fixed", "adaptive"] = Field(
        "adaptive", description="adaptive: learn run time per batch size and wait only when it pays")
    max_batch_size: int = Field(64, gt=0, description="a batch closes at this many ROWS")
    max_latency_ms: float = Field(5.0, gt=0, description="longest a request waits for others to join its batch")
    max_queue_rows: int = Field(2048, gt=0, description="rows waiting beyond this are refused (503 + Retry-After)")
    timeout_ms: float = Field(2000.0, gt=0, description="a request that cannot be answered within this is "
                              "refused at once (503), never left waiting")


class RuntimeConfig(Strict):
    """Serving behaviour and bounds, recorded in the manifest."""

    allow_missing: bool = Field(True, description="JSON null in float inputs reaches the model as NaN")
    max_body_bytes: int = Field(6 * 1024 * 1024, gt=0)
    max_batch_rows: int = Field(1024, gt=0)
    intra_op_threads: int = Field(1, ge=0, description="0 = ONNX Runtime's default (one per core)")
    device: Literal["auto", "cpu", "cuda", "tensorrt"] = Field(
        "auto", description="auto: CUDA when onnxruntime-gpu and a GPU are present, else CPU")
    max_concurrency: int = Field(0, ge=0, description="in-flight /predict requests before 503 "
                                 "(0 = unlimited; env BENTO_COMPILE_MAX_CONCURRENCY overrides)")
    batching: BatchingConfig = BatchingConfig()


class QuantizeGate(Strict):
    """What a quantized variant must keep, measured against the ORIGINAL model on held-out sample rows."""

    label_agreement: float = Field(0.995, ge=0, le=1, description="share of labels (every label output) that "
                                   "must match the original")
    output: str | None = Field(None, description="a continuous output to bound, e.g. probabilities")
    max_abs_diff: float | None = Field(None, ge=0, description="max |compiled - original| on `output`")
    max_rel_error: float | None = Field(None, ge=0, description="max |compiled - original| / max |original| "
                                        "on `output`")
    argmax: bool = Field(False, description="also compare argmax over the last axis of `output` as labels "
                         "(label_agreement applies): for models that output scores only")


# The variants `quantize: auto` can try, in the order it tries them.
QuantizeVariant = Literal["fp32", "dynamic", "static", "fp16"]


class QuantizeConfig(Strict):
    """`quantize:` in bento.yaml (or `quantize: dynamic` as a shorthand for the method)."""

    method: Literal["none", "dynamic", "static", "fp16", "auto"] = "none"
    objective: Literal["size", "latency"] = Field("size", description="what `auto` minimizes among the "
                                                  "variants that pass the gate")
    gate: QuantizeGate = QuantizeGate()
    calibration: str | None = Field(None, description=".npy/.csv rows for static calibration (default: half "
                                    "of the sample; the other half is held out for the gate)")
    per_channel: bool = Field(True, description="per-channel int8 weights (more accurate, same size)")
    calibration_method: Literal["minmax", "entropy", "percentile"] = Field(
        "minmax", description="how static quantization picks activation ranges from the calibration rows")
    candidates: list[QuantizeVariant] = Field(
        default_factory=lambda: list(get_args(QuantizeVariant)), description="what `auto` tries")


class PredictionLogConfig(Strict):
    """`monitoring.log`: sampled predictions, written off the request path."""

    to: str = Field("stdout", pattern=r"^(stdout|otlp|file:.+|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?)$",
                    description="stdout | file:/var/log/bento/predictions.jsonl | s3://bucket/prefix/ | otlp")
    sample_rate: float = Field(0.01, ge=0, le=1, description="share of rows logged")
    redact: list[str] = Field(default_factory=list, description="input feature names replaced by a hash or dropped")
    redact_mode: Literal["hash", "drop"] = "hash"
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=4096, description="file sink: rotate past this size")
    queue_size: int = Field(10000, ge=1, le=1_000_000, description="records waiting to be written; more are "
                            "dropped (and counted), never slowing a request")


class MonitoringConfig(Strict):
    """`monitoring:` in bento.yaml: live drift statistics against the baseline recorded at build time."""

    window: int = Field(10000, ge=10, le=100_000_000, description="rows in the sliding window")
    window_seconds: float | None = Field(None, gt=0, description="a window in time instead of rows")
    psi_alert: float = Field(0.2, gt=0, description="a feature whose PSI passes this is drifting")
    baseline: str | None = Field(None, description=".npy/.npz/.csv rows of training data (default: the sample)")
    log: PredictionLogConfig | None = None


class LambdaTarget(Strict):
    """`targets.lambda` in bento.yaml: the function (targets/lambda_zip.py, targets/sam.py)."""

    function_name: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
                                      description="default: the Bento's name")
    arch: Literal["x86_64", "arm64"] = "x86_64"
    python: Literal["3.10", "3.11", "3.12", "3.13"] = "3.12"
    memory: int = Field(1024, ge=128, le=10240, description="MB; Lambda's CPU share grows with it")
    timeout: int = Field(30, ge=1, le=900, description="seconds per invocation")
    load: Literal["eager", "lazy", "background"] = Field("eager", description="when the model loads: during init, "
                                                          "on the first event, or in a thread from init")
    function_url: bool = True
    function_url_auth: Literal["AWS_IAM", "NONE"] = Field("AWS_IAM", description="NONE makes the URL public")
    warmer: str | None = Field(None, pattern=r"^(rate|cron)\(.+\)$",
                               description='EventBridge schedule for warm pings, e.g. "rate(5 minutes)"')
    provisioned_concurrency: int = Field(0, ge=0, description="pre-initialised environments (no cold starts)")
    snapstart: bool = Field(False, description="SnapStart (Python 3.12+): restore from a snapshot of init")
    sink: str | None = Field(None, pattern=r"^(s3://[^/]+/.*|https?://.+)$",
                             description="where SQS batch results go: s3://bucket/prefix/ or an SQS queue URL")
    sqs_queue_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:sqs:.+$",
                                      description="an SQS queue that triggers the function (batches)")
    sqs_batch_size: int = Field(10, ge=1, le=10000)
    environment: dict[str, str] = Field(default_factory=dict, description="extra environment variables")

    @model_validator(mode="after")
    def _compatible(self) -> LambdaTarget:
        if self.snapstart and self.python in ("3.10", "3.11"):
            raise ValueError("snapstart needs python 3.12 or later (Lambda supports SnapStart for Python 3.12+)")
        if self.snapstart and self.provisioned_concurrency:
            raise ValueError("snapstart and provisioned_concurrency cannot be combined on one function version")
        return self


# Per-target sections with a schema; a section not listed here stays a free mapping until its issue gives it one.
TARGET_SCHEMAS: dict[str, type[BaseModel]] = {"lambda": LambdaTarget}


class ServiceTarget(Strict):
    """What Knative and Cloud Run share (`targets.knative` / `targets.cloudrun`; see targets/knative.py)."""

    service: str | None = Field(None, pattern=r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$",
                                description="service name (default: the Bento's name)")
    container_concurrency: int = Field(16, ge=1, le=1000, description="requests one container serves at once; "
                                       "the server answers 503 + Retry-After past it")
    cpu: str = Field("1", pattern=r"^\d+(\.\d+)?m?$")
    memory: str = Field("1Gi", pattern=r"^\d+(Ki|Mi|Gi|K|M|G)?$")
    timeout_seconds: int = Field(60, ge=1, le=3600, description="longest a request may take")
    grace_seconds: int = Field(25, ge=0, le=3600, description="on SIGTERM, how long in-flight requests may finish")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")


class KnativeTarget(ServiceTarget):
    """`targets.knative` in bento.yaml."""

    namespace: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    min_scale: int = Field(0, ge=0, description="pods kept warm (a warm pool avoids cold starts)")
    max_scale: int = Field(10, ge=0, description="cost cap (0 = unlimited)")
    target: int | None = Field(None, ge=1, description="autoscaler's concurrency target per pod "
                               "(default: 70% of container_concurrency)")


class CloudRunTarget(ServiceTarget):
    """`targets.cloudrun` in bento.yaml."""

    region: str | None = Field(None, pattern=r"^[a-z]+-[a-z]+\d+$")
    min_instances: int = Field(0, ge=0)
    max_instances: int = Field(10, ge=1)
    startup_cpu_boost: bool = True
    execution_environment: Literal["gen1", "gen2"] = "gen2"
    cpu_throttling: bool = Field(True, description="false keeps the CPU allocated between requests")


TARGET_SCHEMAS.update({"knative": KnativeTarget, "cloudrun": CloudRunTarget})


class BentoConfig(Strict):
    """The whole of bento.yaml."""

    name: str | None = Field(None, pattern=BENTO_NAME_PATTERN)
    model: str | None = None
    sample: str | None = None
    inputs: list[InputSpec] | None = None
    outputs: dict[str, OutputConfig] = Field(default_factory=dict, description="labels / softmax / top_k "
                                             "per model output")
    handler: str | None = Field(None, description="handler.py with preprocess(request) and/or "
                                "postprocess(outputs, request), relative to bento.yaml")
    parity: ParityConfig = ParityConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    monitoring: MonitoringConfig | None = None  # the baseline is recorded either way; this turns live stats on
    format: Literal["onnx", "ort"] = Field("onnx", description="ort: also convert to ONNX Runtime's format "
                                           "(.ort + required_operators.config) for reduced-size runtimes")
    # Room for later stages; their own issues give them a schema.
    targets: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("targets")
    @classmethod
    def _target_sections(cls, targets: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Validate the sections that have a schema (unknown keys inside them are errors)."""
        checked = dict(targets)
        for name, schema in TARGET_SCHEMAS.items():
            if name in targets:
                try:
                    checked[name] = schema.model_validate(targets[name]).model_dump()
                except ValidationError as exc:  # name the section: 'targets.lambda.memroy', not 'targets.memroy'
                    raise ValueError(describe_validation_error(exc, prefix=f"targets.{name}.")) from None
        return checked

    @field_validator("quantize", mode="before")
    @classmethod
    def _quantize_shorthand(cls, value: Any) -> Any:
        """`quantize: dynamic` means `quantize: {method: dynamic}`; `quantize: null` means none."""
        if value is None:
            return {}
        return {"method": value} if isinstance(value, str) else value


def load_config(path: Path | None) -> tuple[BentoConfig, Path | None]:
    """Parse a bento.yaml (or return the defaults); paths in it are relative to its folder."""
    if path is None:
        return BentoConfig(), None
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise BentoCompileError(f"{path} does not exist.", "Pass the path of your bento.yaml with -f.") from None
    except yaml.YAMLError as exc:
        raise BentoCompileError(f"{path} is not valid YAML: {exc}", "Fix the syntax at the line shown.") from None
    if not isinstance(data, dict):
        raise BentoCompileError(f"{path} must be a mapping of keys (name:, model:, ...).",
                                "See examples/breast_cancer/bento.yaml.")
    try:
        return BentoConfig.model_validate(data), path.parent
    except ValidationError as exc:
        raise BentoCompileError(f"{path} is not valid: {describe_validation_error(exc)}",
                                "See the bento.yaml reference in the README.") from None


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, naming the key path, e.g. `unknown key 'runtime.tolerence'`."""
    parts = []
    for err in exc.errors():
        where = (prefix + ".".join(str(p) for p in err["loc"])).rstrip(".")
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{where}'")
        else:
            parts.append(f"'{where}': {err['msg']}")
    return "; ".join(parts)
