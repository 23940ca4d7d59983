"""MQTT security end to end: the daemon process against a mosquitto with TLS, passwords and an ACL.

The broker and its CA are made by the test. Only the node's user may write the node's topics and
the control room's user may read them; an anonymous client may connect but gets no topic at all.
Every run logs at debug level, and the password must appear in none of its output.

Decided here (and documented in the README's Reliability section): with wrong credentials a replay
still prints every verdict and exits 0 (its files were read), says so on stderr, and keeps the
verdicts in the outbox; the next run with the right credentials delivers them, marked replayed.
A live daemon with wrong credentials keeps capturing, storing and retrying; it never exits on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon import schemas
from tests.daemon_runs import (
    MonitorProcess,
    json_lines,
    noisy_clip,
    run_monitor,
    wait_until,
    write_config,
    write_wav,
)
from tests.fixtures.broker import Broker, Subscriber, TlsFiles
from tests.fixtures.microphone import MicEnv

NODE = "test-node"
PREFIX = "corona/v1"
SECRET = "Tower-s3cret-7f9c2e"
"""The node's password; grepped for in every byte the daemon writes."""
CONTROL_SECRET = "control-room-pw"
WRONG = "not-the-password-5b1d"
ACL = f"""user {NODE}
topic readwrite {PREFIX}/{NODE}/#
user control
topic read {PREFIX}/#
"""
"""No pattern before the first `user` line: an anonymous client may read and write nothing."""
DEBUG_JSON = {"level": "debug", "format": "json"}
WAIT_S = 15.0


@pytest.fixture
def model_path(exported: Callable[[str, str], Any]) -> Path:
    return Path(exported("sigmoid", "int8").tflite_path)


@pytest.fixture
def secure_broker(broker_factory: Callable[..., Broker], tls_files: TlsFiles) -> Broker:
    return broker_factory(tls=tls_files, users={NODE: SECRET, "control": CONTROL_SECRET}, acl=ACL)


def secure_mqtt(broker: Broker, tls: TlsFiles, **extra: Any) -> dict[str, Any]:
    return {
        "host": broker.host,
        "port": broker.port,
        "username": NODE,
        "tls": {"ca": str(tls.ca)},
        "reconnect_max_s": 1,
        "health_interval_s": 1,
        **extra,
    }


