"""train.scoring: file-level metrics, cross-validation intervals and the validation threshold."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from train import scoring


class TestEvaluate:
    def test_file_score_is_the_mean_of_its_windows(self) -> None:
        """A file is scored by the mean of its window scores and counted once."""
        labels = np.array([0, 0, 1, 1, 1])
        scores = np.array([0.1, 0.7, 0.2, 0.9, 0.9])
        files = np.array(["a", "a", "b", "b", "b"])
        result = scoring.evaluate(labels, scores, files, 0.5)
        assert result["window"]["n"] == 5
        assert result["file"]["n"] == 2
        assert result["file"]["confusion"] == [[1, 0], [0, 1]]  # a: 0.4, b: 0.667
        assert result["window"]["confusion"] == [[1, 1], [1, 2]]


class TestInterval:
    def test_nadeau_bengio_corrected_t_interval(self) -> None:
        """The half width is t(0.975, k-1) * sqrt(var * (1/k + n_test/n_train))."""
        values = [0.8, 0.9, 0.85, 0.95, 0.7]
        result = scoring.interval(values, n_train=80, n_test=20)
        half = stats.t.ppf(0.975, 4) * np.sqrt(np.var(values, ddof=1) * (1 / 5 + 20 / 80))
        assert result["mean"] == pytest.approx(0.84)
        assert result["low"] == pytest.approx(0.84 - half)
        assert result["high"] == pytest.approx(min(1.0, 0.84 + half))
        assert result["folds"] == 5

    def test_clipped_to_unit_range_and_none_skipped(self) -> None:
        """Undefined fold values are left out and the interval never leaves [0, 1]."""
        result = scoring.interval([1.0, 0.9, None, 1.0], n_train=10, n_test=5)
        assert result["folds"] == 3
        assert result["high"] == 1.0

    def test_one_fold_has_no_interval(self) -> None:
        """With a single value there is a mean but no interval."""
        assert scoring.interval([0.5], 1, 1) == {"mean": 0.5, "low": None, "high": None, "folds": 1}


class TestChooseThreshold:
    def test_fallback_is_kept_when_it_separates(self) -> None:
        """When the fallback already separates the classes perfectly, it is kept."""
        labels = np.array([0, 0, 1, 1])
        assert scoring.choose_threshold(labels, np.array([0.1, 0.45, 0.7, 0.9]), 0.5) == 0.5

    def test_threshold_sits_mid_gap(self) -> None:
        """When only a lower threshold separates, it is the midpoint of the separating gap."""
        labels = np.array([0, 0, 1, 1])
        scores = np.array([0.01, 0.02, 0.3, 0.9])
        assert scoring.choose_threshold(labels, scores, 0.5) == pytest.approx(0.16)

    def test_ties_go_to_the_threshold_nearest_fallback(self) -> None:
        """Of two equally good thresholds, the one nearer the fallback wins."""
        labels = np.array([0, 1, 0, 1])
        scores = np.array([0.1, 0.2, 0.8, 0.9])  # 0.15 and 0.85 both give balanced accuracy 0.75
        assert scoring.choose_threshold(labels, scores, 0.6) == pytest.approx(0.85)

    def test_shifted_scores_move_the_threshold(self) -> None:
        """When 0.5 misclassifies, the chosen threshold separates the classes."""
        labels = np.array([0, 0, 0, 1, 1])
        scores = np.array([0.05, 0.1, 0.15, 0.2, 0.3])
        threshold = scoring.choose_threshold(labels, scores, 0.5)
        assert threshold == pytest.approx(0.175)

    def test_one_class_keeps_the_fallback(self) -> None:
        """Without both classes there is nothing to tune."""
        assert scoring.choose_threshold(np.array([1, 1]), np.array([0.2, 0.3]), 0.5) == 0.5
