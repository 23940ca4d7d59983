"""Export a fit RUN_DIR (model.keras, run.json, calibration.npz) to NAME.tflite + NAME.json.

The converted model is scored on the held-out windows through daemon.model, the daemon's own
runner, before anything is written; an export losing more than 2 accuracy points is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import structlog

from daemon.constants import N_BINS
from daemon.errors import DataError, ModelError
from daemon.features import apply_transform
from daemon.model import Model
from daemon.model_meta import ANOMALOUS, FORMAT, QUANTIZATIONS
from train import metrics

log = structlog.get_logger(__name__)

MAX_ACCURACY_DROP: Final = 0.02
"""Refuse an export whose held-out accuracy is more than 2 points below the Keras float model's."""

_RUN_FILE: Final = "run.json"
_MODEL_FILE: Final = "model.keras"
_CALIBRATION_FILE: Final = "calibration.npz"
_KERAS_BATCH: Final = 256
_FILE_MODE: Final = 0o644


class AccuracyLossError(ModelError):
    """The converted model scores the held-out windows too differently from the Keras model."""


@dataclass(frozen=True)
class ExportReport:
    """What export_tflite wrote and how the converted model compares with the Keras one."""

    tflite_path: Path
    json_path: Path
    name: str
    quantization: str
    size_bytes: int
    sha256: str
    threshold: float
    n_heldout: int
    keras_accuracy: float
    tflite_accuracy: float
    max_abs_score_diff: float
    """Largest |P_keras - P_tflite| over the held-out windows."""
    runtime: str
    """The TFLite runtime daemon.model used for the check."""
    metadata: dict[str, Any]

    def summary(self) -> str:
        """A few lines for a person at a terminal."""
        return "\n".join(
            [
                f"wrote {self.tflite_path} ({self.size_bytes / 1024:.1f} KiB, {self.quantization})"
                f" and {self.json_path.name}",
                f"held-out windows: {self.n_heldout}, threshold {self.threshold:.3f}",
                f"accuracy: keras {self.keras_accuracy:.4f}, tflite {self.tflite_accuracy:.4f}"
                f" (via {self.runtime})",
                f"max |score difference|: {self.max_abs_score_diff:.4f}",
            ]
        )


@dataclass(frozen=True)
class _Run:
    dir: Path
    doc: dict[str, Any]
    representative: np.ndarray
    heldout_features: np.ndarray
    heldout_labels: np.ndarray
    heldout_files: np.ndarray

    @property
    def transform(self) -> str:
        return str(self.doc["features"]["transform"])

    @property
    def threshold(self) -> float:
        return float(self.doc["threshold"])


