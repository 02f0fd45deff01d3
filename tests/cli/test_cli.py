"""The command line as a user runs it: build / list / show / delete, exit codes and messages."""

from __future__ import annotations

import json

import numpy as np
from sklearn.linear_model import LogisticRegression

from tests.support.helpers import run_cli, save


def test_build_prints_tag_last_and_json(example_model, store_home):
    result = run_cli("build", "-f", str(example_model / "bento.yaml"))
    tag = result.stdout.strip().splitlines()[-1]
    assert tag.startswith("cancer:") and len(tag.split(":")[1]) == 16
    assert "parity" in result.stderr  # the table goes to stderr
    as_json = json.loads(run_cli("build", "-f", str(example_model / "bento.yaml"), "--json").stdout)
    assert as_json["tag"] == tag and as_json["parity"]["passed"] and as_json["created"] is False
    assert as_json["path"].startswith(str(store_home))


def test_build_with_model_name_and_sample_flags(cancer_data, tmp_path):
    X, y = cancer_data
    path = save(LogisticRegression(max_iter=3000).fit(X, y), tmp_path / "Churn Model.joblib")
    np.save(tmp_path / "s.npy", X[:20].astype(np.float32))
    out = run_cli("build", str(path), "--sample", str(tmp_path / "s.npy"), "--tolerance", "1e-3", "--json")
    report = json.loads(out.stdout)
    assert report["tag"].startswith("churn-model:")
    assert report["parity"]["outputs"]["probabilities"]["tolerance"] == 1e-3
    named = run_cli("build", str(path), "--name", "churn").stdout.strip().splitlines()[-1]
    assert named.startswith("churn:")


def test_build_without_sample_says_so(cancer_data, tmp_path):
    X, y = cancer_data
    path = save(LogisticRegression(max_iter=3000).fit(X, y), tmp_path / "m.joblib")
    result = run_cli("build", str(path))
    assert "No --sample given" in result.stderr and "synthetic" in result.stderr


def test_list_show_delete_and_latest(cancer_data, tmp_path):
    X, y = cancer_data
    tags = []
    for c in (0.5, 2.0):
        path = save(LogisticRegression(C=c, max_iter=3000).fit(X, y), tmp_path / "m.joblib")
        tags.append(run_cli("build", str(path), "--name", "churn").stdout.strip().splitlines()[-1])
    listed = json.loads(run_cli("list", "--json").stdout)
    assert sorted(b["tag"] for b in listed) == sorted(tags)
    shown = json.loads(run_cli("show", "churn:latest", "--json").stdout)
    assert f"churn:{shown['version']}" == tags[-1]
    text = run_cli("show", tags[0]).stdout
    assert "probabilities" in text and "model.onnx" in text and "parity" in text
    prefix = tags[0].split(":")[1][:6]
    assert json.loads(run_cli("show", f"churn:{prefix}", "--json").stdout)["version"].startswith(prefix)
    run_cli("delete", tags[-1])
    assert json.loads(run_cli("show", "churn:latest", "--json").stdout)["version"] == tags[0].split(":")[1]
    assert [b["tag"] for b in json.loads(run_cli("list", "--json").stdout)] == [tags[0]]


def test_errors_are_one_paragraph_with_a_fix(tmp_path):
    missing = run_cli("build", str(tmp_path / "nope.joblib"), check=False)
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr and "fix:" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown = run_cli("show", "ghost:latest", check=False)
    assert unknown.returncode == 1 and "No Bento named 'ghost'" in unknown.stderr
    (tmp_path / "bento.yaml").write_text("modle: x.joblib\n")
    typo = run_cli("build", "-f", str(tmp_path / "bento.yaml"), check=False)
    assert typo.returncode == 1 and "unknown key 'modle'" in typo.stderr


def test_parity_failure_exits_nonzero_and_prints_table(cancer_data, tmp_path, store_home):
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = cancer_data
    path = save(make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=200, random_state=0)).fit(X, y),
                tmp_path / "m.joblib")
    result = run_cli("build", str(path), "--tolerance", "0", check=False)
    assert result.returncode == 1
    assert "Parity check failed" in result.stderr and "FAIL" in result.stderr
    assert result.stdout == ""
    assert json.loads(run_cli("list", "--json").stdout) == []


def test_help_teaches():
    out = run_cli("build", "--help").stdout
    assert "--sample" in out and "Example" in out
