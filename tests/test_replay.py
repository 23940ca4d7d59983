"""corona-monitor --replay: files through the live pipeline; verdicts on stdout and MQTT."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon import schemas
from daemon.analyse.model import Model
from daemon.config import DEFAULT_MODEL_PATH as SHIPPED_MODEL
from daemon.constants import SAMPLE_RATE
from daemon.listen import audio
from daemon.listen.windows import windows_of
from tests.daemon_runs import (
    MonitorProcess,
    json_lines,
    mqtt_section,
    noisy_clip,
    run_monitor,
    write_config,
    write_wav,
)


@pytest.fixture
def model_path(exported: Callable[[str, str], Any]) -> Path:
    return Path(exported("sigmoid", "int8").tflite_path)


class TestReplayStdout:
    def test_one_schema_valid_verdict_per_window(self, tmp_path: Path, model_path: Path) -> None:
        """A 3.2 s file at 1 s windows gives 3 verdicts (the 0.2 s tail is dropped), all valid."""
        wav = write_wav(tmp_path / "clip.wav", noisy_clip(3.2, seed=1))
        cfg = write_config(tmp_path, model_path)
        done = run_monitor(["--config", str(cfg), "--replay", str(wav)])
        assert done.returncode == 0, done.stderr
        verdicts = json_lines(done.stdout)
        assert len(verdicts) == 3
        for v in verdicts:
            schemas.validate("verdict", v)
            assert v["source"] == "replay"
            assert v["file"] == str(wav)
        assert [v["offset_s"] for v in verdicts] == [0.0, 1.0, 2.0]
        assert verdicts[0]["window_start"] == "1970-01-01T00:00:00.000Z"
        assert verdicts[1]["window_end"] == "1970-01-01T00:00:02.000Z"
        seqs = [v["seq"] for v in verdicts]
        assert seqs == sorted(set(seqs))

    def test_json_log_holds_only_json(self, tmp_path: Path, model_path: Path) -> None:
        """With logging.format json every stderr line is a JSON event: LiteRT's own "INFO:
        Created TensorFlow Lite XNNPACK delegate" line comes out as a runtime_said event."""
        wav = write_wav(tmp_path / "clip.wav", noisy_clip(2.0, seed=3))
        cfg = write_config(tmp_path, model_path, logging={"level": "info"})
        done = run_monitor(["--config", str(cfg), "--replay", str(wav)])
        assert done.returncode == 0, done.stderr
        events = json_lines(done.stderr)  # raises on any line that is not JSON
        assert any(e["event"] == "model_loaded" for e in events)

    def test_scores_equal_the_runner_on_the_same_windows(
        self, tmp_path: Path, model_path: Path
    ) -> None:
        """Replay's scores are the daemon runner's scores of daemon.listen.windows on
        daemon.listen.audio.load."""
        wav = write_wav(tmp_path / "clip.wav", noisy_clip(4.0, seed=2, amplitude=0.3))
        done = run_monitor(
            ["--config", str(write_config(tmp_path, model_path)), "--replay", str(wav)]
        )
        assert done.returncode == 0, done.stderr
        samples, _ = audio.load(wav)
        windows = windows_of(samples, sample_rate=SAMPLE_RATE, length_s=1.0, hop_s=1.0)
        expected = Model.load(model_path).score(np.stack([w.features for w in windows]))
        got = [v["score"] for v in json_lines(done.stdout)]
        np.testing.assert_allclose(got, expected, atol=1e-6)

    def test_seq_continues_across_runs(self, tmp_path: Path, model_path: Path) -> None:
        """seq never repeats for a node: a second run continues where the first stopped."""
        wav = write_wav(tmp_path / "clip.wav", noisy_clip(2.0, seed=3))
        cfg = write_config(tmp_path, model_path)
        first = json_lines(run_monitor(["--config", str(cfg), "--replay", str(wav)]).stdout)
        second = json_lines(run_monitor(["--config", str(cfg), "--replay", str(wav)]).stdout)
        assert second[0]["seq"] == first[-1]["seq"] + 1

    def test_bad_file_fails_the_run_after_the_others(
        self, tmp_path: Path, model_path: Path
    ) -> None:
        """An unreadable file is named, the good files still give verdicts, exit status is 1."""
        good = write_wav(tmp_path / "good.wav", noisy_clip(2.0, seed=4))
        bad = tmp_path / "bad.wav"
        bad.write_bytes(b"RIFF not really a wave file")
        cfg = write_config(tmp_path, model_path)
        done = run_monitor(["--config", str(cfg), "--replay", str(bad), str(good)])
        assert done.returncode == 1
        assert len(json_lines(done.stdout)) == 2
        assert "bad.wav" in done.stderr
        assert "Traceback" not in done.stderr

    def test_missing_model_is_one_clear_line(self, tmp_path: Path) -> None:
        """A config naming a missing model exits non-zero with the file named, no traceback."""
        wav = write_wav(tmp_path / "clip.wav", noisy_clip(1.0, seed=5))
        cfg = write_config(tmp_path, tmp_path / "nope.tflite")
        done = run_monitor(["--config", str(cfg), "--replay", str(wav)])
        assert done.returncode != 0
        assert "nope.tflite" in done.stderr
        assert "Traceback" not in done.stderr


