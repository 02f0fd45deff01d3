"""The drift baseline recorded in every Bento's manifest (hashed and signed with it).

From the build sample, or `monitoring.baseline: FILE` of more training rows: per input feature its
quantile bins, category frequencies and missing rate; per output the same over the compiled model's
answers on those rows (label outputs as a label distribution). The arithmetic is runtimes/drift.py,
so the runtime bins live traffic exactly as the baseline was binned.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from bento_compile.compiler.samples import load_sample
from bento_compile.core.config import BentoConfig
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.drift import compute_baseline, feature_columns, is_categorical_dtype
from bento_compile.runtimes.manifest import MonitoringInfo, PredictionLogSettings, TensorSpec

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def build_monitoring(config: BentoConfig, config_dir: Path | None, feeds: dict[str, np.ndarray],
                     answers: dict[str, np.ndarray], inputs: list[TensorSpec], outputs: list[TensorSpec],
                     feature_names: list[str] | None, run: Runner, sample_source: str = "sample"
                     ) -> MonitoringInfo:
    """The `monitoring` section: the baseline always, the live settings when `monitoring:` is given."""
    settings = config.monitoring
    source = "synthetic" if sample_source == "synthetic" else "sample"
    if settings is not None and settings.baseline:
        path = Path(settings.baseline)
        path = path if path.is_absolute() or config_dir is None else config_dir / path
        try:
            feeds = load_sample(path, inputs)
        except BentoCompileError as exc:
            raise BentoCompileError(f"monitoring.baseline: {exc.problem}", exc.fix) from None
        try:
            answers = run(feeds)
        except Exception as exc:
            raise BentoCompileError(f"monitoring.baseline: the model fails on {path.name}: {exc}",
                                    "Give rows shaped like the sample (the model's inputs).") from None
        source = f"file:{path.name}"
    columns = feature_columns(inputs, feature_names)
    categorical = frozenset(s.name for s in inputs if is_categorical_dtype(s.dtype))
    output_columns = feature_columns(outputs, outputs=True)
    output_categorical = frozenset(s.name for s in outputs if is_categorical_dtype(s.dtype))
    rows = len(next(iter(feeds.values()))) if feeds and np.ndim(next(iter(feeds.values()))) else 0
    log = None
    if settings is not None and settings.log is not None:
        log = PredictionLogSettings.from_dict(settings.log.model_dump(), where="monitoring.log")
        unknown = sorted(set(log.redact) - {name for name, _t, _c in columns} - {s.name for s in inputs})
        if unknown:
            raise BentoCompileError(f"monitoring.log.redact names {', '.join(unknown)}, which the model does not "
                                    "take as an input feature.",
                                    "List input feature names (`bento-compile show TAG` prints them).")
    return MonitoringInfo(
        enabled=settings is not None,
        window=settings.window if settings else 10000,
        window_seconds=settings.window_seconds if settings else None,
        psi_alert=settings.psi_alert if settings else 0.2,
        baseline_rows=rows,
        baseline_source=source,
        features=compute_baseline(feeds, columns, categorical),
        outputs=compute_baseline(answers, output_columns, output_categorical),
        log=log,
    )
