"""The manifest's typed model, its generated JSON Schema, and the Bentos both builds write."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from bento_compile.compiler.build import BuildRequest, build
from bento_compile.compiler.manifest_schema import SCHEMA_FILE, manifest_schema, schema_text
from bento_compile.core.config import load_config
from bento_compile.core.store import BentoStore
from bento_compile.runtimes.errors import IntegrityError
from bento_compile.runtimes.manifest import MANIFEST_NAME, Manifest, parse_manifest, read_manifest
from tests.support import edge_support as es


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def native_bento(tmp_path_factory) -> Path:
    """An .ort file built as it is: the non-ONNX build (formats_build) writes this one."""
    ort_bento = es.tiny_bento(model_format="ort")
    config, _ = load_config(None)
    store = BentoStore(tmp_path_factory.mktemp("native-store"))
    return build(BuildRequest(ort_bento / "model.ort", config, None, name="tinyortin"), store).path


@pytest.fixture(scope="module")
def quantized_bento(tmp_path_factory) -> Path:
    """quantize: auto on a model int8 cannot touch: the table has measured rows and rows never made."""
    work = es.tiny_bento().parents[3]  # the folder holding tiny.joblib and sample.npy
    config, _ = load_config(None)
    store = BentoStore(tmp_path_factory.mktemp("quantized-store"))
    request = BuildRequest(work / "tiny.joblib", config, None, name="tinyq", sample_path=work / "sample.npy",
                           quantize="auto")
    return build(request, store).path


def test_checked_in_schema_is_the_generated_one():
    assert SCHEMA_FILE.is_file(), "run python -m bento_compile.compiler.manifest_schema --write"
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "schemas/bento-manifest.schema.json is out of date: run python -m bento_compile.compiler.manifest_schema "
        "--write and commit it")
    assert set(manifest_schema()["$defs"]) >= {"ModelInfo", "TensorSpec", "FileEntry", "RuntimeSettings"}


@pytest.mark.parametrize("which", ["sklearn", "onnx-build .ort", "native .ort", "quantized"])
def test_built_bentos_validate_and_round_trip(which, request, built_example, validator):
    bento = {"sklearn": lambda: built_example, "onnx-build .ort": lambda: es.tiny_bento(model_format="ort"),
             "native .ort": lambda: request.getfixturevalue("native_bento"),
             "quantized": lambda: request.getfixturevalue("quantized_bento")}[which]()
    text = (bento / MANIFEST_NAME).read_text(encoding="utf-8")
    data = json.loads(text)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]
    assert errors == []
    manifest = read_manifest(bento)
    # Everything the compiler writes is a known field, and writing it back gives the same bytes.
    assert manifest.extra == {} and manifest.model.extra == {} and manifest.runtime.extra == {}
    assert manifest.to_json() == text
    assert manifest.model_file in manifest.files and manifest.files[manifest.model_file].size > 0
    if which == "quantized":
        table = manifest.quantization
        assert table is not None and table.chosen == "fp32" and table.fp32_parity is not None
        rows = {row.variant: row for row in table.variants}
        assert rows["fp32"].chosen and "agreement" in rows["fp32"].extra  # the gate's measures, as written
        assert not rows["dynamic"].passed and "agreement" not in rows["dynamic"].extra  # never measured
    else:
        assert manifest.quantization is None and "quantization" not in data


def test_unknown_fields_from_a_newer_writer_are_kept(built_example, validator):
    data = json.loads((built_example / MANIFEST_NAME).read_text(encoding="utf-8"))
    data["lineage"] = {"datasets": [1, 2, 3]}  # a key no version knows yet
    data["model"]["postprocess"] = "softmax"
    data["model"]["inputs"][0]["units"] = "cm"
    assert list(validator.iter_errors(data)) == []  # the schema admits them too
    manifest = parse_manifest(data)
    assert manifest.extra == {"lineage": {"datasets": [1, 2, 3]}}
    assert manifest.model.extra == {"postprocess": "softmax"}
    assert manifest.inputs[0].extra == {"units": "cm"}
    assert manifest.to_dict() == data  # nothing lost on the way through
    assert Manifest.from_dict(manifest.to_dict()) == manifest


@pytest.mark.parametrize(("break_it", "named"), [
    (lambda d: d["model"]["inputs"][0].update(shape="wide"), "manifest.model.inputs[0].shape must be a list"),
    (lambda d: d["files"]["model.onnx"].update(size="12"), "size must be an integer"),
    (lambda d: d["model"].pop("file"), "manifest.model.file is missing"),
    (lambda d: d["runtime"].update(max_body_bytes=True), "manifest.runtime.max_body_bytes must be an integer"),
])
def test_a_malformed_manifest_is_refused_by_name_and_by_the_schema(break_it, named, built_example, validator):
    data = json.loads((built_example / MANIFEST_NAME).read_text(encoding="utf-8"))
    break_it(data)
    with pytest.raises(IntegrityError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_manifest(data)
    assert list(validator.iter_errors(data)), "the schema must refuse it as well"


def test_an_old_manifest_reads_its_defaults(built_example):
    """Bentos written before a field existed keep loading: every field with a default may be absent."""
    data = json.loads((built_example / MANIFEST_NAME).read_text(encoding="utf-8"))
    for key in ("runtime", "targets", "example", "source", "config_sha256", "versions", "created"):
        data.pop(key)
    data["model"].pop("format")
    data["model"].pop("batchable")
    manifest = parse_manifest(data)
    assert manifest.runtime.max_batch_rows == 1024 and manifest.model.batchable is True
    assert manifest.model.format is None and manifest.example is None and manifest.targets == {}
