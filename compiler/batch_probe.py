"""Does the model really batch? A build-time run that confirms which outputs follow the batch axis.

The graph's declared shapes say which axes are free, not what the model does with
them: a recurrent state can carry the batch on its second axis, an output can reduce
over the rows, a free output axis can be anything. So the build runs the model on
the first half of the sample's rows (whole-tensor inputs unchanged; a one-row sample
is run twice over instead) and compares with the full run: an output follows the
batch axis when its first axis has one entry per row in both runs and the smaller
run's values are the bigger run's first rows.
Only when every output follows are requests stacked at serving time (`model.batchable`);
otherwise each request runs on its own, which is always correct.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from bento_compile.runtimes.manifest import TensorSpec

Feeds = dict[str, np.ndarray]
Run = Callable[[Feeds], dict[str, np.ndarray]]


@dataclass(frozen=True)
class BatchVerdict:
    outputs: list[TensorSpec]  # with `batch` set to what the run showed
    batchable: bool
    reason: str  # one line for the build log and the report


def probe_batching(run: Run, feeds: Feeds, inputs: list[TensorSpec], outputs: list[TensorSpec],
                   full: dict[str, np.ndarray]) -> BatchVerdict:
    """`full` is the model's answer on `feeds` (the parity run's), so only the half run is extra."""
    batched = [s.name for s in inputs if s.batched]
    if not batched:
        return BatchVerdict([replace(o, batch=False) for o in outputs], False, "every input is a whole tensor")
    rows = len(feeds[batched[0]])
    if rows == 0:
        return BatchVerdict([replace(o, batch=o.batched) for o in outputs], False, "the sample has no rows")
    if rows == 1:  # one row: run it twice over (two rows) and compare the other way round
        big, small_rows = {n: np.concatenate([v, v]) if n in batched else v for n, v in feeds.items()}, 1
    else:
        big, small_rows = None, rows // 2
    part = {name: value[:small_rows] if name in batched else value for name, value in feeds.items()}
    try:
        if big is None:
            small = run(part)
            pairs = {o.name: (full[o.name], small[o.name], rows, small_rows) for o in outputs}
        else:
            doubled = run(big)
            pairs = {o.name: (doubled[o.name], full[o.name], 2, 1) for o in outputs}
    except Exception as exc:  # e.g. a state input that carries the batch on another axis
        return BatchVerdict([replace(o, batch=False) for o in outputs], False,
                            f"the model does not run on another number of rows with the same whole tensors "
                            f"({type(exc).__name__}); requests run one at a time")
    checked = [replace(o, batch=_follows(*pairs[o.name])) for o in outputs]
    apart = [o.name for o in checked if not o.batch]
    if apart:
        return BatchVerdict(checked, False, f"output(s) {', '.join(apart)} do not follow the batch axis; "
                                            "requests run one at a time")
    return BatchVerdict(checked, True, "every output follows the batch axis; requests may share a run")


def _follows(full: np.ndarray, small: np.ndarray, rows: int, half: int) -> bool:
    full, small = np.asarray(full), np.asarray(small)
    if full.ndim == 0 or small.ndim == 0 or full.shape[0] != rows or small.shape[0] != half:
        return False
    if full.shape[1:] != small.shape[1:]:
        return False
    head = full[:half]
    if full.dtype.kind in "fc":
        return bool(np.allclose(head, small, rtol=1e-3, atol=1e-3, equal_nan=True))  # structure, not parity
    return bool(np.array_equal(head, small))
