"""Image columns in batch scoring: a column named after a Bento's image input holds each row's image as
bytes (binary) or as a path to a local file (string); each row is decoded and laid out by the runtime's
own image code (runtimes/media.py), and a row whose image is bad is a row error naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from bento_compile.batch.columns import RowErrors, without_inputs
from bento_compile.batch.errors import BatchError
from bento_compile.runtimes.errors import RuntimeFault
from bento_compile.runtimes.manifest import Manifest, RequestInput


def image_inputs(manifest: Manifest) -> list[RequestInput]:
    return [i for i in manifest.pipeline.inputs if i.kind == "image"] if manifest.pipeline else []


def without_image_inputs(manifest: Manifest) -> Manifest:
    """The manifest the column planner sees: image inputs are read by `image_feeds`, not as numbers."""
    return without_inputs(manifest, {i.name for i in image_inputs(manifest)})


def image_feeds(batch: pa.RecordBatch, manifest: Manifest, errors: RowErrors) -> dict[str, np.ndarray]:
    """Each image input's [rows, ...] feed (bad rows hold zeros and are marked in `errors`)."""
    from bento_compile.runtimes.media import decode_image, preprocess

    feeds: dict[str, np.ndarray] = {}
    limit = manifest.runtime.max_body_bytes
    for spec in image_inputs(manifest):
        if spec.name not in batch.schema.names:
            raise BatchError(f"The table has no column {spec.name!r} for the Bento's image input.",
                             f"Add a column {spec.name!r} of image bytes or image file paths.")
        column = batch.column(spec.name)
        if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)
                or pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise BatchError(f"Column {spec.name!r} is {column.type}; an image column holds bytes or file paths.",
                             "Store the encoded images (JPEG/PNG/WebP bytes) or their paths.")
        rows: list[np.ndarray | None] = []
        for index, value in enumerate(column.to_pylist()):
            try:
                if value is None:
                    raise RuntimeFault("the image is missing (null)")
                if isinstance(value, str):
                    path = Path(value)
                    if not path.is_file() or path.stat().st_size > limit:
                        raise RuntimeFault(f"{value} is not a file of at most {limit} bytes")
                    value = path.read_bytes()
                rows.append(preprocess(decode_image(value, spec, spec.name), spec))
            except RuntimeFault as exc:
                mask = np.zeros(batch.num_rows, dtype=bool)
                mask[index] = True
                errors.mark(mask, lambda _i, exc=exc: str(exc))
                rows.append(None)
        shape = next((r.shape for r in rows if r is not None), None)
        if shape is None:
            height, width = spec.size
            channels = 1 if spec.color == "L" else 3
            shape = (channels, height, width) if spec.layout == "NCHW" else (height, width, channels)
        feeds[spec.name] = np.stack([r if r is not None else np.zeros(shape, dtype=spec.dtype) for r in rows]) \
            if rows else np.zeros((0, *shape), dtype=spec.dtype)
    return feeds
