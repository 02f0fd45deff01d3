"""What the Spark engine's two paths share: the Bento shipped to executors once (a SparkContext archive),
and each Python worker's one scorer, opened from it after every hash is checked and kept across tasks."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

from bento_compile.batch.bento import bento_archive
from bento_compile.batch.scorer import ScoreOptions, Scorer
from bento_compile.runtimes.errors import IntegrityError

_ARCHIVES: dict[tuple[int, str], str] = {}  # (SparkContext, Bento version) → archive name, on the driver
_SCORERS: dict[str, Scorer] = {}  # archive name → the Python worker's scorer, kept across tasks


def ship(sc: Any, bento_dir: Path, version: str) -> str:
    """Add the Bento to the SparkContext as an archive, once per context and version."""
    key = (id(sc), version)
    if key not in _ARCHIVES:
        name = f"bento-{version}-{uuid.uuid4().hex[:6]}"
        folder = Path(tempfile.mkdtemp(prefix="bento-compile-spark-"))
        path = folder / f"{name}.tar.gz"
        path.write_bytes(bento_archive(bento_dir))
        sc.addArchive(str(path))
        _ARCHIVES[key] = f"{name}.tar.gz"
    return _ARCHIVES[key]


def executor_scorer(archive: str, version: str, options: ScoreOptions, threads: int) -> Scorer:
    """Runs in the executor's Python worker: its one scorer for this Bento (opened on the first task)."""
    scorer = _SCORERS.get(archive)
    if scorer is None:
        from pyspark import SparkFiles

        folder = Path(SparkFiles.get(archive))
        scorer = Scorer(folder, options, threads)  # every file's sha256 checked against the manifest
        if scorer.manifest.version != version:
            raise IntegrityError(f"the executor's copy of the Bento is version {scorer.manifest.version}, "
                                 f"the driver asked for {version}")
        _SCORERS[archive] = scorer
    elif scorer.options != options:
        scorer = Scorer(scorer.bento.path, options, threads)
        _SCORERS[archive] = scorer
    return scorer
