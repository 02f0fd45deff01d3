"""The shared batching rules (runtimes/stacking.py): which requests share a run, and how a run is split back."""

from __future__ import annotations

import numpy as np

from bento_compile.runtimes.stacking import run_alone, run_stacked, take_next


def test_take_next_keeps_arrival_order_skips_other_keys_and_stops_at_the_row_limit():
    pending = [("a", 2), ("b", 1), ("a", 1), ("a", 1), ("a", 3)]
    assert take_next(pending, 4) == [0, 2, 3]  # "b" waits for a later batch; the 3-row request would pass 4
    assert take_next([("a", 3), ("a", 2), ("a", 1)], 4) == [0]  # the first that passes the limit ends it
    assert take_next([("a", 9)], 4) == [0]  # alone, any size runs
    assert take_next([("a", 1), ("a", 1)], 0) == [0]  # limit 0: not batchable, one request per run
    assert take_next([], 4) == []


def double(feeds, _members):
    return {"y": feeds["x"] * 2}


def test_run_stacked_runs_once_and_gives_each_request_its_rows():
    calls = []

    def run(feeds, members):
        calls.append(list(members))
        return double(feeds, members)

    parts = [{"x": np.array([[1.0], [2.0]])}, {"x": np.array([[3.0]])}]
    results, outcome = run_stacked(run, parts, [2, 1], frozenset())
    assert outcome == "stacked" and calls == [[0, 1]]
    assert [r["y"].tolist() for r in results] == [[[2.0], [4.0]], [[6.0]]]


def test_a_failing_run_is_retried_alone_so_only_the_bad_request_fails():
    def run(feeds, members):
        if np.isnan(feeds["x"]).any():
            raise ValueError("NaN in the input")
        return double(feeds, members)

    parts = [{"x": np.array([[1.0]])}, {"x": np.array([[np.nan]])}, {"x": np.array([[3.0]])}]
    results, outcome = run_stacked(run, parts, [1, 1, 1], frozenset())
    assert outcome == "run_failed"
    assert results[0]["y"].tolist() == [[2.0]] and results[2]["y"].tolist() == [[6.0]]
    assert isinstance(results[1], ValueError)
    assert isinstance(run_alone(run, parts[1]), ValueError)


def test_outputs_not_per_row_run_each_request_alone():
    def total(feeds, _members):  # one number for the whole batch: not one row per input row
        return {"sum": np.array(feeds["x"].sum())}

    parts = [{"x": np.array([[1.0]])}, {"x": np.array([[2.0]])}]
    results, outcome = run_stacked(total, parts, [1, 1], frozenset())
    assert outcome == "not_per_row"
    assert [float(r["sum"]) for r in results] == [1.0, 2.0]


def test_whole_tensor_inputs_are_taken_once_not_concatenated():
    seen = {}

    def run(feeds, members):
        seen.update(feeds)
        return {"y": feeds["x"] + feeds["bias"]}

    bias = np.array([10.0])
    parts = [{"x": np.array([[1.0]]), "bias": bias}, {"x": np.array([[2.0]]), "bias": bias}]
    results, outcome = run_stacked(run, parts, [1, 1], frozenset({"bias"}))
    assert outcome == "stacked" and seen["bias"].tolist() == [10.0]
    assert [r["y"].tolist() for r in results] == [[[11.0]], [[12.0]]]
