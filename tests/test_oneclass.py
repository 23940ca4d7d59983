"""`corona-train fit --normal-only`: a one-class model from normal files alone, exported to
TFLite and scored by the daemon's own runner in evaluate, replay and the live daemon."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.analyse.model import Model
from tests.daemon_runs import run_monitor, wait_until, write_config
from tests.fixtures.live_daemon import TOPICS, Rig, verdicts
from tests.test_train_cli import _assert_one_clear_line, _noise_wav, _run
from train.evaluation import evaluate_tflite
from train.synth import synthesize

WINDOW = ["--window-s", "1"]


@pytest.fixture(scope="module")
def normal_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A one-class fit on 12 normal synth files (4-5 s, 1 s windows) with 6 corona files for
    evaluation only, its int8 export, and a synth set of another seed it never saw."""
    root = tmp_path_factory.mktemp("oneclass")
    synthesize(root / "train", normal=12, anomalous=6, seed=9090, duration_s=(4.0, 5.0))
    synthesize(root / "unseen", normal=8, anomalous=8, seed=9191, duration_s=(4.0, 5.0))
    from train.cli import main

    run = root / "run"
    assert main(["fit", str(root / "train"), "--out", str(run), "--normal-only", *WINDOW]) == 0
    model = root / "one-class.tflite"
    assert main(["export", str(run), "--tflite", "--quantize", "int8", "--out", str(model)]) == 0
    return {"run": run, "model": model, "unseen": root / "unseen", "train": root / "train"}


class TestFitAndExport:
    def test_run_is_one_class_and_fit_only_on_normal_files(
        self, normal_run: dict[str, Path]
    ) -> None:
        """run.json says one-class; no anomalous file is in the fit (they are all test)."""
        run = json.loads((normal_run["run"] / "run.json").read_text())
        assert run["kind"] == "one-class"
        assert run["threshold"] == 0.5
        assert run["features"]["physics"]["names"] == ["mod_db", "hum_db", "crackle_db"]
        per_file = json.loads((normal_run["run"] / "metrics.json").read_text())["per_file"]
        anomalous = [f for f in per_file if f["label"] == "anomalous"]
        assert len(anomalous) == 6
        assert all(f["split"] == "test" for f in anomalous)
        assert any(f["split"] == "train" for f in per_file if f["label"] == "normal")

    def test_metadata_kind_and_threshold_rule(self, normal_run: dict[str, Path]) -> None:
        """The exported metadata carries kind one-class and the rule its threshold came from."""
        meta = json.loads(normal_run["model"].with_suffix(".json").read_text())
        assert meta["kind"] == "one-class"
        assert meta["quantization"] == "int8"
        assert "quantile 0.99" in meta["one_class"]["threshold_rule"]
        assert meta["one_class"]["threshold_distance"] > 0
        assert Model.load(normal_run["model"]).kind == "one-class"

    def test_separates_unseen_corona_from_normal(self, normal_run: dict[str, Path]) -> None:
        """On synth audio of another seed, never seen, file ROC-AUC is well above chance, and
        evaluate reports the DCASE pAUC beside it."""
        result = evaluate_tflite(normal_run["model"], normal_run["unseen"], cache_dir=None)
        assert result.metrics["file"]["roc_auc"] >= 0.8, result.metrics["file"]
        assert result.metrics["window"]["pauc"] is not None
        assert result.metrics["window"]["roc_auc"] > 0.5


class TestDaemonScoresIt:
    def test_replay_verdicts_say_one_class_and_match_evaluate(
        self, normal_run: dict[str, Path], tmp_path: Path
    ) -> None:
        """Replay scores a corona file with the one-class model: model.kind is one-class and the
        scores are evaluate's, window for window (one runner)."""
        wav = sorted((normal_run["unseen"] / "anomalous").glob("*.wav"))[0]
        cfg = write_config(tmp_path, normal_run["model"], logging={"level": "error"})
        done = run_monitor(["--config", str(cfg), "--replay", str(wav)])
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert lines
        assert all(v["model"]["kind"] == "one-class" for v in lines)
        single = tmp_path / "single" / "anomalous"
        single.mkdir(parents=True)
        (single / wav.name).write_bytes(wav.read_bytes())
        expected = evaluate_tflite(normal_run["model"], single.parent, cache_dir=None)
        assert [v["score"] for v in lines] == pytest.approx(expected.window_scores, abs=1e-6)

    def test_live_daemon_scores_with_it(
        self, normal_run: dict[str, Path], rig: Rig, tmp_path: Path
    ) -> None:
        """The live daemon on the ALSA file microphone publishes one-class verdicts."""
        import soundfile as sf

        wav = sorted((normal_run["unseen"] / "anomalous").glob("*.wav"))[0]
        samples, _ = sf.read(wav, dtype="float32")
        rig.mic.write(samples)
        rig.model_path = normal_run["model"]
        watcher = rig.watch("verdict")
        rig.start(rig.config(window={"length_s": 1.0}))
        wait_until(lambda: len(verdicts(watcher.messages)) >= 2, "two verdicts", timeout_s=30)
        first: dict[str, Any] = verdicts(watcher.messages)[0]
        assert first["model"]["kind"] == "one-class"
        assert first["label"] == ("anomalous" if first["score"] >= 0.5 else "normal")
        assert watcher.messages[0].topic == f"{TOPICS}/verdict"


class TestBadInput:
    def test_anomalous_files_only(self, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
        """--normal-only on a folder without normal files: one line saying so."""
        for i in range(3):
            _noise_wav(tmp_path / "anomalous" / f"a{i}.wav", i)
        code, out, err = _run(capfd, "fit", tmp_path, "--out", tmp_path / "run", "--normal-only")
        _assert_one_clear_line(code, out, err, "--normal-only", "found none", "3 anomalous")

    def test_too_few_windows_for_a_covariance(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """Three 2 s normal files make 6 windows of 1 s: too few for 3 values, and the message
        says how many are needed."""
        for i in range(3):
            _noise_wav(tmp_path / "normal" / f"n{i}.wav", i)
        code, out, err = _run(
            capfd, "fit", tmp_path, "--out", tmp_path / "run", "--normal-only", *WINDOW
        )
        _assert_one_clear_line(code, out, err, "too few", "need at least 10")

    def test_options_that_do_not_apply(
        self, tmp_path: Path, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """--cv with --normal-only is a usage error naming --cv."""
        for i in range(3):
            _noise_wav(tmp_path / "normal" / f"n{i}.wav", i)
        code, _, err = _run(
            capfd, "fit", tmp_path, "--out", tmp_path / "run", "--normal-only", "--cv", "3"
        )
        assert code == 2
        assert "--cv does not apply to --normal-only" in err
        assert "Traceback" not in err
        assert not (tmp_path / "run").exists()


def test_int8_scores_follow_the_keras_layers(normal_run: dict[str, Path]) -> None:
    """fit checks that its Keras layers compute daemon.analyse.novelty's score; the int8 runner
    stays
    within quantization of them on every window of the run and agrees on the label."""
    model = Model.load(normal_run["model"])
    with np.load(normal_run["run"] / "calibration.npz") as npz:
        features = npz["all_features"]
    per_file = json.loads((normal_run["run"] / "metrics.json").read_text())["per_file"]
    keras_scores = np.concatenate([f["window_scores"] for f in per_file])
    tflite = np.asarray(model.score(features))
    assert np.mean(np.abs(tflite - keras_scores)) < 0.05
    assert np.mean((tflite >= 0.5) == (keras_scores >= 0.5)) >= 0.9
