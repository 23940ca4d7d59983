"""`corona-train fit DIR --normal-only`: a one-class model from recordings of healthy towers.

A utility has years of normal audio and almost no failures. This fit learns normal only: the
one-sided Gaussian of `daemon.analyse.novelty` (the same code the node's baseline runs) over the
novelty vector (`novelty.NAMES` of the physics block), fitted in closed form, and written as a
Keras model of fixed layers so that `corona-train export` converts and checks it like any other:

    input (row means + physics, model_input)
      -> Dense(p, relu)      (x - mean) / std, one-sided      (row means get zero weights)
      -> Dense(p)            W = R^(-1/2)
      -> Multiply(z, z)      squared components
      -> Dense(1, sigmoid)   (sum - threshold) / spread: the score, 0.5 at the threshold

The threshold is the gamma quantile (`--quantile`, default `novelty.DEFAULT_QUANTILE`) of
out-of-fold distances: the normal training files are cut into 5 folds by file, each fold's
windows measured against a Gaussian fitted without them. A quarter of the normal files is held
out as the test part; anomalous files, if DIR has any, are scored for evaluation only (ROC-AUC
and the DCASE pAUC at FPR 0.1). They never touch the fit or the threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import keras
import numpy as np

from daemon.analyse import novelty
from daemon.analyse.featurespec import FeatureSpec, PhysicsSpec
from daemon.analyse.physics import LineSetting
from daemon.errors import DataError
from train import data, featurize, splits
from train.fit import FitReport, Say, _quiet, featurize_data, setup_tensorflow
from train.runrecord import METRICS_FILE, MODEL_FILE, Calibration, RunRecord, write_json
from train.scoring import evaluate

FOLDS: Final = 5
"""Folds (by file) the threshold's held-out distances come from."""
TEST_FRACTION: Final = 0.25
"""Normal files held out as the test part (the supervised fit's 75/25)."""
EXTRAPOLATION: Final = 2.0
"""int8 calibration also sees normal windows pushed this many times further from the mean, so
the quantized layers can represent windows well beyond normal (corona) without clipping them
back to the edge of normal."""
KIND: Final = "one-class"
MIN_FILES_FOR_TEST: Final = 4


@dataclass(frozen=True)
class OneClassFit:
    """The fitted Gaussian (on model-input physics columns), its threshold and evidence."""

    model: novelty.NormalModel
    threshold: novelty.Threshold
    held_out_d2: np.ndarray


def one_class_spec(window_s: float, line_hz: LineSetting) -> FeatureSpec:
    """The FeatureSpec of a one-class model: the physics block holds the novelty values."""
    return FeatureSpec(window_s=window_s, physics=PhysicsSpec(line_hz=line_hz, names=novelty.NAMES))


def physics_part(spec: FeatureSpec, inputs: np.ndarray) -> np.ndarray:
    """The novelty columns of model-input rows."""
    return np.asarray(inputs[:, spec.n_bins :], dtype=np.float64)


def fit_gaussian(
    vectors: np.ndarray, window_files: np.ndarray, *, quantile: float, seed: int
) -> OneClassFit:
    """The Gaussian of all `vectors` and a threshold from out-of-fold distances by file."""
    need = novelty.min_windows(vectors.shape[1])
    files = np.unique(window_files)
    if len(vectors) < need:
        raise DataError(
            f"--normal-only: {len(vectors)} normal training windows are too few for a"
            f" covariance of {vectors.shape[1]} values (need at least {need}: add normal files"
            " or use shorter --window-s)"
        )
    if len(files) < 2:
        raise DataError("--normal-only: the threshold needs at least 2 normal training files")
    rng = np.random.default_rng(seed)
    folds = min(FOLDS, len(files))
    fold_of = dict(zip(rng.permutation(files).tolist(), np.arange(len(files)) % folds, strict=True))
    fold = np.array([fold_of[int(f)] for f in window_files])
    held_out = []
    for k in range(folds):
        inside = fold != k
        stats = novelty.GaussianAccumulator.empty(vectors.shape[1])
        stats.add(vectors[inside])
        if stats.count < need:
            continue  # a tiny data set: this fold's complement cannot hold a covariance
        held_out.append(novelty.NormalModel.fit(stats).distance(vectors[~inside]))
    if not held_out:
        raise DataError(f"--normal-only: too few windows per fold (need {need} outside each fold)")
    stats = novelty.GaussianAccumulator.empty(vectors.shape[1])
    stats.add(vectors)
    d2 = np.concatenate(held_out)
    return OneClassFit(
        novelty.NormalModel.fit(stats), novelty.Threshold.from_normal(d2, quantile), d2
    )


