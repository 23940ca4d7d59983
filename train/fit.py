"""`corona-train fit`: labelled WAVs in, a trained Keras model and its evidence out (RUN_DIR).

Split by file (train/splits.py); the test part is never seen before the final evaluation. With
--cv, repeated stratified K-fold over files reports every metric's mean and 95 % interval.
RUN_DIR layout: README, "RUN_DIR" (model.keras, run.json, calibration.npz, metrics.json, plots/).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import keras
import numpy as np
import structlog
import tensorflow as tf

from daemon.analyse.featurespec import FeatureSpec
from daemon.analyse.model_meta import score_column
from daemon.analyse.physics import LineSetting
from daemon.errors import DataError
from train import data, featurize, metrics, splits
from train import plots as plotting
from train.presets import Preset, augment_eq, build_model
from train.runrecord import METRICS_FILE, MODEL_FILE, Calibration, RunRecord, write_json
from train.scoring import choose_threshold, evaluate, interval

log = structlog.get_logger(__name__)

REPRESENTATIVE_MAX: Final = 2000
"""At most this many training windows calibrate int8 (all of them in small runs)."""

METRIC_NAMES: Final = ("accuracy", "roc_auc", "pauc", "precision", "recall", "f1")

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass
class Trained:
    """A model trained on one training split, with how it got there."""

    model: keras.Model
    preset: Preset
    spec: FeatureSpec
    threshold: float
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int | None
    validation_files: list[int] = field(default_factory=list)
    """File indices (as in window_files) of the files used as validation part."""
    validation_metrics: dict[str, Any] | None = None


def transform(spec: FeatureSpec, raw: np.ndarray) -> np.ndarray:
    """The model input (FeatureSpec.model_input) of a batch of raw feature vectors."""
    if len(raw) == 0:
        return np.zeros((0, spec.width), np.float32)
    return spec.model_input(np.asarray(raw, np.float32))


def scores_of(model: keras.Model, preset_output: str, inputs: np.ndarray) -> np.ndarray:
    """P(anomalous) of each row of transformed inputs."""
    if len(inputs) == 0:
        return np.zeros(0, np.float32)
    out = np.asarray(model.predict(inputs, verbose=0, batch_size=256), np.float64)
    column = score_column(data.CLASSES, preset_output)
    return out.reshape(len(inputs), -1)[:, column].astype(np.float32)


class EpochProgress(keras.callbacks.Callback):  # type: ignore[misc]
    """One line per tenth of the epochs (and the last): epoch, loss, validation loss."""

    def __init__(self, epochs: int, say: Say) -> None:
        super().__init__()
        self._epochs = epochs
        self._every = max(1, epochs // 10)
        self._say = say

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        done = epoch + 1
        if done % self._every and done != self._epochs:
            return
        logs = logs or {}
        parts = [f"loss {logs['loss']:.4f}"] if "loss" in logs else []
        if "val_loss" in logs:
            parts.append(f"validation loss {logs['val_loss']:.4f}")
        self._say(f"  epoch {done}/{self._epochs}: " + ", ".join(parts))


def setup_tensorflow(seed: int) -> None:
    """Deterministic TensorFlow: seeded Python/NumPy/TF and deterministic ops, quiet logger
    (the CLI sets TF_CPP_MIN_LOG_LEVEL before TensorFlow is imported)."""
    tf.get_logger().setLevel("ERROR")
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train_model(
    preset: Preset,
    spec: FeatureSpec,
    raw: np.ndarray,
    labels: np.ndarray,
    window_files: np.ndarray,
    *,
    seed: int,
    say: Say = _quiet,
) -> Trained:
    """Train `preset` on the given raw vectors (all from training files); `window_files` groups
    them by file, so a validation part is carved out of whole files. `say` gets the progress."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    inputs = transform(spec, raw)
    labels = np.asarray(labels, int)
    files = np.unique(window_files)
    file_labels = np.array([labels[window_files == f][0] for f in files])

    fit_mask = np.ones(len(labels), bool)
    val_mask = np.zeros(len(labels), bool)
    validation_files: list[int] = []
    if preset.validation_fraction > 0:
        part = splits.validation_part(
            file_labels, fraction=preset.validation_fraction, random_state=seed
        )
        if part is None:
            log.warning("no_validation_part", reason="fewer than 3 files in a class")
        else:
            validation_files = [int(f) for f in files[part.test]]
            val_mask = splits.window_mask(window_files, files[part.test])
            fit_mask = ~val_mask

    fit_inputs, fit_labels, _ = augment_eq(
        inputs[fit_mask],
        labels[fit_mask],
        window_files[fit_mask],
        spec=spec,
        max_db=preset.eq_augment_db,
        copies=preset.eq_copies,
        rng=np.random.default_rng(seed),
    )
    model = build_model(preset, spec, fit_inputs)
    callbacks: list[keras.callbacks.Callback] = [EpochProgress(preset.epochs, say)]
    validation = None
    if val_mask.any():
        validation = (inputs[val_mask], _targets(preset, labels[val_mask]))
        if preset.patience is not None:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=preset.patience, restore_best_weights=True
                )
            )
    class_weight = None
    if preset.class_weights:
        counts = np.bincount(fit_labels, minlength=2).astype(float)
        class_weight = {c: float(counts.sum() / (2 * counts[c])) for c in (0, 1) if counts[c]}
    result = model.fit(
        fit_inputs,
        _targets(preset, fit_labels),
        batch_size=preset.batch_size,
        epochs=preset.epochs,
        validation_data=validation,
        class_weight=class_weight,
        callbacks=callbacks,
        shuffle=True,
        verbose=0,
    )
    history = {k: [float(v) for v in values] for k, values in result.history.items()}
    epochs_run = len(history.get("loss", []))
    best_epoch = None
    stopper = next((c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)), None)
    if stopper is not None and stopper.best_weights is not None:
        best_epoch = int(stopper.best_epoch) + 1
    if epochs_run < preset.epochs:
        say(
            f"  stopped early at epoch {epochs_run}: validation loss had not improved for"
            f" {preset.patience} epochs; kept the weights of epoch {best_epoch}"
        )
    else:
        say(f"  trained all {epochs_run} epochs")

    threshold = preset.fixed_threshold
    validation_metrics = None
    if val_mask.any():
        val_scores = scores_of(model, preset.output, inputs[val_mask])
        if preset.tune_threshold:
            threshold = choose_threshold(labels[val_mask], val_scores, preset.fixed_threshold)
        validation_metrics = metrics.compute(labels[val_mask], val_scores, threshold)
    return Trained(
        model=model,
        preset=preset,
        spec=spec,
        threshold=threshold,
        history=history,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        validation_files=validation_files,
        validation_metrics=validation_metrics,
    )


