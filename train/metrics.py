"""Binary classification metrics as JSON-ready dicts, and window -> file score aggregation.

Plain numpy (no sklearn at import): the same numbers sklearn.metrics gives, checked by tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.errors import DataError

PAUC_MAX_FPR = 0.1
"""False-positive-rate limit of compute()'s "pauc": the DCASE Challenge Task 2 (2020-2024,
anomalous sound detection) ranking metric, scored as in its baselines with
sklearn.metrics.roc_auc_score(max_fpr=0.1). A monitor that cries wolf loses operators' trust, so
only the low-false-alarm end of the ROC curve counts; 0.1 keeps the number comparable with the
DCASE results.
"""


def compute(labels: npt.ArrayLike, scores: npt.ArrayLike, threshold: float) -> dict[str, Any]:
    """Metrics of P(anomalous) `scores` against 0/1 `labels`; anomalous when score >= threshold.

    Keys: accuracy, roc_auc, pauc, precision, recall, f1 (floats), confusion [[tn, fp], [fn, tp]]
    (ints), n. pauc is the McClish-standardized partial ROC-AUC over false-positive rate
    0..PAUC_MAX_FPR (DCASE Task 2's pAUC; 0.5 chance, 1.0 perfect), see partial_roc_auc.
    roc_auc and pauc are None when the labels hold only one class (they are undefined then);
    precision/recall/f1 are 0.0 when their denominator is zero (sklearn's zero_division=0).
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise DataError(f"metrics: {y.size} labels but {s.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise DataError("metrics: labels must be 0 (normal) or 1 (anomalous)")
    if not np.isfinite(s).all():
        raise DataError("metrics: scores contain NaN or infinity")
    predicted = s >= threshold
    positive = y == 1
    tp = int(np.sum(predicted & positive))
    fp = int(np.sum(predicted & ~positive))
    fn = int(np.sum(~predicted & positive))
    tn = int(np.sum(~predicted & ~positive))
    n = int(y.size)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, n),
        "roc_auc": roc_auc(y, s),
        "pauc": partial_roc_auc(y, s, PAUC_MAX_FPR),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "confusion": [[tn, fp], [fn, tp]],
        "n": n,
    }


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve via the rank-sum (Mann-Whitney U) form, ties counted as half.

    None when only one class is present.
    """
    positive = labels == 1
    n_pos = int(positive.sum())
    n_neg = int(labels.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(scores)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def partial_roc_auc(
    labels: np.ndarray, scores: np.ndarray, max_fpr: float = PAUC_MAX_FPR
) -> float | None:
    """McClish-standardized ROC-AUC over false-positive rate 0..max_fpr (DCASE Task 2's pAUC).

    The same number as sklearn.metrics.roc_auc_score(labels, scores, max_fpr=max_fpr). The ROC
    curve's vertices are one per distinct score (tied scores move FPR and TPR together,
    a diagonal step), the curve is cut at max_fpr by linear interpolation and integrated by the
    trapezoid rule, and the area is McClish-standardized: 0.5 * (1 + (area - min) / (max - min))
    with min = max_fpr**2 / 2 (chance) and max = max_fpr (perfect), so 0.5 is chance and 1.0 a
    perfect ranking; below 0.5 is worse than chance. sklearn's drop_intermediate only removes
    collinear vertices, which changes neither the interpolation nor the area. max_fpr = 1 gives
    the plain ROC-AUC. None when only one class is present.
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"partial_roc_auc: max_fpr must be in (0, 1], got {max_fpr!r}")
    positive = np.asarray(labels).ravel() == 1
    values = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(positive.sum())
    n_neg = int(positive.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(-values, kind="mergesort")  # descending score
    sorted_values = values[order]
    # Last index of each run of equal scores: one ROC vertex per distinct threshold.
    ends = np.r_[np.flatnonzero(sorted_values[1:] != sorted_values[:-1]), values.size - 1]
    tps = np.cumsum(positive[order])[ends]
    fps = ends + 1 - tps
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    # Vertices with fpr <= max_fpr, then the curve's point at max_fpr (fpr[0] = 0 < max_fpr and
    # fpr[-1] = 1, so for max_fpr < 1 there is a vertex on either side; the segment's left end is
    # the highest vertex at fpr[stop - 1]).
    stop = int(np.searchsorted(fpr, max_fpr, side="right"))
    if stop < fpr.size:
        cut = np.interp(max_fpr, fpr[stop - 1 : stop + 1], tpr[stop - 1 : stop + 1])
        x = np.r_[fpr[:stop], max_fpr]
        y = np.r_[tpr[:stop], cut]
    else:
        x, y = fpr, tpr
    area = float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0)
    min_area = 0.5 * max_fpr**2
    max_area = max_fpr
    return float(0.5 * (1.0 + (area - min_area) / (max_area - min_area)))


def per_file(
    files: npt.ArrayLike, labels: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Window scores -> (file_labels int64, file_scores float64 = mean of the file's windows).

    Files are returned in order of first appearance. A file whose windows disagree on the
    label is a DataError.
    """
    f = np.asarray(files).astype(str).ravel()
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not f.size == y.size == s.size:
        raise DataError(f"metrics: {f.size} files, {y.size} labels, {s.size} scores")
    names, first, inverse = np.unique(f, return_index=True, return_inverse=True)
    order = np.argsort(first)  # np.unique sorts by name; restore first-appearance order
    counts = np.bincount(inverse, minlength=names.size)
    mean_scores = np.bincount(inverse, weights=s, minlength=names.size) / counts
    label_sums = np.bincount(inverse, weights=y, minlength=names.size)
    mixed = (label_sums != 0) & (label_sums != counts)
    if mixed.any():
        raise DataError(f"metrics: file {names[np.argmax(mixed)]} has windows with both labels")
    file_labels = (label_sums > 0).astype(np.int64)
    return file_labels[order], mean_scores[order]


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values share the mean of their ranks (scipy.stats.rankdata 'average')."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _ratio(numerator: int, denominator: int) -> float:
    return float(numerator / denominator) if denominator else 0.0