def password_file(folder: Path, password: str) -> Path:
    path = folder / "mqtt-password"
    path.write_text(password + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def assert_no_secret(*outputs: str) -> None:
    for text in outputs:
        assert SECRET not in text
        assert WRONG not in text


def refused_connacks(broker: Broker) -> list[str]:
    """The broker's log lines for logins it refused (CONNACK return code 5, not authorised)."""
    return re.findall(r"Sending CONNACK to \S+ \(0, 5\)", broker.log_text())


def events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def room_and_stranger(
    broker: Broker, tls: TlsFiles, subscribe: Callable[..., Subscriber]
) -> tuple[Subscriber, Subscriber]:
    """The control room (user `control`) and an anonymous client, both on every topic."""
    room = subscribe(broker, f"{PREFIX}/#", username="control", password=CONTROL_SECRET, ca=tls.ca)
    stranger = subscribe(broker, "#", ca=tls.ca)
    return room, stranger


class TestRightCredentials:
    @pytest.mark.parametrize("source", ["password_file", "environment"])
    def test_publishes_over_tls_and_a_stranger_reads_nothing(
        self,
        source: str,
        tmp_path: Path,
        model_path: Path,
        secure_broker: Broker,
        subscribe: Callable[..., Subscriber],
    ) -> None:
        """With the password from a file or from the environment, replay delivers every verdict
        over TLS to the control room; an anonymous client receives nothing; no password logged."""
        tls_files = secure_broker.tls
        assert tls_files is not None
        room, stranger = room_and_stranger(secure_broker, tls_files, subscribe)
        if source == "password_file":
            mqtt = secure_mqtt(
                secure_broker, tls_files, password_file=str(password_file(tmp_path, SECRET))
            )
            env = {}
        else:
            mqtt = secure_mqtt(secure_broker, tls_files, password_env="TOWER_MQTT_PASSWORD")
            env = {"TOWER_MQTT_PASSWORD": SECRET}
        wav = write_wav(tmp_path / "clip.wav", noisy_clip(3.0, seed=21))
        cfg = write_config(tmp_path, model_path, mqtt=mqtt, logging=DEBUG_JSON)
        done = run_monitor(["--config", str(cfg), "--replay", str(wav)], env=env)
        assert done.returncode == 0, done.stderr
        printed = [v["seq"] for v in json_lines(done.stdout)]
        assert len(printed) == 3
        room.wait_for(lambda m: m.topic.endswith("/status") and m.text == "stopped", WAIT_S)
        got = [m.json() for m in room.messages if m.topic.endswith("/verdict")]
        for v in got:
            schemas.validate("verdict", v)
        assert [v["seq"] for v in got] == printed
        assert stranger.messages == []
        assert_no_secret(done.stdout, done.stderr, cfg.read_text())
        assert any(e["level"] == "debug" for e in events(done.stderr))  # debug was really on


class TestWrongCredentials:
    def test_replay_keeps_its_verdicts_for_the_next_run(
        self,
        tmp_path: Path,
        model_path: Path,
        secure_broker: Broker,
        tls_files: TlsFiles,
        subscribe: Callable[..., Subscriber],
    ) -> None:
        """Refused: replay prints its verdicts, names the refusal, exits 0 and keeps the verdicts
        in the outbox; the next run with the right password delivers them as replayed."""
        room, stranger = room_and_stranger(secure_broker, tls_files, subscribe)
        wrong = password_file(tmp_path, WRONG)
        cfg = write_config(
            tmp_path,
            model_path,
            mqtt=secure_mqtt(secure_broker, tls_files, password_file=str(wrong)),
            logging=DEBUG_JSON,
        )
        first_wav = write_wav(tmp_path / "first.wav", noisy_clip(2.0, seed=22))
        refused = run_monitor(["--config", str(cfg), "--replay", str(first_wav)])
        assert refused.returncode == 0, refused.stderr
        assert "Traceback" not in refused.stderr
        kept = [v["seq"] for v in json_lines(refused.stdout)]
        assert len(kept) == 2
        logged = events(refused.stderr)
        refusal = next(e for e in logged if e["event"] == "mqtt_connection_refused")
        assert refusal["level"] == "error"
        assert "not authori" in refusal["reason"].lower() or "password" in refusal["reason"]
        assert any(e["event"] == "replay_not_published" and e["depth"] == 2 for e in logged)

        wrong.write_text(SECRET + "\n", encoding="utf-8")
        second_wav = write_wav(tmp_path / "second.wav", noisy_clip(1.0, seed=23))
        accepted = run_monitor(["--config", str(cfg), "--replay", str(second_wav)])
        assert accepted.returncode == 0, accepted.stderr
        new = [v["seq"] for v in json_lines(accepted.stdout)]
        assert new == [kept[-1] + 1]
        room.wait_for(lambda m: m.topic.endswith("/status") and m.text == "stopped", WAIT_S)
        got = {m.json()["seq"]: m.json() for m in room.messages if m.topic.endswith("/verdict")}
        assert sorted(got) == kept + new
        assert all(got[seq]["replayed"] for seq in kept)
        assert stranger.messages == []
        assert_no_secret(refused.stdout, refused.stderr, accepted.stdout, accepted.stderr)

    def test_live_daemon_keeps_running_and_retrying(
        self,
        tmp_path: Path,
        model_path: Path,
        secure_broker: Broker,
        tls_files: TlsFiles,
        alsa_mic: MicEnv,
    ) -> None:
        """Refused: the live daemon logs one clear error, retries every reconnect_max_s, keeps
        storing verdicts, and stops cleanly on SIGTERM; the password is never logged."""
        alsa_mic.write(noisy_clip(2.0, seed=24))
        cfg = write_config(
            tmp_path,
            model_path,
            audio={"device": alsa_mic.device, "block_s": 0.005, "ring_s": 60},
            window={"length_s": 10.0},
            mqtt=secure_mqtt(
                secure_broker, tls_files, password_file=str(password_file(tmp_path, WRONG))
            ),
            logging=DEBUG_JSON,
        )
        daemon = MonitorProcess(
            ["--config", str(cfg)], env=alsa_mic.env, log_path=tmp_path / "err.log"
        )
        try:
            # Retrying: each refused login is one CONNACK code 5 (only the daemon logs in here),
            # about one a second (reconnect_max_s 1), while verdicts pile up in the outbox.
            wait_until(
                lambda: len(refused_connacks(secure_broker)) >= 3,
                "three refused logins",
                process=daemon,
            )
            wait_until(
                lambda: any(e["outbox_depth"] > 0 for e in daemon.events_named("health")),
                "a health report with verdicts kept in the outbox",
                process=daemon,
            )
            assert daemon.process.poll() is None, "a refused login must not end the daemon"
            code, _ = daemon.stop()
        finally:
            daemon.close()
        stderr = daemon.log_path.read_text()
        stdout = json.dumps(daemon.lines)
        assert code == 0, stderr[-3000:]
        assert "Traceback" not in stderr
        refusals = [e for e in events(stderr) if e["event"] == "mqtt_connection_refused"]
        assert len(refusals) == 1  # the same error is not repeated on every retry
        assert refusals[0]["username"] == NODE
        assert_no_secret(stdout, stderr)


class TestPlainConnection:
    def test_password_over_plain_tcp_is_refused(
        self, tmp_path: Path, model_path: Path, broker_factory: Callable[..., Broker]
    ) -> None:
        """A password without TLS and without allow_insecure: one clear line naming the setting,
        exit status 1, no traceback, no password."""
        broker = broker_factory(users={NODE: SECRET}, acl=ACL)
        mqtt = {
            "host": broker.host,
            "port": broker.port,
            "username": NODE,
            "password_file": str(password_file(tmp_path, SECRET)),
        }
        cfg = write_config(tmp_path, model_path, mqtt=mqtt, logging=DEBUG_JSON)
        wav = write_wav(tmp_path / "clip.wav", noisy_clip(1.0, seed=25))
        done = run_monitor(["--config", str(cfg), "--replay", str(wav)])
        assert done.returncode == 1
        assert "mqtt.allow_insecure" in done.stderr
        assert "Traceback" not in done.stderr
        assert_no_secret(done.stdout, done.stderr)
        assert "Client test-node" not in broker.log_text()  # it never even connected

    def test_allow_insecure_sends_it_anyway(
        self,
        tmp_path: Path,
        model_path: Path,
        broker_factory: Callable[..., Broker],
        subscribe: Callable[..., Subscriber],
    ) -> None:
        """With mqtt.allow_insecure: true the same config publishes over plain TCP."""
        broker = broker_factory(users={NODE: SECRET, "control": CONTROL_SECRET}, acl=ACL)
        room = subscribe(broker, f"{PREFIX}/#", username="control", password=CONTROL_SECRET)
        mqtt = {
            "host": broker.host,
            "port": broker.port,
            "username": NODE,
            "password_file": str(password_file(tmp_path, SECRET)),
            "allow_insecure": True,
        }
        cfg = write_config(tmp_path, model_path, mqtt=mqtt, logging=DEBUG_JSON)
        wav = write_wav(tmp_path / "clip.wav", noisy_clip(1.0, seed=26))
        done = run_monitor(["--config", str(cfg), "--replay", str(wav)])
        assert done.returncode == 0, done.stderr
        seq = json_lines(done.stdout)[0]["seq"]
        room.wait_for(lambda m: m.topic.endswith("/verdict") and m.json()["seq"] == seq, WAIT_S)
        assert_no_secret(done.stdout, done.stderr)