def keras_model(spec: FeatureSpec, fitted: OneClassFit) -> keras.Model:
    """The fixed-weight Keras model of the module docstring (scores = Threshold.score(d2))."""
    model, threshold = fitted.model, fitted.threshold
    p = model.dim
    first = np.zeros((spec.width, p), np.float32)
    first[spec.n_bins + np.arange(p), np.arange(p)] = 1.0 / model.std
    inputs = keras.Input(shape=(spec.width,), name="features")
    standardized = keras.layers.Dense(p, activation="relu", name="one_sided")(inputs)
    whitened = keras.layers.Dense(p, use_bias=False, name="whitening")(standardized)
    squared = keras.layers.Multiply(name="squared")([whitened, whitened])
    score = keras.layers.Dense(1, activation="sigmoid", name="score")(squared)
    built = keras.Model(inputs, score, name="one_class")
    built.get_layer("one_sided").set_weights([first, (-model.mean / model.std).astype(np.float32)])
    built.get_layer("whitening").set_weights([model.whitening.astype(np.float32)])
    built.get_layer("score").set_weights(
        [
            np.full((p, 1), 1.0 / threshold.spread, np.float32),
            np.array([-threshold.distance / threshold.spread], np.float32),
        ]
    )
    return built


def calibration_rows(spec: FeatureSpec, raw: np.ndarray) -> np.ndarray:
    """Raw vectors for int8 calibration: the training windows and copies `EXTRAPOLATION` times
    further from their mean, with the row means set to 1 (log 0). The row means reach the model
    through zero weights only; left as they are, their range (-10..3 in log10) would set the one
    int8 input scale and leave the physics values a handful of steps."""
    rows = np.array(raw, dtype=np.float32, copy=True)
    rows[:, : spec.n_bins] = 1.0
    physics = rows[:, spec.n_bins :].astype(np.float64)
    centre = physics.mean(axis=0)
    far = rows.copy()
    far[:, spec.n_bins :] = centre + EXTRAPOLATION * (physics - centre)
    return np.concatenate([rows, far]).astype(np.float32)


def fit_normal_only(
    data_dir: Path,
    run_dir: Path,
    *,
    seed: int = 1,
    quantile: float = novelty.DEFAULT_QUANTILE,
    strict: bool = False,
    cache_dir: Path | None = featurize.DEFAULT_CACHE_DIR,
    window_s: float | None = None,
    line_hz: LineSetting = "auto",
    command: str = "",
    say: Say = _quiet,
) -> FitReport:
    """Featurize DATA_DIR, fit the one-class model on its normal files, evaluate, write RUN_DIR."""
    started = time.monotonic()
    dataset = data.discover(data_dir)
    per_label = dataset.per_label()
    if per_label["normal"] == 0:
        raise DataError(
            f"{dataset.root}: --normal-only learns from normal files and found none"
            f" ({per_label['anomalous']} anomalous: those are only used for evaluation)"
        )
    feats = featurize_data(dataset, window_s=window_s, cache_dir=cache_dir, strict=strict, say=say)
    if not any(f.file.label == 0 for f in feats.files):
        raise DataError(f"{dataset.root}: no readable normal file")
    setup_tensorflow(seed)
    spec = one_class_spec(feats.settings.window_s, line_hz)
    _, labels, window_files = feats.stacked()
    raw = feats.vectors(spec)
    inputs = spec.model_input(raw)
    file_labels = np.array([f.file.label for f in feats.files], int)

    normal_files = np.flatnonzero(file_labels == 0)
    rng = np.random.default_rng(seed)
    # Fewer than MIN_FILES_FOR_TEST normal files: all train (the threshold still has folds).
    n_test = (
        round(TEST_FRACTION * len(normal_files)) if len(normal_files) >= MIN_FILES_FOR_TEST else 0
    )
    test_normal = rng.choice(normal_files, n_test, replace=False) if n_test else np.zeros(0, int)
    train_files = np.setdiff1d(normal_files, test_normal)
    train_mask = splits.window_mask(window_files, train_files)
    say(
        f"fitting one-class on {len(train_files)} normal files ({int(train_mask.sum())} windows);"
        f" testing on {len(test_normal)} normal and {int((file_labels == 1).sum())} anomalous"
    )
    fitted = fit_gaussian(
        physics_part(spec, inputs[train_mask]),
        window_files[train_mask],
        quantile=quantile,
        seed=seed,
    )
    model = keras_model(spec, fitted)
    scores = np.asarray(model.predict(inputs, verbose=0, batch_size=256), np.float64)[:, 0]
    reference = fitted.threshold.score(fitted.model.distance(physics_part(spec, inputs)))
    if not np.allclose(scores, reference, atol=1e-4):
        raise DataError("one-class: the Keras layers disagree with daemon.analyse.novelty (a bug)")
    test_mask = ~train_mask
    # Files per class among those read (skipped ones left out), as the supervised fit counts.
    read_per_label = data.DataSet(
        root=dataset.root, files=tuple(f.file for f in feats.files), source=dataset.source
    ).per_label()
    test = evaluate(labels[test_mask], scores[test_mask], window_files[test_mask], 0.5)
    _write_run_dir(
        run_dir,
        spec=spec,
        feats=feats,
        fitted=fitted,
        model=model,
        raw=raw,
        labels=labels,
        window_files=window_files,
        train_mask=train_mask,
        scores=scores,
        test=test,
        seed=seed,
        quantile=quantile,
        data_dir=data_dir,
        command=command,
        train_files=len(train_files),
        per_label=read_per_label,
    )
    return FitReport(
        run_dir=run_dir,
        preset=KIND,
        files=len(feats.files),
        windows=len(labels),
        per_label=read_per_label,
        skipped=list(feats.stats.failures),
        feature_stats=feats.stats,
        test=test,
        threshold=0.5,
        epochs_run=0,
        seconds=time.monotonic() - started,
    )


