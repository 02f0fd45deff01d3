"""Strings from a manifest never become lines of code in a generated file.

Two layers, both tested: (1) a Bento whose tag holds a newline is refused where it is read, by every
target; (2) each renderer, handed a hostile value directly (as if the first check were gone), writes it
by its file's own rules — refused or escaped for systemd, one quoted word for the shell, YAML and JSON
through their serializers, one line in a Dockerfile — and the file parses back to the same structure."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from bento_compile.core.config import CloudRunTarget, KnativeTarget
from bento_compile.core.errors import BentoCompileError
from bento_compile.runtimes.errors import IntegrityError
from bento_compile.runtimes.manifest import read_manifest
from bento_compile.targets import render
from bento_compile.targets.cloudrun import cloudrun_service
from bento_compile.targets.docker_builder import dockerfile
from bento_compile.targets.edge import render_config_env, render_unit
from bento_compile.targets.images import plan_http_image
from bento_compile.targets.knative import dump_yaml, knative_service
from bento_compile.targets.lambda_zip import build_lambda_zip
from bento_compile.targets.oci_layout import ImageConfig
from bento_compile.targets.sam import sam_template
from tests.support.helpers import run_cli

INJECTED = "1\nExecStartPre=+/bin/sh -c 'touch /tmp/bento-pwned'"


@pytest.fixture
def hostile_bento(built_example, tmp_path) -> Path:
    bento = tmp_path / "hostile"
    shutil.copytree(built_example, bento)
    manifest = json.loads((bento / "manifest.json").read_text())
    manifest["version"] = INJECTED
    (bento / "manifest.json").write_text(json.dumps(manifest))
    return bento


@pytest.fixture
def hostile_manifest(built_example):
    """The parsed manifest with the injected version, as if reading had not refused it."""
    return dataclasses.replace(read_manifest(built_example), version=INJECTED)


def test_a_bento_whose_version_holds_a_newline_is_refused_on_reading(hostile_bento):
    with pytest.raises(IntegrityError, match="manifest version is") as exc:
        read_manifest(hostile_bento)
    assert "not allowed" in str(exc.value)


def test_target_edge_refuses_it_with_one_line(hostile_bento, tmp_path):
    result = run_cli("target", "edge", str(hostile_bento), "-o", str(tmp_path / "out"), check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "manifest version" in result.stderr.replace("\n", " ")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("build", [
    lambda bento, out: build_lambda_zip(bento, out_dir=out),
    lambda bento, out: plan_http_image(bento, str(out / "no-base-needed")),  # the manifest is read first
])
def test_every_other_target_reads_through_the_same_check(hostile_bento, tmp_path, build):
    with pytest.raises((IntegrityError, BentoCompileError), match="manifest version"):
        build(hostile_bento, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))


def test_systemd_unit_refuses_control_characters_and_escapes_specifiers():
    with pytest.raises(BentoCompileError, match="control character"):
        render_unit(f"cancer:{INJECTED}", "bento-cancer", "256M", "100%")
    with pytest.raises(BentoCompileError, match="CPUQuota"):
        render_unit("cancer:1", "bento-cancer", "256M", "100%\nExecStartPre=+/bin/true")
    with pytest.raises(BentoCompileError, match="MemoryMax"):
        render_unit("cancer:1", "bento-cancer", "256M\nUser=root", "100%")
    unit = render_unit("cancer:50%h", "bento-cancer", "256M", "100%").decode()
    settings = [line.split("=", 1)[0] for line in unit.splitlines() if line and not line.startswith(("#", "["))]
    assert settings.count("ExecStartPre") == 1 and "Description=cancer:50%%h model server" in unit


def test_config_env_keeps_values_to_plain_words():
    with pytest.raises(BentoCompileError, match="control character"):
        render_config_env(f"cancer:{INJECTED}", "127.0.0.1", 3000)
    with pytest.raises(BentoCompileError, match=r"cannot go into config\.env"):
        render_config_env("cancer:1", "127.0.0.1\nBENTO_COMPILE_LOAD=eager", 3000)
    text = render_config_env("cancer:1", "0.0.0.0", 8080).decode()
    assert [line for line in text.splitlines() if line and not line.startswith("#")][:2] == \
        ["HOST=0.0.0.0", "PORT=8080"]


def test_bundle_env_is_one_shell_word_whatever_the_value(tmp_path):
    hostile = "x'; touch " + str(tmp_path / "pwned") + "; echo '\n$(touch " + str(tmp_path / "pwned2") + ")"
    env = tmp_path / "bundle.env"
    env.write_text(render.shell_assign("TAG", hostile))
    out = subprocess.run(["sh", "-c", f". {env}; printf %s \"$TAG\""], capture_output=True, text=True, check=True)
    assert out.stdout == hostile
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_sam_template_is_yaml_that_parses_back_to_the_same_value(hostile_manifest):
    template = sam_template(hostile_manifest, "app.zip", "x86_64", "3.12")
    parsed = yaml.safe_load(yaml.safe_dump(template, sort_keys=False))
    assert parsed == template
    assert parsed["Resources"]["BentoFunction"]["Properties"]["Description"] == f"bento-compile: cancer:{INJECTED}"
    assert set(parsed) == {"AWSTemplateFormatVersion", "Transform", "Description", "Resources", "Outputs"}


@pytest.mark.parametrize("build", [
    lambda m: knative_service(m, "127.0.0.1:5000/x@sha256:" + "0" * 64, KnativeTarget())[0],
    lambda m: cloudrun_service(m, "127.0.0.1:5000/x@sha256:" + "0" * 64, CloudRunTarget())[0],
])
def test_service_yaml_parses_back_to_the_same_document(hostile_manifest, build):
    service = build(hostile_manifest)
    assert yaml.safe_load(dump_yaml(service)) == service
    assert service["metadata"]["labels"]["app.kubernetes.io/version"] == INJECTED  # data, not a new key


def test_dockerfile_keeps_every_value_on_its_own_instruction():
    config = ImageConfig(env={"BENTO_COMPILE_BENTO": "/opt/bento\nRUN touch /pwned"}, entrypoint=["python3"],
                         cmd=["-m", "x"], workdir="/opt", user="65532",
                         labels={"dev.bento-compile.bento.tag": f"cancer:{INJECTED}"})
    plan = SimpleNamespace(kind="http", arch="x86_64", python="3.12", config=config,
                           layers=[SimpleNamespace(name=f"Bento cancer:{INJECTED}")])
    text = dockerfile(plan, "base:1")  # type: ignore[arg-type]
    instructions = [line.split(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert instructions == ["FROM", "COPY", "ENV", "LABEL", "WORKDIR", "USER", "STOPSIGNAL", "ENTRYPOINT", "CMD"]
    assert "RUN" not in instructions and "ExecStartPre" not in "".join(
        line for line in text.splitlines() if not line.startswith(("#", "LABEL")))
    bad = dataclasses.replace(config, env={"X=1\nRUN id #": "v"})
    with pytest.raises(BentoCompileError, match="environment variable name"):
        dockerfile(SimpleNamespace(**{**vars(plan), "config": bad}), "base:1")  # type: ignore[arg-type]


def test_placeholders_are_filled_in_one_pass():
    assert render.fill("@TAG@ @HOST@ @PREFIX@", {"TAG": "@HOST@", "HOST": "h"}) == "@HOST@ h @PREFIX@"
