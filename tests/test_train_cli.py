"""corona-train end to end: bad input gives one clear line, the seed preset is the notebook's,
fit is deterministic, and inspect -> fit -> export -> evaluate works on a tiny synthetic set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import soundfile as sf
from sklearn.model_selection import train_test_split

from daemon.constants import SAMPLE_RATE
from train.cli import main
from train.synth import synthesize

REPO = Path(__file__).resolve().parents[1]
FAST = ["--window-s", "1", "--no-plots"]
"""Tiny files are cut into 1 s windows; plots are tested once, in the end-to-end test."""


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 normal + 6 anomalous synthetic files of 3-4 s."""
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, normal=6, anomalous=6, seed=20240, duration_s=(3.0, 4.0))
    return out


def _noise_wav(path: Path, seed: int, seconds: float = 2.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(
        path,
        0.05 * rng.standard_normal(round(seconds * SAMPLE_RATE)),
        SAMPLE_RATE,
        subtype="PCM_16",
    )


def _run(capfd: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return code, out, err


def _assert_one_clear_line(code: int, out: str, err: str, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, err
    assert errors[0] == lines[-1]  # progress lines may come first; the error ends the output
    for needle in needles:
        assert needle in errors[0]


class TestBadInput:
    def test_empty_folder(self, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
        """fit on an empty folder exits non-zero with one line saying there is no labelled audio."""
        code, out, err = _run(capfd, "fit", tmp_path, "--out", tmp_path / "run")
        _assert_one_clear_line(code, out, err, "no labelled audio", str(tmp_path))

    def test_missing_folder(self, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
        """inspect on a folder that does not exist names it."""
        code, out, err = _run(capfd, "inspect", tmp_path / "absent")
        _assert_one_clear_line(code, out, err, "no such data folder")

    def test_one_class_only(self, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
        """fit with normal files only names the missing class."""
        for i in range(3):
            _noise_wav(tmp_path / "normal" / f"n{i}.wav", i)
        code, out, err = _run(capfd, "fit", tmp_path, "--out", tmp_path / "run")
        _assert_one_clear_line(code, out, err, "one class only", "no anomalous")

    def test_manifest_naming_missing_files(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A manifest that lists absent files gets them listed."""
        _noise_wav(tmp_path / "a.wav", 1)
        (tmp_path / "manifest.csv").write_text("file,label\na.wav,0\nlost.wav,1\n")
        code, out, err = _run(capfd, "fit", tmp_path, "--out", tmp_path / "run")
        _assert_one_clear_line(code, out, err, "not found", "lost.wav")

    def test_bad_label(self, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
        """A label other than 0/1/normal/anomalous names the line and the value."""
        _noise_wav(tmp_path / "a.wav", 1)
        (tmp_path / "manifest.csv").write_text("file,label\na.wav,broken\n")
        code, out, err = _run(capfd, "inspect", tmp_path)
        _assert_one_clear_line(code, out, err, "line 2", "bad label 'broken'")

    def test_inspect_fails_on_an_unreadable_file(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """inspect lists every file but exits 1 and counts the unreadable one apart."""
        for i in range(2):
            _noise_wav(tmp_path / "normal" / f"n{i}.wav", i)
        (tmp_path / "anomalous").mkdir()
        (tmp_path / "anomalous" / "broken.wav").write_bytes(b"RIFF\x00\x00not audio")
        code, out, err = _run(capfd, "inspect", tmp_path)
        assert code == 1
        assert "Traceback" not in out + err
        assert (
            "files: 3 (2 normal, 1 anomalous), labels from folders; 1 unreadable, 2 usable" in out
        )
        assert "broken.wav" in out

    def test_corrupt_wav_is_skipped_and_reported(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A corrupt WAV among good ones is skipped, named with its reason and counted."""
        for i in range(3):
            _noise_wav(tmp_path / "normal" / f"n{i}.wav", i)
            _noise_wav(tmp_path / "anomalous" / f"a{i}.wav", 10 + i)
        (tmp_path / "anomalous" / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt nonsense")
        code, out, err = _run(
            capfd,
            "fit",
            tmp_path,
            "--out",
            tmp_path / "run",
            "--preset",
            "seed",
            "--epochs",
            "2",
            "--cache",
            tmp_path / "cache",
            *FAST,
        )
        assert code == 0, err
        assert "Traceback" not in out + err
        assert "features of 7 files: 6 decoded, 0 from cache, 1 skipped" in err
        assert "skipped anomalous/broken.wav:" in err
        assert "1 skipped" in out
        metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
        assert [s["file"] for s in metrics["skipped"]] == ["anomalous/broken.wav"]

        code, out, err = _run(
            capfd,
            "fit",
            tmp_path,
            "--out",
            tmp_path / "run2",
            "--strict",
            "--cache",
            tmp_path / "cache",
            *FAST,
        )
        _assert_one_clear_line(code, out, err, "anomalous/broken.wav")
        assert not (tmp_path / "run2").exists()

    def test_usage_error_is_one_line(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """A missing required option is one line with exit status 2."""
        code, out, err = _run(capfd, "fit", tmp_path)
        _assert_one_clear_line(code, out, err, "usage error", "--out")
        assert code == 2

    def test_console_entry_point_has_no_traceback(self, tmp_path: Path) -> None:
        """Run as a program, an error is one line on stderr and exit status 1."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "train.cli",
                "evaluate",
                str(tmp_path / "x.tflite"),
                str(tmp_path),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 1
        assert "Traceback" not in done.stderr + done.stdout
        assert len(done.stderr.strip().splitlines()) == 1
        assert done.stderr.startswith("corona-train: error:")


class TestSeedPreset:
    def test_reproduces_the_notebook(
        self, synth_set: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """The saved seed model is Dense(16, relu) -> Dropout(0.3) -> Dense(2, softmax), adam,
        binary cross-entropy, batch 25, 50 epochs, on the notebook's 75/25 file split (state 1)."""
        run = tmp_path / "run"
        code, _, err = _run(
            capfd,
            "fit",
            synth_set,
            "--out",
            run,
            "--preset",
            "seed",
            "--cache",
            tmp_path / "cache",
            *FAST,
        )
        assert code == 0, err
        model = keras.saving.load_model(run / "model.keras")
        layers = model.layers
        assert [type(layer).__name__ for layer in layers] == ["Dense", "Dropout", "Dense"]
        assert model.input_shape == (None, 513)
        assert (layers[0].units, layers[0].activation.__name__) == (16, "relu")
        assert layers[1].rate == pytest.approx(0.3)
        assert (layers[2].units, layers[2].activation.__name__) == (2, "softmax")
        assert type(model.optimizer).__name__ == "Adam"
        assert model.loss == "binary_crossentropy"

        info = json.loads((run / "run.json").read_text())
        hyper = info["hyperparameters"]
        assert (hyper["batch_size"], hyper["epochs"], hyper["optimizer"]) == (25, 50, "adam")
        assert hyper["loss"] == "binary_crossentropy"
        assert hyper["early_stopping_patience"] is None
        assert info["features"]["transform"] == "power_mean"
        assert (info["output"], info["threshold"]) == ("softmax", 0.5)
        assert info["classes"] == ["normal", "anomalous"]

        metrics = json.loads((run / "metrics.json").read_text())
        assert len(metrics["history"]["loss"]) == 50
        assert "val_loss" not in metrics["history"]  # the test files never steer training
        names = [f["file"] for f in metrics["per_file"]]
        labels = [int(f["label"] == "anomalous") for f in metrics["per_file"]]
        _, expected_test = train_test_split(names, test_size=0.25, stratify=labels, random_state=1)
        assert sorted(f["file"] for f in metrics["per_file"] if f["split"] == "test") == sorted(
            expected_test
        )
        assert metrics["test"]["file"]["n"] == 3


class TestDeterminism:
    def test_same_command_same_metrics(
        self, synth_set: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """fit twice with the same arguments gives identical scores, threshold and history."""
        results = []
        for name in ("a", "b"):
            code, _, err = _run(
                capfd,
                "fit",
                synth_set,
                "--out",
                tmp_path / name,
                "--epochs",
                "15",
                "--cache",
                tmp_path / "cache",
                *FAST,
            )
            assert code == 0, err
            results.append(json.loads((tmp_path / name / "metrics.json").read_text()))
        first, second = results
        for key in ("test", "threshold", "history", "per_file", "validation"):
            assert first[key] == second[key], key


def _separable_set(root: Path, per_class: int, seconds: float, seed: int) -> None:
    """Files the tiny model can tell apart reliably (so int8 export passes its 2-point check):
    normal = brown noise; anomalous = the same plus broadband hiss and a 100 Hz buzz with
    harmonics (corona's signature, exaggerated); every file at a random gain."""
    rng = np.random.default_rng(seed)
    n = round(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    for label in ("normal", "anomalous"):
        for i in range(per_class):
            brown = np.cumsum(rng.standard_normal(n))
            brown -= np.convolve(brown, np.ones(441) / 441, mode="same")  # remove the drift
            signal = brown / np.max(np.abs(brown))
            if label == "anomalous":
                buzz = sum(np.sin(2 * np.pi * 100 * k * t) / k for k in range(1, 6))
                signal = signal + 0.3 * rng.standard_normal(n) + 0.2 * buzz
            gain = 10 ** (rng.uniform(-30, -10) / 20)
            path = root / label / f"{label}_{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, gain * signal / np.max(np.abs(signal)), SAMPLE_RATE, subtype="PCM_16")


class TestSynth:
    def test_writes_a_labelled_set_inspect_reads(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """synth writes 16-bit 44.1 kHz mono WAVs per class and a manifest that inspect reads."""
        out = tmp_path / "synth"
        code, stdout, err = _run(
            capfd,
            "synth",
            out,
            "--normal",
            "2",
            "--anomalous",
            "1",
            "--seed",
            "3",
            "--min-s",
            "1",
            "--max-s",
            "1.5",
        )
        assert code == 0, err
        assert "wrote 2 normal and 1 anomalous files" in stdout
        info = sf.info(next((out / "anomalous").glob("*.wav")))
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        code, stdout, err = _run(capfd, "inspect", out)
        assert code == 0, err
        assert "files: 3 (2 normal, 1 anomalous), labels from manifest" in stdout

    def test_min_longer_than_max_is_a_usage_error(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """--min-s above --max-s is refused before anything is written."""
        code, out, err = _run(
            capfd,
            "synth",
            tmp_path / "s",
            "--normal",
            "1",
            "--anomalous",
            "1",
            "--seed",
            "1",
            "--min-s",
            "5",
            "--max-s",
            "2",
        )
        _assert_one_clear_line(code, out, err, "--min-s")
        assert not (tmp_path / "s").exists()


class TestEndToEnd:
    def test_inspect_fit_export_evaluate(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """inspect -> fit -> export int8 -> evaluate on a tiny set, with plots and JSON."""
        data_dir, run, model = (
            tmp_path / "data",
            tmp_path / "run",
            tmp_path / "models" / "tiny.tflite",
        )
        cache = ["--cache", str(tmp_path / "cache")]
        _separable_set(data_dir, per_class=8, seconds=4.0, seed=5)

        code, out, err = _run(capfd, "inspect", data_dir)
        assert code == 0, err
        assert out.splitlines()[0].split() == [
            "file",
            "label",
            "channels",
            "sample_width",
            "frame_rate",
            "frame_width",
            "length_s",
            "frame_count",
            "loudness_dbfs",
            "problems",
        ]
        assert "files: 16 (8 normal, 8 anomalous), labels from folders" in out
        assert "sample rates: 44100 Hz (16 files)" in out
        code, csv_out, _ = _run(capfd, "inspect", data_dir, "--csv")
        assert code == 0
        assert len(csv_out.splitlines()) == 17
        assert csv_out.startswith("file,label,channels,")

        code, out, err = _run(
            capfd, "fit", data_dir, "--out", run, "--window-s", "1", "--epochs", "30", *cache
        )
        assert code == 0, err
        for name in ("model.keras", "run.json", "calibration.npz", "metrics.json"):
            assert (run / name).is_file(), name
        for name in ("history", "confusion", "roc", "mean_spectrum", "spectrograms"):
            png = run / "plots" / f"{name}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert "features of 16 files: 16 decoded, 0 from cache, 0 skipped" in err
        assert "epoch 30/30: loss " in err
        assert "trained all 30 epochs" in err
        assert "trained default on 12 of 16 files" in out

        code, out, err = _run(
            capfd, "export", run, "--tflite", "--quantize", "int8", "--out", model
        )
        assert code == 0, err
        assert model.is_file()
        assert model.with_suffix(".json").is_file()

        code, out, err = _run(capfd, "evaluate", model, data_dir, "--json", *cache)
        assert code == 0, err
        # The model's own training folder: the numbers are printed, with a warning beside them.
        assert "warning: " in err
        assert "is the folder this model was trained on" in err
        result = json.loads(out)
        assert set(result) == {"window", "file"}
        for level, n in (("window", 64), ("file", 16)):
            assert {
                "accuracy",
                "roc_auc",
                "pauc",
                "precision",
                "recall",
                "f1",
                "confusion",
                "n",
            } <= set(result[level])
            assert result[level]["n"] == n
            assert sum(map(sum, result[level]["confusion"])) == n
        assert result["file"]["accuracy"] >= 0.9  # a separable set, scored by the int8 model


class TestCrossValidation:
    def test_cv_reports_mean_and_interval_of_every_metric(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """--cv K --repeats R trains K*R folds by file; each metric gets a mean and interval."""
        _separable_set(tmp_path / "data", per_class=4, seconds=2.0, seed=8)
        code, out, err = _run(
            capfd,
            "fit",
            tmp_path / "data",
            "--out",
            tmp_path / "run",
            "--cv",
            "2",
            "--repeats",
            "2",
            "--epochs",
            "5",
            "--cache",
            tmp_path / "cache",
            *FAST,
        )
        assert code == 0, err
        assert "cross-validation: 2 folds x 2 repeats by file" in out
        assert err.count("  fold ") == 4
        cv = json.loads((tmp_path / "run" / "metrics.json").read_text())["cv"]
        assert (cv["folds"], cv["repeats"], len(cv["per_fold"])) == (2, 2, 4)
        for level in ("window", "file"):
            for name in ("accuracy", "roc_auc", "precision", "recall", "f1"):
                stat = cv[level][name]
                assert stat["folds"] == 4
                assert 0.0 <= stat["low"] <= stat["mean"] <= stat["high"] <= 1.0
        for fold in cv["per_fold"]:
            assert fold["file"]["n"] == 4  # half of the 8 files, whole files only
