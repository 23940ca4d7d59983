"""train.splits: every split is over files, so no recording has windows on both sides."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from daemon.errors import DataError
from train import splits


def _windows(n_files: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(file labels, window -> file index) with 1-4 windows per file."""
    rng = np.random.default_rng(seed)
    file_labels = np.array([i % 2 for i in range(n_files)])
    window_files = np.repeat(np.arange(n_files), rng.integers(1, 5, n_files))
    return file_labels, window_files


class TestHoldout:
    def test_is_the_notebooks_split_over_files(self) -> None:
        """holdout == train_test_split(files, test_size=0.25, stratify=labels, random_state=1)."""
        labels, _ = _windows(40)
        split = splits.holdout(labels, random_state=1)
        train, test = train_test_split(
            np.arange(40), test_size=0.25, stratify=labels, random_state=1
        )
        assert split.train.tolist() == sorted(train.tolist())
        assert split.test.tolist() == sorted(test.tolist())
        assert np.bincount(labels[split.test]).tolist() == [5, 5]

    def test_no_file_has_windows_on_both_sides(self) -> None:
        """Windows of one file all land on the same side of the holdout split."""
        labels, window_files = _windows(30)
        split = splits.holdout(labels)
        train_windows = splits.window_mask(window_files, split.train)
        assert set(window_files[train_windows]).isdisjoint(window_files[~train_windows])
        assert set(window_files[~train_windows]) == set(split.test.tolist())

    def test_needs_two_files_per_class(self) -> None:
        """A class with one file cannot be stratified, which is a clear DataError."""
        with pytest.raises(DataError, match="too few files"):
            splits.holdout(np.array([0, 0, 0, 1]))


class TestCrossValidation:
    def test_every_fold_keeps_files_whole_and_each_file_is_tested_once_per_repeat(self) -> None:
        """Each repeat's K test parts partition the files, and no fold splits a file's windows."""
        labels, window_files = _windows(25)
        folds = list(splits.cross_validation(labels, folds=5, repeats=2, random_state=3))
        assert len(folds) == 10
        for repeat in range(2):
            tested = np.concatenate([f.test for f in folds[repeat * 5 : (repeat + 1) * 5]])
            assert sorted(tested.tolist()) == list(range(25))
        for fold in folds:
            mask = splits.window_mask(window_files, fold.train)
            assert set(window_files[mask]).isdisjoint(window_files[~mask])
            assert set(np.unique(labels[fold.test])) == {0, 1}

    def test_repeats_shuffle_differently(self) -> None:
        """A second repeat is a different partition of the files."""
        labels, _ = _windows(20)
        folds = list(splits.cross_validation(labels, folds=4, repeats=2))
        assert [f.test.tolist() for f in folds[:4]] != [f.test.tolist() for f in folds[4:]]

    def test_too_few_files_for_k_folds(self) -> None:
        """K folds need K files of each class."""
        with pytest.raises(DataError, match="5-fold"):
            list(splits.cross_validation(np.array([0, 0, 0, 1, 1, 1]), folds=5))


class TestValidationPart:
    def test_is_stratified_and_by_file(self) -> None:
        """The validation part is about the asked share of files, with both classes."""
        labels, _ = _windows(20)
        part = splits.validation_part(labels, fraction=0.2, random_state=1)
        assert part is not None
        assert len(part.test) == 4
        assert set(labels[part.test]) == {0, 1}
        assert set(part.train.tolist()).isdisjoint(part.test.tolist())

    def test_none_when_a_class_is_too_small(self) -> None:
        """With fewer than 3 files in a class no validation part is carved."""
        assert (
            splits.validation_part(np.array([0, 0, 1, 1, 1]), fraction=0.2, random_state=1) is None
        )
