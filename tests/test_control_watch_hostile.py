"""`corona-control watch` against what the issue found breaking today's watch, as processes.

Hostile payloads go to a real mosquitto (retained where a publisher could leave them for every
later watcher) and `corona-control watch` runs as a real process (`python -m control.cli` from
this checkout): `--once` for each payload, live for the one that used to freeze the table.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from control.table import CLOCK_AHEAD, NO_HEALTH, STALE
from tests.daemon_runs import wait_until
from tests.fixtures.broker import Broker
from tests.watch_messages import (
    CONTROL,
    NOW,
    REPO,
    alarm,
    health,
    nested,
    publish_raw,
    run_once,
    topic,
    verdict,
    verdict_doc,
    watch_config,
)
from tests.watch_output import row, rows, unsafe_characters

MAX_LINE_CELLS = 200
"""No table line is wider than this, whatever the nodes send."""


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
