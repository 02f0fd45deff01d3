"""The OpenAPI description of /predict, generated from the model's real signature.

Cog's lesson: the schema is the contract, so it is derived from the manifest
(feature counts, dtypes, output names) and carries the example recorded at
compile time, instead of a generic "any JSON" body.
"""

from __future__ import annotations

from typing import Any

from bento_compile.runtimes.manifest import Manifest, TensorSpec

_JSON_TYPES = {"f": "number", "i": "integer", "u": "integer", "b": "boolean"}


def _leaf_schema(spec: TensorSpec, allow_missing: bool) -> dict[str, Any]:
    kind = "string" if spec.dtype == "string" else _JSON_TYPES.get(_kind(spec.dtype), "number")
    schema: dict[str, Any] = {"type": kind}
    if kind == "number" and allow_missing:
        schema = {"anyOf": [{"type": "number"}, {"type": "null"}], "description": "null = missing value"}
    return schema


def _kind(dtype: str) -> str:
    return {"float32": "f", "float64": "f", "float16": "f", "int64": "i", "int32": "i", "int8": "i",
            "uint8": "u", "bool": "b"}.get(dtype, "f")


def tensor_schema(spec: TensorSpec, allow_missing: bool) -> dict[str, Any]:
    """Nested array schema for one tensor; fixed axes become minItems/maxItems."""
    schema = _leaf_schema(spec, allow_missing)
    for size in reversed(spec.shape):
        schema = {"type": "array", "items": schema}
        if size is not None:
            schema["minItems"] = schema["maxItems"] = size
    return schema


def request_schema(manifest: Manifest) -> dict[str, Any]:
    allow_missing = manifest.runtime.allow_missing
    named = {
        "type": "object",
        "properties": {s.name: tensor_schema(s, allow_missing) for s in manifest.inputs},
        "required": [s.name for s in manifest.inputs],
        "additionalProperties": False,
    }
    inputs: dict[str, Any] = named
    if len(manifest.inputs) == 1:
        inputs = {"oneOf": [tensor_schema(manifest.inputs[0], allow_missing), named]}
    return {
        "type": "object",
        "required": ["inputs"],
        "properties": {"inputs": inputs},
        "example": manifest.example or None,
    }


def response_schema(manifest: Manifest) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "outputs": {
                "type": "object",
                "properties": {s.name: tensor_schema(s, True) for s in manifest.outputs},
            }
        },
    }


ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def predict_openapi_extra(manifest: Manifest) -> dict[str, Any]:
    """The `openapi_extra` for FastAPI's /predict route."""
    error = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": request_schema(manifest)}},
        },
        "responses": {
            "200": {
                "description": "Predictions, one entry per output, one row per input row",
                "content": {"application/json": {"schema": response_schema(manifest)}},
            },
            "413": {"description": "Body or row count over the Bento's limits", **error},
            "422": {"description": "The inputs do not match the model's signature", **error},
            "503": {"description": "The model is not loaded yet", **error},
        },
    }
