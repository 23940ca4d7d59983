"""Scores to metrics: per window and per file (file score = mean of its window scores), and the
mean with a 95 % interval over cross-validation folds. No TensorFlow here (evaluate uses it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from scipy import stats

from train import metrics

CONFIDENCE: Final = 0.95
"""Coverage of the interval reported for cross-validated metrics."""


def evaluate(
    labels: np.ndarray, scores: np.ndarray, window_files: np.ndarray, threshold: float
) -> dict[str, dict[str, Any]]:
    """{"window": metrics, "file": metrics} via train.metrics; `window_files` names each
    window's file, and a file's score is the mean of its window scores."""
    file_labels, file_scores = metrics.per_file(window_files, labels, scores)
    return {
        "window": json_safe(metrics.compute(labels, scores, threshold)),
        "file": json_safe(metrics.compute(file_labels, file_scores, threshold)),
    }


def json_safe(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy arrays and scalars become Python values."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def interval(values: Sequence[float | None], n_train: int, n_test: int) -> dict[str, Any]:
    """Mean and 95 % interval of per-fold values with the Nadeau-Bengio correction: folds share
    training data, so the naive t interval is too narrow; the fold variance is scaled by
    (1/k + n_test/n_train) instead of 1/k. Every metric here lives in [0, 1], so the interval
    is clipped to it."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], float)
    if finite.size == 0:
        return {"mean": None, "low": None, "high": None, "folds": 0}
    mean = float(finite.mean())
    if finite.size < 2:
        return {"mean": mean, "low": None, "high": None, "folds": int(finite.size)}
    variance = float(finite.var(ddof=1)) * (1 / finite.size + n_test / max(n_train, 1))
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, finite.size - 1)) * math.sqrt(variance)
    return {
        "mean": mean,
        "low": max(0.0, mean - half),
        "high": min(1.0, mean + half),
        "folds": int(finite.size),
    }


def choose_threshold(labels: np.ndarray, scores: np.ndarray, fallback: float) -> float:
    """The threshold with the best balanced accuracy on (labels, scores); among ties the one
    nearest `fallback`. Candidates are midpoints between neighbouring distinct scores, so the
    chosen value sits in the gap rather than on a validation example."""
    labels = np.asarray(labels, int)
    if len(np.unique(labels)) < 2:
        return fallback
    distinct = np.unique(np.asarray(scores, np.float64))
    candidates = np.concatenate([[fallback], (distinct[:-1] + distinct[1:]) / 2])
    best, best_key = fallback, (-1.0, 0.0)
    for threshold in candidates:
        predicted = scores >= threshold
        tpr = float(np.mean(predicted[labels == 1]))
        tnr = float(np.mean(~predicted[labels == 0]))
        key = ((tpr + tnr) / 2, -abs(threshold - fallback))
        if key > best_key:
            best, best_key = float(threshold), key
    return best
