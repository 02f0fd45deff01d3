"""The daemonless builder: an `ImagePlan` written as an OCI image layout, pushed over HTTP.

The default where no Docker engine runs (CI systems, serverless build steps).
Reproducible: the same plan gives the same manifest digest (see oci_layout).
"""

from __future__ import annotations

from pathlib import Path

from bento_compile.targets.images import BuiltImage, ImagePlan, cache_root, split_tag
from bento_compile.targets.oci_layout import build_layout, push_layout


class OciBuilder:
    name = "oci"

    def build(self, plan: ImagePlan, out_dir: Path, reference: str) -> BuiltImage:
        _repo, tag = split_tag(reference)
        image = build_layout(plan.base, plan.layers, plan.config, plan.arch, Path(out_dir) / "oci", tag,
                             plan.epoch, plan.annotations, layer_cache=cache_root() / "layers")
        return BuiltImage("oci", reference, image.digest, image.layout,
                          [layer["digest"] for layer in image.layers], image.size)

    def push(self, image: BuiltImage) -> BuiltImage:
        _repo, tag = split_tag(image.reference)
        assert image.layout is not None, "build() always writes the layout it pushes"
        digest = push_layout(image.layout, tag, image.reference)
        image.digest, image.pushed = digest, True
        return image
