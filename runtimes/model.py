"""A loaded Bento: verified files, a backend session, and predict() on JSON-shaped inputs.

`ModelHolder` owns the loading policy (eager, lazy, background) so that every
adapter — HTTP, Lambda, edge — shares one way to answer "is the model ready?".
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from bento_compile.runtimes.backends import Backend, open_backend
from bento_compile.runtimes.errors import NotReady
from bento_compile.runtimes.manifest import Manifest, read_manifest, verify_files
from bento_compile.runtimes.row_format import instances_request, predictions
from bento_compile.runtimes.tensors import decode_inputs, encode_outputs
from bento_compile.runtimes.trust import enforce_trust

log = logging.getLogger("bento_compile.runtime")

LOAD_MODES = ("eager", "lazy", "background")


class BentoModel:
    """A Bento whose files passed their hash check, ready to predict."""

    def __init__(self, bento_dir: Path, manifest: Manifest, backend: Backend, load_seconds: float):
        self.bento_dir = bento_dir
        self.manifest = manifest
        self.backend = backend
        self.load_seconds = load_seconds
        # Images, text, labels and handler.py around the run (runtimes/serving_pipeline.py), when declared.
        self.pipeline: Any = None
        if manifest.pipeline is not None:
            from bento_compile.runtimes.serving_pipeline import ServingPipeline

            self.pipeline = ServingPipeline(bento_dir, manifest)

    @classmethod
    def load(cls, bento_dir: str | Path) -> BentoModel:
        """Read the manifest, verify every file's sha256, then open the session."""
        started = time.perf_counter()
        root = Path(bento_dir)
        manifest = read_manifest(root)
        enforce_trust(root, manifest)  # signature check when a public key is configured
        verify_files(root, manifest)
        backend = open_backend(root, manifest)
        elapsed = time.perf_counter() - started
        log.info("loaded %s in %.3fs (providers: %s)", manifest.tag, elapsed, ",".join(backend.providers))
        return cls(root, manifest, backend, elapsed)

    def predict(self, payload: Any) -> dict[str, Any]:
        """Validate `{"inputs": ...}` and return `{"outputs": {...}}` as JSON-ready lists (or, for the row
        format's `{"instances": [...]}`, `{"predictions": [...]}`: runtimes/row_format.py)."""
        if self.pipeline is not None:
            pipeline_feeds, _rows = self.pipeline.decode(payload)
            return self.pipeline.answer(self.backend.run(pipeline_feeds), payload)
        rowwise = instances_request(payload, self.manifest)
        feeds, _rows = decode_inputs(rowwise or payload, self.manifest.inputs, self.manifest.runtime,
                                     self.manifest.model.feature_names)
        outputs = self.backend.run(feeds)
        return predictions(outputs) if rowwise is not None else {"outputs": encode_outputs(outputs)}

    def metadata(self) -> dict[str, Any]:
        return {
            "tag": self.manifest.tag,
            "name": self.manifest.name,
            "version": self.manifest.version,
            # `batch` per tensor: rows along the shared batch axis, or a whole tensor sent as it is.
            "inputs": [{**s.to_dict(), "batch": s.batched} for s in self.manifest.inputs],
            "outputs": [{**s.to_dict(), "batch": s.batched} for s in self.manifest.outputs],
            "batchable": self.manifest.batchable,
            "versions": {**self.manifest.versions, **getattr(self.backend, "runtime_versions", {})},
            "providers": self.backend.providers,
            "parity": self.manifest.parity.passed,
            "load_seconds": round(self.load_seconds, 4),
        }


class ModelHolder:
    """Loads a Bento once, by policy, and hands it to whoever asks when it is ready.

    eager: load now, in the caller's thread (Lambda init, `serve`).
    lazy: load on the first `get()`.
    background: start loading now in a thread; `get()` waits for it.
    A failed load is remembered and re-raised to every caller (never retried in a
    loop), so a corrupted Bento fails fast and loudly.
    """

    def __init__(self, bento_dir: str | Path, mode: str = "eager"):
        if mode not in LOAD_MODES:
            raise ValueError(f"load mode must be one of {LOAD_MODES}, got {mode!r}")
        self.bento_dir = Path(bento_dir)
        self.mode = mode
        self._model: BentoModel | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        if mode == "eager":
            self._load()
        elif mode == "background":
            threading.Thread(target=self._load, name="bento-load", daemon=True).start()

    def _load(self) -> None:
        with self._lock:
            if self._done.is_set():
                return
            try:
                self._model = BentoModel.load(self.bento_dir)
            except BaseException as exc:
                self._error = exc
                log.error("model load failed: %s", exc)
            finally:
                self._done.set()

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def error(self) -> BaseException | None:
        return self._error

    def get(self, timeout: float | None = None) -> BentoModel:
        """The loaded model; loads it now in lazy mode; waits in background mode."""
        if self._model is not None:
            return self._model
        if self.mode == "lazy":
            self._load()
        elif not self._done.wait(timeout):
            raise NotReady("the model is still loading; retry shortly")
        if self._model is None:
            raise NotReady(f"the model failed to load: {self._error}")
        return self._model
