"""Export a fit RUN_DIR (model.keras, run.json, calibration.npz) to NAME.tflite + NAME.json.

Before anything is written, the converted model is scored through daemon.analyse.model (the daemon's
own runner) on every window the run has (training and test) and compared with the Keras
model: it is refused only on a real loss (`check_parity`): window ROC-AUC more than
`MAX_AUC_DROP` lower, or accuracy lower by more than `MAX_ACCURACY_DROP` and at least
`MIN_WINDOWS_LOST` windows. The statistic and the number of windows are in every message.
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

from daemon.analyse import model_meta
from daemon.analyse.featurespec import FeatureSpec
from daemon.analyse.model import Model
from daemon.analyse.model_meta import QUANTIZATIONS, score_column
from daemon.errors import DataError, ModelError
from train import metrics
from train.runrecord import MODEL_FILE, Calibration, RunRecord

log = structlog.get_logger(__name__)

MAX_ACCURACY_DROP: Final = 0.02
"""Refuse when accuracy over all windows falls more than 2 points below the Keras model's ..."""

MIN_WINDOWS_LOST: Final = 3
"""... and at least this many more windows are wrong (one flipped window of 7 is not a loss)."""

MAX_AUC_DROP: Final = 0.01
"""Refuse when window ROC-AUC over all windows falls more than this below the Keras model's."""

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
    n_compared: int
    """Windows (training and test) the TFLite model was compared with Keras on."""
    keras_accuracy: float
    tflite_accuracy: float
    keras_auc: float | None
    tflite_auc: float | None
    max_abs_score_diff: float
    """Largest |P_keras - P_tflite| over the compared windows."""
    mean_abs_score_diff: float
    runtime: str
    """The TFLite runtime daemon.analyse.model used for the check."""
    metadata: dict[str, Any]

    def summary(self) -> str:
        """A few lines for a person at a terminal."""
        return "\n".join(
            [
                f"wrote {self.tflite_path} ({self.size_bytes / 1024:.1f} KiB, {self.quantization})"
                f" and {self.json_path.name}",
                f"compared with Keras on {self.n_compared} windows (training and test),"
                f" threshold {self.threshold:.3f}",
                f"accuracy: keras {self.keras_accuracy:.4f}, tflite {self.tflite_accuracy:.4f};"
                f" ROC-AUC: keras {_fmt(self.keras_auc)}, tflite {_fmt(self.tflite_auc)}"
                f" (via {self.runtime})",
                f"|score difference|: mean {self.mean_abs_score_diff:.4f},"
                f" max {self.max_abs_score_diff:.4f}",
            ]
        )


