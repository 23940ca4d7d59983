"""corona-monitor's command line as a user meets it: start-up problems, check-config and watch.

Each problem is one clear line on stderr and a defined behaviour: exit non-zero, or (for a broker
that does not answer) keep running, keep the verdicts in the outbox and deliver them later.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import yaml

from daemon import schemas
from tests.daemon_runs import (
    mqtt_section,
    noisy_clip,
    run_monitor,
    wait_until,
    write_config,
    write_wav,
)
from tests.fixtures.live_daemon import (
    STOP_LIMIT_S,
    TOPICS,
    Rig,
    set_threshold,
    verdicts,
)


def problem_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def assert_one_clear_line(done: Any, *needles: str) -> None:
    """Exit non-zero with exactly one stderr line that names every needle, no traceback."""
    assert done.returncode != 0, done.stderr
    lines = problem_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def edit_config(cfg: Path, section: str, **values: Any) -> Path:
    doc = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    doc.setdefault(section, {}).update(values)
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return cfg


class TestStartupProblems:
    def test_unknown_key_is_one_line_naming_it(self, rig: Rig) -> None:
        """A misspelt key stops the daemon with one line naming the key path."""
        cfg = edit_config(rig.config(), "window", lenght_s=1)
        done = run_monitor(["--config", str(cfg)], env=rig.mic.env, timeout_s=30)
        assert_one_clear_line(done, "window.lenght_s", "unknown key")

    def test_bad_value_is_one_line_naming_the_key(self, rig: Rig) -> None:
        """A value of the wrong type stops the daemon with one line naming the key and value."""
        cfg = edit_config(rig.config(), "mqtt", port="abc")
        done = run_monitor(["--config", str(cfg)], env=rig.mic.env, timeout_s=30)
        assert_one_clear_line(done, "mqtt.port", "'abc'")

    def test_missing_model_is_one_line_naming_the_file(self, rig: Rig, tmp_path: Path) -> None:
        """A config naming a model that does not exist stops the daemon, naming the file."""
        cfg = write_config(
            tmp_path, tmp_path / "gone.tflite", audio={"device": "tower_mic"}, mqtt={}
        )
        done = run_monitor(["--config", str(cfg)], env=rig.mic.env, timeout_s=30)
        assert_one_clear_line(done, "gone.tflite")

    def test_mismatched_metadata_names_the_field(self, rig: Rig, tmp_path: Path) -> None:
        """A model whose metadata the daemon cannot compute is refused by field name."""
        folder = tmp_path / "edited"
        folder.mkdir()
        model = Path(shutil.copy(rig.model_path, folder / rig.model_path.name))
        meta_path = model.with_suffix(".json")
        meta = json.loads(rig.model_path.with_suffix(".json").read_text(encoding="utf-8"))
        meta["features"]["center"] = False
        meta_path.write_text(json.dumps(meta), encoding="utf-8")
        cfg = write_config(tmp_path, model, audio={"device": "tower_mic"})
        done = run_monitor(["--config", str(cfg)], env=rig.mic.env, timeout_s=30)
        assert_one_clear_line(done, "features.center")

    def test_config_contradicting_the_model_names_both(self, rig: Rig, tmp_path: Path) -> None:
        """window.length_s 5 against a model trained on 30 s windows stops start-up, naming both."""
        cfg = write_config(
            tmp_path,
            rig.model_path,
            audio={"device": "tower_mic"},
            window={"length_s": 5, "force_length": False},
        )
        done = run_monitor(["--config", str(cfg)], env=rig.mic.env, timeout_s=30)
        assert_one_clear_line(done, "window.length_s is 5.0 in the config")


class TestUnreachableBroker:
    def test_daemon_keeps_running_and_delivers_later(self, rig: Rig) -> None:
        """With the broker down at start the daemon runs on, keeps its verdicts in the outbox,
        and delivers them (marked replayed) once the broker comes up on that port."""
        rig.mic.write(noisy_clip(2.0, seed=21, amplitude=0.3))
        rig.broker.stop()
        daemon = rig.start(rig.config(mqtt=mqtt_section(rig.broker, reconnect_max_s=1)))
        daemon.wait_event("mqtt_connect_failed")

        def kept_four() -> bool:
            health = [e for e in daemon.events() if e.get("event") == "health"]
            return any(e["outbox_depth"] >= 4 for e in health)

        # An event, not a pause: on a loaded machine the windows take longer to come.
        wait_until(kept_four, "a health report with 4 verdicts kept in the outbox", timeout_s=60)
        assert daemon.process.poll() is None, daemon.log()
        assert "Traceback" not in daemon.log()

        # Verdicts are not retained: the daemon is paused (SIGSTOP) until the test's subscriber
        # is on the new broker, or it might reconnect and deliver before anyone listens.
        daemon.process.send_signal(signal.SIGSTOP)
        try:
            rig.broker.start()
            sub = rig.watch("verdict")
        finally:
            daemon.process.send_signal(signal.SIGCONT)
        wait_until(lambda: len(verdicts(sub.messages)) >= 4, "the kept verdicts", timeout_s=15)
        first = verdicts(sub.messages)[:4]
        for v in first:
            schemas.validate("verdict", v)
            assert v["replayed"] is True
            assert v["sensor"] == "ok"  # the clip's windows, not the silence after it
        assert [v["seq"] for v in first] == sorted(v["seq"] for v in first)
        status = rig.watch("status").on(f"{TOPICS}/status")
        assert status.text == "online"

    def test_sigterm_during_the_outage_exits_cleanly(self, rig: Rig) -> None:
        """Stopping while the broker is down still exits 0 within 5 s, the verdicts kept."""
        rig.mic.write(noisy_clip(1.0, seed=28))
        rig.broker.stop()
        daemon = rig.start()
        daemon.wait_event("first_block")
        daemon.wait_event("mqtt_connect_failed")
        code, took_s = daemon.stop()
        assert code == 0, daemon.log()
        assert took_s < STOP_LIMIT_S
        assert daemon.wait_event("outbox_kept")["depth"] > 0


class TestWatch:
    def test_once_shows_a_node_from_retained_messages(self, rig: Rig, tmp_path: Path) -> None:
        """After a replay published, `watch --once` shows the node, its status and its alarm."""
        wav = write_wav(tmp_path / "clip.wav", noisy_clip(3.0, seed=26))
        cfg = rig.config(alarm={"k": 1, "n": 2})
        set_threshold(cfg, 0.0)
        replayed = run_monitor(["--config", str(cfg), "--replay", str(wav)])
        assert replayed.returncode == 0, replayed.stderr
        done = run_monitor(["watch", "--once", "--wait-s", "1", "--config", str(cfg)])
        assert done.returncode == 0, done.stderr
        rows = [line.split() for line in done.stdout.splitlines()]
        node_row = next(row for row in rows if row and row[0] == "test-node")
        assert node_row[1] == "stopped"
        assert "alarm" in node_row
        assert "nodes: 1" in done.stdout
