"""ONNX's own backend node tests, a fixed spread of them: built with and without a sample, served, answered.

Each case is built with its test inputs as an .npz sample and without any sample, served through
the HTTP app, sent its inputs as JSON, and the answer compared with ONNX's expected outputs
(allclose rtol=1e-4, atol=1e-5). Exclusions are named by tests/support/onnx_node_corpus.py. The full
corpus (every node test of the wheel) runs in bench/bench_onnx_node_corpus.py; its result is in
bench/RESULTS.md.
"""

from __future__ import annotations

import pytest

from tests.support.onnx_node_corpus import load_case, run_case, spread

CI_CASES = 48


@pytest.fixture(scope="module")
def corpus(onnx_node_tests):
    names = spread([p.name for p in onnx_node_tests.iterdir() if (p / "model.onnx").is_file()], CI_CASES)
    cases, excluded = [], {}
    for name in names:
        case, reason = load_case(onnx_node_tests, name)
        if case is None:
            excluded[name] = reason
        else:
            cases.append(case)
    return cases, excluded


def test_every_case_onnx_runtime_runs_builds_from_its_sample_and_answers_right(corpus, tmp_path):
    cases, excluded = corpus
    assert len(cases) >= 36, f"too few eligible cases in the spread: {excluded}"
    assert any(not c.float_case for c in cases) and any(c.float_case for c in cases)
    assert all(excluded.values())  # every exclusion carries its reason
    outcomes = [run_case(case, tmp_path / case.name) for case in cases]
    wrong = {o.name: o.with_sample for o in outcomes if o.with_sample != "ok"}
    assert not wrong, wrong
    # Without a sample a case either answers right too, or is refused with a message naming the input to
    # give; never a crash, a wrong answer or an unexplained failure.
    for o in outcomes:
        assert o.without_sample == "ok" or o.without_sample.startswith("refused: "), (o.name, o.without_sample)
    refused = [o for o in outcomes if o.without_sample != "ok"]
    assert all("sample" in o.without_sample for o in refused)
    assert len(refused) <= len(outcomes) // 2
