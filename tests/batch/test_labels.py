"""A labelled Bento (class names, top-k folded into the graph) scores into the HTTP contract's `label`,
`score` and `top_k` columns: equal to the original model's class names and to the server's answer, row by row."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from bento_compile.batch.local import score_files
from bento_compile.batch.outputs import TOP_K_TYPE
from bento_compile.batch.scorer import ScoreOptions
from bento_compile.runtimes.model import BentoModel
from tests.batch.conftest import IRIS_FEATURES, IRIS_SPECIES
from tests.support.batch_data import build_bento, read_output
from tests.support.helpers import run_cli

SPECIES = np.array(IRIS_SPECIES)
FEATURES = IRIS_FEATURES


@pytest.fixture(scope="module")
def iris(labelled_bento):
    """(Bento folder, model fitted on integer classes, features): the labels come from a list in bento.yaml."""
    return labelled_bento.path, labelled_bento.model, labelled_bento.frame.to_numpy(np.float32)


def _table(x: np.ndarray) -> pa.Table:
    return pa.table({"id": np.arange(len(x)), **{name: x[:, i].astype(np.float64) for i, name in enumerate(FEATURES)}})


def test_cli_writes_the_class_names_the_http_answer_gives(iris, tmp_path):
    path, model, x = iris
    rows = x[np.random.default_rng(3).integers(0, len(x), 700)]
    pq.write_table(_table(rows), tmp_path / "in.parquet", row_group_size=200)
    result = run_cli("batch", str(path), str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet"),
                     "--features", ",".join(FEATURES), "--keep", "id", "--batch-rows", "128", "--workers", "1",
                     "--json")
    assert json.loads(result.stdout)["rows"] == 700
    schema = pq.read_schema(tmp_path / "out.parquet")
    # the folded top-k helper outputs are not columns; the raw integer `label` gives way to the name
    assert schema.names == ["id", "label", "score", "top_k", "probabilities"]
    assert schema.field("label").type == pa.string() and schema.field("top_k").type == TOP_K_TYPE
    out = read_output(tmp_path / "out.parquet")
    assert out["label"].tolist() == SPECIES[model.predict(rows)].tolist()
    np.testing.assert_allclose(out["score"].to_numpy(), model.predict_proba(rows).max(axis=1), atol=1e-4)

    answer = BentoModel.load(path).predict({"inputs": rows.tolist()})["predictions"]
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.select(["label", "score", "top_k"]).to_pylist() == answer  # the server's answer, to the digit


def test_bad_rows_have_null_labels_and_csv_writes_top_k_as_json(iris, tmp_path):
    _path, model, x = iris
    table = _table(x[:6]).to_pylist()
    table[2]["petal_length"] = None
    pq.write_table(pa.Table.from_pylist(table), tmp_path / "in.parquet")
    # a null is a row error only where missing values are refused
    strict = build_bento(model, "iris-strict", tmp_path / "store", tmp_path,
                         {"runtime": {"allow_missing": False},
                          "outputs": {"probabilities": {"labels": list(SPECIES), "top_k": 2}}}, sample=x[::5])
    summary = score_files(strict, str(tmp_path / "in.parquet"), str(tmp_path / "out.csv"),
                          ScoreOptions(features=FEATURES, keep=("id",), on_error="skip"), workers=1)
    assert (summary.rows, summary.errors) == (6, 1)
    out = pacsv.read_csv(tmp_path / "out.csv", convert_options=pacsv.ConvertOptions(strings_can_be_null=True)
                         ).to_pylist()
    expected = SPECIES[model.predict(x[:6])].tolist()
    assert [r["label"] for r in out] == [*expected[:2], None, *expected[3:]]
    assert out[2]["top_k"] is None and "petal_length" in out[2]["error"]
    assert [t["label"] for t in json.loads(out[0]["top_k"])] == \
        SPECIES[np.argsort(-model.predict_proba(x[:1])[0])[:2]].tolist()