def _targets(preset: Preset, labels: np.ndarray) -> np.ndarray:
    if preset.output == "softmax":
        # The notebook's to_categorical: one-hot over [normal, anomalous].
        one_hot: np.ndarray = np.eye(2, dtype=np.float32)[labels]
        return one_hot
    return labels.astype(np.float32).reshape(-1, 1)


@dataclass
class FitReport:
    """What fit did, for the CLI to print."""

    run_dir: Path
    preset: str
    files: int
    windows: int
    per_label: dict[str, int]
    skipped: list[featurize.Failure]
    feature_stats: featurize.FeatureStats
    test: dict[str, dict[str, Any]]
    threshold: float
    epochs_run: int
    cv: dict[str, Any] | None = None
    seconds: float = 0.0
    train_files: int = 0
    """Of `files`, how many the model was trained on (the rest are the test part)."""


def featurize_data(
    dataset: data.DataSet,
    *,
    window_s: float | None,
    cache_dir: Path | None,
    strict: bool,
    say: Say,
) -> featurize.FeatureSet:
    """The windows of every file of `dataset` (back to back, `window_s` or the daemon's 30 s),
    with the counts and skipped files said as they are: the first step of every fit."""
    settings = (
        featurize.WindowSettings()
        if window_s is None
        else featurize.WindowSettings(window_s=window_s, hop_s=window_s)
    )
    say(f"featurizing {len(dataset.files)} files ({dataset.source})")
    feats = featurize.featurize(
        dataset.files, settings=settings, cache_dir=cache_dir, strict=strict
    )
    stats = feats.stats
    # audio_reads counts the failed reads too: the three parts add up to the files.
    say(
        f"features of {stats.files} files: {stats.audio_reads - len(stats.failures)} decoded,"
        f" {stats.cache_hits} from cache, {len(stats.failures)} skipped ({stats.seconds:.1f} s)"
    )
    for failure in stats.failures:
        say(f"  skipped {failure.name}: {failure.reason}")
    return feats


