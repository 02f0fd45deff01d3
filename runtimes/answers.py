"""Model outputs → answers with names: `label`, `score` and `top_k` per row.

When the compiler folded softmax and TopK into the graph (manifest `pipeline.outputs[].where: onnx`),
this only maps indices to names; otherwise it does the softmax and the top-k here, in numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bento_compile.runtimes.manifest import OutputLabels


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _name(labels: Sequence[str], index: int) -> str:
    return labels[index] if 0 <= index < len(labels) else str(index)


def top_k(spec: OutputLabels, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(scores, indices), each [rows, k], best first."""
    if spec.top_k_scores and spec.top_k_indices and spec.top_k_scores in outputs:
        return np.asarray(outputs[spec.top_k_scores]), np.asarray(outputs[spec.top_k_indices])
    scores = np.asarray(outputs[spec.scores or spec.name], dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[None, :]
    scores = scores.reshape(scores.shape[0], -1)
    if spec.softmax and spec.where != "onnx":
        scores = softmax(scores)
    k = min(spec.top_k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def label_answers(spec: OutputLabels, outputs: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """One `{label, score, top_k}` per row."""
    scores, indices = top_k(spec, outputs)
    answers = []
    for row_scores, row_indices in zip(scores.tolist(), indices.tolist(), strict=True):
        ranked = [{"label": _name(spec.labels, int(i)), "score": round(float(s), 6)}
                  for s, i in zip(row_scores, row_indices, strict=True)]
        answers.append({"label": ranked[0]["label"], "score": ranked[0]["score"], "top_k": ranked})
    return answers


def internal_outputs(specs: Sequence[OutputLabels]) -> frozenset[str]:
    """Outputs the compiler added to the graph for the answers (not part of the raw `outputs`)."""
    names: set[str] = set()
    for spec in specs:
        names.update(n for n in (spec.top_k_scores, spec.top_k_indices) if n)
        if spec.scores and spec.scores != spec.name:  # the folded softmax: its scores are in the answers
            names.add(spec.scores)
    return frozenset(names)
