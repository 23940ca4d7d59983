"""train.metrics.partial_roc_auc: DCASE Task 2's pAUC, the same number as sklearn's max_fpr."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from train.metrics import PAUC_MAX_FPR, compute, partial_roc_auc


class TestPartialRocAuc:
    @pytest.mark.parametrize("seed", range(8))
    @pytest.mark.parametrize("max_fpr", [0.05, 0.1, 0.3, 1.0])
    def test_matches_sklearn(self, seed: int, max_fpr: float) -> None:
        """Equals sklearn's roc_auc_score(max_fpr=...) on random labels and (partly tied) scores."""
        rng = np.random.default_rng(seed)
        n = int(rng.integers(5, 300))
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]  # both classes present
        scores = np.clip(labels * 0.3 + rng.normal(0.35, 0.25, n), 0, 1)
        if seed % 2:
            scores = np.round(scores, 1)  # many ties: tied scores are one diagonal ROC step
        expected = skm.roc_auc_score(labels, scores, max_fpr=max_fpr)
        assert partial_roc_auc(labels, scores, max_fpr) == pytest.approx(expected, abs=1e-12)

    @pytest.mark.parametrize("seed", range(4))
    def test_matches_sklearn_heavy_ties(self, seed: int) -> None:
        """Five distinct scores shared by both classes; the cut mid-segment and on a vertex."""
        rng = np.random.default_rng(100 + seed)
        labels = rng.integers(0, 2, 200)
        labels[:2] = [0, 1]
        scores = rng.integers(0, 4, 200) + labels  # 5 distinct values, heavily tied
        for max_fpr in (0.01, 0.1, 0.25, 0.5, 0.9):
            expected = skm.roc_auc_score(labels, scores, max_fpr=max_fpr)
            assert partial_roc_auc(labels, scores, max_fpr) == pytest.approx(expected, abs=1e-12)
        # max_fpr exactly on a vertex: 10 negatives, FPR steps of 0.1
        labels = np.array([0] * 10 + [1] * 5)
        scores = np.array([*range(10), 3.0, 8.5, 9.5, 9.5, 20.0])
        expected = skm.roc_auc_score(labels, scores, max_fpr=0.1)
        assert partial_roc_auc(labels, scores, 0.1) == pytest.approx(expected, abs=1e-12)

    def test_perfect_separation_is_one(self) -> None:
        """Every anomaly scored above every normal file gives 1.0."""
        labels = np.array([0, 0, 0, 1, 1])
        scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
        assert partial_roc_auc(labels, scores) == pytest.approx(1.0)
        assert skm.roc_auc_score(labels, scores, max_fpr=0.1) == pytest.approx(1.0)

    def test_reversed_scores(self) -> None:
        """Every anomaly scored below every normal file gives sklearn's floor (0.5 - 0.5/19)."""
        labels = np.array([0, 0, 0, 1, 1])
        scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
        expected = skm.roc_auc_score(labels, scores, max_fpr=0.1)
        assert partial_roc_auc(labels, scores) == pytest.approx(expected, abs=1e-12)
        # area 0, min 0.005, max 0.1: 0.5 * (1 - 0.005 / 0.095)
        assert partial_roc_auc(labels, scores) == pytest.approx(0.5 * (1 - 1 / 19))

    def test_all_tied_is_chance(self) -> None:
        """Equal scores for everything is the ROC diagonal: exactly 0.5."""
        labels = np.array([0, 1, 0, 1, 0])
        scores = np.full(5, 0.4)
        assert partial_roc_auc(labels, scores) == pytest.approx(0.5)
        assert skm.roc_auc_score(labels, scores, max_fpr=0.1) == pytest.approx(0.5)

    def test_hand_computed(self) -> None:
        """4 normals, 2 anomalies: the curve (0,0) -> (0,0.5) -> (0.25,0.5) cut at FPR 0.1."""
        labels = np.array([1, 0, 1, 0, 0, 0])
        scores = np.array([0.9, 0.8, 0.3, 0.7, 0.6, 0.5])
        # Area over FPR 0..0.1 at TPR 0.5 is 0.05; min 0.005, max 0.1:
        # 0.5 * (1 + (0.05 - 0.005) / (0.1 - 0.005)) = 0.5 * (1 + 9 / 19) = 14 / 19
        assert partial_roc_auc(labels, scores) == pytest.approx(14 / 19)
        assert skm.roc_auc_score(labels, scores, max_fpr=0.1) == pytest.approx(14 / 19)

    def test_hand_computed_tie_across_classes(self) -> None:
        """A normal and an anomaly tied at the top: a diagonal step from (0,0) to (0.5,0.5)."""
        labels = np.array([1, 0, 1, 0])
        scores = np.array([0.9, 0.9, 0.2, 0.1])
        # TPR = FPR up to 0.1: area 0.005 = min_area, so exactly chance
        assert partial_roc_auc(labels, scores) == pytest.approx(0.5)
        assert skm.roc_auc_score(labels, scores, max_fpr=0.1) == pytest.approx(0.5)

    @pytest.mark.parametrize("label", [0, 1])
    def test_one_class_is_none(self, label: int) -> None:
        """With one class only the partial AUC is undefined: None."""
        assert partial_roc_auc(np.full(4, label), np.array([0.1, 0.6, 0.7, 0.9])) is None

    @pytest.mark.parametrize("max_fpr", [0.0, -0.1, 1.5])
    def test_bad_max_fpr(self, max_fpr: float) -> None:
        """max_fpr outside (0, 1] is a ValueError, as in sklearn."""
        with pytest.raises(ValueError, match="max_fpr"):
            partial_roc_auc(np.array([0, 1]), np.array([0.1, 0.9]), max_fpr)


class TestComputePauc:
    def test_pauc_key_follows_roc_auc(self) -> None:
        """compute() adds pauc at PAUC_MAX_FPR = 0.1 right after roc_auc; other keys unchanged."""
        labels = np.array([0, 1, 1, 0, 1, 0])
        scores = np.array([0.2, 0.7, 0.4, 0.5, 0.9, 0.1], np.float32)
        got = compute(labels, scores, 0.5)
        assert PAUC_MAX_FPR == 0.1
        assert list(got) == [
            "accuracy",
            "roc_auc",
            "pauc",
            "precision",
            "recall",
            "f1",
            "confusion",
            "n",
        ]
        assert got["pauc"] == pytest.approx(skm.roc_auc_score(labels, scores, max_fpr=0.1))
        assert type(got["pauc"]) is float
        assert json.loads(json.dumps(got)) == got

    @pytest.mark.parametrize("label", [0, 1])
    def test_one_class_has_no_pauc(self, label: int) -> None:
        """With one class only, pauc is None (null in JSON) like roc_auc."""
        got = compute(np.full(4, label), np.array([0.1, 0.6, 0.7, 0.9]), 0.5)
        assert got["pauc"] is None
        assert got["roc_auc"] is None


def test_no_sklearn_at_import() -> None:
    """train.metrics stays plain numpy: importing it loads neither sklearn nor scipy."""
    code = "import sys, train.metrics; print(sorted({'sklearn', 'scipy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
