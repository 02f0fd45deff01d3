"""The reference image preprocessing, to check the runtime's (runtimes/media.py) against at build time.

torchvision's transforms when torchvision is installed (Resize(n) → CenterCrop → ToTensor → Normalize);
otherwise the same steps written from torchvision's definitions with PIL + numpy, independently of the
runtime's code: output size from `_compute_resized_output_size`, bilinear with antialias (what
torchvision uses on PIL images), crop offsets `int(round((h - ch) / 2))`, ToTensor's /255 and CHW.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bento_compile.core.config import InputSpec
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.manifest import RequestInput

_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
_MAX_IMAGES = 16
_TOLERANCE = 1e-4


def reference_tensor(path: Path, spec: InputSpec) -> tuple[np.ndarray, str]:
    """One image file → one model row, by the reference; and which reference ran."""
    from PIL import Image

    assert spec.size is not None
    image: Any = Image.open(path).convert("L" if spec.color == "L" else "RGB")
    target_h, target_w = spec.size
    try:
        import torchvision.transforms as T  # type: ignore[import-not-found]

        steps: list[Any] = []
        if spec.resize == "shorter-side":
            steps.append(T.Resize(spec.resize_to or min(target_h, target_w)))
        elif spec.resize == "exact":
            steps.append(T.Resize((target_h, target_w)))
        if spec.crop == "center":
            steps.append(T.CenterCrop((target_h, target_w)))
        pixels = np.asarray(T.Compose(steps)(image), dtype=np.float32)
        used = "torchvision"
    except ImportError:
        width, height = image.size
        if spec.resize == "shorter-side":
            requested = spec.resize_to or min(target_h, target_w)
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = requested, int(requested * long / short)
            new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
            image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        elif spec.resize == "exact":
            image = image.resize((target_w, target_h), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32)
        if spec.crop == "center":
            h, w = pixels.shape[:2]
            top, left = round((h - target_h) / 2.0), round((w - target_w) / 2.0)
            pixels = pixels[top:top + target_h, left:left + target_w]
        used = "PIL+numpy (torchvision's definitions)"
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if spec.color == "BGR":
        pixels = pixels[:, :, ::-1]
    pixels = pixels / spec.scale
    channels = pixels.shape[2]
    mean = np.broadcast_to(np.asarray(spec.mean or [0.0], dtype=np.float32), (channels,))
    std = np.broadcast_to(np.asarray(spec.std or [1.0], dtype=np.float32), (channels,))
    pixels = (pixels - mean) / std
    if spec.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return pixels.astype(np.float32), used


def check_image_parity(spec: InputSpec, entry: RequestInput, root: Path, runner: Any,
                       feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Preprocess the folder of real images both ways; compare the tensors and the model's answers."""
    if spec.images is None:
        return {"checked": False, "note": "no images: folder given; preprocessing parity not measured"}
    folder = (root / spec.images).resolve()
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _SUFFIXES)[:_MAX_IMAGES] \
        if folder.is_dir() else []
    if not files:
        raise BentoCompileError(f"inputs: image '{spec.name}': images: {spec.images} holds no .jpg/.png/.webp "
                                "files.", "Point images: at a folder of real images like the ones it will serve.")
    from bento_compile.runtimes.media import image_batch

    ours = image_batch([p.read_bytes() for p in files], entry, f"images/{spec.name}")
    reference = np.stack([reference_tensor(p, spec)[0] for p in files])
    used = reference_tensor(files[0], spec)[1]
    diff = float(np.max(np.abs(ours.astype(np.float64) - reference)))
    report: dict[str, Any] = {"checked": True, "images": len(files), "reference": used,
                              "tensor_max_abs_diff": diff, "passed": diff <= _TOLERANCE}
    if runner is not None:
        other = {k: v[:1].repeat(len(files), axis=0) for k, v in feeds.items() if k != spec.name}
        a = runner({**other, spec.name: ours})
        b = runner({**other, spec.name: reference.astype(ours.dtype)})
        first = next(iter(a))
        report["model_output"] = first
        report["model_max_abs_diff"] = float(np.max(np.abs(np.asarray(a[first], np.float64) - b[first])))
        if np.asarray(a[first]).ndim == 2:
            report["label_agreement"] = float(np.mean(np.argmax(a[first], 1) == np.argmax(b[first], 1)))
    if not report["passed"]:
        raise BentoCompileError(f"inputs: image '{spec.name}': the runtime's preprocessing differs from the "
                                f"{used} reference by {diff:.2e} on {len(files)} images.",
                                "Report this; check resize/crop/mean/std in bento.yaml.")
    return report
