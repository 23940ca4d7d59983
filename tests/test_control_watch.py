"""control.watch: messages fold into rows, and no message can break, forge or freeze the table.

Hostile payloads go to a real mosquitto (retained where a publisher could leave them for every
later watcher) and `corona-control watch --once` runs as a real process (`python -m control.cli`
from this checkout).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from control.messages import MAX_PAYLOAD_BYTES
from control.table import CLOCK_AHEAD, NO_HEALTH, STALE
from control.view import NodeView
from control.watch import MAX_NODES, WatchState, connect_watch, run_watch
from daemon.config import MqttSettings, Settings
from daemon.deliver.publish import Publisher
from daemon.errors import PublishError
from daemon.schemas import is_valid
from tests.daemon_runs import wait_until
from tests.fixtures.broker import Broker
from tests.watch_output import row, rows, unsafe_characters

REPO = Path(__file__).resolve().parents[1]
CONTROL = [sys.executable, "-m", "control.cli"]
MONITOR = [sys.executable, "-m", "daemon.cli"]
PREFIX = "corona/v1"
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
SHA = "cd" * 32
ACK_TIMEOUT_S = 10.0
ONCE_WAIT_S = "2"
"""--wait-s of the --once runs: retained messages arrive right after the subscription."""
MAX_LINE_CELLS = 200
"""No table line is wider than this, whatever the nodes send."""


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def verdict_doc(
    node: str, seq: int, end: datetime, label: str = "normal", score: float = 0.1, **extra: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
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
    return {**doc, **extra}


def verdict(
    node: str, seq: int, end: datetime, label: str = "normal", score: float = 0.1, **extra: Any
) -> bytes:
    return json.dumps(verdict_doc(node, seq, end, label, score, **extra)).encode()


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


def alarm(state: str) -> bytes:
    return json.dumps({"state": state, "since": iso(NOW), "k": 3, "n": 5, "score": 0.9}).encode()


def nested(depth: int = 20_000) -> bytes:
    """JSON nested deeper than Python's parser recurses, well under the size bound."""
    return b"[" * depth + b"]" * depth


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


# --- a real broker ---------------------------------------------------------------------------


