"""The Spark engine on real pyspark in local[2] mode: one session for the module, small files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bento_compile.batch.errors import BatchError
from bento_compile.batch.scorer import ScoreOptions
from tests.support.batch_data import assert_matches, read_output, write_parquet

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed: pip install 'bento-compile[spark]'")
pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def spark():
    import shutil

    if shutil.which("java") is None:
        pytest.skip("no Java runtime: apt-get install openjdk-17-jre-headless")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = (pyspark.sql.SparkSession.builder.master("local[2]").appName("bento-compile tests")
               .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1").config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "256").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def jvm_cache(tmp_path_factory) -> dict[str, str]:
    """The CLI runs' own cache: the first one records the JVM's class archive there (spark_jvm.py)."""
    return {"BENTO_COMPILE_CACHE": str(tmp_path_factory.mktemp("cache"))}


def _rows(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return frame.iloc[np.random.default_rng(seed).integers(0, len(frame), n)].reset_index(drop=True)


# First in the module: the CLI starts its own JVM, before the module's fixture starts one here.
def test_cli_engine_spark_scores_a_labelled_bento_in_order(labelled_bento, tmp_path, jvm_cache):
    import json
    import shutil

    from tests.batch.conftest import IRIS_FEATURES, IRIS_SPECIES
    from tests.support.batch_data import assert_labels_match
    from tests.support.helpers import run_cli

    if shutil.which("java") is None:
        pytest.skip("no Java runtime: apt-get install openjdk-17-jre-headless")
    rows = _rows(labelled_bento.frame, 600, seed=13)
    write_parquet(rows.assign(id=np.arange(len(rows))), tmp_path / "in.parquet", row_group_size=150)
    result = run_cli("batch", str(labelled_bento.path), str(tmp_path / "in.parquet"), str(tmp_path / "scored"),
                     "--engine", "spark", "--master", "local[2]", "--features", ",".join(IRIS_FEATURES),
                     "--keep", "id", "--batch-rows", "100", "--json", env=jvm_cache)
    summary = json.loads(result.stdout)  # the JVM's own notes on the archive never reach stdout
    assert (summary["engine"], summary["rows"], summary["errors"], summary["master"]) == ("spark", 600, 0, "local[2]")
    # The first run on a machine recorded the driver JVM's classes, once, for later runs' start.
    assert "recording the JVM's classes once" in result.stderr and "class archive ready" in result.stderr
    archives = list((Path(jvm_cache["BENTO_COMPILE_CACHE"]) / "spark-cds").glob("*.jsa"))
    assert len(archives) == 1 and archives[0].stat().st_size > 1_000_000
    out = read_output(tmp_path / "scored")
    assert list(out.columns) == ["id", "label", "score", "top_k", "probabilities"]
    assert out["id"].tolist() == list(range(600))  # the file's order
    assert_labels_match(labelled_bento.model, rows.to_numpy(np.float32), out, IRIS_SPECIES)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left


# Also before the module's fixture: s3:// with plain pyspark (no hadoop-aws), through the CLI as a user runs it.
def test_cli_engine_spark_reads_and_writes_s3_through_pyarrow(frame_bento, s3, tmp_path, jvm_cache):
    import io
    import json
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.support.helpers import run_cli

    if shutil.which("java") is None:
        pytest.skip("no Java runtime: apt-get install openjdk-17-jre-headless")
    client, bucket = s3
    first, second = _rows(frame_bento.frame, 700, seed=15), _rows(frame_bento.frame, 300, seed=16)
    broken = second.astype({"mean radius": str})
    broken.loc[123, "mean radius"] = "n/a"  # a row the server would answer 422
    for key, frame, offset in (("events/day=1/a.parquet", first, 0), ("events/day=2/b.parquet", broken, 700)):
        sink = io.BytesIO()
        table = pa.Table.from_pandas(frame.assign(id=np.arange(offset, offset + len(frame))), preserve_index=False)
        pq.write_table(table, sink, row_group_size=100)
        client.put_object(Bucket=bucket, Key=key, Body=sink.getvalue())

    failed = run_cli("batch", str(frame_bento.path), f"s3://{bucket}/events/", f"s3://{bucket}/failed",
                     "--engine", "spark", "--keep", "id", "--batch-rows", "100", check=False, env=jvm_cache)
    assert "recording the JVM's classes" not in failed.stderr  # the archive is made once
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "Row 123 (id=823): column 'mean radius' holds 'n/a'" in " ".join(failed.stderr.split())
    assert not [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="failed").get("Contents", [])
                if not o["Key"].endswith("/")]  # nothing written, no part or unit left

    result = run_cli("batch", str(frame_bento.path), f"s3://{bucket}/events/", f"s3://{bucket}/scored",
                     "--engine", "spark", "--keep", "id", "--batch-rows", "100", "--on-error", "skip", "--json",
                     env=jvm_cache)
    summary = json.loads(result.stdout)
    assert (summary["engine"], summary["io"], summary["rows"], summary["errors"]) == ("spark", "pyarrow", 1000, 1)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="scored/")["Contents"]
                  if not o["Key"].endswith("/"))
    assert keys == ["scored/day=1/a.parquet", "scored/day=2/b.parquet"]
    parts = [pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=k)["Body"].read())).to_pandas()
             for k in keys]
    assert parts[0]["id"].tolist() == list(range(700)) and parts[1]["id"].tolist() == list(range(700, 1000))
    assert_matches(frame_bento.model, first, parts[0].drop(columns="error"))
    assert "'n/a'" in parts[1].loc[123, "error"] and pd.isna(parts[1].loc[123, "label"])
    good = parts[1].drop(index=123)
    assert_matches(frame_bento.model, second.drop(index=123), good.drop(columns="error"))


def test_an_archive_the_jvm_cannot_use_is_ignored_and_the_run_scores(labelled_bento, tmp_path, jvm_cache):
    import json
    import shutil

    from tests.batch.conftest import IRIS_FEATURES, IRIS_SPECIES
    from tests.support.batch_data import assert_labels_match
    from tests.support.helpers import run_cli

    if shutil.which("java") is None:
        pytest.skip("no Java runtime: apt-get install openjdk-17-jre-headless")
    cache = tmp_path / "cache"
    shutil.copytree(Path(jvm_cache["BENTO_COMPILE_CACHE"]) / "spark-cds", cache / "spark-cds")
    for archive in (cache / "spark-cds").glob("*.jsa"):  # another JVM's or a truncated archive
        archive.chmod(0o644)
        archive.write_bytes(os.urandom(4096))
    rows = _rows(labelled_bento.frame, 200, seed=17)
    write_parquet(rows, tmp_path / "in.parquet", row_group_size=100)
    result = run_cli("batch", str(labelled_bento.path), str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet"),
                     "--engine", "spark", "--features", ",".join(IRIS_FEATURES), "--json",
                     env={"BENTO_COMPILE_CACHE": str(cache)})
    assert json.loads(result.stdout)["rows"] == 200
    assert_labels_match(labelled_bento.model, rows.to_numpy(np.float32), read_output(tmp_path / "out.parquet"),
                        IRIS_SPECIES)


def test_the_driver_jvm_options_leave_a_user_s_own_alone(tmp_path, monkeypatch):
    from bento_compile.batch import spark_jvm

    monkeypatch.setenv("BENTO_COMPILE_CACHE", str(tmp_path / "cache"))
    for name in ("PYSPARK_SUBMIT_ARGS", "SPARK_CONF_DIR", spark_jvm.CDS_ENV):
        monkeypatch.delenv(name, raising=False)
    java = spark_jvm._java()
    if java is None:
        pytest.skip("no Java runtime: apt-get install openjdk-17-jre-headless")
    folder = tmp_path / "cache" / "spark-cds"
    folder.mkdir(parents=True)
    archive = folder / f"{spark_jvm._key(java)}.jsa"
    archive.write_bytes(b"an archive")
    assert spark_jvm.driver_java_options(scheduling_only=True) == (
        f"-XX:SharedArchiveFile={archive} -Xlog:cds*=off -XX:TieredStopAtLevel=1")
    assert "TieredStopAtLevel" not in spark_jvm.driver_java_options(scheduling_only=False)  # the JVM reads rows
    monkeypatch.setenv(spark_jvm.CDS_ENV, "0")
    assert spark_jvm.driver_java_options(scheduling_only=True) is None
    monkeypatch.delenv(spark_jvm.CDS_ENV)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "spark-defaults.conf").write_text("spark.driver.extraJavaOptions -Xmx8g\n")
    monkeypatch.setenv("SPARK_CONF_DIR", str(conf))
    assert spark_jvm.driver_java_options(scheduling_only=True) is None  # theirs is never replaced
    monkeypatch.delenv("SPARK_CONF_DIR")
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--driver-java-options -Xmx8g pyspark-shell")
    assert spark_jvm.driver_java_options(scheduling_only=True) is None
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS")
    archive.unlink()
    (folder / f"{spark_jvm._key(java)}.failed").write_text("not HotSpot\n")  # a JVM that cannot make one
    assert spark_jvm.driver_java_options(scheduling_only=True) is None


def test_predict_on_a_dataframe_matches_sklearn_in_order(spark, frame_bento, tmp_path):
    from bento_compile.batch.spark import predict

    rows = _rows(frame_bento.frame, 1500, seed=4)
    write_parquet(rows.assign(id=np.arange(len(rows))), tmp_path / "in.parquet", row_group_size=400)
    df = spark.read.parquet(str(tmp_path / "in.parquet")).repartition(1).sortWithinPartitions("id")
    scored = predict(df.repartition(3), frame_bento.path, keep=["id"])
    assert scored.columns == ["id", "label", "probabilities"]
    out = scored.toPandas().sort_values("id").reset_index(drop=True)
    assert out["id"].tolist() == list(range(1500))  # every row, once
    assert_matches(frame_bento.model, rows, out)

    in_order = predict(spark.read.parquet(str(tmp_path / "in.parquet")), frame_bento.path, keep=["id"]).toPandas()
    assert in_order["id"].tolist() == list(range(1500))  # partitions keep the file's order


@pytest.mark.parametrize("io", ["spark", "pyarrow"])  # a cluster's own reader/writer; a local master's default
def test_engine_writes_and_handles_bad_rows(spark, strict_bento, tmp_path, io):
    from bento_compile.batch.spark import score_files

    rows = _rows(strict_bento.frame, 300, seed=5)
    table = rows.copy()
    table.columns = [f"f{i}" for i in range(30)]
    table = table.astype(object)
    table.loc[7, "f3"] = "abc"  # read by Spark as a text column; one row is not a number
    table.insert(0, "id", np.arange(len(rows)))
    table.to_csv(tmp_path / "in.csv", index=False)
    features = tuple(f"f{i}" for i in range(30))

    with pytest.raises(BatchError, match=r"\(id=7\): column 'f3' holds 'abc'"):
        score_files(strict_bento.path, str(tmp_path / "in.csv"), str(tmp_path / "failed"),
                    ScoreOptions(features=features, keep=("id",)), io=io)
    assert sorted(os.listdir(tmp_path)) == ["in.csv"]  # no folder that looks finished, no partial left

    summary = score_files(strict_bento.path, str(tmp_path / "in.csv"), str(tmp_path / "scored"),
                          ScoreOptions(features=features, keep=("id",), on_error="skip"), io=io)
    assert (tmp_path / "scored").is_dir() == (io == "spark")  # Spark writes a folder of parts
    assert (summary.rows, summary.errors, summary.engine) == (300, 1, "spark")
    out = read_output(tmp_path / "scored").sort_values("id").reset_index(drop=True)
    assert out.loc[7, "label"] is None or pd.isna(out.loc[7, "label"])
    assert "'abc'" in out.loc[7, "error"]
    good = out.drop(index=7)
    np.testing.assert_array_equal(good["label"].astype(int).to_numpy(),
                                  strict_bento.model.predict(rows.drop(index=7).to_numpy(np.float32)))
    with pytest.raises(BatchError, match="no column 'nope'"):
        score_files(strict_bento.path, str(tmp_path / "in.csv"), str(tmp_path / "x"),
                    ScoreOptions(features=("nope",) * 1 + features[1:]), io=io)