def fit(
    data_dir: Path,
    run_dir: Path,
    *,
    preset: Preset,
    seed: int = 1,
    cv_folds: int | None = None,
    cv_repeats: int = 1,
    strict: bool = False,
    cache_dir: Path | None = featurize.DEFAULT_CACHE_DIR,
    window_s: float | None = None,
    line_hz: LineSetting = "auto",
    command: str = "",
    plots: bool = True,
    say: Say = _quiet,
) -> FitReport:
    """Featurize `data_dir`, optionally cross-validate, train on the seed-style 75/25 file split,
    evaluate on the untouched test files and write RUN_DIR."""
    started = time.monotonic()
    dataset = data.discover(data_dir)
    dataset.require_both_classes()
    feats = featurize_data(dataset, window_s=window_s, cache_dir=cache_dir, strict=strict, say=say)
    settings, stats = feats.settings, feats.stats
    kept = data.DataSet(
        root=dataset.root, files=tuple(f.file for f in feats.files), source=dataset.source
    )
    if not kept.files:
        raise DataError(f"{dataset.root}: no readable audio file ({len(stats.failures)} skipped)")
    kept.require_both_classes()

    setup_tensorflow(seed)
    spec = preset.feature_spec(window_s=settings.window_s, line_hz=line_hz)
    means, labels, window_files = feats.stacked()
    raw = feats.vectors(spec)
    file_labels = np.array([f.file.label for f in feats.files], int)

    cv_result = None
    if cv_folds:
        cv_result = cross_validate(
            preset,
            spec,
            raw=raw,
            labels=labels,
            window_files=window_files,
            file_labels=file_labels,
            folds=cv_folds,
            repeats=cv_repeats,
            seed=seed,
            say=say,
        )

    split = splits.holdout(file_labels, random_state=seed)
    train_mask = splits.window_mask(window_files, split.train)
    test_mask = ~train_mask
    say(f"training {preset.name} on {len(split.train)} files, testing on {len(split.test)}")
    trained = train_model(
        preset,
        spec,
        raw[train_mask],
        labels[train_mask],
        window_files[train_mask],
        seed=seed,
        say=say,
    )
    test_scores = scores_of(trained.model, preset.output, transform(spec, raw[test_mask]))
    test = evaluate(labels[test_mask], test_scores, window_files[test_mask], trained.threshold)
    all_scores = scores_of(trained.model, preset.output, transform(spec, raw))

    report = FitReport(
        run_dir=run_dir,
        preset=preset.name,
        files=len(feats.files),
        windows=len(labels),
        per_label=kept.per_label(),
        skipped=list(stats.failures),
        feature_stats=stats,
        test=test,
        threshold=trained.threshold,
        epochs_run=trained.epochs_run,
        cv=cv_result,
        train_files=len(split.train),
    )
    _write_run_dir(
        run_dir,
        feats=feats,
        trained=trained,
        split=split,
        raw=raw,
        labels=labels,
        window_files=window_files,
        all_scores=all_scores,
        test=test,
        cv=cv_result,
        seed=seed,
        command=command,
        data_dir=data_dir,  # as the user gave it: resolved paths leak a machine layout
    )
    if plots:
        plotting.write_all(
            run_dir / "plots",
            history=trained.history,
            test=test,
            test_labels=labels[test_mask],
            test_scores=test_scores,
            test_files=window_files[test_mask],
            threshold=trained.threshold,
            raw=means[train_mask],
            raw_labels=labels[train_mask],
            examples=_examples(feats, split.test),
            settings=settings,
        )
    report.seconds = time.monotonic() - started
    return report


def _examples(feats: featurize.FeatureSet, test_files: np.ndarray) -> dict[str, Path]:
    """One test file per class for the example spectrograms."""
    chosen: dict[str, Path] = {}
    for index in test_files:
        item = feats.files[int(index)].file
        chosen.setdefault(item.label_name, item.path)
    return chosen


