"""The Ray engine on a real local Ray cluster: one cluster for the module, small files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bento_compile.batch.errors import BatchError
from bento_compile.batch.scorer import ScoreOptions
from tests.support.batch_data import assert_matches, read_output

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'bento-compile[ray]'")
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    # Logical CPUs for scheduling only: actors of an earlier dataset may hold theirs a while after it finishes.
    ray.init(num_cpus=8, include_dashboard=False, configure_logging=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    yield
    ray.shutdown()


def _rows(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return frame.iloc[np.random.default_rng(seed).integers(0, len(frame), n)].reset_index(drop=True)


# First in the module: the CLI starts its own cluster, before the module's fixture starts one here.
def test_cli_engine_ray_scores_a_labelled_bento_in_order(labelled_bento, tmp_path):
    import json

    from tests.batch.conftest import IRIS_FEATURES, IRIS_SPECIES
    from tests.support.batch_data import assert_labels_match, write_parquet
    from tests.support.helpers import run_cli

    rows = _rows(labelled_bento.frame, 500, seed=14)
    write_parquet(rows.assign(id=np.arange(len(rows))), tmp_path / "in.parquet", row_group_size=125)
    result = run_cli("batch", str(labelled_bento.path), str(tmp_path / "in.parquet"), str(tmp_path / "scored"),
                     "--engine", "ray", "--workers", "1", "--features", ",".join(IRIS_FEATURES), "--keep", "id",
                     "--batch-rows", "100", "--json")
    summary = json.loads(result.stdout)
    assert (summary["engine"], summary["rows"], summary["errors"], summary["workers"]) == ("ray", 500, 0, 1)
    out = read_output(tmp_path / "scored")
    assert list(out.columns) == ["id", "label", "score", "top_k", "probabilities"]
    assert out["id"].tolist() == list(range(500))
    assert_labels_match(labelled_bento.model, rows.to_numpy(np.float32), out, IRIS_SPECIES)


def test_predict_on_a_dataset_matches_sklearn_in_order(cluster, frame_bento):
    from bento_compile.batch.ray import predict

    rows = _rows(frame_bento.frame, 1200, seed=6)
    table = pa.Table.from_pandas(rows.assign(id=np.arange(len(rows))), preserve_index=False)
    dataset = ray.data.from_arrow(table).repartition(3)
    out = predict(dataset, frame_bento.path, concurrency=2, keep=["id"], batch_size=256).to_pandas()
    assert list(out.columns) == ["id", "label", "probabilities"]
    assert out["id"].tolist() == list(range(1200))
    assert_matches(frame_bento.model, rows, out)


def test_engine_writes_a_folder_and_handles_bad_rows(cluster, strict_bento, tmp_path):
    from bento_compile.batch.ray import score_files

    rows = _rows(strict_bento.frame, 200, seed=7)
    listed = pa.table({"id": np.arange(200), "x": pa.array(rows.to_numpy(np.float64).tolist())})
    broken = listed.to_pylist()
    broken[9]["x"] = broken[9]["x"][:5]  # a row with 5 values; the model takes 30
    pq.write_table(pa.Table.from_pylist(broken), tmp_path / "in.parquet")

    with pytest.raises(BatchError, match=r"A row \(id=9\): column 'x' has 5 values, input 'input' takes 30"):
        score_files(strict_bento.path, str(tmp_path / "in.parquet"), str(tmp_path / "failed"),
                    ScoreOptions(input_column="x", keep=("id",)), workers=2)
    assert not (tmp_path / "failed").exists()

    summary = score_files(strict_bento.path, str(tmp_path / "in.parquet"), str(tmp_path / "scored"),
                          ScoreOptions(input_column="x", keep=("id",), on_error="skip"), workers=2)
    assert (summary.rows, summary.errors, summary.engine) == (200, 1, "ray")
    out = read_output(tmp_path / "scored")
    assert out["id"].tolist() == list(range(200))
    assert pd.isna(out.loc[9, "label"]) and "5 values" in out.loc[9, "error"]
    keep = [i for i in range(200) if i != 9]
    np.testing.assert_array_equal(out.loc[keep, "label"].astype(int).to_numpy(),
                                  strict_bento.model.predict(rows.to_numpy(np.float32)[keep]))
