"""train.metrics: the same numbers as sklearn.metrics, JSON-ready, plus per-file aggregation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from daemon.errors import DataError
from train.metrics import compute, per_file


class TestCompute:
    @pytest.mark.parametrize("seed", range(8))
    @pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
    def test_matches_sklearn(self, seed: int, threshold: float) -> None:
        """Every metric equals sklearn's on random labels and (partly tied) scores."""
        rng = np.random.default_rng(seed)
        n = int(rng.integers(5, 300))
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]  # both classes present
        scores = np.clip(labels * 0.3 + rng.normal(0.35, 0.25, n), 0, 1)
        if seed % 2:
            scores = np.round(scores, 1)  # many ties: ROC-AUC must count them as half
        predicted = (scores >= threshold).astype(int)
        got = compute(labels, scores, threshold)
        assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
        assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
        assert got["precision"] == pytest.approx(
            skm.precision_score(labels, predicted, zero_division=0)
        )
        assert got["recall"] == pytest.approx(skm.recall_score(labels, predicted, zero_division=0))
        assert got["f1"] == pytest.approx(skm.f1_score(labels, predicted, zero_division=0))
        assert got["confusion"] == skm.confusion_matrix(labels, predicted, labels=[0, 1]).tolist()
        assert got["n"] == n

    def test_json_serialisable(self) -> None:
        """The result survives json.dumps with plain Python numbers."""
        got = compute(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.4], np.float32), 0.5)
        assert json.loads(json.dumps(got)) == got
        assert all(type(got[k]) is float for k in ("accuracy", "roc_auc", "precision", "f1"))
        assert all(type(v) is int for row in got["confusion"] for v in row)

    @pytest.mark.parametrize("label", [0, 1])
    def test_one_class_has_no_auc(self, label: int) -> None:
        """With one class only, roc_auc is None (null in JSON), the rest still computed."""
        got = compute(np.full(4, label), np.array([0.1, 0.6, 0.7, 0.9]), 0.5)
        assert got["roc_auc"] is None
        assert got["accuracy"] == (0.75 if label == 1 else 0.25)

    def test_no_predicted_positives(self) -> None:
        """Precision and F1 are 0.0, not NaN, when nothing is predicted anomalous."""
        got = compute(np.array([0, 1]), np.array([0.1, 0.2]), 0.5)
        assert got["precision"] == 0.0
        assert got["f1"] == 0.0
        assert got["confusion"] == [[1, 0], [1, 0]]

    def test_threshold_is_inclusive(self) -> None:
        """A score equal to the threshold counts as anomalous."""
        assert compute(np.array([1]), np.array([0.5]), 0.5)["confusion"] == [[0, 0], [0, 1]]

    @pytest.mark.parametrize(
        ("labels", "scores", "message"),
        [
            ([0, 1], [0.5], "2 labels but 1 scores"),
            ([0, 2], [0.5, 0.5], "labels must be 0"),
            ([0, 1], [0.5, float("nan")], "NaN"),
        ],
    )
    def test_bad_input(self, labels: list[int], scores: list[float], message: str) -> None:
        """Mismatched lengths, labels other than 0/1, and NaN scores are DataErrors."""
        with pytest.raises(DataError, match=message):
            compute(np.array(labels), np.array(scores), 0.5)


class TestPerFile:
    def test_mean_of_windows_in_first_appearance_order(self) -> None:
        """A file's score is the mean of its windows; files keep their first-appearance order."""
        files = ["b.wav", "a.wav", "b.wav", "c.wav", "a.wav"]
        labels = [1, 0, 1, 0, 0]
        scores = [0.9, 0.2, 0.7, 0.4, 0.4]
        file_labels, file_scores = per_file(files, labels, scores)
        assert file_labels.tolist() == [1, 0, 0]
        np.testing.assert_allclose(file_scores, [0.8, 0.3, 0.4])

    def test_mixed_labels_in_one_file(self) -> None:
        """Windows of one file with different labels are a DataError naming the file."""
        with pytest.raises(DataError, match=r"x\.wav has windows with both labels"):
            per_file(["x.wav", "x.wav"], [0, 1], [0.1, 0.2])
