"""Runs inside a Python that has TensorFlow (often its own venv): Keras / SavedModel → TFLite, and predictions.

Standalone on purpose: it imports only tensorflow, numpy and the standard
library, never bento_compile, so the compiler can drive TensorFlow's own
converter in a separate virtual environment (tensorflow-cpu is 1.6 GB
installed; it does not belong in every compiler install).

Usage: python tf_worker.py JOB.json. The job names a model (a `.keras` / `.h5`
file or a SavedModel folder), an output folder, and tasks:
  signature: write signature.json (inputs / outputs of the serving signature);
  convert:   write VARIANT.tflite for each of fp32, dynamic, int8, fp16
             (int8 = full-integer weights and activations, calibrated with the
             representative rows in `calibration` (.npy of the first input);
             the model's inputs and outputs stay float32);
  predict:   run the ORIGINAL model on `feeds` (.npz by input name) and write
             predictions.npz by output name.
Errors go to stderr as one line `ERROR: ...` and exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(job_path: str) -> int:
    import numpy as np
    import tensorflow as tf

    job = json.loads(Path(job_path).read_text())
    model_path, out = Path(job["model"]), Path(job["out_dir"])
    with tempfile.TemporaryDirectory(prefix="bento-tf-") as tmp:
        saved = _saved_model(tf, model_path, Path(tmp))
        loaded = tf.saved_model.load(str(saved))
        signature = loaded.signatures["serving_default"]
        _, input_specs = signature.structured_input_signature
        outputs = signature.structured_outputs
        in_names = sorted(input_specs)
        out_names = sorted(outputs)
        for task in job["tasks"]:
            if task == "signature":
                sig = {"inputs": [_spec(n, input_specs[n]) for n in in_names],
                       "outputs": [_spec(n, outputs[n]) for n in out_names],
                       "versions": {"tensorflow": tf.__version__}}
                (out / "signature.json").write_text(json.dumps(sig))
            elif task == "convert":
                for variant in job["variants"]:
                    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["serving_default"])
                    if variant == "dynamic":
                        converter.optimizations = [tf.lite.Optimize.DEFAULT]
                    elif variant == "fp16":
                        converter.optimizations = [tf.lite.Optimize.DEFAULT]
                        converter.target_spec.supported_types = [tf.float16]
                    elif variant == "int8":
                        calibration = np.load(job["calibration"], allow_pickle=False)
                        name = in_names[0]

                        def representative(rows=calibration, name=name):
                            for i in range(len(rows)):
                                yield {name: rows[i : i + 1]}

                        converter.optimizations = [tf.lite.Optimize.DEFAULT]
                        converter.representative_dataset = representative
                        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                    try:
                        (out / f"{variant}.tflite").write_bytes(converter.convert())
                    except Exception as exc:  # one variant failing is a result to report, not a crash
                        if variant == "fp32":
                            raise
                        message = f"{type(exc).__name__}: {exc}".strip().splitlines()
                        (out / f"{variant}.error").write_text(message[-1][:500] if message else "failed")
            elif task == "predict":
                feeds = np.load(job["feeds"], allow_pickle=False)
                result = signature(**{n: tf.constant(feeds[n]) for n in in_names})
                np.savez(out / "predictions.npz", **{n: result[n].numpy() for n in out_names})
    return 0


def _saved_model(tf, path: Path, tmp: Path) -> Path:
    """A SavedModel folder as it is; a Keras file exported to one (Keras 3's `model.export`)."""
    if path.is_dir():
        return path
    import keras

    model = keras.models.load_model(str(path), compile=False)
    target = tmp / "saved"
    if hasattr(model, "export"):
        model.export(str(target), verbose=False) if _accepts_verbose(model.export) else model.export(str(target))
    else:  # Keras 2 (tf-keras)
        tf.saved_model.save(model, str(target))
    return target


def _accepts_verbose(function) -> bool:
    import inspect

    try:
        return "verbose" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _spec(name: str, spec) -> dict:
    shape = [None if d is None else int(d) for d in spec.shape.as_list()] if spec.shape.rank is not None else []
    return {"name": name, "dtype": spec.dtype.name, "shape": shape}


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1]))
    except Exception as exc:  # one clear line for the compiler to show
        text = " | ".join(line.strip() for line in f"{type(exc).__name__}: {exc}".splitlines() if line.strip())
        print(f"ERROR: {text}"[:3000], file=sys.stderr)
        sys.exit(2)
