"""SIGHUP reloads the live daemon's config and model, or refuses and keeps what runs.

Each test runs the daemon as a real process on the ALSA file microphone (unpaced: after the clip
it delivers zeros, so verdicts keep coming, `sensor: silent`), publishing to a real mosquitto,
with a test-owned NOTIFY_SOCKET standing in for systemd's. The second model is a real export of
another quantization of the rig's run: the same features, another sha256.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon import schemas
from tests.daemon_runs import MonitorProcess, noisy_clip, wait_until
from tests.fixtures.broker import Subscriber
from tests.fixtures.live_daemon import EVENT_TIMEOUT_S, TOPICS, Rig, verdicts
from tests.fixtures.notify_socket import NotifySocket


@pytest.fixture
def other_model(exported: Callable[[str, str], Any]) -> Path:
    """The rig's run exported as float16: the rig's features, another file and sha256."""
    return Path(exported("sigmoid", "float16").tflite_path)


def edit_config(cfg: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    change(doc)
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")


WINDOW_S = 5.0
"""Longer windows than the rig's: the unpaced file microphone then makes a few verdicts a second,
which the outbox delivers as they come, instead of a backlog that grows without end."""


def config(rig: Rig, **sections: Any) -> Path:
    return rig.config(window={"length_s": WINDOW_S}, **sections)


def start(
    rig: Rig, notify: NotifySocket, sub: Subscriber, cfg: Path | None = None
) -> MonitorProcess:
    """The daemon, once systemd would call it ready and its first verdicts have arrived."""
    daemon = rig.start(cfg, env={**rig.mic.env, "NOTIFY_SOCKET": str(notify.path)})
    notify.wait_for("READY=1")
    verdicts_after(sub, 0, 2)
    return daemon


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_sha(verdict: dict[str, Any]) -> str:
    return str(verdict["model"]["sha256"])


def hang_up(daemon: MonitorProcess, notify: NotifySocket, outcome: str) -> dict[str, Any]:
    """SIGHUP; the `outcome` event (reloaded or reload_refused), once systemd heard READY=1."""
    readies = len(notify.times_of("READY=1"))
    daemon.process.send_signal(signal.SIGHUP)
    event = daemon.wait_event(outcome, timeout_s=EVENT_TIMEOUT_S)
    notify.wait_for("READY=1", count=readies + 1)
    return event


def verdicts_after(sub: Subscriber, seq: int, count: int) -> list[dict[str, Any]]:
    """Wait for `count` verdicts with a seq above `seq`; every verdict seen, by seq."""
    wait_until(
        lambda: sum(v["seq"] > seq for v in verdicts(sub.messages)) >= count,
        f"{count} verdicts after seq {seq}",
        timeout_s=EVENT_TIMEOUT_S,
    )
    return sorted(verdicts(sub.messages), key=lambda v: v["seq"])


class TestReloaded:
    def test_a_new_model_takes_over_at_a_window_boundary(
        self, rig: Rig, other_model: Path, notify_socket: NotifySocket
    ) -> None:
        """model.path replaced: `reloaded` names both sha256 prefixes and the key; verdicts
        switch model once, at a window boundary (each window starts where the last ended), seq
        goes on without a gap or a repeat; systemd hears RELOADING=1 (with MONOTONIC_USEC) then
        READY=1; health names the new config's sha256; the process never exits."""
        rig.mic.write(noisy_clip(2.0, seed=21, amplitude=0.3))
        sub = rig.watch()
        cfg = config(rig)
        daemon = start(rig, notify_socket, sub, cfg)
        old_sha, new_sha = sha_of(rig.model_path), sha_of(other_model)

        edit_config(cfg, lambda doc: doc["model"].update(path=str(other_model)))
        event = hang_up(daemon, notify_socket, "reloaded")
        assert event["changed"] == ["model.path"]
        assert (event["old_sha256"], event["new_sha256"]) == (old_sha[:12], new_sha[:12])
        assert event["config_sha256"] == sha_of(cfg)[:12]
        # The trial ran on the validation thread, and its line still names the node.
        trials = daemon.events_named("model_trial")
        assert [t["model"] for t in trials] == [rig.model_path.name, other_model.name]
        assert {t.get("node") for t in trials} == {"test-node"}

        wait_until(
            lambda: any(model_sha(v) == new_sha for v in verdicts(sub.messages)),
            "a verdict of the new model",
            timeout_s=EVENT_TIMEOUT_S,
        )
        last_new = max(v["seq"] for v in verdicts(sub.messages) if model_sha(v) == new_sha)
        # Everything up to it arrived (QoS 1 from the outbox), each seq once. A new outbox's
        # first seq is the clock in microseconds (daemon.deliver.outbox.seq_floor).
        first = min(v["seq"] for v in verdicts(sub.messages))
        expected = list(range(first, last_new + 1))
        wait_until(
            lambda: {v["seq"] for v in verdicts(sub.messages)} >= set(expected),
            f"every seq from {first} to {last_new}",
            timeout_s=EVENT_TIMEOUT_S,
        )
        by_seq = sorted(verdicts(sub.messages), key=lambda v: v["seq"])
        seen = [v for v in by_seq if v["seq"] <= last_new]
        assert [v["seq"] for v in seen] == expected, "a gap or a repeat in seq"
        shas = [model_sha(v) for v in seen]
        switch = shas.index(new_sha)
        assert switch > 0
        assert set(shas[:switch]) == {old_sha}
        assert set(shas[switch:]) == {new_sha}, "the models took turns: not one switch"
        # Back-to-back windows across the switch: the new pipeline starts at the next sample.
        for earlier, later in itertools.pairwise(seen):
            assert later["window_start"] == earlier["window_end"], (earlier, later)
        for v in seen:
            schemas.validate("verdict", v)

        reloading = notify_socket.times_of("RELOADING=1")
        assert len(reloading) == 1
        readies = notify_socket.times_of("READY=1")
        assert readies[0] < reloading[0] < readies[1]
        with notify_socket._lock:
            texts = [text for _, text in notify_socket.received if "RELOADING=1" in text]
        assert any(line.startswith("MONOTONIC_USEC=") for line in texts[0].splitlines())

        health = sub.wait_for(
            lambda m: (
                m.topic == f"{TOPICS}/health"
                and m.json()["model"]["sha256"] == new_sha
                and m.json()["config"]["reloads"] == 1
            )
        ).json()
        schemas.validate("health", health)
        assert health["config"]["sha256"] == sha_of(cfg)
        assert health["config"]["reload_error"] is None
        assert daemon.process.poll() is None
        assert daemon.stop()[0] == 0


