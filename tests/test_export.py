"""train.export: Keras RUN_DIR -> checked TFLite + metadata, scored through daemon.analyse.model."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from daemon.analyse.features import apply_transform
from daemon.analyse.model import Model
from daemon.errors import CoronaError, DataError, ModelError
from train.export import (
    MAX_ACCURACY_DROP,
    MAX_AUC_DROP,
    MIN_WINDOWS_LOST,
    AccuracyLossError,
    check_parity,
    export_tflite,
)

FLOAT32_TOLERANCE = 1e-5
"""Same graph in float32; only the order of float operations differs."""
FLOAT16_TOLERANCE = 0.01
"""Weights rounded to float16 (relative error ~5e-4 each); measured max 0.003."""
INT8_MAX_TOLERANCE = 0.08
INT8_MEAN_TOLERANCE = 0.02
"""int8 rounds input, hidden activations and output to 256 steps each; the output step alone
is 1/256 = 0.004, and a logit error of ~0.25 moves a score near 0.5 by ~0.06. Measured on these
runs: max 0.062, mean 0.010. A wrong scale or zero point in the runner gives errors of 0.3+."""


def _keras_scores(run_dir: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(raw held-out features, Keras P(anomalous), run.json) for a RUN_DIR."""
    run = json.loads((run_dir / "run.json").read_text())
    with np.load(run_dir / "calibration.npz") as npz:
        raw = npz["heldout_features"]
    model = keras.models.load_model(run_dir / "model.keras")
    out = model.predict(apply_transform(run["features"]["transform"], raw), verbose=0)
    column = run["classes"].index("anomalous") if run["output"] == "softmax" else 0
    return raw, out[:, column], run


class TestAgreement:
    @pytest.mark.parametrize("run", ["softmax", "sigmoid"])
    def test_keras_float_and_int8_agree(
        self,
        exported: Callable[..., Any],
        softmax_run: Path,
        sigmoid_run: Path,
        run: str,
    ) -> None:
        """Keras, float32/float16 TFLite and int8 TFLite give the same scores within tolerance."""
        raw, keras_scores, _ = _keras_scores({"softmax": softmax_run, "sigmoid": sigmoid_run}[run])
        diffs = {
            quantize: np.abs(
                np.asarray(Model.load(exported(run, quantize).tflite_path).score(raw))
                - keras_scores
            )
            for quantize in ("none", "float16", "int8")
        }
        assert diffs["none"].max() <= FLOAT32_TOLERANCE
        assert diffs["float16"].max() <= FLOAT16_TOLERANCE
        assert diffs["int8"].max() <= INT8_MAX_TOLERANCE
        assert diffs["int8"].mean() <= INT8_MEAN_TOLERANCE
        # The scores really spread, so the comparison is not between saturated 0s and 1s.
        assert np.mean((keras_scores > 0.1) & (keras_scores < 0.9)) >= 0.1

    @pytest.mark.parametrize("quantize", ["none", "int8"])
    def test_report_numbers_match_a_fresh_check(
        self, exported: Callable[..., Any], sigmoid_run: Path, quantize: str
    ) -> None:
        """The report's max difference and accuracies are those of the written model."""
        report = exported("sigmoid", quantize)
        raw, keras_scores, run = _keras_scores(sigmoid_run)
        with np.load(sigmoid_run / "calibration.npz") as npz:
            labels = npz["heldout_labels"]
        scores = np.asarray(Model.load(report.tflite_path).score(raw))
        assert report.max_abs_score_diff == pytest.approx(
            np.abs(scores - keras_scores).max(), abs=1e-6
        )
        threshold = run["threshold"]
        assert report.tflite_accuracy == pytest.approx(np.mean((scores >= threshold) == labels))
        assert report.keras_accuracy == pytest.approx(
            np.mean((keras_scores >= threshold) == labels)
        )


