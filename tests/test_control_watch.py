"""control.watch: messages fold into rows, bad ones are counted, and the updates never stop.

The hostile payloads against the command as a process are in test_control_watch_hostile.py.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from control.messages import MAX_PAYLOAD_BYTES
from control.table import NO_HEALTH, STALE
from control.view import NodeView
from control.watch import MAX_NODES, WatchState, connect_watch, run_watch
from daemon.config import MqttSettings, Settings
from daemon.deliver.publish import Publisher
from daemon.errors import PublishError
from daemon.schemas import is_valid
from tests.daemon_runs import wait_until
from tests.fixtures.broker import Broker
from tests.watch_messages import (
    ACK_TIMEOUT_S,
    CONTROL,
    MONITOR,
    NOW,
    PREFIX,
    alarm,
    health,
    nested,
    publish_raw,
    run_once,
    topic,
    verdict,
    watch_config,
)
from tests.watch_output import row


class TestPayloads:
    def test_builders_fit_the_schemas(self) -> None:
        """The valid messages of these tests are valid, so a skip means the hostile part."""
        assert is_valid("verdict", verdict("a", 1, NOW))
        assert is_valid("health", health())
        assert is_valid("alarm", alarm("alarm"))


class TestState:
    def test_messages_fold_into_one_row_per_node(self) -> None:
        """Status, verdict, alarm and health of two nodes end up in two sorted rows."""
        state = WatchState(PREFIX)
        state.update(f"{PREFIX}/b/status", b"online")
        state.update(f"{PREFIX}/a/verdict", verdict("a", 1, NOW, "anomalous", 0.8))
        state.update(f"{PREFIX}/a/alarm", alarm("alarm"))
        state.update(f"{PREFIX}/a/health", health("fault", 7, window_s=10))
        a, b = state.views()
        assert (a.node, a.label, a.score, a.alarm, a.capture, a.outbox_depth, a.window_s) == (
            "a", "anomalous", 0.8, "alarm", "fault", 7, 10.0,
        )  # fmt: skip
        assert a.has_health
        assert (b.node, b.status, b.has_health) == ("b", "online", False)
        assert state.skipped() == {}

    def test_foreign_topics_are_ignored(self) -> None:
        """Other prefixes, unknown kinds and deeper topics make no row and no count."""
        state = WatchState(PREFIX)
        state.update("other/v1/a/status", b"online")
        state.update(f"{PREFIX}/a/b/status", b"online")
        state.update(f"{PREFIX}/a/debug", b"{}")
        assert state.views() == []
        assert state.skipped() == {}

    @pytest.mark.parametrize(
        ("kind", "payload", "reason"),
        [
            ("verdict", b"not json", "not JSON"),
            ("verdict", b'{"score": NaN}', "not JSON"),
            ("verdict", b"\xff\xfe{}", "not JSON"),
            ("health", b"[1, 2]", "not a JSON object"),
            ("alarm", b'{"state": "alarm"}', "invalid"),
            ("verdict", verdict("a", 1, NOW, label="clear\nb  online  normal"), "invalid"),
            ("health", health(capture="\ud800"), "invalid"),
            ("verdict", nested(), "nested too deeply"),
            ("health", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "nested too deeply"),
            ("verdict", b" " * (MAX_PAYLOAD_BYTES + 1), "too large"),
            ("status", b"online" * 100, "too large"),
        ],
    )
    def test_bad_messages_are_counted_and_change_nothing(
        self, kind: str, payload: bytes, reason: str
    ) -> None:
        """Each bad message is skipped under its reason; the node's row stays as it was."""
        state = WatchState(PREFIX)
        state.update(f"{PREFIX}/a/status", b"online")
        before = state.views()
        state.update(f"{PREFIX}/a/{kind}", payload)
        assert state.views() == before
        assert state.skipped() == {reason: 1}
        assert f"skipped 1 invalid message ({reason} 1)" in state.render(NOW)

    def test_verdict_physics_show_the_modulation(self) -> None:
        """physics.mod_db and line_hz of a verdict reach the row."""
        physics = {"line_hz": 60, "mod_db": 21.04, "mod_depth": 0.5, "hum_db": 3.0}
        physics |= {"sub_db": 4.0, "crackle_db": 0.5}
        state = WatchState(PREFIX)
        state.update(f"{PREFIX}/a/verdict", verdict("a", 1, NOW, "anomalous", 0.9, physics=physics))
        (view,) = state.views()
        assert (view.mod_db, view.line_hz) == (21.04, 60)
        assert row(state.render(NOW), "a")[4] == "21.0dB@60"

    def test_replayed_older_verdict_does_not_hide_newer(self) -> None:
        """A late (lower seq) verdict from the outbox does not replace the newest one."""
        state = WatchState(PREFIX)
        state.update(f"{PREFIX}/a/verdict", verdict("a", 9, NOW, "normal"))
        state.update(f"{PREFIX}/a/verdict", verdict("a", 3, NOW - timedelta(hours=1), "anomalous"))
        (view,) = state.views()
        assert (view.seq, view.label) == (9, "normal")

    def test_replay_verdict_keeps_file_and_offset(self) -> None:
        """source replay: file and offset_s are kept; junk in them is dropped, not shown."""
        state = WatchState(PREFIX)
        end = datetime(1970, 1, 1, 0, 0, 42, tzinfo=UTC)
        extra: dict[str, Any] = {"source": "replay", "file": "/r/clip.wav", "offset_s": 12.0}
        state.update(f"{PREFIX}/r/verdict", verdict("r", 1, end, **extra))
        (view,) = state.views()
        assert (view.replay, view.file, view.offset_s) == (True, "/r/clip.wav", 12.0)
        junk: dict[str, Any] = {"source": "replay", "file": ["x"], "offset_s": 10**400}
        state.update(f"{PREFIX}/r/verdict", verdict("r", 2, end, **junk))
        (view,) = state.views()
        assert (view.seq, view.file, view.offset_s) == (2, None, None)

    def test_node_count_is_bounded(self) -> None:
        """Past MAX_NODES node ids, new ones are counted, not kept; known ones still update."""
        state = WatchState(PREFIX)
        for i in range(MAX_NODES + 5):
            state.update(f"{PREFIX}/n{i}/status", b"online")
        assert len(state.views()) == MAX_NODES
        assert state.skipped() == {"over the node limit": 5}
        state.update(f"{PREFIX}/n0/status", b"stopped")
        assert state.views()[0] == NodeView(node="n0", status="stopped")


