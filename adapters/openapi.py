"""The OpenAPI description of /predict, generated from the model's real signature.

Cog's lesson: the schema is the contract, so it is derived from the manifest
(feature counts, dtypes, output names) and carries the example recorded at
compile time, instead of a generic "any JSON" body.
"""

from __future__ import annotations

from typing import Any

from bento_compile.adapters.openapi_requests import json_input_schemas, pipeline_request_content, predictions_schema
from bento_compile.runtimes.manifest import Manifest, TensorSpec

_JSON_TYPES = {"f": "number", "i": "integer", "u": "integer", "b": "boolean"}


def _leaf_schema(spec: TensorSpec, allow_missing: bool) -> dict[str, Any]:
    kind = "string" if spec.dtype == "string" else _JSON_TYPES.get(_kind(spec.dtype), "number")
    schema: dict[str, Any] = {"type": kind}
    if kind == "number" and allow_missing:
        schema = {"anyOf": [{"type": "number"}, {"type": "null"}], "description": "null = missing value"}
    return schema


def _kind(dtype: str) -> str:
    if dtype == "bool":
        return "b"
    return "u" if dtype.startswith("uint") else "i" if dtype.startswith("int") else "f"


def tensor_schema(spec: TensorSpec, allow_missing: bool) -> dict[str, Any]:
    """Nested array schema for one tensor; fixed axes become minItems/maxItems; a scalar is its leaf.
    `x-batch` says whether the first axis is the batch axis (rows) or the tensor is sent whole."""
    schema = _leaf_schema(spec, allow_missing)
    for size in reversed(spec.shape):
        schema = {"type": "array", "items": schema}
        if size is not None:
            schema["minItems"] = schema["maxItems"] = size
    shape = " x ".join("N" if d is None else str(d) for d in spec.shape) or "scalar"
    kind = "rows along the batch axis" if spec.batched else "a whole tensor, sent as it is"
    about = f"{spec.name}: {spec.dtype}, shape {shape}; {kind}"
    if "description" in schema:  # a scalar's leaf says how missing values are sent
        about += f" ({schema['description']})"
    return {**schema, "description": about, "x-batch": spec.batched}


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
    request, response = request_schema(manifest), response_schema(manifest)
    if manifest.pipeline is not None:  # images / text / labels (adapters/openapi_requests.py)
        request = {**request, "properties": {"inputs": {"oneOf": [
            {"type": "object", "properties": json_input_schemas(manifest)}, request["properties"]["inputs"]]}}}
        predictions = predictions_schema(manifest)
        if predictions is not None:
            response = {**response, "properties": {**response["properties"], "predictions": predictions}}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": request}, **pipeline_request_content(manifest)},
        },
        "responses": {
            "200": {
                "description": "Predictions, one entry per output (batched outputs: one row per input row)",
                "content": {"application/json": {"schema": response}},
            },
            "413": {"description": "Body or row count over the Bento's limits", **error},
            "422": {"description": "The inputs do not match the model's signature", **error},
            "503": {"description": "The model is not loaded yet", **error},
        },
    }
