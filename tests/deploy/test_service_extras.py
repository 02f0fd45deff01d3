"""The Cloud Run and Knative clients are optional extras: without them the CLI still loads, and deploying
says which extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bento_compile.core.errors import BentoCompileError

BLOCK = ("import sys\n"
         "for name in ('google.cloud.run_v2', 'google.auth', 'kubernetes'):\n"
         "    sys.modules[name] = None  # an import of a None entry raises ImportError: as if not installed\n")


def test_the_cli_loads_without_the_platform_clients():
    code = BLOCK + "from bento_compile.cli import main\nmain()\n"
    for platform in ("cloudrun", "knative"):
        result = subprocess.run([sys.executable, "-c", code, "deploy", platform, "--help"], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "--canary" in result.stdout and "--rollback" in result.stdout


@pytest.mark.parametrize(("module", "blocked", "extra"), [
    ("bento_compile.deploy.cloudrun", "google.cloud.run_v2", "bento-compile[gcp]"),
    ("bento_compile.deploy.knative", "kubernetes", "bento-compile[k8s]"),
])
def test_deploying_without_the_client_names_the_extra(module, blocked, extra, monkeypatch):
    import importlib

    monkeypatch.setitem(sys.modules, blocked, None)
    parent, _, child = blocked.rpartition(".")
    if parent and hasattr(sys.modules.get(parent), child):  # imported earlier: `from parent import child` finds it
        monkeypatch.delattr(sys.modules[parent], child)
    connect = importlib.import_module(module).connect
    with pytest.raises(BentoCompileError, match="which is not installed") as info:
        connect(None, None) if module.endswith("cloudrun") else connect(None)
    assert extra in info.value.fix
