"""Images in a request → the model's input tensor: decode, resize, crop, normalize, lay out.

Pillow is the only dependency (imported on first use, so a tabular Bento never loads it), and the steps
follow torchvision's definitions so the same image gives the same tensor as the usual training recipe
(`Resize(n)` on the shorter side with bilinear + antialias, `CenterCrop`, `ToTensor`, `Normalize`):
compiler/image_reference.py re-implements them independently and the build records the agreement.

Bounds: the format is read from the first bytes and must be one the input declares; the pixel count
is read from the header and refused past `max_pixels` before a single pixel is decoded (a 20000×20000
PNG is a few KB of request but 1.2 GB of pixels); JPEGs are decoded fully or refused (truncated).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from bento_compile.runtimes.errors import InputError, PayloadTooLarge
from bento_compile.runtimes.manifest import RequestInput

# The first bytes of each format (what Pillow itself checks), so a wrong format is refused before Pillow
# tries every plugin it has.
_MAGIC: tuple[tuple[str, bytes, int], ...] = (
    ("jpeg", b"\xff\xd8\xff", 0),
    ("png", b"\x89PNG\r\n\x1a\n", 0),
    ("gif", b"GIF8", 0),
    ("bmp", b"BM", 0),
    ("webp", b"WEBP", 8),
)
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP"}
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif",
               "bmp": "image/bmp"}


def sniff_format(data: bytes) -> str | None:
    """The image format the bytes start with, or None."""
    for name, magic, offset in _MAGIC:
        if data[offset:offset + len(magic)] == magic and (name != "webp" or data[:4] == b"RIFF"):
            return name
    return None


def decode_image(data: bytes, spec: RequestInput, where: str) -> Any:
    """A PIL image in the declared colour mode, refused (422/413) when it is not one `spec` accepts."""
    from PIL import Image

    if not data:
        raise InputError(f"{where}: the image is empty")
    found = sniff_format(data)
    allowed = spec.formats or ["jpeg", "png", "webp"]
    if found is None:
        raise InputError(f"{where}: not an image this model takes ({', '.join(allowed)}); the bytes start "
                         f"with {data[:8]!r}")
    if found not in allowed:
        raise InputError(f"{where}: a {found.upper()} image; this model takes {', '.join(allowed)}")
    try:
        image = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[found]])
    except Image.DecompressionBombError as exc:  # past twice Pillow's own limit: refused from the header too
        raise PayloadTooLarge(f"{where}: the image is over the {spec.max_pixels} pixels this model accepts "
                              f"(max_pixels in bento.yaml; {exc}): send a smaller image") from None
    except Exception as exc:  # Pillow raises several types for a bad header
        raise InputError(f"{where}: the {found.upper()} image cannot be read: {exc}") from None
    width, height = image.size
    if width * height > spec.max_pixels:
        raise PayloadTooLarge(f"{where}: the image is {width}x{height} pixels, over the {spec.max_pixels} "
                              "this model accepts (max_pixels in bento.yaml): send a smaller image")
    try:
        image.load()  # the whole image now: a truncated file is refused here, not half-used
    except Exception as exc:
        raise InputError(f"{where}: the {found.upper()} image is truncated or corrupt: {exc}") from None
    mode = "L" if spec.color == "L" else "RGB"
    return image if image.mode == mode else image.convert(mode)


def resized_size(width: int, height: int, spec: RequestInput) -> tuple[int, int]:
    """(width, height) after the resize step, as torchvision's Resize computes it."""
    target_h, target_w = spec.size
    if spec.resize == "exact":
        return target_w, target_h
    if spec.resize == "none":
        return width, height
    short = spec.resize_to or min(target_h, target_w)
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def preprocess(image: Any, spec: RequestInput) -> np.ndarray:
    """One decoded image → one model row (CHW or HWC, float, normalized)."""
    from PIL import Image

    width, height = resized_size(image.size[0], image.size[1], spec)
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    target_h, target_w = spec.size
    if spec.crop == "center":
        if width < target_w or height < target_h:
            raise InputError(f"inputs.{spec.name}: the image is {width}x{height} after resizing, smaller than "
                             f"the {target_w}x{target_h} crop")
        left = round((width - target_w) / 2.0)
        top = round((height - target_h) / 2.0)
        image = image.crop((left, top, left + target_w, top + target_h))
    elif image.size != (target_w, target_h):
        raise InputError(f"inputs.{spec.name}: the image is {width}x{height}; this model takes "
                         f"{target_w}x{target_h} (resize: none, crop: none)")
    pixels: Any = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if spec.color == "BGR":
        pixels = pixels[:, :, ::-1]
    pixels = pixels / np.float32(spec.scale)
    if spec.mean:
        pixels = pixels - np.asarray(spec.mean, dtype=np.float32)
    if spec.std:
        pixels = pixels / np.asarray(spec.std, dtype=np.float32)
    if spec.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, dtype=np.dtype(spec.dtype))


def image_batch(images: Sequence[bytes], spec: RequestInput, field: str) -> np.ndarray:
    """Several encoded images → the model's [N, ...] input."""
    if not images:
        raise InputError(f"{field}: send at least one image")
    rows = [preprocess(decode_image(data, spec, field if len(images) == 1 else f"{field}[{i}]"), spec)
            for i, data in enumerate(images)]
    return np.stack(rows)
