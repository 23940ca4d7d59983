"""The on-site baseline: learned over a replayed commissioning period, kept through SIGKILL,
refused (and moved aside, never lost) when it belongs to other features, and handled from the
command line (status, reset, import). Real processes, real files; the ALSA file microphone for
the live daemon."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from daemon.analyse import novelty
from daemon.analyse.baseline import (
    OFF,
    Baseline,
    BaselineBusyError,
    BaselineError,
    Reading,
    exclusive,
    lock,
)
from daemon.constants import SAMPLE_RATE
from daemon.pipeline import decide
from tests.daemon_runs import MONITOR, json_lines, run_monitor, wait_until, write_config
from tests.fixtures.live_daemon import Rig, set_threshold
from train.synth import corona
from train.synth.scene import synthesize_clip

WINDOW_S = 1.0
LEARN_WINDOWS = 30
LEARN_H = LEARN_WINDOWS * WINDOW_S / 3600


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One synthetic tower site, 60 s at 50 Hz: 40 s to commission on, then 20 s more of the
    same site, as it is and with corona added 10 dB below its level."""
    folder = tmp_path_factory.mktemp("site")
    rng = np.random.default_rng(4321)
    audio = synthesize_clip(rng, label="normal", duration_s=60.0, line_hz=50.0)
    learn, later = audio[: 40 * SAMPLE_RATE], audio[40 * SAMPLE_RATE :]
    rms = float(np.sqrt(np.mean(later.astype(np.float64) ** 2)))
    spec = corona.CoronaSpec.draw(rng, corona_db=20 * np.log10(rms) - 10)
    discharge = corona.render(rng, later.size, spec=spec, line_hz=50.0, phase_rad=0.3)
    files = {
        "learn": folder / "learn.wav",
        "later": folder / "later.wav",
        "corona": folder / "corona.wav",
    }
    for name, samples in (("learn", learn), ("later", later), ("corona", later + discharge)):
        sf.write(files[name], np.clip(samples, -1, 1).astype(np.float32), SAMPLE_RATE)
    return files


@pytest.fixture
def model(exported: Any) -> Path:
    return Path(exported("sigmoid", "none").tflite_path)