@dataclass(frozen=True)
class _Run:
    """A RUN_DIR as export uses it: the record and the calibration arrays."""

    dir: Path
    record: RunRecord
    calibration: Calibration

    @property
    def spec(self) -> FeatureSpec:
        return self.record.spec

    @property
    def threshold(self) -> float:
        return self.record.threshold


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
        keras_model = keras.models.load_model(run.dir / MODEL_FILE)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file; all mean "cannot load"
        raise ModelError(f"export: {run.dir / MODEL_FILE} cannot be loaded: {exc}") from None

    cal = run.calibration
    representative = run.spec.model_input(cal.representative)
    if run.record.gain_invariant:
        representative = with_gain_range(run.spec, representative)
    content = convert(keras_model, quantize, representative)
    keras_all = _keras_scores(keras_model, run, run.spec.model_input(cal.all_features))

    metadata = _metadata(run, name=name, quantize=quantize, content=content)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as tmp:
        # Write a complete candidate and load it exactly as the daemon would.
        candidate = Path(tmp) / f"{name}.tflite"
        candidate.write_bytes(content)
        candidate.with_suffix(".json").write_text(json.dumps(metadata), encoding="utf-8")
        runner = Model.load(candidate)
        tflite_all = runner.score_batch(cal.all_features).astype(np.float64)
        tflite_scores = runner.score_batch(cal.heldout_features).astype(np.float64)

    keras_metrics = metrics.compute(cal.all_labels, keras_all, run.threshold)
    all_metrics = metrics.compute(cal.all_labels, tflite_all, run.threshold)
    window_metrics = metrics.compute(cal.heldout_labels, tflite_scores, run.threshold)
    differences = np.abs(keras_all - tflite_all)
    max_diff = float(np.max(differences))
    log.info(
        "export_checked",
        quantization=quantize,
        windows=len(tflite_all),
        keras_accuracy=keras_metrics["accuracy"],
        tflite_accuracy=all_metrics["accuracy"],
        keras_auc=keras_metrics["roc_auc"],
        tflite_auc=all_metrics["roc_auc"],
        max_abs_score_diff=round(max_diff, 5),
    )
    check_parity(keras_metrics, all_metrics, quantize=quantize)

    file_labels, file_scores = metrics.per_file(
        cal.heldout_files, cal.heldout_labels, tflite_scores
    )
    metadata["metrics"] = {
        "window": window_metrics,
        "file": metrics.compute(file_labels, file_scores, run.threshold),
        "keras_window_accuracy": keras_metrics["accuracy"],
        "max_abs_score_diff_vs_keras": max_diff,
        "parity": {
            "windows": len(tflite_all),
            "keras": {k: keras_metrics[k] for k in ("accuracy", "roc_auc")},
            "tflite": {k: all_metrics[k] for k in ("accuracy", "roc_auc")},
            "mean_abs_score_diff": float(np.mean(differences)),
            "max_abs_score_diff": max_diff,
        },
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
        n_compared=len(tflite_all),
        keras_accuracy=keras_metrics["accuracy"],
        tflite_accuracy=all_metrics["accuracy"],
        keras_auc=keras_metrics["roc_auc"],
        tflite_auc=all_metrics["roc_auc"],
        max_abs_score_diff=max_diff,
        mean_abs_score_diff=float(np.mean(differences)),
        runtime=runner.runtime,
        metadata=metadata,
    )


def check_parity(keras: dict[str, Any], tflite: dict[str, Any], *, quantize: str) -> None:
    """Raise AccuracyLossError when the converted model really scores worse than Keras.

    `keras` and `tflite` are train.metrics.compute results on the same windows (all of the
    run's, training and test). A loss is real when ROC-AUC falls by more than MAX_AUC_DROP, or
    accuracy by more than MAX_ACCURACY_DROP *and* by at least MIN_WINDOWS_LOST windows.
    """
    n = int(tflite["n"])
    advice = (
        "retrain on more files (calibration and this check use the run's windows), or export"
        " with --quantize float16 (float weights, about twice the size)"
    )
    keras_auc, tflite_auc = keras["roc_auc"], tflite["roc_auc"]
    # A small epsilon so that exactly the limit (e.g. 0.98 vs 1.00) is not refused by rounding.
    if keras_auc is not None and tflite_auc is not None:
        limit = max(MAX_AUC_DROP, auc_standard_error(keras_auc, keras["confusion"]))
        if keras_auc - tflite_auc > limit + 1e-9:
            raise AccuracyLossError(
                f"export refused: {quantize} TFLite window ROC-AUC {tflite_auc:.4f} is"
                f" {keras_auc - tflite_auc:.4f} below the Keras model's {keras_auc:.4f} over"
                f" {n} windows (training and test; limit {limit:.4f}: {MAX_AUC_DROP} or the"
                f" AUC's standard error on this many windows, the larger); {advice}"
            )
    drop = float(keras["accuracy"]) - float(tflite["accuracy"])
    windows_lost = round(drop * n)
    if drop > MAX_ACCURACY_DROP + 1e-9 and windows_lost >= MIN_WINDOWS_LOST:
        raise AccuracyLossError(
            f"export refused: {quantize} TFLite accuracy {tflite['accuracy']:.4f} is"
            f" {100 * drop:.1f} points ({windows_lost} of {n} windows) below the Keras model's"
            f" {keras['accuracy']:.4f} over all windows (training and test; limit"
            f" {100 * MAX_ACCURACY_DROP:.0f} points and {MIN_WINDOWS_LOST} windows); {advice}"
        )


