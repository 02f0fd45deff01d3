"""The whole ONNX node-test corpus: every case of the onnx 1.17 wheel, built, served and answered.

The CI test (tests/compiler/test_onnx_node_corpus.py) runs a fixed spread of 48 cases; this
runs all of them (about 5 minutes on 2 cores) and prints a markdown summary: exclusions with
their reasons, then for the eligible cases how many answered correctly when built from their
own inputs as the sample, and how many built and answered without a sample (or were refused
with a message naming the input to give). Cases that went wrong are listed by name.

    .venv/bin/python bench/bench_onnx_node_corpus.py            # all cases
    .venv/bin/python bench/bench_onnx_node_corpus.py 200        # an even spread of 200
"""

from __future__ import annotations

import collections
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.onnx_node_corpus import ONNX_WHEEL, load_case, node_tests_root, run_case, spread  # noqa: E402


def main() -> int:
    root = node_tests_root()
    if isinstance(root, str):
        print(root)
        return 1
    names = sorted(p.name for p in root.iterdir() if (p / "model.onnx").is_file())
    if len(sys.argv) > 1:
        names = spread(names, int(sys.argv[1]))
    started = time.perf_counter()
    excluded: dict[str, str] = {}
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="bento-corpus-") as tmp:
        for name in names:
            case, reason = load_case(root, name)
            if case is None:
                excluded[name] = reason or "excluded"
                continue
            outcomes.append((case.float_case, run_case(case, Path(tmp) / name)))
    elapsed = time.perf_counter() - started
    eligible = len(outcomes)
    with_ok = sum(o.with_sample == "ok" for _, o in outcomes)
    without_ok = sum(o.without_sample == "ok" for _, o in outcomes)
    refused = sum(o.without_sample.startswith("refused: ") for _, o in outcomes)
    floats = sum(f for f, _ in outcomes)
    print(f"{ONNX_WHEEL} node tests: {len(names)} cases, {len(excluded)} excluded, {eligible} eligible "
          f"({floats} all-float, {eligible - floats} with non-float tensors); {elapsed:.0f} s\n")
    print("| excluded because | cases |\n|---|---|")
    for reason, count in collections.Counter(excluded.values()).most_common():
        print(f"| {reason} | {count} |")
    print("\n| eligible cases | count | share |\n|---|---|---|")
    for label, count in (("built from their own inputs, answered correctly", with_ok),
                         ("built without a sample, answered correctly", without_ok),
                         ("without a sample: refused, asking for a sample (naming the input)", refused),
                         ("without a sample: anything else (crash, wrong answer)", eligible - without_ok - refused)):
        print(f"| {label} | {count} | {count / max(eligible, 1):.1%} |")
    bad = [(o.name, o.with_sample, o.without_sample) for _, o in outcomes
           if o.with_sample != "ok" or not (o.without_sample == "ok" or o.without_sample.startswith("refused: "))]
    for name, with_sample, without_sample in bad:
        print(f"- {name}: with sample: {with_sample[:200]}; without: {without_sample[:200]}")
    return 0 if with_ok >= 0.95 * eligible else 1


if __name__ == "__main__":
    raise SystemExit(main())
