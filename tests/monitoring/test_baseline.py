"""The baseline recorded at build time, and the binning arithmetic on awkward values."""

from __future__ import annotations

import numpy as np
import pytest

from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.drift import CategoryBinner, NumericBinner, categorical_baseline, numeric_baseline, psi
from bento_compile.runtimes.manifest import read_manifest
from bento_compile.runtimes.monitoring import Monitor
from tests.monitoring.conftest import build_monitored
from tests.support.helpers import run_cli


def test_manifest_holds_the_baseline_of_every_feature_and_output(monitored_bento, cancer_split):
    info = read_manifest(monitored_bento).monitoring
    assert info is not None and info.enabled and info.baseline_rows == len(cancer_split[0])
    assert info.baseline_source == "file:baseline.npy"
    assert [f.name for f in info.features] == [f"input[{j}]" for j in range(30)]
    area = info.features[3]
    assert len(area.edges) == 9 and sum(area.counts) == len(cancer_split[0])
    assert area.min == pytest.approx(float(cancer_split[0][:, 3].min()))
    label = next(o for o in info.outputs if o.name == "label")
    assert label.kind == "categorical" and set(label.categories) == {"0", "1"}
    assert sum(label.counts) == len(cancer_split[0])


def test_show_prints_the_baseline(monitored_bento, monkeypatch):
    monkeypatch.setenv("BENTO_COMPILE_HOME", str(monitored_bento.parents[2]))
    out = run_cli("show", "cancer:latest").stdout
    assert "baseline of 455 rows from file:baseline.npy" in out and "input[29]" in out


def test_every_build_records_a_baseline_with_live_monitoring_off(built_example):
    info = read_manifest(built_example).monitoring
    assert info is not None and not info.enabled and len(info.features) == 30 and info.baseline_source == "sample"


@pytest.mark.parametrize("section, key", [
    ("monitoring:\n  psi_alrt: 0.3\n", "monitoring.psi_alrt"),
    ("monitoring:\n  window: -5\n", "monitoring.window"),
    ("monitoring:\n  log:\n    to: ftp://x\n", "monitoring.log.to"),
    ("monitoring:\n  log:\n    sample_rate: 2\n", "monitoring.log.sample_rate"),
])
def test_a_malformed_section_is_a_build_error_naming_the_key(tmp_path, section, key):
    (tmp_path / "bento.yaml").write_text(section)
    from bento_compile.core.config import load_config

    with pytest.raises(BentoCompileError, match=key.replace(".", r"\.")):
        load_config(tmp_path / "bento.yaml")


def test_redacting_an_unknown_feature_is_a_build_error(example_model, cancer_split, tmp_path):
    with pytest.raises(BentoCompileError, match="redact names ssn"):
        build_monitored(example_model, tmp_path, cancer_split[0],
                        "\nmonitoring:\n  log:\n    redact: [ssn]\n")


def test_constant_and_all_missing_features_and_odd_live_values_never_raise():
    constant = numeric_baseline("c", "x", 0, np.full(50, 2.0))
    empty = numeric_baseline("m", "x", 1, np.full(50, np.nan))
    assert constant.note == "constant in the baseline" and constant.edges == [2.0]
    assert empty.missing_rate == 1.0 and "all missing" in empty.note
    binner = NumericBinner([constant, empty])
    live = np.array([[2.0, np.nan], [np.inf, 1.0], [np.nan, -np.inf], [-5.0, 3.0]])
    binned = binner.bin(live)
    assert binned.missing.tolist() == [1, 1]
    # inf and -5 are outside [2, 2]; any value of a feature the baseline never saw is outside its (empty) range
    assert binned.out_of_range.tolist() == [2, 3]
    assert psi(np.array(empty.counts), binned.counts[1][:1]) is None
    colours = categorical_baseline("colour", "c", None, np.array(["red", "blue", "red", None], dtype=object))
    counted = CategoryBinner(colours).bin(np.array(["red", "green", None], dtype=object))
    assert counted.counts[0].tolist() == [1, 0, 1] and counted.out_of_range.tolist() == [1]
    assert counted.missing.tolist() == [1]


def test_the_window_slides_and_a_quiet_window_reports_nothing(monitored_bento, cancer_split, shifted_rows):
    manifest = read_manifest(monitored_bento)
    from dataclasses import replace

    monitor = Monitor(replace(manifest.monitoring, window=200), manifest.tag)
    quiet = monitor.snapshot()
    assert quiet["window_rows"] == 0 and quiet["drifting"] == [] and quiet["features"]["input[3]"]["psi"] is None
    for start in range(0, 400, 20):
        monitor.observe({"input": shifted_rows[start:start + 20]}, {})
    assert monitor.snapshot()["drifting"] == ["input[3]"]
    for start in range(0, 200, 20):  # the window forgets the drifted rows
        monitor.observe({"input": cancer_split[0][start:start + 20]}, {})
    later = monitor.snapshot()
    assert 180 <= later["window_rows"] <= 200 and later["drifting"] == []
    monitor.observe({"input": np.zeros((3, 7), dtype=np.float32)}, {})  # the wrong width: counted, not raised
    assert monitor.snapshot()["errors"] == 1


def test_a_bad_deployment_switch_fails_the_load_naming_it(monitored_bento, monkeypatch):
    from bento_compile.runtimes.model import BentoModel

    monkeypatch.setenv("BENTO_COMPILE_MONITORING", "maybe")
    with pytest.raises(ValueError, match="BENTO_COMPILE_MONITORING must be on or off"):
        BentoModel.load(monitored_bento)
    monkeypatch.setenv("BENTO_COMPILE_MONITORING", "on")
    monkeypatch.setenv("BENTO_COMPILE_MONITORING_SAMPLE_RATE", "2")
    with pytest.raises(ValueError, match="BENTO_COMPILE_MONITORING_SAMPLE_RATE"):
        BentoModel.load(monitored_bento)
    monkeypatch.delenv("BENTO_COMPILE_MONITORING_SAMPLE_RATE")
    monkeypatch.setenv("BENTO_COMPILE_MONITORING_LOG", "ftp://somewhere")
    with pytest.raises(ValueError, match="BENTO_COMPILE_MONITORING_LOG must be"):
        BentoModel.load(monitored_bento)


def test_large_runs_are_subsampled_once_the_window_is_full(monitored_bento, shifted_rows):
    from dataclasses import replace

    manifest = read_manifest(monitored_bento)
    monitor = Monitor(replace(manifest.monitoring, window=100), manifest.tag)
    big = np.tile(shifted_rows, (4, 1))
    monitor.observe({"input": big}, {})  # filling: every row
    assert monitor.snapshot()["window_rows"] == len(big)
    monitor.observe({"input": big}, {})  # full: a subset
    subset = monitor.snapshot()["window_rows"]
    assert len(big) < subset <= len(big) + 64
    assert monitor.snapshot()["drifting"] == ["input[3]"]
    for _ in range(3):  # then one large run in LARGE_RUN_EVERY (4) adds one
        monitor.observe({"input": big}, {})
    assert monitor.snapshot()["window_rows"] == subset
    monitor.observe({"input": big}, {})
    assert monitor.snapshot()["window_rows"] > subset