class TestWrittenFiles:
    def test_metadata_per_design(self, exported: Callable[..., Any], sigmoid_run: Path) -> None:
        """NAME.json carries every field of the design, the file's sha256 and held-out metrics."""
        report = exported("sigmoid", "int8")
        meta = json.loads(report.json_path.read_text())
        run = json.loads((sigmoid_run / "run.json").read_text())
        assert meta["format"] == "corona-monitor-model/1"
        assert meta["name"] == "sigmoid-int8"
        assert datetime.fromisoformat(meta["created"]).utcoffset() is not None
        assert meta["sha256"] == hashlib.sha256(report.tflite_path.read_bytes()).hexdigest()
        assert meta["classes"] == ["normal", "anomalous"]
        assert meta["output"] == "sigmoid"
        assert meta["features"] == run["features"]
        assert meta["window_s"] == run["window_s"]
        assert meta["threshold"] == run["threshold"]
        assert meta["quantization"] == "int8"
        assert meta["trained_on"] == run["trained_on"]
        keys = {"accuracy", "roc_auc", "pauc", "precision", "recall", "f1", "confusion", "n"}
        assert set(meta["metrics"]["window"]) == keys
        assert set(meta["metrics"]["file"]) == keys
        assert meta["metrics"]["window"]["n"] == report.n_heldout == 64
        assert meta["metrics"]["file"]["n"] == 16
        assert meta["metrics"]["window"]["accuracy"] == report.tflite_accuracy

    def test_int8_tensors_and_size(self, exported: Callable[..., Any]) -> None:
        """An int8 export has int8 input and output tensors and is smaller than float32."""
        int8, none = exported("softmax", "int8"), exported("softmax", "none")
        interpreter = Interpreter(model_path=str(int8.tflite_path))
        assert interpreter.get_input_details()[0]["dtype"] == np.int8
        assert interpreter.get_output_details()[0]["dtype"] == np.int8
        assert int8.size_bytes < none.size_bytes / 2
        assert int8.size_bytes == int8.tflite_path.stat().st_size

    def test_no_temporary_files_left(self, exported: Callable[..., Any]) -> None:
        """After exports only NAME.tflite/NAME.json pairs remain in the output folder."""
        out_dir = exported("softmax", "int8").tflite_path.parent
        names = sorted(p.name for p in out_dir.iterdir())
        assert names
        assert all(n.endswith((".tflite", ".json")) and not n.startswith(".") for n in names)
        stems = {Path(n).stem for n in names}
        assert len(names) == 2 * len(stems)

    def test_name_and_overwrite(self, softmax_run: Path, tmp_path: Path) -> None:
        """name= sets the metadata name; exporting again replaces both files consistently."""
        out = tmp_path / "corona-demo.tflite"
        out.write_bytes(b"old model")
        first = export_tflite(softmax_run, out, quantize="float16", name="tower-7")
        assert json.loads(first.json_path.read_text())["name"] == "tower-7"
        second = export_tflite(softmax_run, out, quantize="int8")
        model = Model.load(out)
        assert model.sha256 == second.sha256 != first.sha256
        assert model.name == "corona-demo"
        assert oct(out.stat().st_mode & 0o777) == oct(0o644)


