"""Splits of a data set by FILE, never by window: every index here is a file index.

A recording's windows are strongly correlated; splitting windows would let the test side see
the same recording the model trained on. `windows_of_files` turns file indices into window masks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
from sklearn.model_selection import RepeatedStratifiedKFold, train_test_split

from daemon.errors import DataError

TEST_FRACTION: Final = 0.25
"""The seed notebook's held-out share of files."""


@dataclass(frozen=True)
class FileSplit:
    """File indices of the two sides of one split."""

    train: np.ndarray
    test: np.ndarray


def _check(labels: np.ndarray, n_parts: int, what: str) -> None:
    counts = np.bincount(labels, minlength=2)
    if counts.min() < n_parts:
        raise DataError(
            f"too few files for {what}: {counts[0]} normal and {counts[1]} anomalous; "
            f"each class needs at least {n_parts} readable files"
        )


def holdout(
    file_labels: np.ndarray, *, test_fraction: float = TEST_FRACTION, random_state: int = 1
) -> FileSplit:
    """The seed notebook's split, over files: train_test_split(stratify=labels, random_state)."""
    labels = np.asarray(file_labels, int)
    _check(labels, 2, "a stratified train/test split")
    indices = np.arange(len(labels))
    train, test = train_test_split(
        indices, test_size=test_fraction, stratify=labels, random_state=random_state
    )
    return FileSplit(train=np.sort(train), test=np.sort(test))


def cross_validation(
    file_labels: np.ndarray, *, folds: int, repeats: int = 1, random_state: int = 1
) -> Iterator[FileSplit]:
    """Repeated stratified K-fold over files (each file is its own group, so this is
    StratifiedGroupKFold with whole recordings kept together)."""
    labels = np.asarray(file_labels, int)
    if folds < 2:
        raise DataError(f"--cv must be at least 2 folds, got {folds}")
    if repeats < 1:
        raise DataError(f"--repeats must be at least 1, got {repeats}")
    _check(labels, folds, f"{folds}-fold cross-validation")
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=random_state)
    for train, test in splitter.split(np.zeros(len(labels)), labels):
        yield FileSplit(train=np.sort(train), test=np.sort(test))


def validation_part(
    file_labels: np.ndarray, *, fraction: float, random_state: int
) -> FileSplit | None:
    """Carve a stratified validation part (`test`) from training files, or None when a class
    has too few files to spare one (fewer than 3)."""
    labels = np.asarray(file_labels, int)
    counts = np.bincount(labels, minlength=2)
    if counts.min() < 3:
        return None
    n_val = max(2, round(fraction * len(labels)))
    indices = np.arange(len(labels))
    train, val = train_test_split(
        indices, test_size=n_val, stratify=labels, random_state=random_state
    )
    return FileSplit(train=np.sort(train), test=np.sort(val))


def window_mask(window_files: np.ndarray, files: np.ndarray) -> np.ndarray:
    """Boolean mask of the windows whose file index is in `files`."""
    return np.isin(window_files, files)