class TestNoFreeze:
    def test_deeply_nested_json_does_not_stop_the_updates(self, broker: Broker) -> None:
        """After a nested-JSON bomb on every topic kind, a later valid verdict still arrives."""
        with connect_watch((broker.host, broker.port), PREFIX) as state:
            wait_until(lambda: "Sending SUBACK" in broker.log_text(), "the subscription")
            bombs = [(topic("tower-0001", kind), nested()) for kind in ("verdict", "health")]
            publish_raw(broker, bombs, retain=False)
            publish_raw(
                broker,
                [(topic("tower-0001", "verdict"), verdict("tower-0001", 7, NOW, "anomalous"))],
                retain=False,
            )
            wait_until(
                lambda: any(v.seq == 7 for v in state.views()), "the verdict after the bombs"
            )
            assert state.skipped() == {"nested too deeply": 2}


class TestAlias:
    def test_corona_monitor_watch_still_works(self, broker: Broker, tmp_path: Path) -> None:
        """`corona-monitor watch --once` says where the command went and prints the same table."""
        publish_raw(broker, [(topic("tower-0001", "status"), b"\x1b[2Jonline")], retain=True)
        config = watch_config(broker, tmp_path)
        done, table = run_once(MONITOR, config)
        assert done.returncode == 0, done.stderr
        assert b"corona-control watch" in done.stderr
        assert table.startswith("corona-control watch  corona/v1  ")
        assert row(table, "tower-0001")[1] == "\\x1b[2Jonline"


