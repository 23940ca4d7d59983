"""PNG plots of a fit a person would look at: learning curves, confusion, ROC, spectra, examples.

Matplotlib with the Agg backend (no display needed); every function writes one file and closes
its figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")  # before pyplot or librosa.display is imported

import librosa
import librosa.display
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import auc, roc_curve

from daemon.listen import audio
from train.featurize import WindowSettings

EXAMPLE_S: Final = 10.0
"""Seconds of audio shown in an example spectrogram."""
DPI: Final = 110
_DB_FLOOR: Final = 1e-12
"""Power floor before dB conversion (-120 dB) so digital silence stays finite."""
CLASS_COLOURS: Final = {"normal": "tab:blue", "anomalous": "tab:red"}


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def learning_curves(path: Path, history: dict[str, list[float]]) -> Path:
    """Accuracy and loss per epoch, training and (when there was one) validation part."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for key, label, style in ((metric, "training", "-"), (f"val_{metric}", "validation", "--")):
            values = history.get(key)
            if values:
                axis.plot(range(1, len(values) + 1), values, style, label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.set_title(f"{metric} per epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    if "val_loss" not in history:
        fig.suptitle(
            "no validation part in this preset: the test files are never used in training",
            fontsize=9,
        )
    return _save(fig, path)


def confusion(path: Path, test: dict[str, dict[str, Any]], threshold: float) -> Path:
    """Confusion matrices of the test files, per window and per file."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    names = ["normal", "anomalous"]
    for axis, level in zip(axes, ("window", "file"), strict=True):
        matrix = np.asarray(test[level]["confusion"], int)
        axis.imshow(matrix, cmap="Blues", vmin=0)
        for (row, col), count in np.ndenumerate(matrix):
            colour = "white" if count > matrix.max() / 2 else "black"
            axis.text(col, row, str(count), ha="center", va="center", color=colour, fontsize=14)
        axis.set_xticks([0, 1], names)
        axis.set_yticks([0, 1], names)
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
        accuracy = test[level].get("accuracy")
        shown = "n/a" if accuracy is None else f"{accuracy:.3f}"
        axis.set_title(f"per {level} (accuracy {shown})")
    fig.suptitle(f"test files, threshold {threshold:.3f}")
    return _save(fig, path)


def roc(
    path: Path,
    labels: np.ndarray,
    scores: np.ndarray,
    window_files: np.ndarray,
) -> Path:
    """ROC curves of the test files, per window and per file (file score = mean window score)."""
    files = np.unique(window_files)
    file_labels = np.array([labels[window_files == f][0] for f in files])
    file_scores = np.array([scores[window_files == f].mean() for f in files])
    fig, axis = plt.subplots(figsize=(5, 5))
    for name, y, s in (("window", labels, scores), ("file", file_labels, file_scores)):
        if len(np.unique(y)) == 2:
            fpr, tpr, _ = roc_curve(y, s)
            axis.plot(fpr, tpr, label=f"per {name} (AUC {auc(fpr, tpr):.3f})")
    axis.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.set_title("ROC, test files")
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    return _save(fig, path)


def mean_spectrum(
    path: Path, raw: np.ndarray, labels: np.ndarray, settings: WindowSettings
) -> Path:
    """Mean power spectrum per class (dB of the row means), with the spread between windows."""
    freqs_hz = np.arange(raw.shape[1]) * settings.sample_rate / settings.n_fft
    fig, axis = plt.subplots(figsize=(9, 4.5))
    for label, name in enumerate(("normal", "anomalous")):
        rows = raw[labels == label]
        if len(rows) == 0:
            continue
        db = 10 * np.log10(np.maximum(rows, _DB_FLOOR))
        mean, spread = db.mean(axis=0), db.std(axis=0)
        colour = CLASS_COLOURS[name]
        axis.plot(freqs_hz, mean, color=colour, label=f"{name} ({len(rows)} windows)")
        axis.fill_between(freqs_hz, mean - spread, mean + spread, color=colour, alpha=0.15)
    axis.set_xscale("symlog", linthresh=1000)
    axis.set_xlim(freqs_hz[1], freqs_hz[-1])
    axis.set_xlabel("frequency (Hz)")
    axis.set_ylabel("mean power (dB)")
    axis.set_title("mean log spectrum per class, training windows (band: ±1 std)")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    return _save(fig, path)


def spectrogram(path: Path, examples: dict[str, Path], settings: WindowSettings) -> Path:
    """Spectrogram of the first seconds of one example file per class."""
    rows = max(1, len(examples))
    fig, axes = plt.subplots(rows, 1, figsize=(10, 3.4 * rows), squeeze=False, layout="constrained")
    image = None
    for number, (axis, (name, file_path)) in enumerate(
        zip(axes[:, 0], sorted(examples.items()), strict=False), 1
    ):
        samples, _ = audio.load(file_path)
        samples = samples[: int(EXAMPLE_S * settings.sample_rate)]
        stft = librosa.stft(samples, n_fft=settings.n_fft, hop_length=settings.hop_length)
        db = librosa.power_to_db(np.abs(stft) ** 2, ref=1.0, amin=_DB_FLOOR, top_db=100)
        image = librosa.display.specshow(
            db,
            sr=settings.sample_rate,
            hop_length=settings.hop_length,
            x_axis="time",
            y_axis="log",
            ax=axis,
            cmap="magma",
        )
        axis.set_title(f"{name}: {file_path.name} (first {EXAMPLE_S:g} s)")
        axis.set_xlabel("time (s)" if number == rows else "")
        axis.set_ylabel("frequency (Hz)")
    if image is not None:
        fig.colorbar(image, ax=axes[:, 0].tolist(), format="%+.0f dB")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def write_all(
    out_dir: Path,
    *,
    history: dict[str, list[float]],
    test: dict[str, dict[str, Any]],
    test_labels: np.ndarray,
    test_scores: np.ndarray,
    test_files: np.ndarray,
    threshold: float,
    raw: np.ndarray,
    raw_labels: np.ndarray,
    examples: dict[str, Path],
    settings: WindowSettings,
) -> list[Path]:
    """Every plot of a fit into `out_dir`; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        learning_curves(out_dir / "history.png", history),
        confusion(out_dir / "confusion.png", test, threshold),
        roc(out_dir / "roc.png", test_labels, test_scores, test_files),
        mean_spectrum(out_dir / "mean_spectrum.png", raw, raw_labels, settings),
        spectrogram(out_dir / "spectrograms.png", examples, settings),
    ]