def export_tflite(
    run_dir: Path | str,
    out: Path | str,
    *,
    quantize: str = "int8",
    name: str | None = None,
) -> ExportReport:
    """Convert RUN_DIR's Keras model to `out` (NAME.tflite) + NAME.json, checked before writing.

    quantize: "int8" (full-integer, int8 input/output, calibrated on calibration.npz
    `representative`), "float16" (float16 weights, float32 input/output) or "none" (float32).
    name: the model name in the metadata; defaults to the file stem of `out`.
    Raises ModelError/DataError for an unusable RUN_DIR or `out`, AccuracyLossError when the
    converted model's held-out accuracy is more than MAX_ACCURACY_DROP below the Keras model's.
    """
    if quantize not in QUANTIZATIONS:
        raise ModelError(f"export: --quantize {quantize!r} is unknown ({', '.join(QUANTIZATIONS)})")
    out = Path(out)
    if out.suffix != ".tflite":
        raise ModelError(
            f"export: output {out} must end in .tflite (NAME.json is written beside it)"
        )
    if not out.parent.is_dir():
        raise ModelError(f"export: output folder {out.parent} does not exist")
    name = name or out.stem
    run = _read_run(Path(run_dir))

    _, keras = import_tensorflow()
    try:
        keras_model = keras.models.load_model(run.dir / _MODEL_FILE)
    except Exception as exc:  # Keras raises many types for a bad file; all mean "cannot load"
        raise ModelError(f"export: {run.dir / _MODEL_FILE} cannot be loaded: {exc}") from None

    representative = _transformed(run.transform, run.representative)
    content = convert(keras_model, quantize, representative)
    keras_scores = _keras_scores(
        keras_model, run, _transformed(run.transform, run.heldout_features)
    )

    metadata = _metadata(run, name=name, quantize=quantize, content=content)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as tmp:
        # Write a complete candidate and load it exactly as the daemon would.
        candidate = Path(tmp) / f"{name}.tflite"
        candidate.write_bytes(content)
        candidate.with_suffix(".json").write_text(json.dumps(metadata), encoding="utf-8")
        runner = Model.load(candidate, expected_features=run.doc["features"])
        tflite_scores = np.asarray(runner.score(run.heldout_features), dtype=np.float64)

    keras_metrics = metrics.compute(run.heldout_labels, keras_scores, run.threshold)
    window_metrics = metrics.compute(run.heldout_labels, tflite_scores, run.threshold)
    max_diff = float(np.max(np.abs(keras_scores - tflite_scores)))
    log.info(
        "export_checked",
        quantization=quantize,
        windows=len(tflite_scores),
        keras_accuracy=keras_metrics["accuracy"],
        tflite_accuracy=window_metrics["accuracy"],
        max_abs_score_diff=round(max_diff, 5),
    )
    check_accuracy(keras_metrics["accuracy"], window_metrics["accuracy"], quantize=quantize)

    file_labels, file_scores = metrics.per_file(
        run.heldout_files, run.heldout_labels, tflite_scores
    )
    metadata["metrics"] = {
        "window": window_metrics,
        "file": metrics.compute(file_labels, file_scores, run.threshold),
        "keras_window_accuracy": keras_metrics["accuracy"],
        "max_abs_score_diff_vs_keras": max_diff,
    }
    json_path = out.with_suffix(".json")
    # The .tflite first: a reader that sees the new file with the old json refuses it on sha256.
    _atomic_write(out, content)
    _atomic_write(json_path, (json.dumps(metadata, indent=2) + "\n").encode("utf-8"))
    return ExportReport(
        tflite_path=out,
        json_path=json_path,
        name=name,
        quantization=quantize,
        size_bytes=len(content),
        sha256=metadata["sha256"],
        threshold=run.threshold,
        n_heldout=len(tflite_scores),
        keras_accuracy=keras_metrics["accuracy"],
        tflite_accuracy=window_metrics["accuracy"],
        max_abs_score_diff=max_diff,
        runtime=runner.runtime,
        metadata=metadata,
    )


def check_accuracy(keras_accuracy: float, tflite_accuracy: float, *, quantize: str) -> None:
    """Raise AccuracyLossError when tflite_accuracy < keras_accuracy - MAX_ACCURACY_DROP."""
    # A small epsilon so that exactly 2 points (e.g. 0.98 vs 1.00) is not refused by float rounding.
    if keras_accuracy - tflite_accuracy > MAX_ACCURACY_DROP + 1e-9:
        raise AccuracyLossError(
            f"export refused: {quantize} TFLite accuracy {tflite_accuracy:.4f} is"
            f" {100 * (keras_accuracy - tflite_accuracy):.1f} points below the Keras model's"
            f" {keras_accuracy:.4f} on the held-out windows (limit"
            f" {100 * MAX_ACCURACY_DROP:.0f}); try --quantize float16, or a log transform"
        )


def _read_run(run_dir: Path) -> _Run:
    """run.json + calibration.npz, checked for what export needs."""
    if not run_dir.is_dir():
        raise DataError(f"export: run folder {run_dir} does not exist")
    doc = _read_run_json(run_dir / _RUN_FILE)
    arrays = _read_calibration(run_dir / _CALIBRATION_FILE)
    return _Run(
        dir=run_dir,
        doc=doc,
        representative=arrays["representative"].astype(np.float32),
        heldout_features=arrays["heldout_features"].astype(np.float32),
        heldout_labels=arrays["heldout_labels"].astype(np.int64),
        heldout_files=arrays["heldout_files"].astype(str),
    )