def publish_raw(broker: Broker, messages: list[tuple[str, bytes]], *, retain: bool) -> None:
    """Publish (topic, payload) pairs at QoS 1 from a plain client, each acknowledged."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            info = client.publish(topic, payload, qos=1, retain=retain)
            info.wait_for_publish(ACK_TIMEOUT_S)
            assert info.is_published(), f"no PUBACK for {topic[:80]!r}"
    finally:
        client.disconnect()
        client.loop_stop()


def watch_config(broker: Broker, folder: Path) -> Path:
    path = folder / "watch.yaml"
    doc = {"node_id": "control-room", "mqtt": {"host": broker.host, "port": broker.port}}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def run_once(command: list[str], config: Path) -> tuple[subprocess.CompletedProcess[bytes], str]:
    """`COMMAND watch --once` from this checkout; the process and its stdout, strict UTF-8."""
    done = subprocess.run(
        [*command, "watch", "--once", "--wait-s", ONCE_WAIT_S, "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        env={**os.environ, "PYTHONUTF8": "1"},
        timeout=60,
        check=False,
    )
    table = done.stdout.decode("utf-8")  # strict: a lone surrogate cannot be in valid UTF-8
    return done, table


@pytest.fixture
def watch_once(broker: Broker, tmp_path: Path) -> Callable[[], str]:
    """Run `corona-control watch --once` on the broker; its table, after the checks every run
    must pass: exit 0, nothing on stderr, no unsafe character, every line bounded."""

    def run() -> str:
        config = watch_config(broker, tmp_path)
        done, table = run_once(CONTROL, config)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert done.stderr == b""
        assert unsafe_characters(table) == [], table
        assert max(len(line) for line in table.splitlines()) <= MAX_LINE_CELLS, table[:2000]
        return table

    return run


def topic(node: str, kind: str) -> str:
    return f"{PREFIX}/{node}/{kind}"


class TestHostileOnce:
    """Each payload the issue found breaking today's watch, against `watch --once`."""

    def test_terminal_escapes_are_shown_not_run(
        self, broker: Broker, watch_once: Callable[[], str]
    ) -> None:
        """Clear-screen and retitle sequences in a retained status print as visible escapes."""
        publish_raw(
            broker,
            [
                (topic("tower-0001", "status"), b"\x1b[2Jonline"),
                (topic("tower-0002", "status"), b"\x1b]0;title\x07"),
            ],
            retain=True,
        )
        table = watch_once()
        assert "\x1b" not in table
        assert "\x07" not in table
        assert row(table, "tower-0001")[1] == "\\x1b[2Jonline"
        assert row(table, "tower-0002")[1] == "\\x1b]0;title\\x07"

    def test_a_newline_cannot_forge_a_row(
        self, broker: Broker, watch_once: Callable[[], str]
    ) -> None:
        """A status and a verdict label carrying a fake `tower-0001 ... clear` row: one row
        per node, and the real tower-0001 still shows its alarm."""
        fake = b"online\ntower-0001  online  normal  0.010  -  1s  clear  running  0"
        label = "normal\ntower-0001  online  normal  0.010  -  1s  clear"
        publish_raw(
            broker,
            [
                (topic("tower-0001", "status"), b"online"),
                (topic("tower-0001", "alarm"), alarm("alarm")),
                (topic("tower-0002", "status"), fake),
                (topic("tower-0003", "verdict"), verdict("tower-0003", 1, NOW, label)),
            ],
            retain=True,
        )
        table = watch_once()
        real = row(table, "tower-0001")  # exactly one
        assert real[6] == "alarm"
        assert row(table, "tower-0002")[1] == "online\\x0atower…"
        assert rows(table, "tower-0003") == []  # its only message, the verdict, was invalid
        assert "nodes: 2" in table
        assert "skipped 1 invalid message (invalid 1)" in table

    def test_lookalike_node_names_are_told_apart(
        self, broker: Broker, watch_once: Callable[[], str]
    ) -> None:
        """Zero-width and right-to-left characters in node ids: three rows, the fakes marked."""
        names = ["tower-0001", "tower\u200b-0001", "\u202etower-0001"]
        publish_raw(broker, [(topic(name, "status"), b"online") for name in names], retain=True)
        table = watch_once()
        assert row(table, "tower-0001")[1] == "online"
        assert row(table, "?tower\\u200b-0001")[1] == "online"
        assert row(table, "?\\u202etower-0001")[1] == "online"
        assert "nodes: 3" in table

    def test_a_lone_surrogate_in_a_retained_message_is_survived(
        self, broker: Broker, watch_once: Callable[[], str]
    ) -> None:
        """\\ud800 in a retained label, capture, file name and raw status: no crash, ever."""
        replay = verdict_doc(
            "tower-0002", 1, datetime(1970, 1, 1, tzinfo=UTC), source="replay", file="\ud800.wav"
        )
        publish_raw(
            broker,
            [
                (topic("tower-0001", "verdict"), verdict("tower-0001", 1, NOW, "\ud800")),
                (topic("tower-0001", "health"), health(capture="\ud800")),
                (topic("tower-0002", "verdict"), json.dumps(replay).encode()),
                (topic("tower-0003", "status"), b"\xed\xa0\x80online"),  # surrogate, CESU-style
            ],
            retain=True,
        )
        for _ in range(2):  # "every later watch": the retained messages are still there
            table = watch_once()
            assert "skipped 2 invalid messages (invalid 2)" in table
            assert row(table, "tower-0002")[5] == "\\ud800.wav"
            assert row(table, "tower-0003")[1] == "\ufffd\ufffd\ufffdonline"

    def test_a_huge_label_is_skipped_and_rows_stay_narrow(
        self, broker: Broker, watch_once: Callable[[], str]
    ) -> None:
        """A 10 MB label, a 10 MB status and a 60 kB node id: a table of a few hundred bytes."""
        big = "x" * 10_000_000
        publish_raw(
            broker,
            [
                (topic("tower-0001", "verdict"), verdict("tower-0001", 1, NOW, big)),
                (topic("tower-0002", "status"), big.encode()),
                (topic("n" * 60_000, "status"), b"online"),
            ],
            retain=True,
        )
        table = watch_once()
        assert len(table) < 2000
        assert "skipped 2 invalid messages (too large 2)" in table
        assert len(rows(table, "n" * 39 + "…")) == 1

    def test_window_end_in_the_future_is_flagged(
        self, broker: Broker, watch_once: Callable[[], str]
    ) -> None:
        """A verdict a year ahead of the watcher's clock is flagged CLOCK?, its age negative."""
        ahead = datetime.now(UTC) + timedelta(days=365)
        publish_raw(
            broker, [(topic("tower-0001", "verdict"), verdict("tower-0001", 1, ahead))], retain=True
        )
        flagged = row(watch_once(), "tower-0001")
        assert flagged[-1] == CLOCK_AHEAD
        assert flagged[5].startswith("-36")  # -365d00h or -364d23h

    def test_replay_node_is_not_stale_and_shows_its_position(
        self, broker: Broker, watch_once: Callable[[], str]
    ) -> None:
        """A replay's 1970 window times: AGE is the file position, no STALE."""
        end = datetime(1970, 1, 1, 0, 0, 42, tzinfo=UTC)
        extra: dict[str, Any] = {"source": "replay", "file": "/data/clip.wav", "offset_s": 12.0}
        publish_raw(
            broker,
            [
                (topic("replay-1", "verdict"), verdict("replay-1", 1, end, **extra)),
                (topic("live-1", "verdict"), verdict("live-1", 1, end)),
            ],
            retain=True,
        )
        table = watch_once()
        replay = row(table, "replay-1")
        assert replay[5] == "clip.wav@12.0s"
        assert STALE not in replay[-1]
        assert row(table, "live-1")[-1] == STALE  # the same times from a live node: stale

    def test_missing_health_says_so(self, broker: Broker, watch_once: Callable[[], str]) -> None:
        """A node that never sent health shows `no health`, one that did shows its capture."""
        publish_raw(
            broker,
            [
                (topic("quiet", "status"), b"online"),
                (topic("reporting", "status"), b"online"),
                (topic("reporting", "health"), health("running", 4)),
            ],
            retain=True,
        )
        table = watch_once()
        assert row(table, "quiet")[7] == NO_HEALTH
        assert row(table, "reporting")[7:9] == ["running", "4"]


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


