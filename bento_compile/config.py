"""`bento.yaml`: the schema (pydantic, strict) and its loader.

Unknown keys are errors that name the key: a typo such as `tolerence:` must
not silently fall back to a default and ship a model that was never checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import BentoCompileError

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
DTYPES = ("float32", "float64", "int64", "int32", "string", "bool")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(Strict):
    """Overrides the input signature the frontend would infer."""

    name: str
    dtype: Literal["float32", "float64", "int64", "int32", "string", "bool"] = "float32"
    shape: list[int | None] = Field(description="null (or -1) marks a free axis; the first is the batch axis")

    @field_validator("shape")
    @classmethod
    def _free_axes(cls, shape: list[int | None]) -> list[int | None]:
        if not shape:
            raise ValueError("shape needs at least one axis (the batch axis)")
        return [None if d is None or d < 0 else d for d in shape]


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


class BentoConfig(Strict):
    """The whole of bento.yaml."""

    name: str | None = Field(None, pattern=NAME_PATTERN)
    model: str | None = None
    sample: str | None = None
    inputs: list[InputSpec] | None = None
    parity: ParityConfig = ParityConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    # Room for later stages; their own issues give them a schema.
    quantize: str | dict[str, Any] | None = None
    targets: dict[str, dict[str, Any]] = Field(default_factory=dict)


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


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the key path, e.g. `unknown key 'runtime.tolerence'`."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{where}'")
        else:
            parts.append(f"'{where}': {err['msg']}")
    return "; ".join(parts)
