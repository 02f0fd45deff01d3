"""Where rows come from and go: S3 through moto_server, an interrupted run, and memory that does not grow
with the file (each measured in a process of its own)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bento_compile.batch.local import score_files
from bento_compile.batch.scorer import ScoreOptions
from tests.support.batch_data import assert_matches, write_parquet


def _parquet_bytes(frame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, row_group_size=100)
    return sink.getvalue()


def test_s3_file_and_prefix_in_and_out(frame_bento, s3):
    client, name = s3
    X = frame_bento.frame
    first, second = X.iloc[:300].reset_index(drop=True), X.iloc[300:].reset_index(drop=True)
    client.put_object(Bucket=name, Key="events/day=1/a.parquet", Body=_parquet_bytes(first.assign(id=range(300))))
    client.put_object(Bucket=name, Key="events/day=2/b.parquet", Body=_parquet_bytes(second.assign(
        id=range(300, len(X)))))

    summary = score_files(frame_bento.path, f"s3://{name}/events/day=1/a.parquet", f"s3://{name}/out/a.parquet",
                          ScoreOptions(keep=("id",)))
    assert summary.rows == 300
    out = pq.read_table(io.BytesIO(client.get_object(Bucket=name, Key="out/a.parquet")["Body"].read())).to_pandas()
    assert out["id"].tolist() == list(range(300))
    assert_matches(frame_bento.model, first, out)

    score_files(frame_bento.path, f"s3://{name}/events/", f"s3://{name}/scored", ScoreOptions(keep=("id",)),
                fmt="jsonl")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=name, Prefix="scored/")["Contents"])
    files = [key for key in keys if not key.endswith("/")]  # pyarrow keeps an empty "scored/" folder marker
    assert files == ["scored/day=1/a.jsonl", "scored/day=2/b.jsonl"]  # no _partial-… left behind
    lines = client.get_object(Bucket=name, Key="scored/day=2/b.jsonl")["Body"].read().decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == list(range(300, len(X)))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bento_compile.cli", "batch", *args]


@pytest.mark.slow
def test_a_killed_run_leaves_nothing_that_looks_finished(frame_bento, tmp_path):
    rows = frame_bento.frame.iloc[np.random.default_rng(8).integers(0, 569, 120_000)].reset_index(drop=True)
    source = write_parquet(rows, tmp_path / "in.parquet", row_group_size=2000)
    out = tmp_path / "out.parquet"
    for sig in (signal.SIGKILL, signal.SIGTERM):
        proc = subprocess.Popen(_cli(str(frame_bento.path), str(source), str(out), "--batch-rows", "20",
                                     "--workers", "1"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while not list(tmp_path.glob(".out.parquet.partial-*")) and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                time.sleep(0.05)
            time.sleep(0.3)  # some batches written
            assert proc.poll() is None, "the run finished before it could be interrupted: use a bigger file"
            proc.send_signal(sig)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert not out.exists()  # never a file under the output's name
        partial = list(tmp_path.glob(".out.parquet.partial-*"))
        if sig == signal.SIGTERM:
            assert partial == [] and proc.returncode != 0  # a terminated run cleans up after itself
        else:
            assert len(partial) == 1  # a killed one cannot, but its file is hidden and named partial
            partial[0].unlink()


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child would report the test
# process's own peak (pytest holding the 600k-row frame it just wrote).
_MEASURE = """
import json, re, sys
from bento_compile.batch.local import score_files
summary = score_files(sys.argv[1], sys.argv[2], sys.argv[3], batch_rows=4096, workers=1)
status = open("/proc/self/status").read()
print(json.dumps({"rows": summary.rows, "peak_kib": int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1))}))
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_file(frame_bento, tmp_path):
    """60k vs 600k rows (the larger is ~150 MB as float64 in memory): the same peak RSS, within noise."""
    base = frame_bento.frame
    peaks = {}
    for rows in (60_000, 600_000):
        rng = np.random.default_rng(rows)
        picked = base.iloc[rng.integers(0, len(base), rows)].reset_index(drop=True)
        # Noise makes the values incompressible, as real measurements are: pyarrow's default read-ahead
        # held every compressed page of such a file (600 MB at 2M rows) until the reader was told not to.
        picked *= rng.normal(1.0, 0.01, picked.shape)
        source = write_parquet(picked, tmp_path / f"in-{rows}.parquet", row_group_size=65_536)
        del picked
        result = subprocess.run([sys.executable, "-c", _MEASURE, str(frame_bento.path), str(source),
                                 str(tmp_path / f"out-{rows}.parquet")], capture_output=True, text=True,
                                timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        assert measured["rows"] == rows
        peaks[rows] = measured["peak_kib"] / 1024
    in_memory_mib = 600_000 * 31 * 8 / 2**20
    assert peaks[600_000] - peaks[60_000] < 40, peaks  # MiB; the larger table alone would be ~140 MiB more
    assert peaks[600_000] < peaks[60_000] + in_memory_mib / 4
