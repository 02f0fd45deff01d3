"""A Bento that declares no images or text never imports Pillow or tokenizers (cold start stays as it was);
an image Bento imports Pillow only on its first image."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from bento_compile.adapters.http_app import create_app
from bento_compile.runtimes.model import BentoModel
model = BentoModel.load(sys.argv[1])
create_app(sys.argv[1], load_mode="eager")
print(sorted(m for m in ("PIL", "tokenizers") if m in sys.modules))
"""


def test_tabular_bento_loads_without_pillow_or_tokenizers(built_example):
    result = subprocess.run([sys.executable, "-c", PROBE, str(built_example)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_image_bento_imports_pillow_only_for_an_image(image_example):
    _, bento = image_example
    result = subprocess.run([sys.executable, "-c", PROBE, str(bento)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