class TestReplayPublishes:
    def test_verdicts_reach_a_real_broker(
        self, tmp_path: Path, model_path: Path, broker: Any, subscribe: Callable[..., Any]
    ) -> None:
        """With MQTT on, every verdict arrives QoS 1 and schema-valid; status ends stopped."""
        sub = subscribe(broker, "corona/v1/test-node/#")
        wav = write_wav(tmp_path / "clip.wav", noisy_clip(3.0, seed=6))
        cfg = write_config(tmp_path, model_path, mqtt=mqtt_section(broker))
        done = run_monitor(["--config", str(cfg), "--replay", str(wav)])
        assert done.returncode == 0, done.stderr
        printed = json_lines(done.stdout)
        last_seq = printed[-1]["seq"]
        sub.wait_for(
            lambda m: m.topic.endswith("/verdict") and m.json()["seq"] == last_seq, timeout_s=10
        )
        received = [m for m in sub.messages if m.topic.endswith("/verdict")]
        for message in received:
            schemas.validate("verdict", message.json())
            assert message.qos == 1
            assert not message.retain
        assert [m.json()["seq"] for m in received] == [v["seq"] for v in printed]
        sub.wait_for(lambda m: m.topic.endswith("/status") and m.text == "stopped", timeout_s=10)


class TestReplayAgreesWithEvaluate:
    def test_replay_scores_equal_corona_train_evaluate(self, tmp_path: Path) -> None:
        """The shipped model scores each 30 s window of a file the same in replay and evaluate."""
        from train.evaluation import evaluate_tflite
        from train.synth import synthesize

        synthesize(tmp_path / "data", normal=1, anomalous=1, seed=99, duration_s=(61.0, 61.0))
        report = evaluate_tflite(SHIPPED_MODEL, tmp_path / "data", cache_dir=None)
        wavs = sorted((tmp_path / "data").glob("*/*.wav"))
        cfg = write_config(tmp_path, SHIPPED_MODEL, window={"length_s": 30.0})
        done = run_monitor(["--config", str(cfg), "--replay", *map(str, wavs)])
        assert done.returncode == 0, done.stderr
        replayed = json_lines(done.stdout)
        for wav in wavs:
            name = wav.relative_to(tmp_path / "data").as_posix()
            expected = [
                s
                for f, s in zip(report.window_files, report.window_scores, strict=True)
                if f == name
            ]
            got = [v["score"] for v in replayed if v["file"] == str(wav)]
            assert len(got) == len(expected) == 2
            np.testing.assert_allclose(got, expected, atol=1e-6)
            # The shipped model reads the physics block; the verdicts carry it as measured.
            samples, _ = audio.load(wav)
            windows = windows_of(samples, sample_rate=SAMPLE_RATE, length_s=30.0, hop_s=30.0)
            assert [v["physics"] for v in replayed if v["file"] == str(wav)] == [
                w.physics.select("auto").as_dict() for w in windows
            ]
        assert Model.load(SHIPPED_MODEL).spec.physics is not None


class TestRealtime:
    def test_realtime_paces_verdicts_at_1x(self, tmp_path: Path, model_path: Path) -> None:
        """With --realtime the last of 3 s of windows is printed no sooner than 3 s of audio
        after the process started (measured from the launch: a busy machine can only delay the
        lines, while the gap between two of them shrinks when replay catches up on a late
        start, so it is no measure of the pace)."""
        wav = write_wav(tmp_path / "clip.wav", noisy_clip(3.0, seed=8))
        cfg = write_config(tmp_path, model_path)
        launched = time.monotonic()
        replay = MonitorProcess(
            ["--config", str(cfg), "--replay", "--realtime", str(wav)], log_path=tmp_path / "log"
        )
        try:
            replay.wait_lines(3)
            paced_s = time.monotonic() - launched
            assert replay.finish() == 0, replay.log()
        finally:
            replay.close()
        assert len(replay.lines) == 3
        # The third window ends at 3 s of audio; audio is fed in blocks of audio.block_s (0.1 s).
        assert paced_s >= 2.9
