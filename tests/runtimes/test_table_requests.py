"""Requests for models that take named table columns (a DataFrame-fitted ColumnTransformer), as people send
them: columns of one value per row, or one object per row (`df.to_dict("records")`); and how they are refused."""

from __future__ import annotations

import numpy as np
import pytest

from bento_compile.runtimes.errors import InputError, PayloadTooLarge
from bento_compile.runtimes.manifest import RuntimeSettings, TensorSpec
from bento_compile.runtimes.tensors import decode_inputs

SETTINGS = RuntimeSettings()
TABLE = [TensorSpec("plan", "string", (None, 1)), TensorSpec("tenure", "float32", (None, 1)),
         TensorSpec("seats", "int64", (None, 1))]
AS_COLUMNS = {"inputs": {"plan": [["pro"], ["free"]], "tenure": [[30.0], [None]], "seats": [[3], [1]]}}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
        np.testing.assert_array_equal(a[name], b[name])


def test_rows_as_objects_decode_to_the_same_feeds_as_columns():
    records = {"inputs": [{"plan": "pro", "tenure": 30, "seats": 3}, {"seats": 1, "tenure": None, "plan": "free"}]}
    expected, rows = decode_inputs(AS_COLUMNS, TABLE, SETTINGS)
    got, got_rows = decode_inputs(records, TABLE, SETTINGS)
    assert rows == got_rows == 2
    _same(got, expected)
    assert np.isnan(got["tenure"][1, 0])


def test_a_one_column_input_may_be_sent_as_a_flat_column():
    flat = {"inputs": {"plan": ["pro", "free"], "tenure": [30.0, None], "seats": [3, 1]}}
    _same(decode_inputs(flat, TABLE, SETTINGS)[0], decode_inputs(AS_COLUMNS, TABLE, SETTINGS)[0])


def test_a_wider_input_in_a_row_object_takes_its_row():
    specs = [TensorSpec("xy", "float32", (None, 2)), TensorSpec("tag", "string", (None, 1))]
    feeds, rows = decode_inputs({"inputs": [{"xy": [1, 2], "tag": "a"}, {"xy": [3, 4], "tag": ["b"]}]}, specs,
                                SETTINGS)
    assert rows == 2 and feeds["xy"].tolist() == [[1, 2], [3, 4]] and feeds["tag"].tolist() == [["a"], ["b"]]
    with pytest.raises(InputError, match="dimension"):  # a flat column is one value per row: not for a wide input
        decode_inputs({"inputs": {"xy": [1, 2], "tag": ["a", "b"]}}, specs, SETTINGS)


@pytest.mark.parametrize(("rows", "message"), [
    ([{"plan": "pro", "tenure": 1}], "inputs\\[0\\] has no 'seats'; every row needs all 3 of the model.s inputs"),
    ([{"plan": "pro", "tenure": 1, "seats": 1, "age": 4}], "inputs\\[0\\] has unknown input 'age'"),
    ([{"plan": "pro", "tenure": 1, "seats": 1}, [1, 2, 3]], "inputs\\[1\\] is a list, but inputs\\[0\\] is an object"),
    ([{"plan": 7, "tenure": 1, "seats": 1}], "inputs.plan\\[0\\]\\[0\\] is 7, expected a string"),
    ([{"plan": "pro", "tenure": "long", "seats": 1}], "inputs.tenure\\[0\\]\\[0\\] is the string 'long'"),
    ([{"plan": "pro", "tenure": 1, "seats": 1.5}], "inputs.seats\\[0\\]\\[0\\] is 1.5, expected an integer"),
])
def test_bad_rows_are_named(rows, message):
    with pytest.raises(InputError, match=message):
        decode_inputs({"inputs": rows}, TABLE, SETTINGS)


def test_too_many_row_objects_are_refused_before_they_are_walked():
    settings = RuntimeSettings(max_batch_rows=4)
    with pytest.raises(PayloadTooLarge, match="5 rows in one request; this Bento accepts at most 4"):
        decode_inputs({"inputs": [{"plan": "a", "tenure": 1, "seats": 1}] * 5}, TABLE, settings)


def test_row_objects_need_every_input_to_be_rows():
    specs = [TensorSpec("x", "float32", (None, 1)), TensorSpec("k", "int64", (), batch=False)]
    with pytest.raises(InputError, match="input 'k' is a whole tensor"):
        decode_inputs({"inputs": [{"x": 1.0, "k": 2}]}, specs, SETTINGS)


def test_a_one_input_model_fitted_on_a_dataframe_takes_rows_keyed_by_its_feature_names():
    spec = [TensorSpec("input", "float32", (None, 3))]
    columns = ["mean radius", "mean texture", "area"]
    feeds, rows = decode_inputs({"inputs": [{"area": 3, "mean radius": 1, "mean texture": None}]}, spec, SETTINGS,
                                columns)
    assert rows == 1 and feeds["input"][0, 0] == 1 and np.isnan(feeds["input"][0, 1]) and feeds["input"][0, 2] == 3
    with pytest.raises(InputError, match="inputs\\[0\\] has no 'area'; every row needs all 3"):
        decode_inputs({"inputs": [{"mean radius": 1, "mean texture": 2}]}, spec, SETTINGS, columns)
    with pytest.raises(InputError, match="unknown input 'radius'"):
        decode_inputs({"inputs": [{"radius": 1, "mean texture": 2, "area": 3}]}, spec, SETTINGS, columns)
