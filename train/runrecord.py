"""RUN_DIR, the folder `corona-train fit` writes and `export` reads: one type per file, each
owning both its `write` and its `read` (README, "RUN_DIR").

    run.json         RunRecord: what the fit decided (FeatureSpec, classes, output, threshold,
                     what it was trained on, test metrics; `kind` and `one_class` for
                     normal-only fits)
    calibration.npz  Calibration: int8 calibration rows, the test part, and every window
                     (export's parity check scores them all)

Every read error is a DataError naming the file and the part at fault.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from daemon.analyse.featurespec import FeatureSpec
from daemon.analyse.model_meta import ANOMALOUS
from daemon.errors import DataError
from train.scoring import json_safe

RUN_FILE: Final = "run.json"
CALIBRATION_FILE: Final = "calibration.npz"
MODEL_FILE: Final = "model.keras"
METRICS_FILE: Final = "metrics.json"

_REQUIRED: Final = ("features", "classes", "output", "threshold", "window_s", "trained_on")


@dataclass(frozen=True)
class RunRecord:
    """run.json."""

    preset: str
    spec: FeatureSpec
    classes: tuple[str, ...]
    output: str
    threshold: float
    trained_on: dict[str, Any]
    seed: int = 1
    hop_s: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    epochs_run: int | None = None
    best_epoch: int | None = None
    kind: str | None = None
    """None for a classifier (the default of model metadata), "one-class" for --normal-only."""
    one_class: dict[str, Any] | None = None

    @property
    def gain_invariant(self) -> bool:
        """The model removes microphone gain itself (int8 calibration then spans all gains)."""
        return bool(self.hyperparameters.get("gain_invariant"))

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"preset": self.preset}
        if self.kind is not None:
            doc["kind"] = self.kind
        doc |= {
            "features": self.spec.to_metadata(),
            "window_s": self.spec.window_s,
            "hop_s": self.spec.window_s if self.hop_s is None else self.hop_s,
            "classes": list(self.classes),
            "output": self.output,
            "threshold": self.threshold,
            "seed": self.seed,
        }
        if self.hyperparameters:
            doc["hyperparameters"] = self.hyperparameters
        if self.one_class is not None:
            doc["one_class"] = self.one_class
        if self.epochs_run is not None:
            doc["epochs_run"] = self.epochs_run
            doc["best_epoch"] = self.best_epoch
        doc["trained_on"] = self.trained_on
        doc["metrics"] = self.metrics
        return doc

    def write(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / RUN_FILE, self.document())

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord:
        path = run_dir / RUN_FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path} is missing (is {path.parent} a fit output?)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path} cannot be read: {exc}") from None
        if not isinstance(doc, dict):
            raise DataError(f"{path} must hold a JSON object")
        for key in _REQUIRED:
            if key not in doc:
                raise DataError(f"{path} has no {key!r}")
        if not isinstance(doc["features"], dict) or "transform" not in doc["features"]:
            raise DataError(f"{path} has no 'features.transform'")
        classes = doc["classes"]
        if not isinstance(classes, list) or ANOMALOUS not in classes:
            raise DataError(f"{path} classes {classes!r} lack {ANOMALOUS!r}")
        try:
            spec = FeatureSpec.from_metadata(doc["features"], doc["window_s"])
            threshold = float(doc["threshold"])
        except (TypeError, ValueError) as exc:
            raise DataError(f"{path}: {exc}") from None
        return cls(
            preset=str(doc.get("preset", "")),
            spec=spec,
            classes=tuple(str(c) for c in classes),
            output=str(doc["output"]),
            threshold=threshold,
            trained_on=dict(doc["trained_on"]),
            seed=int(doc.get("seed", 1)),
            hop_s=doc.get("hop_s"),
            metrics=dict(doc.get("metrics") or {}),
            hyperparameters=dict(doc.get("hyperparameters") or {}),
            epochs_run=doc.get("epochs_run"),
            best_epoch=doc.get("best_epoch"),
            kind=doc.get("kind"),
            one_class=doc.get("one_class"),
        )


@dataclass(frozen=True)
class Calibration:
    """calibration.npz: raw feature vectors (FeatureSpec.vector), not model inputs."""

    representative: np.ndarray
    heldout_features: np.ndarray
    heldout_labels: np.ndarray
    heldout_files: np.ndarray
    all_features: np.ndarray
    all_labels: np.ndarray
    all_files: np.ndarray

    def write(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        np.savez(
            run_dir / CALIBRATION_FILE,
            representative=self.representative.astype(np.float32),
            heldout_features=self.heldout_features.astype(np.float32),
            heldout_labels=self.heldout_labels.astype(np.int64),
            heldout_files=self.heldout_files.astype(str),
            all_features=self.all_features.astype(np.float32),
            all_labels=self.all_labels.astype(np.int64),
            all_files=self.all_files.astype(str),
        )

    @classmethod
    def read(cls, run_dir: Path, width: int) -> Calibration:
        """The arrays, checked against the run's feature width. Runs written before the parity
        check kept only the held-out windows: `all_*` then falls back to them."""
        path = run_dir / CALIBRATION_FILE
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except FileNotFoundError:
            raise DataError(f"{path} is missing") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} cannot be read: {exc}") from None
        wanted = ("representative", "heldout_features", "heldout_labels", "heldout_files")
        missing = [key for key in wanted if key not in arrays]
        if missing:
            raise DataError(f"{path} lacks {', '.join(missing)}")
        for key in ("representative", "heldout_features", "all_features"):
            if key not in arrays:
                continue
            shape = arrays[key].shape
            if len(shape) != 2 or shape[1] != width or shape[0] == 0:
                raise DataError(f"{path} {key} has shape {shape}, want (N>0, {width})")
        n = arrays["heldout_features"].shape[0]
        if arrays["heldout_labels"].shape != (n,) or arrays["heldout_files"].shape != (n,):
            raise DataError(f"{path} heldout arrays disagree in length")
        heldout = arrays["heldout_features"].astype(np.float32)
        labels = arrays["heldout_labels"].astype(np.int64)
        everything = arrays.get("all_features", heldout).astype(np.float32)
        all_labels = arrays.get("all_labels", labels).astype(np.int64)
        if all_labels.shape != (everything.shape[0],):
            raise DataError(f"{path} all_features and all_labels disagree in length")
        return cls(
            representative=arrays["representative"].astype(np.float32),
            heldout_features=heldout,
            heldout_labels=labels,
            heldout_files=arrays["heldout_files"].astype(str),
            all_features=everything,
            all_labels=all_labels,
            all_files=arrays.get("all_files", arrays["heldout_files"]).astype(str),
        )


def write_json(path: Path, document: dict[str, Any]) -> None:
    """A RUN_DIR JSON file: numpy values made plain, NaN as null, indented."""
    path.write_text(json.dumps(json_safe(document), indent=2) + "\n", encoding="utf-8")
