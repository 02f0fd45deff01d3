"""Whole-tensor inputs (a scalar beside the rows) come in with --set NAME=JSON, fed whole to every batch."""

from __future__ import annotations

import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper

from bento_compile.batch.local import score_files
from bento_compile.batch.scorer import ScoreOptions
from tests.support.batch_data import read_output
from tests.support.helpers import run_cli


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    """y = x * scale: `x` rows along a symbolic batch axis, `scale` a scalar (a whole tensor of shape [])."""
    from bento_compile.compiler.build import BuildRequest, build
    from bento_compile.core.config import BentoConfig
    from bento_compile.core.store import BentoStore

    folder = tmp_path_factory.mktemp("scaled")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])], "scaled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "scaled.onnx"))
    bento = build(BuildRequest(folder / "scaled.onnx", BentoConfig(), name="scaled"), BentoStore(folder / "store")).path
    x = np.random.default_rng(0).normal(size=(3000, 3)).astype(np.float32)
    pq.write_table(pa.table({"id": np.arange(len(x)), "x": pa.array(x.tolist(), pa.list_(pa.float32()))}),
                   folder / "in.parquet", row_group_size=500)
    return bento, folder / "in.parquet", x


def test_a_whole_input_without_set_is_refused_naming_it(scaled, tmp_path):
    bento, source, _ = scaled
    result = run_cli("batch", str(bento), str(source), str(tmp_path / "out.parquet"), "--input-column", "x",
                     check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    assert "Input 'scale' (float32 []) is one whole tensor per run" in text and "--set scale=0.5" in text
    assert not (tmp_path / "out.parquet").exists()
    for bad, said in ((["--set", "scale=[1, 2]"], "scale"), (["--set", "nope=1"], "'nope', which is not an input"),
                      (["--set", "x=1"], "one value per row"), (["--set", "scale=abc"], "is not JSON")):
        refused = run_cli("batch", str(bento), str(source), str(tmp_path / "out.parquet"), "--input-column", "x",
                          *bad, check=False)
        assert refused.returncode != 0 and said in " ".join(refused.stderr.split()), refused.stderr
        assert "Traceback" not in refused.stderr


def test_set_feeds_the_whole_input_to_every_batch_here_and_in_workers(scaled, tmp_path):
    bento, source, x = scaled
    run_cli("batch", str(bento), str(source), str(tmp_path / "cli.parquet"), "--input-column", "x", "--keep", "id",
            "--set", "scale=2.5", "--batch-rows", "128", "--workers", "1")
    out = read_output(tmp_path / "cli.parquet")
    assert out["id"].tolist() == list(range(3000))
    np.testing.assert_allclose(np.stack(out["y"].to_numpy()), x * 2.5, rtol=1e-6)

    summary = score_files(bento, str(source), str(tmp_path / "workers.parquet"),
                          ScoreOptions(input_column="x", keep=("id",), constants=(("scale", -1.0),)),
                          batch_rows=128, workers=2)
    assert summary.workers == 2
    np.testing.assert_allclose(np.stack(read_output(tmp_path / "workers.parquet")["y"].to_numpy()), -x, rtol=1e-6)
