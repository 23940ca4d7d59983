"""The systemd watchdog end to end: a real daemon, a test-owned NOTIFY_SOCKET, a stalled capture.

The daemon captures in real time from a private PulseAudio null sink. SIGSTOP on the sound server
stands in for a hung USB microphone: the stream stays open but no audio arrives, the capture
reports a stall (state fault) and then hangs inside PortAudio's close. The pings must stop for
the whole stall (a fault alone is not progress when the capture cannot even retry), and resume
once the server is continued.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_runs import MonitorProcess, write_config
from tests.fixtures.microphone import PulseSink
from tests.fixtures.notify_socket import NotifySocket

WATCHDOG_S = 2.0
"""WatchdogSec= as a test systemd would set it: pings every 1 s, a stall stops them after 2 s."""
STALL_S = 7.0
"""How long the sound server stays stopped: past the capture's own stall detection (3 s)."""
SLACK_S = 0.8
"""Scheduling slack on a shared machine for "the pings have stopped by now"."""
WAIT_S = 20.0


@pytest.fixture
def model_path(exported: Callable[[str, str], Any]) -> Path:
    return Path(exported("sigmoid", "int8").tflite_path)


def log_events(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


class TestWatchdog:
    def test_pings_while_audio_flows_stop_on_a_stalled_capture_and_resume(
        self,
        tmp_path: Path,
        model_path: Path,
        pulse_sink: PulseSink,
        notify_socket: NotifySocket,
    ) -> None:
        """READY=1 at start, WATCHDOG=1 while audio flows, none while the capture is stalled
        (also after it has gone to state fault and hangs closing the device), pings again once
        audio is back, STOPPING=1 on SIGTERM."""
        cfg = write_config(
            tmp_path,
            model_path,
            audio={"device": pulse_sink.device, "block_s": 0.1},
            window={"length_s": 0.5},
        )
        env = {
            **pulse_sink.env,
            "NOTIFY_SOCKET": str(notify_socket.path),
            "WATCHDOG_USEC": str(round(WATCHDOG_S * 1_000_000)),
        }
        err_log = tmp_path / "err.log"
        daemon = MonitorProcess(
            ["--config", str(cfg)], env=env, log_path=err_log, collect_stdout=False
        )
        try:
            notify_socket.wait_for("READY=1")
            # Steady pings (the pulse stream needs about 2 s to deliver its first block).
            notify_socket.wait_for("WATCHDOG=1", count=3, after=time.monotonic())
            pulse_sink.pause()
            paused_at = time.monotonic()
            time.sleep(STALL_S)  # the stimulus: a device that delivers nothing for STALL_S
            resumed_at, resumed_wall = time.monotonic(), time.time()
            pulse_sink.resume()
            notify_socket.wait_for("WATCHDOG=1", count=2, after=resumed_at)
            assert daemon.process.poll() is None, "the daemon must survive a stalled device"
            assert daemon.stop()[0] == 0
        finally:
            pulse_sink.resume()
            daemon.close()

        pings = notify_socket.times_of("WATCHDOG=1")
        quiet_from = paused_at + WATCHDOG_S + WATCHDOG_S / 2 + SLACK_S
        during = [t - paused_at for t in pings if quiet_from < t < resumed_at]
        assert during == [], f"pings during the stall at +{during} s"
        assert any(t > resumed_at for t in pings)
        assert notify_socket.times_of("STOPPING=1")
        assert notify_socket.times_of("READY=1")[0] < pings[0]

        # The silence covered the capture's own stall report (state fault), not only the time
        # before it: the old rule "fault counts as progress" pinged on from there.
        events = log_events(err_log)
        lost = [e for e in events if e["event"] == "device_lost"]
        assert lost, events
        assert "stalled" in lost[0]["error"], events
        assert at(lost[0]) < resumed_wall - 1.0
        assert any(e["event"] == "watchdog_stalled" for e in events)
        resumed = [e for e in events if e["event"] == "watchdog_resumed" and at(e) > at(lost[0])]
        assert resumed
        assert at(resumed[0]) >= resumed_wall - 0.1
