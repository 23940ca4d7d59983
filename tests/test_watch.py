"""daemon.watch: the table is a pure function of node views; --once reads a real broker."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from daemon.config import MqttSettings, Settings
from daemon.deliver.publish import Publisher
from daemon.errors import PublishError
from daemon.watch import NodeView, WatchState, apply_message, render_table, run_watch
from tests.daemon_runs import wait_until
from tests.fixtures.broker import Broker

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
SHA = "cd" * 32
ACK_TIMEOUT_S = 10.0


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def verdict(node: str, seq: int, end: datetime, label: str = "normal", score: float = 0.1) -> bytes:
    return json.dumps(
        {
            "schema": 1,
            "node": node,
            "seq": seq,
            "window_start": iso(end - timedelta(seconds=30)),
            "window_end": iso(end),
            "label": label,
            "score": score,
            "threshold": 0.5,
            "model": {"name": "corona-demo", "sha256": SHA},
            "level_dbfs": -40.0,
            "clipped": 0.0,
            "overflows": 0,
            "source": "live",
            "replayed": False,
        }
    ).encode()


def health(capture: str = "running", depth: int = 0, window_s: float | None = None) -> bytes:
    data: dict[str, object] = {
        "uptime_s": 60.0,
        "windows": 2,
        "overflows": 0,
        "capture": capture,
        "outbox_depth": depth,
        "outbox_dropped": 0,
        "last_window": iso(NOW),
        "model": {"name": "corona-demo", "sha256": SHA},
    }
    if window_s is not None:
        data["window_s"] = window_s
    return json.dumps(data).encode()


def row(table: str, node: str) -> list[str]:
    for line in table.splitlines():
        cells = line.split()
        if cells and cells[0] == node:
            return cells
    raise AssertionError(f"no row for {node} in\n{table}")


class TestRenderTable:
    def test_rows_show_every_column(self) -> None:
        """A node's row shows status, label, score, age, alarm, capture and outbox depth."""
        view = NodeView(
            node="t1", status="online", label="anomalous", score=0.9312, mod_db=18.26, line_hz=50,
            seq=4, verdict_end=NOW - timedelta(seconds=12), alarm="alarm", capture="running",
            outbox_depth=3,
        )  # fmt: skip
        table = render_table([view], NOW, prefix="corona/v1")
        assert table.splitlines()[0].startswith("corona-monitor watch  corona/v1  2026-11-25T12")
        assert row(table, "NODE") == [
            "NODE", "STATUS", "VERDICT", "SCORE", "MOD2F", "AGE", "ALARM", "CAPTURE", "OUTBOX",
        ]  # fmt: skip
        assert row(table, "t1") == [
            "t1", "online", "anomalous", "0.931", "18.3dB@50", "12s", "alarm", "running", "3",
        ]  # fmt: skip

    def test_stale_after_two_default_windows(self) -> None:
        """Without a window length from health, a verdict older than 2 x 30 s is STALE."""
        fresh = NodeView(
            node="a", label="normal", score=0.1, verdict_end=NOW - timedelta(seconds=59)
        )
        old = NodeView(node="b", label="normal", score=0.1, verdict_end=NOW - timedelta(seconds=61))
        table = render_table([fresh, old], NOW)
        assert "STALE" not in row(table, "a")
        assert row(table, "b")[-1] == "STALE"
        assert row(table, "b")[5] == "1m01s"

    def test_stale_uses_window_length_from_health(self) -> None:
        """A node reporting 5 s windows is stale after 10 s; one reporting 600 s is not."""
        short = NodeView(
            node="s", label="normal", verdict_end=NOW - timedelta(seconds=11), window_s=5
        )
        long = NodeView(
            node="l", label="normal", verdict_end=NOW - timedelta(seconds=900), window_s=600
        )
        table = render_table([short, long], NOW)
        assert row(table, "s")[-1] == "STALE"
        assert "STALE" not in row(table, "l")

    def test_node_without_verdict_is_stale_with_dashes(self) -> None:
        """A node known only from its status shows dashes and is stale."""
        table = render_table([NodeView(node="x", status="offline")], NOW)
        assert row(table, "x") == ["x", "offline", "-", "-", "-", "-", "-", "-", "-", "STALE"]

    def test_empty_table_says_so(self) -> None:
        """No node yet: the header and a note, not an empty screen."""
        assert "no node has published yet" in render_table([], NOW)