BROKEN_CONFIGS: dict[str, tuple[Callable[[Path], object], str]] = {
    "bad-yaml": (
        lambda cfg: cfg.write_text(cfg.read_text() + "model: [unclosed\n"),
        "not valid YAML",
    ),
    "unknown-key": (
        lambda cfg: edit_config(cfg, lambda doc: doc.update(alarm={"kk": 3})),
        "alarm.kk: unknown key",
    ),
    "out-of-range": (
        lambda cfg: edit_config(cfg, lambda doc: doc.update(alarm={"k": 0})),
        "alarm.k: expected an integer 1-1000, got 0",
    ),
}


class TestRefused:
    @pytest.mark.parametrize("case", sorted(BROKEN_CONFIGS))
    def test_a_broken_config_is_refused_and_the_old_one_runs_on(
        self, rig: Rig, other_model: Path, notify_socket: NotifySocket, case: str
    ) -> None:
        """Bad YAML, an unknown key, an out-of-range value (beside a new model.path): one
        `reload_refused` line naming the file and key; verdicts go on with the old model,
        health carries the reason, systemd hears RELOADING=1 and READY=1."""
        rig.mic.write(noisy_clip(1.0, seed=23))
        sub = rig.watch()
        cfg = config(rig)
        daemon = start(rig, notify_socket, sub, cfg)
        old_sha = sha_of(rig.model_path)
        edit_config(cfg, lambda doc: doc["model"].update(path=str(other_model)))
        breaks, says = BROKEN_CONFIGS[case]
        breaks(cfg)

        event = hang_up(daemon, notify_socket, "reload_refused")
        assert str(cfg) in event["reason"]
        assert says in event["reason"]
        assert "\n" not in event["reason"]
        assert event["kept_sha256"] == old_sha[:12]
        assert notify_socket.times_of("RELOADING=1")
        self.assert_old_model_runs_on(daemon, sub, old_sha, event["reason"])

    @staticmethod
    def assert_old_model_runs_on(
        daemon: MonitorProcess, sub: Subscriber, old_sha: str, reason: str
    ) -> None:
        seq = max(v["seq"] for v in verdicts(sub.messages))
        later = [v for v in verdicts_after(sub, seq, 5) if v["seq"] > seq]
        assert {model_sha(v) for v in later} == {old_sha}
        health = sub.wait_for(
            lambda m: m.topic == f"{TOPICS}/health" and m.json()["config"]["reload_error"]
        ).json()
        assert health["config"]["reload_error"] == reason
        assert health["config"]["reloads"] == 0
        assert health["model"]["sha256"] == old_sha
        assert not daemon.events_named("reloaded")
        assert daemon.process.poll() is None
        assert daemon.stop()[0] == 0

    def test_a_model_that_fails_its_trial_is_refused(
        self, rig: Rig, notify_socket: NotifySocket
    ) -> None:
        """A truncated .tflite whose NAME.json carries its sha256 (the hash matches, the file is
        not sane): refused by the trial load, naming the file; the old model runs on."""
        content = rig.model_path.read_bytes()
        broken = rig.folder / "truncated.tflite"
        broken.write_bytes(content[: len(content) // 2])
        meta = json.loads(rig.model_path.with_suffix(".json").read_text())
        meta["sha256"] = sha_of(broken)
        broken.with_suffix(".json").write_text(json.dumps(meta))
        rig.mic.write(noisy_clip(1.0, seed=24))
        sub = rig.watch()
        cfg = config(rig)
        daemon = start(rig, notify_socket, sub, cfg)
        edit_config(cfg, lambda doc: doc["model"].update(path=str(broken)))

        event = hang_up(daemon, notify_socket, "reload_refused")
        assert "truncated.tflite" in event["reason"]
        assert daemon.events_named("model_trial")[-1]["passed"] is False
        self.assert_old_model_runs_on(daemon, sub, sha_of(rig.model_path), event["reason"])

    def test_features_that_disagree_with_the_model_are_refused(
        self, rig: Rig, notify_socket: NotifySocket
    ) -> None:
        """features.n_fft set to what the model was not trained with: refused naming the key."""
        rig.mic.write(noisy_clip(1.0, seed=25))
        sub = rig.watch()
        cfg = config(rig)
        daemon = start(rig, notify_socket, sub, cfg)
        edit_config(cfg, lambda doc: doc.update(features={"n_fft": 2048}))

        event = hang_up(daemon, notify_socket, "reload_refused")
        assert "n_fft" in event["reason"]
        assert "2048" in event["reason"]
        self.assert_old_model_runs_on(daemon, sub, sha_of(rig.model_path), event["reason"])

    def test_a_change_that_needs_a_restart_is_refused_by_name(
        self, rig: Rig, other_model: Path, notify_socket: NotifySocket
    ) -> None:
        """audio.device (and mqtt.keepalive_s) changed beside model.path: nothing is applied,
        the line names both keys and says `systemctl restart`; the model is not even loaded."""
        rig.mic.write(noisy_clip(1.0, seed=26))
        sub = rig.watch()
        cfg = config(rig)
        daemon = start(rig, notify_socket, sub, cfg)

        def change(doc: dict[str, Any]) -> None:
            doc["audio"]["device"] = "another_mic"
            doc["mqtt"]["keepalive_s"] = 30
            doc["model"]["path"] = str(other_model)

        edit_config(cfg, change)
        trials = len(daemon.events_named("model_trial"))
        event = hang_up(daemon, notify_socket, "reload_refused")
        assert "audio.device, mqtt.keepalive_s changed" in event["reason"]
        assert "systemctl restart corona-monitor" in event["reason"]
        assert len(daemon.events_named("model_trial")) == trials
        self.assert_old_model_runs_on(daemon, sub, sha_of(rig.model_path), event["reason"])