def _write_run_dir(
    run_dir: Path,
    *,
    spec: FeatureSpec,
    feats: featurize.FeatureSet,
    fitted: OneClassFit,
    model: keras.Model,
    raw: np.ndarray,
    labels: np.ndarray,
    window_files: np.ndarray,
    train_mask: np.ndarray,
    scores: np.ndarray,
    test: dict[str, Any],
    seed: int,
    quantile: float,
    data_dir: Path,
    command: str,
    train_files: int,
    per_label: dict[str, int],
) -> None:
    """RUN_DIR as the supervised fit writes it (export reads it the same way), plus `kind`
    and the `one_class` block."""
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / MODEL_FILE)
    names = np.array([f.file.name for f in feats.files])
    Calibration(
        representative=calibration_rows(spec, raw[train_mask]),
        heldout_features=raw[~train_mask],
        heldout_labels=labels[~train_mask],
        heldout_files=names[window_files[~train_mask]],
        all_features=raw,
        all_labels=labels,
        all_files=names[window_files],
    ).write(run_dir)
    one_class = {
        "method": "one-sided Gaussian, OAS-shrunk correlation (daemon/analyse/novelty.py)",
        "names": list(novelty.NAMES),
        "threshold_distance": fitted.threshold.distance,
        "spread": fitted.threshold.spread,
        "quantile": quantile,
        "threshold_rule": fitted.threshold.rule + f", {FOLDS} folds by file",
        "shrinkage": fitted.model.shrinkage,
        "mean": dict(zip(novelty.NAMES, map(float, fitted.model.mean), strict=True)),
    }
    RunRecord(
        preset=KIND,
        kind=KIND,
        spec=spec,
        classes=data.CLASSES,
        output="sigmoid",
        threshold=0.5,
        seed=seed,
        one_class=one_class,
        trained_on={
            "data_dir": str(data_dir),
            "files": len(feats.files),
            "windows": len(labels),
            "per_label": per_label,
            "train_files": train_files,
            "test_files": len(feats.files) - train_files,
            "command": command,
            "normal_only": True,
        },
        metrics=test,
    ).write(run_dir)
    per_file = []
    for index, item in enumerate(feats.files):
        mask = window_files == index
        per_file.append(
            {
                "file": item.file.name,
                "label": item.file.label_name,
                "split": "train" if bool(train_mask[mask].any()) else "test",
                "windows": int(mask.sum()),
                "score": float(np.mean(scores[mask])),
                "window_scores": [float(s) for s in scores[mask]],
            }
        )
    write_json(
        run_dir / METRICS_FILE,
        {
            "preset": KIND,
            "seed": seed,
            "threshold": 0.5,
            "test": test,
            "one_class": one_class,
            "held_out_d2": [float(d) for d in fitted.held_out_d2],
            "per_file": per_file,
            "skipped": [{"file": f.name, "reason": f.reason} for f in feats.stats.failures],
        },
    )
