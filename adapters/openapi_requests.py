"""The OpenAPI parts a request pipeline adds to /predict: image bodies, form fields, named predictions.

Derived from the manifest's `pipeline` like the rest of the schema (adapters/openapi.py), so a client
generator sees `image/jpeg` bodies, the multipart field names and `predictions[].label` as they are.
"""

from __future__ import annotations

from typing import Any

from bento_compile.runtimes.manifest import Manifest

_BINARY = {"type": "string", "format": "binary"}


def pipeline_request_content(manifest: Manifest) -> dict[str, Any]:
    """Extra request content types (media type → schema); empty for a Bento without a pipeline."""
    pipeline = manifest.pipeline
    if pipeline is None or not pipeline.inputs:
        return {}
    content: dict[str, Any] = {}
    images = [i for i in pipeline.inputs if i.kind == "image"]
    if len(images) == 1:
        for fmt in images[0].formats:
            content[f"image/{fmt}"] = {"schema": {**_BINARY, "description": f"one image for '{images[0].name}'"}}
    fields: dict[str, Any] = {}
    for spec in pipeline.inputs:
        if spec.kind == "image":
            fields[spec.name] = {"type": "array", "items": _BINARY,
                                 "description": f"{', '.join(spec.formats)}; at most {spec.max_pixels} pixels; "
                                 f"resized to {spec.size[0]}x{spec.size[1]} ({spec.resize}, crop {spec.crop})"}
        else:
            fields[spec.name] = {"type": "string", "description": f"text, up to {spec.max_length} tokens "
                                 f"({spec.truncation} past it)"}
    content["multipart/form-data"] = {"schema": {"type": "object", "properties": fields,
                                                 "additionalProperties": False}}
    return content


def json_input_schemas(manifest: Manifest) -> dict[str, Any]:
    """JSON `inputs` properties for image (base64 strings) and text inputs."""
    pipeline = manifest.pipeline
    if pipeline is None:
        return {}
    schemas: dict[str, Any] = {}
    for spec in pipeline.inputs:
        item = ({"type": "string", "contentEncoding": "base64", "description": "an image (or a data: URL)"}
                if spec.kind == "image" else {"type": "string", "minLength": 1})
        schemas[spec.name] = {"oneOf": [item, {"type": "array", "items": item, "minItems": 1}],
                              "x-kind": spec.kind}
    return schemas


def predictions_schema(manifest: Manifest) -> dict[str, Any] | None:
    """`predictions`: one {label, score, top_k} per row, when an output has labels."""
    if manifest.pipeline is None or not manifest.pipeline.outputs:
        return None
    ranked = {"type": "object", "properties": {"label": {"type": "string"}, "score": {"type": "number"}}}
    row = {"type": "object", "properties": {"label": {"type": "string"}, "score": {"type": "number"},
                                            "top_k": {"type": "array", "items": ranked}}}
    rows = {"type": "array", "items": row}
    if len(manifest.pipeline.outputs) == 1:
        return rows
    return {"type": "object", "properties": {o.name: rows for o in manifest.pipeline.outputs}}
