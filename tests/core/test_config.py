from pathlib import Path

import pytest

from bento_compile.core.config import load_config
from bento_compile.core.errors import BentoCompileError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bento.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    config, folder = load_config(None)
    assert folder is None
    assert config.parity.tolerance == 1e-4 and config.parity.label_agreement == 1.0
    assert config.runtime.allow_missing is True


def test_full_file_parses(tmp_path):
    config, folder = load_config(write(tmp_path, """
name: churn
model: m.joblib
inputs: [{name: age, dtype: float32, shape: [-1, 1]}]
parity: {tolerance: 0.001}
runtime: {allow_missing: false, max_batch_rows: 8}
quantize: dynamic
targets: {lambda-zip: {memory: 1024}}
"""))
    assert folder == tmp_path
    assert config.name == "churn" and config.inputs[0].shape == [None, 1]
    assert config.runtime.allow_missing is False and config.runtime.max_batch_rows == 8
    assert config.targets["lambda-zip"]["memory"] == 1024


@pytest.mark.parametrize("text, named", [
    ("tolerence: 0.1\n", "unknown key 'tolerence'"),
    ("parity: {tolerence: 0.1}\n", "unknown key 'parity.tolerence'"),
    ("runtime: {max_batch_rows: 0}\n", "'runtime.max_batch_rows'"),
    ("name: Bad Name\n", "'name'"),
    ("inputs: [{name: x, dtype: complex, shape: [null]}]\n", "'inputs.0.dtype'"),
])
def test_invalid_files_name_the_key(tmp_path, text, named):
    with pytest.raises(BentoCompileError) as info:
        load_config(write(tmp_path, text))
    assert named in str(info.value)


def test_yaml_syntax_and_missing_file(tmp_path):
    with pytest.raises(BentoCompileError, match="not valid YAML"):
        load_config(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(BentoCompileError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
