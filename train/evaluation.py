"""`corona-train evaluate`: a TFLite model's metrics on labelled data via the daemon's own runner.

Windows come from the same featurize path as fit (daemon.listen.audio + daemon.listen.windows, with
the model's
window length), scores from daemon.analyse.model.Model, metrics from train.metrics: per window and
per
file (file score = mean of its window scores).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.analyse.model import Model
from daemon.errors import DataError
from train import data, featurize
from train.scoring import evaluate


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one model on one data set."""

    model_name: str
    threshold: float
    files: int
    windows: int
    skipped: list[featurize.Failure]
    metrics: dict[str, dict[str, Any]]
    """{"window": {...}, "file": {...}} with train.metrics.compute's keys."""
    window_files: tuple[str, ...] = ()
    """The file (relative name) of each scored window, in file order then window order."""
    window_scores: tuple[float, ...] = ()
    """P(anomalous) of each window, as the daemon's runner gave it (replay must agree)."""
    warnings: tuple[str, ...] = ()
    """Reasons to distrust these numbers (e.g. DATA_DIR is the model's own training folder)."""


def trained_here(meta: dict[str, Any], data_dir: Path) -> str | None:
    """A warning when `data_dir` is the folder the model was fitted on (`trained_on.data_dir`,
    resolved from here): its scores then include training files and are not a test."""
    trained_on = meta.get("trained_on")
    recorded = trained_on.get("data_dir") if isinstance(trained_on, dict) else None
    if not isinstance(recorded, str) or not recorded:
        return None
    try:
        same = Path(recorded).resolve() == data_dir.resolve()
    except OSError:
        return None
    if not same:
        return None
    return (
        f"{data_dir} is the folder this model was trained on (metadata trained_on.data_dir):"
        " these scores include its training files, they are not a test"
    )


def evaluate_tflite(
    model_path: Path,
    data_dir: Path,
    *,
    strict: bool = False,
    cache_dir: Path | None = featurize.DEFAULT_CACHE_DIR,
    say: Callable[[str], None] | None = None,
) -> Evaluation:
    """Score every window of `data_dir` with the model at `model_path` and compute its metrics.

    The model is trial-loaded in a child process first, as the daemon does: a model file from
    elsewhere is evaluated before anyone ships it, and must not crash the evaluation."""
    model = Model.load(model_path, trial=True)
    settings = featurize.WindowSettings.of(model.spec)
    dataset = data.discover(data_dir)
    feats = featurize.featurize(
        dataset.files, settings=settings, cache_dir=cache_dir, strict=strict
    )
    for failure in feats.stats.failures:
        if say is not None:
            say(f"skipped {failure.name}: {failure.reason}")
    if not feats.files:
        raise DataError(
            f"{dataset.root}: no readable audio file ({len(feats.stats.failures)} skipped)"
        )
    _, labels, window_files = feats.stacked()
    scores = model.score_batch(feats.vectors(model.spec))
    warning = trained_here(model.metadata, data_dir)
    return Evaluation(
        model_name=model.name,
        threshold=float(model.threshold),
        files=len(feats.files),
        windows=len(labels),
        skipped=list(feats.stats.failures),
        metrics=evaluate(labels, scores, window_files, float(model.threshold)),
        window_files=tuple(feats.files[i].file.name for i in window_files),
        window_scores=tuple(float(score) for score in scores),
        warnings=() if warning is None else (warning,),
    )