def cross_validate(
    preset: Preset,
    spec: FeatureSpec,
    *,
    raw: np.ndarray,
    labels: np.ndarray,
    window_files: np.ndarray,
    file_labels: np.ndarray,
    folds: int,
    repeats: int,
    seed: int,
    say: Say = _quiet,
) -> dict[str, Any]:
    """Every metric's per-fold values, mean and 95 % interval over repeated K-fold by file."""
    per_fold: list[dict[str, dict[str, Any]]] = []
    n_train = n_test = 0
    for number, split in enumerate(
        splits.cross_validation(file_labels, folds=folds, repeats=repeats, random_state=seed), 1
    ):
        train_mask = splits.window_mask(window_files, split.train)
        trained = train_model(
            preset, spec, raw[train_mask], labels[train_mask], window_files[train_mask], seed=seed
        )
        test_scores = scores_of(trained.model, preset.output, transform(spec, raw[~train_mask]))
        result = evaluate(
            labels[~train_mask], test_scores, window_files[~train_mask], trained.threshold
        )
        result["threshold"] = {"value": trained.threshold}
        per_fold.append(result)
        n_train, n_test = len(split.train), len(split.test)
        say(
            f"  fold {number}/{folds * repeats}: file accuracy "
            f"{_fmt(result['file'].get('accuracy'))}, "
            f"file ROC-AUC {_fmt(result['file'].get('roc_auc'))}"
        )
    summary: dict[str, Any] = {
        "folds": folds,
        "repeats": repeats,
        "seed": seed,
        "interval": "95 % Nadeau-Bengio corrected t",
        "per_fold": per_fold,
    }
    for level in ("window", "file"):
        summary[level] = {
            name: interval([fold[level].get(name) for fold in per_fold], n_train, n_test)
            for name in METRIC_NAMES
        }
    return summary


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _write_run_dir(
    run_dir: Path,
    *,
    feats: featurize.FeatureSet,
    trained: Trained,
    split: splits.FileSplit,
    raw: np.ndarray,
    labels: np.ndarray,
    window_files: np.ndarray,
    all_scores: np.ndarray,
    test: dict[str, Any],
    cv: dict[str, Any] | None,
    seed: int,
    command: str,
    data_dir: Path,
) -> None:
    preset = trained.preset
    run_dir.mkdir(parents=True, exist_ok=True)
    trained.model.save(run_dir / MODEL_FILE)

    train_mask = splits.window_mask(window_files, split.train)
    rng = np.random.default_rng(seed)
    train_rows = np.flatnonzero(train_mask)
    chosen = np.sort(
        rng.choice(train_rows, min(REPRESENTATIVE_MAX, len(train_rows)), replace=False)
    )
    names = np.array([f.file.name for f in feats.files])
    # Every window (training and test) goes along: export compares the converted model with
    # the Keras one on all of them, not on a handful of held-out windows.
    Calibration(
        representative=raw[chosen],
        heldout_features=raw[~train_mask],
        heldout_labels=labels[~train_mask],
        heldout_files=names[window_files[~train_mask]],
        all_features=raw,
        all_labels=labels,
        all_files=names[window_files],
    ).write(run_dir)

    settings = feats.settings
    per_label: dict[str, int] = {}
    for f in feats.files:
        per_label[f.file.label_name] = per_label.get(f.file.label_name, 0) + 1
    RunRecord(
        preset=preset.name,
        spec=trained.spec,
        hop_s=settings.hop_s,
        classes=data.CLASSES,
        output=preset.output,
        threshold=trained.threshold,
        seed=seed,
        hyperparameters={
            "hidden_units": preset.hidden_units,
            "dropout": preset.dropout,
            "gain_invariant": preset.gain_invariant,
            "standardize": preset.standardize,
            "class_weights": preset.class_weights,
            "optimizer": preset.optimizer,
            "learning_rate": preset.learning_rate,
            "loss": preset.loss,
            "batch_size": preset.batch_size,
            "epochs": preset.epochs,
            "early_stopping_patience": preset.patience,
            "validation_fraction": preset.validation_fraction,
            "tune_threshold": preset.tune_threshold,
            "physics": preset.physics,
            "spectrum": preset.spectrum,
            "bands": preset.bands,
            "eq_augment_db": preset.eq_augment_db,
            "eq_copies": preset.eq_copies,
            "l2": preset.l2,
        },
        epochs_run=trained.epochs_run,
        best_epoch=trained.best_epoch,
        trained_on={
            "data_dir": str(data_dir),
            "files": len(feats.files),
            "windows": len(labels),
            "per_label": per_label,
            "train_files": len(split.train),
            "test_files": len(split.test),
            "command": command,
        },
        metrics=test,
    ).write(run_dir)

    train_files = set(int(i) for i in split.train)
    validation_files = set(trained.validation_files)
    per_file = []
    for index, item in enumerate(feats.files):
        mask = window_files == index
        part = (
            "test"
            if index not in train_files
            else ("validation" if index in validation_files else "train")
        )
        per_file.append(
            {
                "file": item.file.name,
                "label": item.file.label_name,
                "split": part,
                "windows": int(mask.sum()),
                "score": float(np.mean(all_scores[mask])),
                "window_scores": [float(s) for s in all_scores[mask]],
            }
        )
    metrics_doc = {
        "preset": preset.name,
        "seed": seed,
        "threshold": trained.threshold,
        "test": test,
        "validation": trained.validation_metrics,
        "history": trained.history,
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "per_file": per_file,
        "skipped": [{"file": f.name, "reason": f.reason} for f in feats.stats.failures],
        "cv": cv,
    }
    write_json(run_dir / METRICS_FILE, metrics_doc)
