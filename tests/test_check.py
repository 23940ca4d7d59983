"""daemon.check (`corona-monitor check-config`): the report a technician reads before starting
the service, and its exit status.

End to end as the technician runs it (a real process on the ALSA file microphone and a real
mosquitto), plus the report's own rules called in-process: every problem is one `problem:` line
on stderr, counted at the end of stdout, and the rest is still checked after one fails.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from daemon import config
from daemon.check import BROKER_TIMEOUT_S, probe_broker, run_check
from tests.daemon_runs import mqtt_section, noisy_clip, run_monitor, write_config
from tests.fixtures.live_daemon import NODE, TOPICS, Rig, set_threshold


class TestCheckConfig:
    def test_ok_prints_device_and_broker(self, rig: Rig) -> None:
        """A good config: the device it would open, the broker answers, exit 0."""
        rig.mic.write(noisy_clip(1.0, seed=22))
        done = run_monitor(["check-config", "--config", str(rig.config())], env=rig.mic.env)
        assert done.returncode == 0, done.stderr
        assert "audio device: [" in done.stdout
        assert "tower_mic" in done.stdout.split("audio device:")[1].splitlines()[0]
        assert f"{rig.broker.host}:{rig.broker.port} answers" in done.stdout
        assert done.stdout.rstrip().endswith("ok")
        assert "Traceback" not in done.stderr

    def test_configured_threshold_is_reported_even_zero(self, rig: Rig) -> None:
        """The threshold shown is the configured one when set, including 0.0."""
        rig.mic.write(noisy_clip(1.0, seed=27))
        cfg = set_threshold(rig.config(), 0.0)
        done = run_monitor(["check-config", "--config", str(cfg)], env=rig.mic.env)
        assert done.returncode == 0, done.stderr
        model_line = next(line for line in done.stdout.splitlines() if line.startswith("model:"))
        assert model_line.endswith("threshold 0.0"), model_line

    def test_missing_device_is_a_problem(self, rig: Rig) -> None:
        """A device that is not there is named as a problem, exit 1."""
        cfg = rig.config(audio={"device": "no_such_microphone"})
        done = run_monitor(["check-config", "--config", str(cfg)], env=rig.mic.env)
        assert done.returncode == 1
        assert "problem: audio.device" in done.stderr
        assert "no_such_microphone" in done.stderr
        assert "Traceback" not in done.stderr

    def test_silent_broker_is_a_problem(self, rig: Rig) -> None:
        """A broker that does not answer is named as a problem, exit 1."""
        rig.mic.write(noisy_clip(1.0, seed=23))
        cfg = rig.config()
        rig.broker.stop()
        done = run_monitor(["check-config", "--config", str(cfg)], env=rig.mic.env)
        assert done.returncode == 1
        assert f"problem: mqtt: {rig.broker.host}:{rig.broker.port}" in done.stderr
        assert "Traceback" not in done.stderr

    def test_missing_model_is_a_problem(self, rig: Rig, tmp_path: Path) -> None:
        """A missing model is named as a problem; the rest is still checked and printed."""
        rig.mic.write(noisy_clip(1.0, seed=24))
        cfg = rig.config()
        doc = yaml.safe_load(cfg.read_text(encoding="utf-8"))
        doc["model"]["path"] = str(tmp_path / "gone.tflite")
        cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
        done = run_monitor(["check-config", "--config", str(cfg)], env=rig.mic.env)
        assert done.returncode == 1
        assert "problem: model" in done.stderr
        assert "gone.tflite" in done.stderr
        assert "answers" in done.stdout
        assert "Traceback" not in done.stderr

    def test_password_is_masked(self, rig: Rig, broker_factory: Any, tmp_path: Path) -> None:
        """The password from password_file is used (the broker accepts) and never printed."""
        secret = "s3cret-Tower-Pass"
        broker = broker_factory(users={"tower": secret}, allow_anonymous=False)
        password_file = tmp_path / "mqtt.pass"
        password_file.write_text(secret + "\n", encoding="utf-8")
        rig.mic.write(noisy_clip(1.0, seed=25))
        mqtt = mqtt_section(
            broker, username="tower", password_file=str(password_file), allow_insecure=True
        )
        done = run_monitor(
            ["check-config", "--config", str(rig.config(mqtt=mqtt))], env=rig.mic.env
        )
        assert done.returncode == 0, done.stderr
        assert f"{broker.host}:{broker.port} answers" in done.stdout
        assert '"password": "***"' in done.stdout
        assert secret not in done.stdout + done.stderr


class TestReportInProcess:
    def test_every_problem_is_one_stderr_line_and_counted(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A missing model and a device that is not there: two `problem:` lines naming the
        model file and audio.device, the report still lists the settings and MQTT as disabled,
        and ends with "2 problem(s)"; exit status 1."""
        cfg = write_config(
            tmp_path, tmp_path / "gone.tflite", audio={"device": "no_such_microphone"}
        )
        out = io.StringIO()
        code = run_check(cfg, out)
        report, errors = out.getvalue(), capsys.readouterr().err
        problems = [line for line in errors.splitlines() if line.startswith("problem: ")]
        assert code == 1
        assert len(problems) == 2, errors
        assert any("gone.tflite" in p for p in problems)
        assert any("audio.device" in p and "no_such_microphone" in p for p in problems)
        assert f"config: {cfg}" in report
        assert "mqtt: disabled (mqtt.host is null)" in report
        assert report.rstrip().endswith("2 problem(s)")

    def test_metrics_and_home_assistant_outputs(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Where metrics go is reported; a textfile folder that is missing and Home Assistant
        without MQTT are problems (those outputs could never appear)."""
        missing = tmp_path / "no-such-folder" / "corona.prom"
        cfg = write_config(
            tmp_path,
            tmp_path / "gone.tflite",
            metrics={"listen": "[::1]:9750", "textfile": str(missing)},
            homeassistant={"enabled": True},
        )
        out = io.StringIO()
        assert run_check(cfg, out) == 1
        report = out.getvalue()
        assert f"metrics: GET http://[::1]:9750/metrics, textfile {missing}" in report
        assert "homeassistant: enabled, but MQTT is disabled" in report
        assert output_problems(capsys.readouterr().err) == [
            f"problem: metrics.textfile: the folder {missing.parent} does not exist or is not"
            " writable",
            "problem: homeassistant.enabled: needs mqtt.host",
        ]

    def test_metrics_off_and_a_writable_textfile_folder_are_fine(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """By default both outputs say off; a textfile in a writable folder is no problem."""
        out = io.StringIO()
        run_check(write_config(tmp_path, tmp_path / "gone.tflite"), out)
        assert "metrics: off" in out.getvalue()
        assert "homeassistant: off" in out.getvalue()
        textfile = tmp_path / "corona.prom"
        cfg = write_config(tmp_path, tmp_path / "gone.tflite", metrics={"textfile": str(textfile)})
        out = io.StringIO()
        run_check(cfg, out)
        assert f"metrics: textfile {textfile}" in out.getvalue()
        assert output_problems(capsys.readouterr().err) == []


def output_problems(errors: str) -> list[str]:
    """The problem lines about metrics and Home Assistant (not the model's or the device's)."""
    return [
        line
        for line in errors.splitlines()
        if line.startswith(("problem: metrics", "problem: homeassistant"))
    ]


class TestNodeIdInUse:
    def test_warns_while_the_node_is_online_and_not_after(self, rig: Rig) -> None:
        """With a daemon online under the node's id, check-config still passes (exit 0: that
        daemon may be this machine's own) but prints one `warning:` line naming the node_id and
        the cause; its probe (client id `{node}-check`) takes no session from the daemon. Once
        the daemon stopped (retained `stopped`) there is no warning."""
        rig.mic.write(noisy_clip(1.0, seed=28))
        cfg = rig.config()
        status = rig.watch("status")
        daemon = rig.start(cfg)
        status.wait_for(lambda m: m.text == "online")

        done = run_monitor(["check-config", "--config", str(cfg)], env=rig.mic.env)
        assert done.returncode == 0, done.stderr
        warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
        assert len(warnings) == 1, done.stderr
        assert f"{TOPICS}/status is already 'online'" in warnings[0]
        assert f"another node is connected with node_id '{NODE}'" in warnings[0]
        assert f"mqtt: {TOPICS}/status is online (retained)" in done.stdout
        assert done.stdout.rstrip().endswith("ok")
        assert "already connected" not in rig.broker.log_text()
        assert daemon.process.poll() is None

        code, _ = daemon.stop()
        assert code == 0, daemon.log()
        status.wait_for(lambda m: m.text == "stopped")
        done = run_monitor(["check-config", "--config", str(cfg)], env=rig.mic.env)
        assert done.returncode == 0, done.stderr
        assert "warning:" not in done.stderr
        assert f"mqtt: {TOPICS}/status is stopped (retained)" in done.stdout

    def test_no_status_yet_is_said_plainly(self, rig: Rig) -> None:
        """A node that never connected: its status topic holds nothing, and the report says so."""
        done = run_monitor(["check-config", "--config", str(rig.config())], env=rig.mic.env)
        assert f"mqtt: {TOPICS}/status is not set (retained)" in done.stdout
        assert "warning:" not in done.stderr

    def test_nothing_retained_is_known_without_waiting_out_the_timeout(self, rig: Rig) -> None:
        """The probe knows "nothing retained" from the broker's UNSUBACK, which follows any
        retained message: in-process against the real broker it answers far within
        BROKER_TIMEOUT_S, and still finds a retained value when there is one."""
        settings = config.load(rig.config())
        started = time.monotonic()
        assert probe_broker(settings) == (None, None)
        assert time.monotonic() - started < BROKER_TIMEOUT_S / 2
        publish_retained(rig, f"{TOPICS}/status", "offline")
        assert probe_broker(settings) == (None, "offline")


def publish_retained(rig: Rig, topic: str, text: str) -> None:
    """Publish a retained QoS 1 message as a plain client and wait for the broker's PUBACK."""
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(rig.broker.host, rig.broker.port, keepalive=10)
    client.loop_start()
    try:
        info = client.publish(topic, text, qos=1, retain=True)
        info.wait_for_publish(10.0)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
