"""Two nodes with one node_id (a cloned SD card): the daemons notice that they take the broker
session from each other, back off instead of doing it every second, say so once, and show it in
health; check-config warns before a second node goes live.

Everything is real: mosquitto (it logs each takeover as "Client X already connected, closing old
connection."), two `corona-monitor` processes, and their own health messages. The two daemons run
without a microphone (the ALSA file device's infile is never written): their capture waits in
state `fault`, which keeps two processes from spinning on the unpaced file device for the tens of
seconds this takes; the MQTT connection, the only thing under test, does not depend on audio.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

from daemon import schemas
from tests.daemon_runs import MonitorProcess, mqtt_section, wait_until, write_config
from tests.fixtures.broker import Received
from tests.fixtures.live_daemon import ALSA_AUDIO, NODE, TOPICS, WINDOW_S, Rig

TAKEOVER_LINE: Final = f"Client {NODE} already connected, closing old connection."
CONFLICT_WAIT_S: Final = 40.0
"""Longest wait for the conflict to show in a health message: detection takes ~3 takeovers
(about 1 s each), then the backoff (10 s) before the node connects again to say so."""
MAX_TAKEOVER_RATE: Final = 0.5
"""Takeovers per second that still pass, up to the conflict's report. Without the backoff two
twins take the session from each other about once a second (paho reconnects after 1 s and
resets its backoff on every accepted CONNECT)."""
QUIET_S: Final = 10.0
"""How long the takeovers are counted after the report: a measuring period, not a wait for an
event. The node in conflict now waits 20 s before it reconnects, so at most the other node's
one retake of the session falls in it (about ten without the backoff)."""
MAX_TAKEOVERS_WHEN_QUIET: Final = 2


def twin_config(rig: Rig, folder: Path) -> Path:
    """A second node's config: its own outbox (and baseline) folder, the same node_id."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(
        folder,
        rig.model_path,
        audio=ALSA_AUDIO,
        window={"length_s": WINDOW_S},
        mqtt=mqtt_section(rig.broker),
    )


def conflict_health(message: Received) -> bool:
    return message.topic == f"{TOPICS}/health" and message.json().get("mqtt_conflict") is True


class TestTwoNodesOneId:
    def test_takeovers_are_bounded_logged_once_and_in_health(
        self, rig: Rig, tmp_path: Path
    ) -> None:
        """Two daemons with node_id test-node on one broker: the session changes hands at a
        bounded rate (not once a second), each daemon logs `mqtt_node_id_conflict` at most once
        and at least one does, naming the node_id and the cause, and a health message says
        `mqtt_conflict: true` (valid under the schema) before the conflict is over."""
        status = rig.watch("status")
        health = rig.watch("health")
        first = rig.start(rig.config())
        wait_until(lambda: bool(first.events_named("mqtt_connected")), "the first node online",
                   process=first)  # fmt: skip
        second = rig.start(twin_config(rig, tmp_path / "twin"))
        started = time.monotonic()
        try:
            health.wait_for(conflict_health, CONFLICT_WAIT_S)
        finally:
            elapsed_s = time.monotonic() - started
            takeovers = rig.broker.log_text().count(TAKEOVER_LINE)
            flaps = len(status.messages)
            print(f"\n{takeovers} takeovers, {flaps} status messages in {elapsed_s:.1f} s")
        assert takeovers >= 1, "the twins never met: the test proves nothing"
        assert takeovers / elapsed_s <= MAX_TAKEOVER_RATE, (takeovers, elapsed_s)
        assert flaps <= 2 * takeovers + 3  # each takeover: the Will `offline`, then `online`

        time.sleep(QUIET_S)
        quiet = rig.broker.log_text().count(TAKEOVER_LINE) - takeovers
        quiet_flaps = len(status.messages) - flaps
        print(f"then {quiet} takeovers, {quiet_flaps} status messages in {QUIET_S:g} s")
        assert quiet <= MAX_TAKEOVERS_WHEN_QUIET, quiet

        daemons = (first, second)
        logged = [d.events_named("mqtt_node_id_conflict") for d in daemons]
        assert all(len(events) <= 1 for events in logged), logged
        conflicted = [d for d, events in zip(daemons, logged, strict=True) if events]
        assert conflicted, [d.log() for d in daemons]
        event = conflicted[0].events_named("mqtt_node_id_conflict")[0]
        assert event["level"] == "error"
        assert event["node_id"] == NODE
        assert "same node_id" in event["cause"]
        assert event["retry_s"] >= 10

        report = next(m for m in health.messages if conflict_health(m)).json()
        schemas.validate("health", report)
        assert report["mqtt_takeovers"] >= 3
        assert _logged_health(conflicted[0])["mqtt_conflict"] is True
        assert all(d.process.poll() is None for d in daemons)


def _logged_health(daemon: MonitorProcess) -> dict[str, Any]:
    """The daemon's last health log line (logged every health interval, connected or not)."""
    return daemon.events_named("health")[-1]
