"""Whether a served model may take missing values: the original model is asked, once, at build time.

`runtime.allow_missing` (default true) lets a JSON null reach a float input as NaN, which imputers and
tree models handle. A model that cannot (e.g. a scikit-learn LogisticRegression with no imputer: it
refuses NaN with a ValueError) would still run in ONNX Runtime and answer NaN probabilities next to an
arbitrary label: a wrong answer that looks like a right one. So unless bento.yaml says otherwise, the
build feeds the ORIGINAL model one row with NaN in every float input; if it refuses, the Bento refuses
nulls too (422 naming the null), and the build says so.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bento_compile.compiler.source import Feeds, Reference
from bento_compile.core.config import BentoConfig
from bento_compile.runtimes.manifest import TensorSpec


def missing_values_policy(config: BentoConfig, reference: Reference | None, feeds: Feeds, inputs: list[TensorSpec],
                          output_names: list[str], progress: Callable[[str], None]) -> BentoConfig:
    """`config`, with runtime.allow_missing false when it was not set and the original model refuses NaN."""
    if "allow_missing" in config.runtime.model_fields_set or reference is None or not config.runtime.allow_missing:
        return config
    floats = [s.name for s in inputs if s.batched and np.dtype(feeds[s.name].dtype).kind == "f" and len(feeds[s.name])]
    if not floats:
        return config
    probe = {name: array[:1].copy() for name, array in feeds.items()} if all(
        s.batched for s in inputs) else None
    if probe is None:  # a whole-tensor input cannot be cut to one row: no question to ask
        return config
    for name in floats:
        probe[name][...] = np.nan
    try:
        reference(probe, output_names)
    except ValueError as exc:
        if "nan" not in str(exc).lower():
            return config
        progress("The original model refuses missing values (NaN): the Bento answers a JSON null with 422 "
                 "(set runtime.allow_missing in bento.yaml to decide otherwise)")
        runtime = config.runtime.model_copy(update={"allow_missing": False})
        return config.model_copy(update={"runtime": runtime})
    return config
