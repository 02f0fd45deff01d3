"""The wheels a Bento's request pipeline adds to an artifact, and only when it declares them.

A tabular Bento ships exactly what it did before (nothing here applies); an image Bento adds Pillow
(decoding, resizing), a text Bento adds `tokenizers` (its tokenizer.json). The compiler records what the
pipeline needs in the manifest (`pipeline.requires`); each target adds these to its own wheel list.
"""

from __future__ import annotations

from bento_compile.runtimes.manifest import Manifest

PIPELINE_REQUIREMENTS = {"pillow": "pillow>=10", "tokenizers": "tokenizers>=0.15"}


def pipeline_requirements(manifest: Manifest) -> list[str]:
    if manifest.pipeline is None:
        return []
    return sorted(PIPELINE_REQUIREMENTS[name] for name in manifest.pipeline.requires if name in PIPELINE_REQUIREMENTS)