LOG_INPUT_RANGE: Final = (-10.0, 3.0)
"""log10 row means the int8 input must represent: the transform's floor (digital silence) up
to full-scale noise (about 2.6); louder single tones clip at the top, which only a near-clipping
input reaches (the sensor check flags those windows anyway)."""


def with_gain_range(spec: FeatureSpec, representative: np.ndarray) -> np.ndarray:
    """Calibration rows plus two gain-shifted copies spanning `LOG_INPUT_RANGE`.

    int8 calibration sets the input scale from the rows it sees; a microphone quieter than any
    training window would fall below that scale and be clipped to its floor. A gain shift
    adds one constant to every log10 row mean and leaves the physics values alone, so the copies
    are realistic inputs of a quieter and a louder microphone: for gain-free models (the
    default and rowmeans presets) everything after the input layer sees the same values.
    """
    if spec.transform != "log10_power_mean" or len(representative) == 0:
        return representative
    means = representative[:, : spec.n_bins]
    low, high = LOG_INPUT_RANGE
    quieter = representative.copy()
    quieter[:, : spec.n_bins] += low - float(means.min())
    louder = representative.copy()
    louder[:, : spec.n_bins] += high - float(means.max())
    louder[:, : spec.n_bins] = np.maximum(louder[:, : spec.n_bins], low)
    return np.concatenate([representative, quieter, louder]).astype(np.float32)


def auc_standard_error(auc: float, confusion: list[list[int]]) -> float:
    """Hanley & McNeil's (1982) standard error of a ROC-AUC with this many windows per class:
    on a few dozen windows an AUC moves by more than 0.01 from one swapped pair of windows."""
    n_neg = confusion[0][0] + confusion[0][1]
    n_pos = confusion[1][0] + confusion[1][1]
    if n_pos == 0 or n_neg == 0:
        return 1.0
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)
    ) / (n_pos * n_neg)
    return float(np.sqrt(max(variance, 0.0)))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _read_run(run_dir: Path) -> _Run:
    """run.json + calibration.npz (train.runrecord), checked for what export needs."""
    if not run_dir.is_dir():
        raise DataError(f"export: run folder {run_dir} does not exist")
    try:
        record = RunRecord.read(run_dir)
        calibration = Calibration.read(run_dir, record.spec.width)
    except DataError as exc:
        raise DataError(f"export: {exc}") from None
    return _Run(dir=run_dir, record=record, calibration=calibration)


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


def convert(keras_model: Any, quantize: str, representative: np.ndarray) -> bytes:
    """Keras -> SavedModel -> TFLiteConverter -> .tflite bytes, without any check.

    The SavedModel route keeps int8 calibration working across TF/Keras versions.
    `representative`: model-input rows (FeatureSpec.model_input) for int8 calibration; unused
    otherwise.
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
        except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError and others
            raise ModelError(f"export: TFLite conversion ({quantize}) failed: {exc}") from None
    return content


def _keras_scores(keras_model: Any, run: _Run, transformed: np.ndarray) -> np.ndarray:
    """P(anomalous) from the Keras model, read the same way daemon.analyse.model reads the TFLite
    output."""
    out = np.asarray(keras_model.predict(transformed, batch_size=_KERAS_BATCH, verbose=0))
    column = score_column(run.record.classes, run.record.output)
    return out.reshape(len(transformed), -1)[:, column].astype(np.float64)


def _metadata(run: _Run, *, name: str, quantize: str, content: bytes) -> dict[str, Any]:
    """NAME.json (model_meta.document); `metrics` is filled in once the candidate has been
    scored. A one-class run adds `kind` and its `one_class` block (the threshold rule)."""
    record = run.record
    return model_meta.document(
        name=name,
        sha256=hashlib.sha256(content).hexdigest(),
        classes=record.classes,
        output=record.output,
        spec=record.spec,
        threshold=record.threshold,
        quantization=quantize,
        trained_on=record.trained_on,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        kind=record.kind,
        one_class=record.one_class,
    )


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