def _read_run_json(path: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"export: {path} is missing (is {path.parent} a fit output?)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"export: {path} cannot be read: {exc}") from None
    for key in ("features", "classes", "output", "threshold", "window_s", "trained_on"):
        if key not in doc:
            raise DataError(f"export: {path} has no {key!r}")
    if "transform" not in doc["features"]:
        raise DataError(f"export: {path} has no 'features.transform'")
    if ANOMALOUS not in doc["classes"]:
        raise DataError(f"export: {path} classes {doc['classes']!r} lack {ANOMALOUS!r}")
    return doc


def _read_calibration(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise DataError(f"export: {path} is missing") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"export: {path} cannot be read: {exc}") from None
    wanted = ("representative", "heldout_features", "heldout_labels", "heldout_files")
    missing = [key for key in wanted if key not in arrays]
    if missing:
        raise DataError(f"export: {path} lacks {', '.join(missing)}")
    for key in ("representative", "heldout_features"):
        shape = arrays[key].shape
        if len(shape) != 2 or shape[1] != N_BINS or shape[0] == 0:
            raise DataError(f"export: {path} {key} has shape {shape}, want (N>0, {N_BINS})")
    n = arrays["heldout_features"].shape[0]
    if arrays["heldout_labels"].shape != (n,) or arrays["heldout_files"].shape != (n,):
        raise DataError(f"export: {path} heldout arrays disagree in length")
    return arrays


def import_tensorflow() -> tuple[Any, Any]:
    """Import TensorFlow and Keras with their INFO/WARNING chatter off; errors still print."""
    # 2 = drop C++ INFO and WARNING, keep ERROR; setdefault lets a user ask for more.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # heavy: imported only when export runs
    from tensorflow import keras

    tf.get_logger().setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass  # absl is a TensorFlow dependency; without it there is nothing to quiet
    return tf, keras


def _transformed(transform: str, raw: np.ndarray) -> np.ndarray:
    return np.asarray(apply_transform(transform, raw), dtype=np.float32)


def convert(keras_model: Any, quantize: str, representative: np.ndarray) -> bytes:
    """Keras -> SavedModel -> TFLiteConverter -> .tflite bytes, without any check.

    The SavedModel route keeps int8 calibration working across TF/Keras versions.
    `representative`: TRANSFORMED feature rows (N, 513) for int8 calibration; unused otherwise.
    """
    tf, _ = import_tensorflow()
    if quantize == "int8" and len(representative) == 0:
        raise DataError("export: int8 needs representative windows for calibration, got none")
    with tempfile.TemporaryDirectory(prefix="corona-export-") as saved:
        keras_model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantize == "int8":

            def representative_dataset() -> Iterator[list[np.ndarray]]:
                for row in representative:
                    yield [row[np.newaxis, :]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative_dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        elif quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        try:
            content: bytes = converter.convert()
        except Exception as exc:  # the converter raises ConverterError and others
            raise ModelError(f"export: TFLite conversion ({quantize}) failed: {exc}") from None
    return content


def _keras_scores(keras_model: Any, run: _Run, transformed: np.ndarray) -> np.ndarray:
    """P(anomalous) from the Keras model, read the same way daemon.model reads the TFLite output."""
    out = np.asarray(keras_model.predict(transformed, batch_size=_KERAS_BATCH, verbose=0))
    column = run.doc["classes"].index(ANOMALOUS) if run.doc["output"] == "softmax" else 0
    return out.reshape(len(transformed), -1)[:, column].astype(np.float64)


def _metadata(run: _Run, *, name: str, quantize: str, content: bytes) -> dict[str, Any]:
    """NAME.json per DESIGN.md; `metrics` is filled in once the candidate has been scored."""
    return {
        "format": FORMAT,
        "name": name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "sha256": hashlib.sha256(content).hexdigest(),
        "classes": list(run.doc["classes"]),
        "output": run.doc["output"],
        "features": dict(run.doc["features"]),
        "window_s": float(run.doc["window_s"]),
        "threshold": run.threshold,
        "quantization": quantize,
        "metrics": {},
        "trained_on": run.doc["trained_on"],
    }


def _atomic_write(path: Path, data: bytes) -> None:
    """Write beside `path`, fsync, then rename over it: readers see the old or the new file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; the daemon may run as another user
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