def _config(folder: Path, model: Path, **sections: Any) -> Path:
    """1 s windows, a 30-window commissioning period; threshold 1 so the test classifier (made
    for synthetic row means, not this audio) calls no window anomalous and every usable
    window is learned; the label follows the baseline."""
    base: dict[str, Any] = {
        "window": {"length_s": WINDOW_S},
        "baseline": {"learn_h": LEARN_H},
        "alarm": {"use": "baseline"},
        "logging": {"level": "warning", "format": "json"},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return set_threshold(write_config(folder, model, **base), 1.0)


def _replay(cfg: Path, *wavs: Path) -> list[dict[str, Any]]:
    done = run_monitor(["--config", str(cfg), "--replay", *map(str, wavs)])
    assert done.returncode == 0, done.stderr
    return json_lines(done.stdout)


def _events(stderr: str) -> list[dict[str, Any]]:
    """The daemon's JSON log events (LiteRT prints one plain line of its own)."""
    return json_lines("\n".join(line for line in stderr.splitlines() if line.startswith("{")))


def _stored(folder: Path) -> Baseline:
    """The baseline file as the daemon left it (read with the daemon's own loader)."""
    path = folder / "baseline.npz"
    meta = json.loads(str(np.load(path)["meta"]))
    return Baseline.load(
        path, fingerprint=meta["fingerprint"], learn_windows=meta["learn_windows"], quantile=0.99
    )


class TestCommissioning:
    def test_learns_then_flags_the_same_site_with_corona(
        self, site: dict[str, Path], model: Path, tmp_path: Path
    ) -> None:
        """30 learning verdicts, then ready; later audio of the site stays under the threshold,
        the same audio with corona goes over it, and the label follows (alarm.use baseline)."""
        cfg = _config(tmp_path, model)
        learning = _replay(cfg, site["learn"])
        states = [v["baseline"]["state"] for v in learning]
        assert states[: LEARN_WINDOWS - 1] == ["learning"] * (LEARN_WINDOWS - 1)
        assert states[LEARN_WINDOWS - 1 :] == ["ready"] * (len(states) - LEARN_WINDOWS + 1)
        assert all(
            v["label_by"] == "classifier" for v in learning if v["baseline"]["state"] != "ready"
        )

        normal = _replay(cfg, site["later"])
        with_corona = _replay(cfg, site["corona"])
        normal_scores = [v["baseline"]["score"] for v in normal]
        corona_scores = [v["baseline"]["score"] for v in with_corona]
        assert np.mean(np.array(normal_scores) < 0.5) >= 0.8, normal_scores
        assert np.mean(np.array(corona_scores) >= 0.5) >= 0.8, corona_scores
        assert min(corona_scores) > np.median(normal_scores)
        assert all(v["label_by"] == "baseline" for v in with_corona)
        assert [v["label"] for v in with_corona] == [
            "anomalous" if s >= 0.5 else "normal" for s in corona_scores
        ]
        # The classifier was told to call nothing anomalous: the baseline alone found it.
        assert all(v["score"] < 1.0 for v in with_corona)

    def test_status_reports_progress_then_ready(
        self, site: dict[str, Path], model: Path, tmp_path: Path
    ) -> None:
        cfg = _config(tmp_path, model)
        done = run_monitor(["--config", str(cfg), "baseline", "status"])
        assert done.returncode == 0, done.stderr
        assert "state: learning" in done.stdout
        assert "no baseline file yet" in done.stdout
        _replay(cfg, site["learn"])
        done = run_monitor(["--config", str(cfg), "baseline", "status", "--json"])
        status = json.loads(done.stdout)
        assert status["state"] == "ready"
        assert status["windows"] == LEARN_WINDOWS
        assert status["threshold_distance"] > 0
        assert set(status["mean"]) == set(novelty.NAMES)

    def test_check_config_shows_the_baseline(
        self, site: dict[str, Path], model: Path, tmp_path: Path
    ) -> None:
        """check-config says where learning stands; a foreign file is reported, not a problem."""
        cfg = _config(tmp_path, model)
        before = run_monitor(["--config", str(cfg), "check-config"])
        assert "baseline: none yet at" in before.stdout
        _replay(cfg, site["learn"])
        after = run_monitor(["--config", str(cfg), "check-config"])
        assert f"baseline: ready, {LEARN_WINDOWS} of {LEARN_WINDOWS} windows" in after.stdout
        other = _config(tmp_path, model, window={"length_s": 2.0})
        foreign = run_monitor(["--config", str(other), "check-config"])
        assert "learned for other features" in foreign.stdout
        assert "move it aside and learn again" in foreign.stdout


class TestCrashSafety:
    def test_sigkill_mid_learning_keeps_what_was_learned(
        self, rig: Rig, site: dict[str, Path], model: Path
    ) -> None:
        """The live daemon learning from the microphone is SIGKILLed; the file it leaves loads,
        holds at least every window it had reported, and a restart goes on from there."""
        samples, _ = sf.read(site["learn"], dtype="float32")
        rig.mic.write(samples)
        rig.model_path = model
        cfg = rig.config(threshold=1.0, window={"length_s": 0.5}, baseline={"learn_h": 1.0})
        daemon = rig.start(cfg)
        path = rig.folder / "baseline.npz"
        wait_until(
            lambda: path.exists() and _stored(rig.folder).windows >= 3, "3 learned", timeout_s=30
        )
        seen = _stored(rig.folder).windows
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(timeout=10)
        after_kill = _stored(rig.folder)
        assert after_kill.state == "learning"
        assert after_kill.windows >= seen
        restarted = rig.start(cfg)
        loaded = restarted.wait_event("baseline_loaded")
        assert loaded["windows"] == after_kill.windows
        assert loaded["state"] == "learning"


class TestRefusals:
    def test_other_features_are_named_and_the_file_kept(
        self, site: dict[str, Path], model: Path, tmp_path: Path
    ) -> None:
        """A baseline learned with 1 s windows, then a config with 2 s windows: status names the
        difference and exits 1; the daemon moves the file aside (kept) and learns again."""
        _replay(_config(tmp_path, model), site["learn"])
        other = _config(tmp_path, model, window={"length_s": 2.0})
        done = run_monitor(["--config", str(other), "baseline", "status"])
        assert done.returncode == 1
        assert "learned for other features" in done.stdout
        assert "window_s 1.0 there, 2.0 now" in done.stdout
        replayed = run_monitor(["--config", str(other), "--replay", str(site["later"])])
        assert replayed.returncode == 0, replayed.stderr
        events = _events(replayed.stderr)
        restarted = [e for e in events if e.get("event") == "baseline_restarted"]
        assert len(restarted) == 1
        assert "window_s" in restarted[0]["reason"]
        kept = list(tmp_path.glob("baseline.npz.rejected-*"))
        assert len(kept) == 1
        assert json_lines(replayed.stdout)[0]["baseline"]["windows"] == 1

    def test_damaged_file_is_moved_aside(
        self, site: dict[str, Path], model: Path, tmp_path: Path
    ) -> None:
        """A torn baseline file: status says it cannot be read; replay goes on, learning anew."""
        cfg = _config(tmp_path, model)
        _replay(cfg, site["later"])
        path = tmp_path / "baseline.npz"
        path.write_bytes(path.read_bytes()[:100])
        done = run_monitor(["--config", str(cfg), "baseline", "status"])
        assert done.returncode == 1
        assert "cannot be read" in done.stdout
        assert "Traceback" not in done.stdout + done.stderr
        verdicts = _replay(cfg, site["later"])
        assert verdicts[0]["baseline"] == {
            "state": "learning",
            "distance": None,
            "score": None,
            "windows": 1,
            "learn_windows": LEARN_WINDOWS,
        }
        assert len(list(tmp_path.glob("baseline.npz.rejected-*"))) == 1

    def test_reset_refused_while_the_daemon_holds_it(self, model: Path, tmp_path: Path) -> None:
        cfg = _config(tmp_path, model)
        fd = lock(tmp_path / "baseline.npz")
        try:
            done = run_monitor(["--config", str(cfg), "baseline", "reset"])
        finally:
            import os

            os.close(fd)
        assert done.returncode == 1
        assert "in use by another corona-monitor process" in done.stderr
        assert "Traceback" not in done.stderr


class TestImport:
    def test_import_learns_a_folder_then_refuses_to_overwrite(
        self, site: dict[str, Path], model: Path, tmp_path: Path
    ) -> None:
        """import learns from a folder at once (ready, whatever learn_h says); a second import
        needs --replace; reset removes it."""
        cfg = _config(tmp_path, model, baseline={"learn_h": 100.0})
        folder = tmp_path / "recordings"
        folder.mkdir()
        (folder / "a.wav").write_bytes(site["learn"].read_bytes())
        done = run_monitor(["--config", str(cfg), "baseline", "import", str(folder)])
        assert done.returncode == 0, done.stderr
        assert "learned 40" in done.stdout
        assert "baseline ready" in done.stdout
        again = run_monitor(["--config", str(cfg), "baseline", "import", str(folder)])
        assert again.returncode == 1
        assert "pass --replace" in again.stderr
        verdicts = _replay(cfg, site["corona"])
        assert all(v["baseline"]["state"] == "ready" for v in verdicts)
        reset = run_monitor(["--config", str(cfg), "baseline", "reset"])
        assert reset.returncode == 0
        assert "removed" in reset.stdout
        assert not (tmp_path / "baseline.npz").exists()

    def test_import_of_an_empty_folder(self, model: Path, tmp_path: Path) -> None:
        cfg = _config(tmp_path, model)
        done = run_monitor(["--config", str(cfg), "baseline", "import", str(tmp_path)])
        assert done.returncode == 1
        assert "no .wav file under" in done.stderr


class TestInProcess:
    """The state machine without processes (fast, exhaustive)."""

    def _baseline(self, tmp_path: Path, learn: int = 40) -> Baseline:
        return Baseline(
            tmp_path / "b.npz", fingerprint={"f": 1}, learn_windows=learn, quantile=0.99
        )

    def test_halves_alternate_in_blocks_and_survive_a_reload(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(1)
        baseline = self._baseline(tmp_path)
        for vector in rng.normal(size=(40, 3)):
            reading = baseline.observe(vector, learn=True)
        assert reading.state == "ready"
        assert baseline.status()["halves"] == [21, 19]  # blocks of 40 // 12 = 3 windows
        again = Baseline.load(
            tmp_path / "b.npz", fingerprint={"f": 1}, learn_windows=999, quantile=0.5
        )
        assert again.state == "ready"
        assert again.learn_windows == 40
        probe = rng.normal(size=3) + 2
        assert again.observe(probe, learn=True) == baseline.observe(probe, learn=True)

    def test_unusable_windows_are_not_learned(self, tmp_path: Path) -> None:
        baseline = self._baseline(tmp_path)
        baseline.observe(np.zeros(3), learn=False)
        baseline.observe(np.full(3, np.nan), learn=True)
        assert baseline.windows == 0

    def test_foreign_fingerprint(self, tmp_path: Path) -> None:
        self._baseline(tmp_path).save()
        with pytest.raises(BaselineError, match="f 1 there, 2 now"):
            Baseline.load(tmp_path / "b.npz", fingerprint={"f": 2}, learn_windows=4, quantile=0.9)

    def test_lock_is_exclusive(self, tmp_path: Path) -> None:
        with exclusive(tmp_path / "b.npz"), pytest.raises(BaselineBusyError):
            lock(tmp_path / "b.npz")

    @pytest.mark.parametrize(
        ("rule", "classifier", "near", "label", "by"),
        [
            ("classifier", True, False, "anomalous", "classifier"),
            ("baseline", True, False, "normal", "baseline"),
            ("baseline", False, True, "anomalous", "baseline"),
            ("both", True, False, "normal", "both"),
            ("both", True, True, "anomalous", "both"),
            ("either", False, True, "anomalous", "either"),
            ("either", False, False, "normal", "either"),
        ],
    )
    def test_rules(self, rule: Any, classifier: bool, near: bool, label: str, by: str) -> None:
        reading = Reading("ready", 1.0, 0.9 if near else 0.1, 10, 10)
        assert decide(rule, classifier=classifier, reading=reading) == (label, by)

    @pytest.mark.parametrize("rule", ["baseline", "both", "either"])
    def test_learning_baseline_leaves_the_model_alone(self, rule: Any) -> None:
        learning = Reading("learning", None, None, 3, 10)
        assert decide(rule, classifier=True, reading=learning) == ("anomalous", "classifier")
        assert decide(rule, classifier=False, reading=OFF) == ("normal", "classifier")


def test_replay_runs_beside_a_daemon_without_learning(model: Path, tmp_path: Path) -> None:
    """While another process holds the baseline, replay scores without learning (a warning)."""
    cfg = _config(tmp_path, model)
    fd = lock(tmp_path / "baseline.npz")
    wav = tmp_path / "n.wav"
    sf.write(wav, (0.05 * np.random.default_rng(2).standard_normal(3 * SAMPLE_RATE)), SAMPLE_RATE)
    try:
        done = subprocess.run(
            [*MONITOR, "--config", str(cfg), "--replay", str(wav)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    finally:
        import os

        os.close(fd)
    assert done.returncode == 0, done.stderr
    assert any(e.get("event") == "baseline_shared" for e in _events(done.stderr))
    assert all(v["baseline"]["windows"] == 0 for v in json_lines(done.stdout))


class TestRetarget:
    """A reload's new learn_h/quantile, applied in memory as `Baseline.load` would apply them."""

    def test_a_learning_baseline_takes_the_new_target_and_a_ready_one_keeps_its_own(
        self, tmp_path: Path
    ) -> None:
        dim = len(novelty.NAMES)
        learning = Baseline(tmp_path / "a.npz", fingerprint={}, learn_windows=1000, quantile=0.99)
        learning.retarget(learn_windows=500, quantile=0.9)
        assert (learning.learn_windows, learning.quantile, learning.state) == (500, 0.9, "learning")

        ready = Baseline(tmp_path / "b.npz", fingerprint={}, learn_windows=1000, quantile=0.99)
        ready.learn_all(np.random.default_rng(5).normal(size=(400, dim)))
        assert ready.state == "ready"
        target = ready.learn_windows
        ready.retarget(learn_windows=10, quantile=0.5)
        assert (ready.learn_windows, ready.quantile, ready.state) == (target, 0.99, "ready")
