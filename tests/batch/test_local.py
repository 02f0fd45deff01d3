"""The local engine and `bento-compile batch`: real files, the real CLI, outputs checked against scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bento_compile.batch.errors import BatchError
from bento_compile.batch.local import plan_workers, score_files
from bento_compile.batch.scorer import ScoreOptions
from bento_compile.batch.sources import discover
from bento_compile.batch.units import plan_units
from bento_compile.batch.worker_choice import choose_workers
from bento_compile.runtimes.threads import available_cpus
from tests.support.batch_data import assert_matches, read_output, write_parquet
from tests.support.helpers import run_cli


def _rows(frame: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    picked = frame.iloc[np.random.default_rng(seed).integers(0, len(frame), n)].reset_index(drop=True)
    return picked


def test_cli_scores_parquet_by_feature_names_in_order(frame_bento, tmp_path):
    rows = _rows(frame_bento.frame, 3000)
    table = rows[list(reversed(rows.columns))].copy()  # by name: column order does not matter
    table.insert(0, "customer", [f"c{i:05d}" for i in range(len(rows))])
    table["unused"] = 1.0
    source = write_parquet(table, tmp_path / "in.parquet", row_group_size=700)
    result = run_cli("batch", str(frame_bento.path), str(source), str(tmp_path / "out.parquet"), "--keep",
                     "customer", "--batch-rows", "500", "--workers", "1", "--json")
    summary = json.loads(result.stdout)
    assert summary["rows"] == 3000 and summary["errors"] == 0 and summary["engine"] == "local"
    out = read_output(tmp_path / "out.parquet")
    assert list(out.columns) == ["customer", "label", "probabilities"]
    assert out["customer"].tolist() == table["customer"].tolist()
    assert_matches(frame_bento.model, rows, out)
    schema = pq.read_schema(tmp_path / "out.parquet")
    assert schema.field("probabilities").type == pa.list_(pa.float32())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_worker_processes_read_their_own_row_groups_and_keep_input_order(frame_bento, tmp_path):
    rows = _rows(frame_bento.frame, 5000, seed=1)
    table = rows.assign(id=np.arange(len(rows)))
    source = write_parquet(table, tmp_path / "in.parquet", row_group_size=1000)
    units = plan_units(discover(str(source)), 300)  # 4 batches of 300 rows a unit: 2 row groups each
    assert [(u.row_groups, u.first_row, u.rows) for u in units] == [((0, 1), 0, 2000), ((2, 3), 2000, 2000),
                                                                     ((4,), 4000, 1000)]
    summary = score_files(frame_bento.path, str(source), str(tmp_path / "out.parquet"), ScoreOptions(keep=("id",)),
                          batch_rows=300, workers=2)
    assert summary.workers == 2 and summary.workers * summary.intra_op_threads <= max(2, available_cpus())
    assert summary.to_dict()["workers_chosen"] == "--workers"
    out = read_output(tmp_path / "out.parquet")
    assert out["id"].tolist() == list(range(5000))
    assert_matches(frame_bento.model, rows, out)

    # a bad row in the last unit: its row number is the file's, and nothing is written
    broken = table.astype({"mean radius": object})
    broken.loc[4321, "mean radius"] = "n/a"
    write_parquet(broken.astype({"mean radius": str}), tmp_path / "bad.parquet", row_group_size=1000)
    with pytest.raises(BatchError, match=r"Row 4321 \(id=4321\): column 'mean radius' holds 'n/a'"):
        score_files(frame_bento.path, str(tmp_path / "bad.parquet"), str(tmp_path / "bad-out.parquet"),
                    ScoreOptions(keep=("id",)), batch_rows=300, workers=2)
    assert not [p for p in tmp_path.iterdir() if "bad-out" in p.name]


def test_the_default_measures_and_keeps_a_cheap_model_in_this_process(frame_bento, tmp_path):
    rows = _rows(frame_bento.frame, 6000, seed=8)
    source = write_parquet(rows, tmp_path / "in.parquet", row_group_size=1000)
    result = run_cli("batch", str(frame_bento.path), str(source), str(tmp_path / "out.parquet"), "--batch-rows",
                     "250", "--json")
    summary = json.loads(result.stdout)
    assert summary["workers_chosen"] == "measured"
    # 6,000 rows of a linear model take milliseconds here; a worker's start alone takes a second
    assert summary["workers"] == 1 and summary["workers_reason"].startswith("in this process:")
    assert "rows/s in this process" in summary["workers_reason"]
    assert summary["intra_op_threads"] == available_cpus()
    assert_matches(frame_bento.model, rows, read_output(tmp_path / "out.parquet"))


def test_a_measured_fan_out_hands_the_later_units_to_workers_in_order(frame_bento, tmp_path, monkeypatch):
    from bento_compile.batch import local, worker_choice

    seen = []

    def heavy(*args, **kwargs):  # as if the model were slow and single-threaded: the real decision's inputs
        seen.append(dict(zip(("cpus", "rows_left", "seconds_per_row", "cpus_busy", "open_seconds", "units_left"),
                             args, strict=True)))
        return worker_choice.Choice(2, "2 worker processes: forced by the test")

    monkeypatch.setattr(local, "choose_workers", heavy)
    rows = _rows(frame_bento.frame, 5000, seed=9)
    source = write_parquet(rows.assign(id=np.arange(5000)), tmp_path / "in.parquet", row_group_size=1000)
    summary = score_files(frame_bento.path, str(source), str(tmp_path / "out.parquet"), ScoreOptions(keep=("id",)),
                          batch_rows=250)
    # decided once, after the second batch of the first unit (a unit: one row group of 4 batches)
    assert len(seen) == 1 and seen[0]["rows_left"] == 5000 - 500 and seen[0]["units_left"] == 4
    assert seen[0]["seconds_per_row"] > 0 and seen[0]["open_seconds"] > 0
    assert (summary.workers, summary.to_dict()["workers_reason"]) == (2, "2 worker processes: forced by the test")
    out = read_output(tmp_path / "out.parquet")
    assert out["id"].tolist() == list(range(5000))
    assert_matches(frame_bento.model, rows, out)


def test_worker_choice_fans_out_only_when_it_pays():
    cheap = choose_workers(cpus=4, rows_left=1_000_000, seconds_per_row=1e-6, cpus_busy=1.0, open_seconds=0.2,
                           units_left=16)
    assert cheap.workers == 1 and "estimated 1.0s here" in cheap.reason  # a worker's start costs more
    heavy = choose_workers(cpus=4, rows_left=1_000_000, seconds_per_row=2e-5, cpus_busy=1.0, open_seconds=0.2,
                           units_left=16)
    assert heavy.workers == 4 and heavy.reason.startswith("4 worker processes")  # 20 s here vs 6.7 s
    threaded = choose_workers(cpus=4, rows_left=1_000_000, seconds_per_row=2e-5, cpus_busy=3.9, open_seconds=0.2,
                              units_left=16)
    assert threaded.workers == 1  # the session already keeps the CPUs busy: processes would not add any
    assert choose_workers(4, 1_000_000, 2e-5, 1.0, 0.2, units_left=1).workers == 1  # nothing to split
    assert choose_workers(1, 1_000_000, 2e-5, 1.0, 0.2, units_left=16).workers == 1
    assert choose_workers(4, None, 2e-5, 1.0, 0.2, units_left=16).workers == 1
    assert choose_workers(4, 1_000_000, 2e-5, 1.0, 0.2, units_left=3).workers == 3  # no more than the units


def test_features_option_and_list_column_for_a_model_without_names(strict_bento, tmp_path):
    rows = _rows(strict_bento.frame, 400)
    plain = rows.copy()
    plain.columns = [f"f{i}" for i in range(30)]
    source = write_parquet(plain, tmp_path / "plain.parquet")
    with pytest.raises(BatchError) as missing:
        score_files(strict_bento.path, str(source), str(tmp_path / "x.parquet"))
    assert "--features" in missing.value.fix and "--input-column" in missing.value.fix
    features = tuple(plain.columns)
    score_files(strict_bento.path, str(source), str(tmp_path / "a.parquet"), ScoreOptions(features=features))
    assert_matches(strict_bento.model, rows, read_output(tmp_path / "a.parquet"))

    listed = pa.table({"x": pa.array(rows.to_numpy(np.float64).tolist(), type=pa.list_(pa.float64()))})
    pq.write_table(listed, tmp_path / "listed.parquet")
    score_files(strict_bento.path, str(tmp_path / "listed.parquet"), str(tmp_path / "b.parquet"),
                ScoreOptions(input_column="x"))
    assert_matches(strict_bento.model, rows, read_output(tmp_path / "b.parquet"))


def test_missing_column_and_wrong_dtype_are_named(frame_bento, tmp_path):
    rows = _rows(frame_bento.frame, 50)
    write_parquet(rows.drop(columns=["mean radius"]), tmp_path / "missing.parquet")
    with pytest.raises(BatchError, match="no column 'mean radius'"):
        score_files(frame_bento.path, str(tmp_path / "missing.parquet"), str(tmp_path / "o1.parquet"))
    write_parquet(rows.assign(**{"mean texture": rows["mean texture"] > 20}), tmp_path / "bool.parquet")
    with pytest.raises(BatchError, match=r"Column 'mean texture' has type bool.*float32"):
        score_files(frame_bento.path, str(tmp_path / "bool.parquet"), str(tmp_path / "o2.parquet"))
    write_parquet(rows, tmp_path / "good.parquet")
    with pytest.raises(BatchError, match="--keep names 'nope'"):
        score_files(frame_bento.path, str(tmp_path / "good.parquet"), str(tmp_path / "o3.parquet"),
                    ScoreOptions(keep=("nope",)))
    assert not list(tmp_path.glob("o*")) and not list(tmp_path.glob(".o*"))


def test_bad_rows_fail_with_row_and_reason_or_are_skipped(strict_bento, tmp_path):
    rows = _rows(strict_bento.frame, 20)
    text = rows.copy()
    text.columns = [f"f{i}" for i in range(30)]
    csv_lines = text.to_csv(index=False).splitlines()
    cells = csv_lines[8].split(",")  # data row 7
    cells[3] = "abc"
    csv_lines[8] = ",".join(cells)
    cells = csv_lines[12].split(",")  # data row 11: an empty cell is a null, and this Bento refuses them
    cells[5] = ""
    csv_lines[12] = ",".join(cells)
    (tmp_path / "in.csv").write_text("id," + csv_lines[0] + "\n" + "\n".join(
        f"{i},{line}" for i, line in enumerate(csv_lines[1:])) + "\n")
    features = ",".join(text.columns)

    failed = run_cli("batch", str(strict_bento.path), str(tmp_path / "in.csv"), str(tmp_path / "out.parquet"),
                     "--features", features, "--keep", "id", check=False)
    assert failed.returncode == 1
    assert "Row 7 (id=7): column 'f3' holds 'abc', expected a number" in " ".join(failed.stderr.split())
    assert "Traceback" not in failed.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "in.csv"]  # nothing half-written

    skipped = run_cli("batch", str(strict_bento.path), str(tmp_path / "in.csv"), str(tmp_path / "out.jsonl"),
                      "--features", features, "--keep", "id", "--on-error", "skip", "--json")
    assert json.loads(skipped.stdout)["errors"] == 2
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == list(range(20))
    assert out[7]["label"] is None and out[7]["probabilities"] is None and "'abc'" in out[7]["error"]
    assert out[11]["label"] is None and "f5" in out[11]["error"] and "missing values" in out[11]["error"]
    good = [i for i in range(20) if i not in (7, 11)]
    assert all(out[i]["error"] is None for i in good)
    np.testing.assert_array_equal([out[i]["label"] for i in good],
                                  strict_bento.model.predict(rows.to_numpy(np.float32)[good]))


def test_folder_input_gives_a_folder_of_parts(frame_bento, tmp_path):
    folder = tmp_path / "days"
    (folder / "2026-01-02").mkdir(parents=True)
    first, second = _rows(frame_bento.frame, 120, seed=2), _rows(frame_bento.frame, 80, seed=3)
    write_parquet(first, folder / "a.parquet")
    write_parquet(second, folder / "2026-01-02" / "b.parquet")
    (folder / "_SUCCESS").write_text("")
    summary = score_files(frame_bento.path, str(folder), str(tmp_path / "scored"), fmt="csv")
    assert summary.rows == 200 and summary.files == 2
    parts = sorted(p.relative_to(tmp_path / "scored").as_posix() for p in (tmp_path / "scored").rglob("*.csv"))
    assert parts == ["2026-01-02/b.csv", "a.csv"]
    out = pd.read_csv(tmp_path / "scored" / "a.csv")
    out["probabilities"] = out["probabilities"].map(json.loads)
    assert_matches(frame_bento.model, first, out)


def test_existing_output_is_kept_unless_overwrite(frame_bento, tmp_path):
    source = write_parquet(_rows(frame_bento.frame, 10), tmp_path / "in.parquet")
    (tmp_path / "out.parquet").write_text("old")
    with pytest.raises(BatchError, match="already exists"):
        score_files(frame_bento.path, str(source), str(tmp_path / "out.parquet"))
    assert (tmp_path / "out.parquet").read_text() == "old"
    score_files(frame_bento.path, str(source), str(tmp_path / "out.parquet"), overwrite=True)
    assert len(read_output(tmp_path / "out.parquet")) == 10


def test_a_changed_bento_scores_nothing(frame_bento, tmp_path):
    import shutil

    copy = tmp_path / "bento"
    shutil.copytree(frame_bento.path, copy)
    with open(copy / "model.onnx", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00")
    source = write_parquet(_rows(frame_bento.frame, 10), tmp_path / "in.parquet")
    result = run_cli("batch", str(copy), str(source), str(tmp_path / "out.parquet"), check=False)
    assert result.returncode == 1 and "sha256" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.parquet").exists()


def test_workers_times_threads_never_exceed_the_cpus():
    assert plan_workers(None, cpus=8) == (8, 1)  # Ray's default: an actor per CPU
    assert plan_workers(1, cpus=8) == (1, 8)  # one process gets every CPU as intra-op threads
    assert plan_workers(3, cpus=8) == (3, 2)
    assert plan_workers(16, cpus=8) == (16, 1)  # more processes than CPUs: one thread each
    for bad in (0, -1, 10_000):
        with pytest.raises(BatchError, match="--workers must be between 1 and"):
            plan_workers(bad, cpus=8)


_WITHOUT = r'''
import sys
HIDDEN = sys.argv[1].split(",")
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ImportError(f"{name} hidden by the test")
sys.meta_path.insert(0, Hide())
from bento_compile.cli import main
sys.argv = ["bento-compile", "batch", "x:latest", "in.parquet", "out.parquet", *sys.argv[2:]]
main()
'''


@pytest.mark.parametrize(("hidden", "engine", "extra"), [("pyarrow", "local", "batch"), ("pyspark", "spark", "spark"),
                                                         ("ray", "ray", "ray")])
def test_a_missing_extra_is_named(hidden, engine, extra):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _WITHOUT, hidden, "--engine", engine], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"pip install 'bento-compile[{extra}]'" in result.stderr


def test_a_multi_input_bento_takes_a_column_per_input(tmp_path):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from tests.support.batch_data import build_bento

    rng = np.random.default_rng(9)
    frame = pd.DataFrame({"age": rng.uniform(18, 80, 400).astype(np.float32),
                          "plan": rng.choice(["basic", "plus", "pro"], 400)})
    churn = ((frame["age"] < 35) & (frame["plan"] == "basic")).astype(int)
    model = Pipeline([("columns", ColumnTransformer([("age", StandardScaler(), ["age"]),
                                                     ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"])])),
                      ("classify", LogisticRegression())]).fit(frame, churn)
    config = {"inputs": [{"name": "age", "dtype": "float32", "shape": [None, 1]},
                         {"name": "plan", "dtype": "string", "shape": [None, 1]}]}
    bento = build_bento(model, "churn", tmp_path / "store", tmp_path, config)
    table = frame.assign(customer=np.arange(400))
    table.loc[5, "plan"] = None  # a null string is a row error: the server answers 422 too
    write_parquet(table, tmp_path / "in.parquet")
    summary = score_files(bento, str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet"),
                          ScoreOptions(keep=("customer",), on_error="skip"))
    assert (summary.rows, summary.errors) == (400, 1)
    out = read_output(tmp_path / "out.parquet")
    assert "plan" in out.loc[5, "error"] and pd.isna(out.loc[5, "label"])
    good = out.drop(index=5)
    np.testing.assert_array_equal(good["label"].astype(int).to_numpy(), model.predict(frame.drop(index=5)))
    reference = model.predict_proba(frame.drop(index=5))
    assert np.abs(np.stack(good["probabilities"].to_numpy()) - reference).max() <= 1e-4

    # A pandas category column, which Parquet stores dictionary-encoded, is read as its values.
    write_parquet(table.astype({"plan": "category"}), tmp_path / "categories.parquet")
    assert pq.read_schema(tmp_path / "categories.parquet").field("plan").type.id == pa.dictionary(
        pa.int8(), pa.string()).id
    summary = score_files(bento, str(tmp_path / "categories.parquet"), str(tmp_path / "categories-out.parquet"),
                          ScoreOptions(keep=("customer",), on_error="skip"))
    assert (summary.rows, summary.errors) == (400, 1)
    pd.testing.assert_series_equal(read_output(tmp_path / "categories-out.parquet")["label"], out["label"])


def test_glob_and_json_lines_inputs(frame_bento, strict_bento, tmp_path):
    first, second = _rows(frame_bento.frame, 40, seed=10), _rows(frame_bento.frame, 30, seed=11)
    write_parquet(first, tmp_path / "day1.parquet")
    write_parquet(second, tmp_path / "day2.parquet")
    (tmp_path / "notes.csv").write_text("not,scored\n")
    summary = score_files(frame_bento.path, str(tmp_path / "day*.parquet"), str(tmp_path / "scored"))
    assert summary.rows == 70 and sorted(p.name for p in (tmp_path / "scored").iterdir()) == ["day1.parquet",
                                                                                           "day2.parquet"]
    assert_matches(frame_bento.model, second, read_output(tmp_path / "scored" / "day2.parquet"))

    rows = _rows(strict_bento.frame, 25, seed=12)
    lines = [json.dumps({"id": i, "x": values}) for i, values in enumerate(rows.to_numpy().tolist())]
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    score_files(strict_bento.path, str(tmp_path / "rows.jsonl"), str(tmp_path / "rows-out.parquet"),
                ScoreOptions(input_column="x", keep=("id",)))
    out = read_output(tmp_path / "rows-out.parquet")
    assert out["id"].tolist() == list(range(25))
    assert_matches(strict_bento.model, rows, out)
