"""Around the model run: a request's images, text and handler hooks in; named labels out.

Built once per loaded Bento from its manifest's `pipeline` (what the compiler decided), and used by
every adapter through `BentoModel` (HTTP, Lambda events, SQS records, the edge runner, batch):

  body (JSON | image/jpeg|png|webp | multipart/form-data)
    → request  {"inputs": {...}}           images as bytes (or base64 strings in JSON)
    → handler.preprocess(request)           when handler.py defines it
    → payload  images decoded and laid out, text tokenized (runtimes/media.py, runtimes/text.py)
    → the usual signature check (runtimes/tensors.py) → model
    → answer   {"outputs": ..., "predictions": [{label, score, top_k}, ...]}
    → handler.postprocess(answer, request)  when handler.py defines it
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bento_compile.runtimes.answers import internal_outputs, label_answers
from bento_compile.runtimes.errors import InputError, PayloadTooLarge
from bento_compile.runtimes.manifest import Manifest, RequestInput
from bento_compile.runtimes.tensors import decode_inputs, encode_outputs

_IMAGE_TYPES = (b"image/jpeg", b"image/png", b"image/webp", b"image/gif", b"image/bmp")
_MULTIPART = b"multipart/form-data"


def media_accepted(manifest: Manifest, content_type: bytes) -> bool:
    """Whether a non-JSON body of this type is this Bento's to read (decided from the manifest alone,
    before the model loads)."""
    if manifest.pipeline is None:
        return False
    kind = content_type.split(b";", 1)[0].strip().lower()
    has_images = any(i.kind == "image" for i in manifest.pipeline.inputs)
    return (kind in _IMAGE_TYPES and has_images) or (kind == _MULTIPART and bool(manifest.pipeline.inputs))


class ServingPipeline:
    """The request pipeline of one loaded Bento."""

    def __init__(self, bento_dir: Path, manifest: Manifest):
        info = manifest.pipeline
        assert info is not None
        self.manifest = manifest
        self.images: dict[str, RequestInput] = {i.name: i for i in info.inputs if i.kind == "image"}
        self.texts: dict[str, Any] = {}
        for spec in info.inputs:
            if spec.kind == "text":
                from bento_compile.runtimes.text import TextEncoder

                self.texts[spec.name] = TextEncoder(bento_dir, spec)
        self.hooks = None
        if info.handler:
            from bento_compile.runtimes.handler_hook import load_hooks

            self.hooks = load_hooks(Path(bento_dir) / info.handler)
        self.labelled = info.outputs
        self.hidden = internal_outputs(info.outputs)

    # ---- in --------------------------------------------------------------------------------

    def request_from_body(self, body: bytes, content_type: bytes = b"") -> Any:
        """The request as the handler sees it: JSON parsed; an image body or form as `{"inputs": ...}`."""
        kind = content_type.split(b";", 1)[0].strip().lower()
        if kind in _IMAGE_TYPES:
            if len(self.images) != 1:
                raise InputError(f"this model takes several inputs ({', '.join(self._fields())}): send them "
                                 "as multipart/form-data fields or JSON")
            return {"inputs": {next(iter(self.images)): [body]}}
        if kind == _MULTIPART:
            return {"inputs": self._form(body, content_type)}
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"the body is not valid JSON: {exc}") from None

    def _fields(self) -> list[str]:
        return [*self.images, *self.texts] or [s.name for s in self.manifest.inputs]

    def _form(self, body: bytes, content_type: bytes) -> dict[str, Any]:
        from bento_compile.runtimes.multipart import parse_multipart

        fields: dict[str, Any] = {}
        for name, data, _is_file in parse_multipart(body, content_type):
            if name not in self.images and name not in self.texts:
                raise InputError(f"unknown form field {name!r}; this model takes: {', '.join(self._fields())}")
            if name in self.images:
                fields.setdefault(name, []).append(data)
            else:
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(f"form field {name!r} is not UTF-8 text") from None
                fields.setdefault(name, []).append(text)
        return fields

    def decode(self, request: Any) -> tuple[dict[str, np.ndarray], int]:
        """The model's feeds for a request (after the handler's preprocess)."""
        if self.hooks is not None:
            request = self.hooks.preprocess(request)
        if not isinstance(request, Mapping) or not isinstance(request.get("inputs"), Mapping | list | str):
            raise InputError('the body must be a JSON object with an "inputs" field')
        inputs = request["inputs"]
        if not isinstance(inputs, Mapping):  # one declared input: the value itself
            declared = [*self.images, *self.texts]
            if len(declared) != 1:
                return decode_inputs(request, self.manifest.inputs, self.manifest.runtime)
            inputs = {declared[0]: inputs}
        payload = dict(inputs)
        made: dict[str, np.ndarray] = {}  # tensors built here, exact by construction
        for name, spec in self.images.items():
            if name in payload:
                value = self._images(payload.pop(name), spec)
                if isinstance(value, np.ndarray):
                    made[name] = value
                else:
                    payload[name] = value
        for name, encoder in self.texts.items():
            if name in payload:
                made.update(encoder.encode(payload.pop(name), f"inputs.{name}"))
        rest = [s for s in self.manifest.inputs if s.name not in made]
        feeds, rows = decode_inputs({"inputs": payload}, rest, self.manifest.runtime)
        batched_rest = any(s.batched for s in rest)
        for name, array in made.items():
            if len(array) > self.manifest.runtime.max_batch_rows:
                raise PayloadTooLarge(f"inputs.{name}: {len(array)} rows; this Bento accepts at most "
                                      f"{self.manifest.runtime.max_batch_rows} (runtime.max_batch_rows)")
            if batched_rest and len(array) != rows:
                raise InputError(f"inputs.{name} has {len(array)} rows but the other inputs have {rows}")
            rows = len(array)
        return {**feeds, **made}, rows

    def _images(self, value: Any, spec: RequestInput) -> Any:
        from bento_compile.runtimes.media import image_batch

        field = f"inputs.{spec.name}"
        if isinstance(value, np.ndarray) or (isinstance(value, list) and value and isinstance(value[0], list)):
            return value  # already a tensor (e.g. the Bento's own example): the signature check reads it
        items = value if isinstance(value, list) else [value]
        if len(items) > self.manifest.runtime.max_batch_rows:
            raise PayloadTooLarge(f"{field}: {len(items)} images; this Bento accepts at most "
                                  f"{self.manifest.runtime.max_batch_rows} per request (runtime.max_batch_rows)")
        encoded = [self._image_bytes(item, field if len(items) == 1 else f"{field}[{i}]")
                   for i, item in enumerate(items)]
        return image_batch(encoded, spec, field)

    @staticmethod
    def _image_bytes(item: Any, where: str) -> bytes:
        if isinstance(item, bytes | bytearray):
            return bytes(item)
        if not isinstance(item, str):
            raise InputError(f"{where}: send the image as a base64 string (or the body as image/jpeg|png|webp)")
        if item.startswith("data:"):  # a data URL: data:image/png;base64,....
            item = item.partition(",")[2]
        try:
            return base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"{where}: not valid base64") from None

    # ---- out -------------------------------------------------------------------------------

    def answer(self, outputs: Mapping[str, np.ndarray], request: Any) -> Any:
        """The JSON answer: raw outputs (without the compiler's helper outputs) and named predictions."""
        raw = {name: value for name, value in outputs.items() if name not in self.hidden}
        answer: dict[str, Any] = {"outputs": encode_outputs(raw)}
        if len(self.labelled) == 1:
            answer["predictions"] = label_answers(self.labelled[0], outputs)
        elif self.labelled:
            answer["predictions"] = {spec.name: label_answers(spec, outputs) for spec in self.labelled}
        if self.hooks is not None:
            answer = self.hooks.postprocess(answer, request)
        return answer
