"""The daemonless builder: an `ImagePlan` written as an OCI image layout, pushed over HTTP.

The default where no Docker engine runs (CI systems, serverless build steps).
Reproducible: the same plan gives the same manifest digest (see oci_layout).
"""

from __future__ import annotations

from pathlib import Path

from bento_compile.core.files import cache_root
from bento_compile.targets.images import BuiltImage, ImagePlan
from bento_compile.targets.oci_layout import build_layout, push_layout
from bento_compile.targets.registry import parse_image_reference


class OciBuilder:
    name = "oci"

    def build(self, plan: ImagePlan, out_dir: Path, reference: str) -> BuiltImage:
        tag = parse_image_reference(reference).tag_or_latest
        image = build_layout(plan.base, plan.layers, plan.config, plan.arch, Path(out_dir) / "oci", tag,
                             plan.epoch, plan.annotations, layer_cache=cache_root() / "layers")
        return BuiltImage("oci", reference, image.digest, image.layout,
                          [layer["digest"] for layer in image.layers], image.size)

    def push(self, image: BuiltImage) -> BuiltImage:
        tag = parse_image_reference(image.reference).tag_or_latest
        assert image.layout is not None, "build() always writes the layout it pushes"
        digest = push_layout(image.layout, tag, image.reference)
        image.digest, image.pushed = digest, True
        return image
