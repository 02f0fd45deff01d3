"""Requests for models that are not tables: whole tensors, scalars, empty lists, every element type, no inputs.

`decode_inputs` is the one request parser every adapter uses (HTTP, Lambda, SQS, edge), so the
contract is pinned here on TensorSpecs as the compiler records them; the micro-batcher's rule for
whole-tensor inputs (stacked only when equal) is pinned with a real numpy model function.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bento_compile.runtimes.batching import Batcher, BatchPolicy
from bento_compile.runtimes.errors import InputError, PayloadTooLarge
from bento_compile.runtimes.manifest import Manifest, ModelInfo, RuntimeSettings, TensorSpec
from bento_compile.runtimes.tensors import decode_inputs, stack_feeds, stack_key

SETTINGS = RuntimeSettings()
# silero-vad's contract: an audio chunk (rows), a recurrent state and a scalar sample rate (whole).
VAD = [TensorSpec("input", "float32", (None, None), batch=True),
       TensorSpec("state", "float32", (2, None, 128), batch=False),
       TensorSpec("sr", "int64", (), batch=False)]


def vad_request(rows: int = 1, state_rows: int = 1, sr=16000) -> dict:
    return {"inputs": {"input": [[0.0] * 512] * rows, "state": np.zeros((2, state_rows, 128)).tolist(), "sr": sr}}


def test_named_inputs_are_taken_as_the_model_takes_them():
    feeds, rows = decode_inputs(vad_request(rows=3, state_rows=3), VAD, SETTINGS)
    assert rows == 3
    assert feeds["input"].shape == (3, 512) and feeds["input"].dtype == np.float32
    assert feeds["state"].shape == (2, 3, 128)
    assert feeds["sr"].shape == () and feeds["sr"].dtype == np.int64 and int(feeds["sr"]) == 16000


def test_whole_tensors_are_checked_against_their_shape_not_a_row_count():
    specs = [TensorSpec("a", "float32", (None, 3), batch=True), TensorSpec("bias", "float32", (3,), batch=False)]
    feeds, rows = decode_inputs({"inputs": {"a": [[1, 2, 3]] * 5, "bias": [0.5, 0.5, 0.5]}}, specs, SETTINGS)
    assert rows == 5 and feeds["bias"].shape == (3,)
    with pytest.raises(InputError, match=r"inputs.bias must have shape 3 \(a whole tensor, not rows\), got 2"):
        decode_inputs({"inputs": {"a": [[1, 2, 3]], "bias": [0.5, 0.5]}}, specs, SETTINGS)


def test_indices_of_their_own_length_are_not_rows():
    specs = [TensorSpec("data", "float32", (3, 2), batch=False), TensorSpec("indices", "int64", (None,), batch=False)]
    feeds, rows = decode_inputs({"inputs": {"data": [[1, 2], [3, 4], [5, 6]], "indices": [2, 0]}}, specs, SETTINGS)
    assert rows == 1 and feeds["indices"].tolist() == [2, 0]


def test_batched_inputs_still_share_their_row_count():
    specs = [TensorSpec("x", "float32", (None, 2), batch=True), TensorSpec("mask", "bool", (None, 2), batch=True),
             TensorSpec("k", "int64", (), batch=False)]
    with pytest.raises(InputError, match=r"input 'mask' has 1 rows but 'x' has 2: every batched input \(x, mask\)"):
        decode_inputs({"inputs": {"x": [[1, 2], [3, 4]], "mask": [[True, False]], "k": 1}}, specs, SETTINGS)


def test_a_scalar_is_a_json_value_and_a_list_for_it_is_refused_clearly():
    with pytest.raises(InputError, match=r"inputs.sr is a scalar: send one integer, e.g. 16000, not a list"):
        decode_inputs(vad_request(sr=[16000]), VAD, SETTINGS)
    with pytest.raises(InputError, match=r"inputs.sr is 16000.5, expected an integer"):
        decode_inputs(vad_request(sr=16000.5), VAD, SETTINGS)
    feeds, _ = decode_inputs({"inputs": 0.25}, [TensorSpec("t", "float16", (), batch=False)], SETTINGS)
    assert feeds["t"].dtype == np.float16 and float(feeds["t"]) == 0.25


def test_a_whole_tensor_of_the_wrong_shape_names_the_declared_shape():
    with pytest.raises(InputError, match=r"inputs.state must have shape 2 x N x 128 \(a whole tensor, not rows\), "
                                         r"got 3 x 1 x 128"):
        decode_inputs({"inputs": {**vad_request()["inputs"], "state": np.zeros((3, 1, 128)).tolist()}}, VAD,
                      SETTINGS)
    with pytest.raises(InputError, match=r"inputs.state must be a nested list shaped 2 x N x 128, got 3"):
        decode_inputs({"inputs": {**vad_request()["inputs"], "state": 3}}, VAD, SETTINGS)


def test_a_single_whole_input_may_be_sent_bare():
    spec = [TensorSpec("image", "uint8", (1, 2, 2), batch=False)]
    feeds, rows = decode_inputs({"inputs": [[[0, 255], [7, 9]]]}, spec, SETTINGS)
    assert rows == 1 and feeds["image"].dtype == np.uint8 and feeds["image"].shape == (1, 2, 2)


def test_empty_lists_take_the_declared_dtype_and_inner_axes():
    axes = [TensorSpec("axes", "int64", (0,), batch=False)]
    feeds, _ = decode_inputs({"inputs": {"axes": []}}, axes, SETTINGS)
    assert feeds["axes"].dtype == np.int64 and feeds["axes"].shape == (0,)
    # JSON writes an empty (2, 0, 4) tensor as [[], []]: the fixed inner axis comes back from the signature
    data = [TensorSpec("data", "float32", (2, 0, 4), batch=False)]
    feeds, _ = decode_inputs({"inputs": {"data": [[], []]}}, data, SETTINGS)
    assert feeds["data"].shape == (2, 0, 4) and feeds["data"].dtype == np.float32
    strings = [TensorSpec("s", "string", (0,), batch=False)]
    assert decode_inputs({"inputs": {"s": []}}, strings, SETTINGS)[0]["s"].dtype == object


@pytest.mark.parametrize(("dtype", "values"), [
    ("int8", [-128, 127]), ("int16", [-32768, 32767]), ("int32", [-(2**31), 2**31 - 1]),
    ("int64", [-(2**63), 2**63 - 1]), ("uint8", [0, 255]), ("uint16", [0, 65535]), ("uint32", [0, 2**32 - 1]),
    ("uint64", [0, 2**64 - 1]), ("float16", [0.5, -2.0]), ("float32", [1.5, None]), ("float64", [1e300, 2]),
    ("bool", [True, False]), ("string", ["a", "é"]),
])
def test_every_served_element_type_round_trips_at_its_limits(dtype, values):
    spec = [TensorSpec("v", dtype, (2,), batch=False)]
    feeds, _ = decode_inputs({"inputs": {"v": values}}, spec, SETTINGS)
    expected = np.dtype(object) if dtype == "string" else np.dtype(dtype)
    assert feeds["v"].dtype == expected
    if dtype.startswith(("int", "uint")):
        assert feeds["v"].tolist() == values


@pytest.mark.parametrize(("dtype", "value", "message"), [
    ("int8", 128, r"inputs.v\[1\] is 128, outside int8's range -128..127"),
    ("uint8", -1, r"inputs.v\[1\] is -1, outside uint8's range 0..255"),
    ("uint64", 2**64, r"inputs.v\[1\] is 18446744073709551616, outside uint64's range"),
    ("int32", 1.5, r"inputs.v\[1\] is 1.5, expected an integer"),
])
def test_an_integer_outside_the_type_is_named_with_the_range(dtype, value, message):
    with pytest.raises(InputError, match=message):
        decode_inputs({"inputs": {"v": [0, value]}}, [TensorSpec("v", dtype, (2,), batch=False)], SETTINGS)


def test_a_model_without_inputs_takes_an_empty_object():
    assert decode_inputs({"inputs": {}}, [], SETTINGS) == ({}, 1)
    assert decode_inputs({}, [], SETTINGS) == ({}, 1)
    with pytest.raises(InputError, match=r"unknown input 'x'; this model takes: no inputs"):
        decode_inputs({"inputs": {"x": 1}}, [], SETTINGS)
    with pytest.raises(InputError, match=r'this model takes no inputs: send \{"inputs": \{\}\}'):
        decode_inputs({"inputs": [1]}, [], SETTINGS)


def test_rows_bounds_apply_to_batched_inputs_only():
    settings = RuntimeSettings(max_batch_rows=4)
    with pytest.raises(PayloadTooLarge, match="5 rows in one request"):
        decode_inputs(vad_request(rows=5, state_rows=5), VAD, settings)
    big_whole = [TensorSpec("w", "float32", (8,), batch=False)]
    assert decode_inputs({"inputs": {"w": [0.0] * 8}}, big_whole, settings)[1] == 1


def test_old_manifests_without_batch_flags_read_a_free_first_axis_as_rows():
    old = TensorSpec.from_dict({"name": "input", "dtype": "float32", "shape": [None, 30]})
    fixed = TensorSpec.from_dict({"name": "image", "dtype": "float32", "shape": [1, 3]})
    assert old.batch is None and old.batched and not fixed.batched
    assert "batch" not in old.to_dict()  # a Bento re-read keeps its bytes (and its signature)
    assert TensorSpec("x", "int64", (), batch=False).to_dict()["batch"] is False


def _manifest(inputs, outputs, batchable=True) -> Manifest:
    return Manifest(name="m", version="v", files={},
                    model=ModelInfo(file="model.onnx", inputs=tuple(inputs), outputs=tuple(outputs),
                                    batchable=batchable))


def test_batchable_needs_batched_inputs_and_outputs_that_follow_them():
    out_rows = TensorSpec("y", "float32", (None, 1), batch=True)
    assert _manifest([VAD[0]], [out_rows]).batchable
    assert _manifest([VAD[0], VAD[2]], [out_rows]).batchable  # whole inputs: stacked only when equal
    assert not _manifest(VAD, [out_rows, TensorSpec("stateN", "float32", (None, None, None), batch=False)]).batchable
    assert not _manifest([VAD[2]], [TensorSpec("y", "float32", (), batch=False)]).batchable
    assert not _manifest([VAD[0]], [out_rows], batchable=False).batchable
    assert _manifest(VAD, []).whole_inputs == {"state", "sr"}


def test_stack_key_separates_requests_whose_whole_tensors_differ():
    whole = frozenset({"sr", "words"})
    a = {"x": np.zeros((2, 3)), "sr": np.array(16000), "words": np.array(["a", "b"], dtype=object)}
    b = {"x": np.ones((5, 3)), "sr": np.array(16000), "words": np.array(["a", "b"], dtype=object)}
    c = {**b, "sr": np.array(8000)}
    d = {**b, "words": np.array(["a", "c"], dtype=object)}
    assert stack_key(a, whole) == stack_key(b, whole)
    assert stack_key(a, whole) != stack_key(c, whole) and stack_key(a, whole) != stack_key(d, whole)
    stacked = stack_feeds([a, b], whole)
    assert stacked["x"].shape == (7, 3) and stacked["sr"].shape == () and stacked["words"].shape == (2,)


class ScaledRows:
    """y = x * scale per row (scale is a whole-tensor input); the first run is held so requests queue."""

    def __init__(self):
        self.runs: list[tuple[int, float]] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, feeds):
        self.runs.append((len(feeds["x"]), float(feeds["scale"])))
        self.started.set()
        if len(self.runs) == 1:
            assert self.release.wait(10), "the test never released the first run"
        return {"y": feeds["x"] * feeds["scale"]}


def test_the_batcher_never_stacks_whole_tensors_and_runs_different_ones_apart():
    async def main():
        model = ScaledRows()
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(model, BatchPolicy(mode="adaptive", max_batch_size=64, timeout_s=10.0), pool,
                              whole_inputs=frozenset({"scale"}))

            def submit(n: int, scale: float):
                feeds = {"x": np.full((n, 1), float(n), dtype=np.float32), "scale": np.array(scale, np.float32)}
                return asyncio.ensure_future(batcher.submit(feeds, n))

            first = submit(1, 1.0)
            while not model.started.is_set():
                await asyncio.sleep(0.001)
            queued = [submit(2, 10.0), submit(3, 10.0), submit(4, 100.0), submit(5, 10.0)]
            await asyncio.sleep(0.01)
            model.release.set()
            return model.runs, await asyncio.gather(first, *queued)

    runs, results = asyncio.run(main())
    # the scale-10 requests shared one run (2 + 3 + 5 rows, scale taken once); scale 100 ran apart
    assert runs == [(1, 1.0), (10, 10.0), (4, 100.0)]
    for result, (n, scale) in zip(results, [(1, 1.0), (2, 10.0), (3, 10.0), (4, 100.0), (5, 10.0)], strict=True):
        np.testing.assert_array_equal(result["y"], np.full((n, 1), n * scale, dtype=np.float32))


# The one-input rows-of-numbers shortcut of decode_inputs must answer exactly as the general checks do:
# the same arrays (values, dtype, shape) or the same error, for requests it takes and those it passes on.
_ROWS = [TensorSpec("x", "float32", (None, 3), batch=True), TensorSpec("x", "float64", (None, 3), batch=True),
         TensorSpec("x", "float32", (None, 2, 2), batch=True), TensorSpec("x", "int64", (None, 3), batch=True)]
_BODIES = [
    {"inputs": [[1.0, 2.5, -3.0]]}, {"inputs": [[1, 2, 3], [4, 5, 6]]}, {"inputs": [[1.0, 2, 3]]},
    {"inputs": [[[1.0, 2.0], [3.0, 4.0]]]}, {"inputs": [[[1, 2], [3, 4]], [[5.0, 6.0], [7.0, 8.0]]]},
    {"inputs": [[1e300, 0.0, 0.0]]}, {"inputs": [[1.0, None, 3.0]]},
    {"inputs": [[1.0, 2.0]]}, {"inputs": [[1.0, 2.0, 3.0], [1.0]]}, {"inputs": [[True, 2.0, 3.0]]},
    {"inputs": [["1", 2.0, 3.0]]}, {"inputs": []}, {"inputs": [[]]}, {"inputs": [1.0, 2.0, 3.0]},
    {"inputs": {"x": [[1.0, 2.0, 3.0]]}}, {"inputs": [[2**70, 0, 0]]}, {"other": 1}, {"inputs": [[1.0, 2.0, 3.0]] * 5},
    {"inputs": [[1.0, 2.0, 3.0]], "extra": "ignored"}, {"inputs": [[1.5, 2.0, 3.0]]}, {"inputs": [[7, 8, 9]]},
    {"inputs": [[float("inf"), 0.0, 0.0]]}, {"inputs": [[float("nan"), 0.0, 0.0]]},
]


def _outcome(decode, body, spec, settings):
    try:
        feeds, rows = decode(body, [spec], settings)
    except (InputError, PayloadTooLarge) as exc:
        return type(exc).__name__, str(exc)
    return rows, {name: (value.dtype.str, value.shape, repr(value.tolist())) for name, value in feeds.items()}


@pytest.mark.parametrize("spec", _ROWS, ids=lambda s: f"{s.dtype}{s.shape}")
@pytest.mark.parametrize("allow_missing", [True, False])
def test_the_rows_of_numbers_shortcut_answers_as_the_general_checks(spec, allow_missing):
    from bento_compile.runtimes.tensors import _decode_general

    settings = RuntimeSettings(allow_missing=allow_missing, max_batch_rows=4)
    taken = 0
    for body in _BODIES:
        fast = _outcome(decode_inputs, body, spec, settings)
        assert fast == _outcome(_decode_general, body, spec, settings), body
        taken += isinstance(fast[0], int)
    assert taken >= 2  # some requests decode (the comparison covers answers, not only errors)