class TestRunWatch:
    def test_once_prints_table_from_real_broker(self, broker: Broker) -> None:
        """--once on mosquitto: retained status, alarm, health and a live verdict fill the table."""
        settings = MqttSettings(host=broker.host, port=broker.port, reconnect_max_s=1.0)
        alive = Publisher(settings, "tower-a")
        gone = Publisher(settings, "tower-b")
        try:
            for pub in (alive, gone):
                pub.start()
                assert pub.wait_connected(ACK_TIMEOUT_S)
            acked = threading.Semaphore(0)
            alive.publish("alarm", alarm("alarm").decode(), retain=True, on_ack=acked.release)
            alive.publish("health", health("running", 2), retain=True, on_ack=acked.release)
            for _ in range(2):
                assert acked.acquire(timeout=ACK_TIMEOUT_S)
            gone.close()

            out = io.StringIO()
            result: list[int] = []
            watcher = threading.Thread(
                target=lambda: result.append(run_watch(settings, PREFIX, True, 2.0, out))
            )
            watcher.start()
            # Verdicts are not retained: publish only once the broker has granted the watcher's
            # subscription (the publishers subscribe to nothing, so its SUBACK is the only one).
            wait_until(
                lambda: "Sending SUBACK" in broker.log_text(),
                "the watcher's subscription",
                timeout_s=ACK_TIMEOUT_S,
            )
            end = datetime.now(UTC)
            alive.publish("verdict", verdict("tower-a", 5, end, "anomalous", 0.87))
            watcher.join(10)
        finally:
            alive.close()
            gone.close()
        assert result == [0]
        table = out.getvalue()
        a = row(table, "tower-a")
        assert a[:4] == ["tower-a", "online", "anomalous", "0.870"]
        assert a[4] == "-"  # the test verdict carries no physics
        assert a[6:9] == ["alarm", "running", "2"]
        assert len(a) == 9  # no flags: fresh
        assert row(table, "tower-b") == [
            "tower-b", "stopped", "-", "-", "-", "-", "-", NO_HEALTH, "-", STALE,
        ]  # fmt: skip

    def test_host_port_tuple_works(self, broker: Broker) -> None:
        """A plain (host, port) source is enough for an anonymous broker."""
        out = io.StringIO()
        assert run_watch((broker.host, broker.port), PREFIX, True, 0.2, out) == 0
        assert "no node has published yet" in out.getvalue()

    def test_whole_settings_and_default_prefix(self, broker: Broker) -> None:
        """The CLI passes the whole Settings and prefix None: the config's mqtt.prefix is used."""
        mqtt_settings = MqttSettings(host=broker.host, port=broker.port, prefix="site9/v1")
        out = io.StringIO()
        settings = Settings(node_id="w", mqtt=mqtt_settings)
        assert run_watch(settings, None, once=True, wait_s=0.2, out=out) == 0
        assert out.getvalue().startswith("corona-control watch  site9/v1  ")

    def test_unreachable_broker_is_a_publish_error(
        self, broker_factory: Callable[..., Broker]
    ) -> None:
        """No broker on the port: a PublishError naming host and port, not a hang."""
        down = broker_factory(start=False)
        started = time.monotonic()
        with pytest.raises(PublishError, match=rf"{down.host}:{down.port}"):
            run_watch((down.host, down.port), PREFIX, True, 0.2, io.StringIO())
        assert time.monotonic() - started < 5.0

    def test_unreachable_broker_is_one_line_from_the_cli(
        self, broker_factory: Callable[..., Broker], tmp_path: Path
    ) -> None:
        """The command says which broker did not answer, in one line, exit 1, no traceback."""
        down = broker_factory(start=False)
        config = watch_config(down, tmp_path)
        done, _ = run_once(CONTROL, config)
        assert done.returncode == 1
        lines = done.stderr.decode().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"corona-control: watch: the broker at {down.host}:{down.port}")
