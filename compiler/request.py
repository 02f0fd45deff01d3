"""What a build is asked to do: the model, bento.yaml and the CLI's overrides, shared by both builds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bento_compile.core.config import BentoConfig


@dataclass
class BuildRequest:
    model_path: Path | None
    config: BentoConfig
    config_dir: Path | None = None
    name: str | None = None
    sample_path: Path | None = None
    tolerance: float | None = None
    quantize: str | None = None  # overrides quantize.method (CLI --quantize)
    format: str | None = None  # overrides format (CLI --format)


def resolve_path(cli: Path | None, from_config: str | None, config_dir: Path | None) -> Path | None:
    """A path given on the command line wins; one from bento.yaml is relative to the file's folder."""
    if cli is not None:
        return Path(cli)
    if from_config:
        return (config_dir or Path.cwd()) / from_config
    return None