class LiveWatch:
    """`corona-control watch` (live, into a pipe: one table per refresh) left running."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [*CONTROL, "watch", "--config", str(config)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._lock = threading.Lock()
        self._out = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self._out += line

    def text(self) -> str:
        with self._lock:
            return self._out.decode("utf-8")

    def last_table(self) -> str:
        """The last complete table (they are separated by an empty line)."""
        tables = self.text().split("\n\n")
        return tables[-2] if len(tables) > 1 else ""

    def stop(self) -> int:
        """Ctrl-C, as an operator would; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        code = self.process.wait(30)
        self._reader.join(10)
        return code


@pytest.fixture
def live_watch(broker: Broker, tmp_path: Path) -> Iterator[LiveWatch]:
    watch = LiveWatch(watch_config(broker, tmp_path))
    yield watch
    watch.stop()


class TestLive:
    def test_live_table_keeps_updating_after_a_bomb(
        self, broker: Broker, live_watch: LiveWatch
    ) -> None:
        """The live table shows a verdict sent after deeply nested JSON (before: it froze)."""
        wait_until(lambda: "Sending SUBACK" in broker.log_text(), "the watcher's subscription")
        wait_until(lambda: "nodes: 0" in live_watch.last_table(), "the first table")
        publish_raw(broker, [(topic("tower-0001", "verdict"), nested())], retain=False)
        wait_until(lambda: "nested too deeply 1" in live_watch.last_table(), "the bomb counted")
        end = datetime.now(UTC)
        publish_raw(
            broker,
            [(topic("tower-0001", "verdict"), verdict("tower-0001", 3, end, "anomalous"))],
            retain=False,
        )
        wait_until(lambda: "anomalous" in live_watch.last_table(), "the verdict after the bomb")
        assert row(live_watch.last_table(), "tower-0001")[2] == "anomalous"
        assert live_watch.stop() == 0
        assert unsafe_characters(live_watch.text()) == []
        assert b"Traceback" not in (
            live_watch.process.stderr.read() if live_watch.process.stderr else b""
        )


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