class TestState:
    def test_messages_fold_into_one_row_per_node(self) -> None:
        """Status, verdict, alarm and health of two nodes end up in two sorted rows."""
        state = WatchState("corona/v1")
        state.update("corona/v1/b/status", b"online")
        state.update("corona/v1/a/verdict", verdict("a", 1, NOW, "anomalous", 0.8))
        state.update("corona/v1/a/alarm", b'{"state": "alarm"}')
        state.update("corona/v1/a/health", health("fault", 7, window_s=10))
        a, b = state.views()
        assert (a.node, a.label, a.score, a.alarm, a.capture, a.outbox_depth, a.window_s) == (
            "a", "anomalous", 0.8, "alarm", "fault", 7, 10.0,
        )  # fmt: skip
        assert (b.node, b.status) == ("b", "online")

    def test_foreign_and_malformed_messages_are_ignored(self) -> None:
        """Other prefixes, unknown kinds, deeper topics and non-JSON change nothing."""
        state = WatchState("corona/v1")
        state.update("other/v1/a/status", b"online")
        state.update("corona/v1/a/b/status", b"online")
        state.update("corona/v1/a/debug", b"{}")
        assert state.views() == []
        state.update("corona/v1/a/verdict", b"not json")
        state.update("corona/v1/a/health", b"[1, 2]")
        assert state.views() == [NodeView(node="a")]

    def test_verdict_physics_show_the_modulation(self) -> None:
        """physics.mod_db and line_hz of a verdict reach the row; junk there shows as '-'."""
        doc = json.loads(verdict("a", 1, NOW, "anomalous", 0.9))
        doc["physics"] = {"line_hz": 60, "mod_db": 21.04, "mod_depth": 0.5}
        view = apply_message(NodeView(node="a"), "verdict", json.dumps(doc).encode())
        assert (view.mod_db, view.line_hz) == (21.04, 60)
        assert row(render_table([view], NOW), "a")[4] == "21.0dB@60"
        doc["physics"] = {"line_hz": "\x1b[2J", "mod_db": "loud"}
        view = apply_message(NodeView(node="a"), "verdict", json.dumps(doc).encode())
        assert (view.mod_db, view.line_hz) == (None, None)
        assert row(render_table([view], NOW), "a")[4] == "-"

    def test_replayed_older_verdict_does_not_hide_newer(self) -> None:
        """A late (lower seq) verdict from the outbox does not replace the newest one."""
        view = apply_message(NodeView(node="a"), "verdict", verdict("a", 9, NOW, "normal"))
        view = apply_message(
            view, "verdict", verdict("a", 3, NOW - timedelta(hours=1), "anomalous")
        )
        assert (view.seq, view.label) == (9, "normal")


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
            alarm = {"state": "alarm", "since": iso(NOW), "k": 3, "n": 5, "score": 0.9}
            alive.publish("alarm", json.dumps(alarm), retain=True, on_ack=acked.release)
            alive.publish("health", health("running", 2), retain=True, on_ack=acked.release)
            for _ in range(2):
                assert acked.acquire(timeout=ACK_TIMEOUT_S)
            gone.close()

            out = io.StringIO()
            result: list[int] = []
            watcher = threading.Thread(
                target=lambda: result.append(run_watch(settings, "corona/v1", True, 2.0, out))
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
        assert a[-1] != "STALE"
        assert row(table, "tower-b") == [
            "tower-b",
            "stopped",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "STALE",
        ]

    def test_host_port_tuple_works(self, broker: Broker) -> None:
        """A plain (host, port) source is enough for an anonymous broker."""
        out = io.StringIO()
        assert run_watch((broker.host, broker.port), "corona/v1", True, 0.2, out) == 0
        assert "no node has published yet" in out.getvalue()

    def test_whole_settings_and_default_prefix(self, broker: Broker) -> None:
        """The CLI passes the whole Settings and prefix None: the config's mqtt.prefix is used."""
        mqtt = MqttSettings(host=broker.host, port=broker.port, prefix="site9/v1")
        out = io.StringIO()
        assert (
            run_watch(Settings(node_id="w", mqtt=mqtt), None, once=True, wait_s=0.2, out=out) == 0
        )
        assert out.getvalue().startswith("corona-monitor watch  site9/v1  ")

    def test_unreachable_broker_is_a_publish_error(
        self, broker_factory: Callable[..., Broker]
    ) -> None:
        """No broker on the port: a PublishError naming host and port, not a hang."""
        down = broker_factory(start=False)
        started = time.monotonic()
        with pytest.raises(PublishError, match=rf"{down.host}:{down.port}"):
            run_watch((down.host, down.port), "corona/v1", True, 0.2, io.StringIO())
        assert time.monotonic() - started < 5.0