class TestRefusal:
    def test_int8_that_destroys_accuracy_is_refused(self, quiet_run: Path, tmp_path: Path) -> None:
        """int8 rounding the decisive quiet bins to zero is refused, and nothing is written."""
        out_dir = tmp_path / "models"
        out_dir.mkdir()
        with pytest.raises(
            AccuracyLossError, match=r"int8 TFLite (window ROC-AUC|accuracy) .* windows"
        ):
            export_tflite(quiet_run, out_dir / "quiet.tflite", quantize="int8")
        assert list(out_dir.iterdir()) == []

    def test_same_model_in_float_is_accepted(self, quiet_run: Path, tmp_path: Path) -> None:
        """The float32 export of that model keeps its accuracy, so the refusal is int8's fault."""
        report = export_tflite(quiet_run, tmp_path / "quiet.tflite", quantize="none")
        assert report.keras_accuracy == report.tflite_accuracy == 1.0

    def test_only_a_real_loss_is_refused(self) -> None:
        """Limits: AUC 0.01, or accuracy 2 points *and* 3 windows; the message gives the
        statistic and the number of windows."""
        assert (MAX_ACCURACY_DROP, MIN_WINDOWS_LOST, MAX_AUC_DROP) == (0.02, 3, 0.01)

        def result(accuracy: float, auc: float | None, n: int) -> dict[str, Any]:
            half = n // 2
            return {
                "accuracy": accuracy,
                "roc_auc": auc,
                "n": n,
                "confusion": [[half, 0], [0, half]],
            }

        check_parity(result(1.0, 1.0, 100), result(0.98, 0.99, 100), quantize="int8")
        check_parity(result(0.9, 0.9, 100), result(0.95, 0.95, 100), quantize="int8")
        # One window of 7 flipped is 14 points but not a real loss.
        check_parity(result(1.0, None, 7), result(6 / 7, None, 7), quantize="int8")
        with pytest.raises(AccuracyLossError) as info:
            check_parity(result(1.0, None, 100), result(0.97, None, 100), quantize="float16")
        assert isinstance(info.value, CoronaError)
        assert "float16 TFLite accuracy 0.9700 is 3.0 points (3 of 100 windows)" in str(info.value)
        with pytest.raises(
            AccuracyLossError, match=r"ROC-AUC 0\.9700 is 0\.0200 below .* 2000 win"
        ):
            check_parity(result(1.0, 0.99, 2000), result(1.0, 0.97, 2000), quantize="int8")
        # On 50 windows the AUC's own standard error (about 0.03 at 0.9) is the limit.
        check_parity(result(1.0, 0.90, 50), result(1.0, 0.88, 50), quantize="int8")


class TestBadInput:
    def test_unknown_quantization(self, softmax_run: Path, tmp_path: Path) -> None:
        """An unknown --quantize value is refused by name."""
        with pytest.raises(ModelError, match="'int4' is unknown"):
            export_tflite(softmax_run, tmp_path / "m.tflite", quantize="int4")

    def test_output_must_be_tflite(self, softmax_run: Path, tmp_path: Path) -> None:
        """An output path not ending in .tflite is refused."""
        with pytest.raises(ModelError, match=r"must end in \.tflite"):
            export_tflite(softmax_run, tmp_path / "m.bin")

    def test_output_folder_must_exist(self, softmax_run: Path, tmp_path: Path) -> None:
        """A missing output folder is named."""
        with pytest.raises(ModelError, match=r"output folder .* does not exist"):
            export_tflite(softmax_run, tmp_path / "nope" / "m.tflite")

    def test_missing_run_dir(self, tmp_path: Path) -> None:
        """A run folder that does not exist is a DataError naming it."""
        with pytest.raises(DataError, match=r"run folder .*absent does not exist"):
            export_tflite(tmp_path / "absent", tmp_path / "m.tflite")

    @pytest.mark.parametrize(
        ("damage", "message"),
        [
            ("no_run_json", r"run\.json is missing"),
            ("no_calibration", r"calibration\.npz is missing"),
            ("no_heldout_labels", r"calibration\.npz lacks heldout_labels"),
            ("narrow_heldout", r"heldout_features has shape \(64, 512\)"),
            ("no_transform", r"has no 'features\.transform'"),
        ],
    )
    def test_damaged_run_dir(
        self, softmax_run: Path, tmp_path: Path, damage: str, message: str
    ) -> None:
        """A RUN_DIR lacking what export needs is a DataError naming the file and part."""
        run_dir = tmp_path / "run"
        shutil.copytree(softmax_run, run_dir)
        calibration = run_dir / "calibration.npz"
        with np.load(calibration) as npz:
            arrays = dict(npz)
        if damage == "no_run_json":
            (run_dir / "run.json").unlink()
        elif damage == "no_calibration":
            calibration.unlink()
        elif damage == "no_heldout_labels":
            del arrays["heldout_labels"]
            np.savez(calibration, **arrays)
        elif damage == "narrow_heldout":
            arrays["heldout_features"] = arrays["heldout_features"][:, :512]
            np.savez(calibration, **arrays)
        else:
            run = json.loads((run_dir / "run.json").read_text())
            del run["features"]["transform"]
            (run_dir / "run.json").write_text(json.dumps(run))
        with pytest.raises(DataError, match=message):
            export_tflite(run_dir, tmp_path / "m.tflite", quantize="none")
