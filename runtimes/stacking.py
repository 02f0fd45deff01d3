"""The rules for running several requests as one model run, shared by every batching path.

The HTTP micro-batcher (runtimes/batching.py, requests arriving over time) and the Lambda SQS
handler (adapters/lambda_events.py, records arriving together) both form batches and run them
here, so a request is stacked, split back and isolated the same way wherever it comes from:

- requests share a run only when their `tensors.stack_key` agree (batched inputs with the same
  trailing axes, equal whole-tensor inputs), in arrival order, up to a row limit;
- outputs are split back by row offsets; a model whose outputs do not have one row per input
  row is detected and each request runs alone;
- a failing stacked run is retried request by request, so one bad request fails alone.

No asyncio and no threads here: the Lambda cold path imports this, never the batcher.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from bento_compile.runtimes.tensors import split_rows, stack_feeds

Feeds = dict[str, np.ndarray]
# How a stacked run went: as one run, retried one by one because it failed, or one by one because the
# model's outputs do not follow the batch axis (then stop stacking for this model).
Outcome = Literal["stacked", "run_failed", "not_per_row"]


def take_next(pending: Sequence[tuple[tuple, int]], limit: int) -> list[int]:
    """Indices of the next batch among `pending` (stack key, rows) in arrival order: the oldest always,
    then each later one with its key while the rows stay within `limit`; one of another key is left
    for a later batch, and the first that would pass the limit ends this one."""
    if not pending:
        return []
    key, rows = pending[0]
    chosen = [0]
    for index in range(1, len(pending)):
        other_key, other_rows = pending[index]
        if rows + other_rows > limit:
            break
        if other_key != key:
            continue
        chosen.append(index)
        rows += other_rows
    return chosen


def run_stacked(run: Callable[[Feeds, Sequence[int]], Feeds], parts: Sequence[Feeds], rows: Sequence[int],
                whole: frozenset[str]) -> tuple[list[Feeds | Exception], Outcome]:
    """Run `parts` (requests of one stack key, `rows` each) as one run; each gets its own rows back.

    `run(feeds, members)` runs the model; `members` are the indices of the parts in that run (for
    timing). When the stacked run fails, or its outputs are not one row per input row, every part
    runs alone and a part whose run fails gets its exception as its result.
    """
    total = sum(rows)
    outcome: Outcome = "run_failed"
    try:
        outputs = run(stack_feeds(parts, whole), range(len(parts)))
    except Exception:
        outputs = None
    if outputs is not None:
        if all(np.ndim(value) and len(value) == total for value in outputs.values()):
            results: list[Feeds | Exception] = []
            start = 0
            for count in rows:
                results.append(split_rows(outputs, start, start + count))
                start += count
            return results, "stacked"
        outcome = "not_per_row"
    return [run_alone(run, part, index) for index, part in enumerate(parts)], outcome


def run_alone(run: Callable[[Feeds, Sequence[int]], Feeds], part: Feeds, index: int = 0) -> Feeds | Exception:
    """One request in a run of its own; its exception is its result (it fails alone)."""
    try:
        return run(part, [index])
    except Exception as exc:
        return exc
