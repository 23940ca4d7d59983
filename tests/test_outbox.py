"""daemon.deliver.outbox: durable rows, seq that never repeats, bounds that drop oldest and say
so."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.config import OutboxSettings
from daemon.deliver.outbox import Message, Outbox, OutboxError

REPO = Path(__file__).resolve().parent.parent


def verdict(seq: int) -> Message:
    body = {"seq": seq, "label": "normal", "replayed": False}
    return Message("verdict", json.dumps(body).encode(), 1, False)


def stored_seqs(path: Path) -> list[int]:
    """The seqs in a closed outbox file (read by a second connection, closed again: the outbox
    holds its file exclusively while open)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [r[0] for r in conn.execute("SELECT seq FROM messages ORDER BY id")]


class TestSeq:
    def test_seq_starts_at_the_clock_and_counts_up(self, tmp_path: Path) -> None:
        """A new file's first seq is the clock in microseconds (no earlier file of the node
        can have reached it); then 1 by 1, and the payload is built with that seq."""
        before_us = time.time_ns() // 1_000
        with Outbox(tmp_path / "o.sqlite") as box:
            rows = [box.add_numbered(verdict) for _ in range(3)]
        first = rows[0].seq
        assert first is not None
        assert before_us < first <= time.time_ns() // 1_000 + 1
        assert [r.seq for r in rows] == [first, first + 1, first + 2]
        assert [json.loads(r.payload)["seq"] for r in rows] == [r.seq for r in rows]

    def test_a_deleted_file_never_repeats_a_seq(self, tmp_path: Path) -> None:
        """The outbox file deleted between runs (its counter with it): the next run's seqs are
        all above the old ones. Before: it restarted at 1 with new content."""
        path = tmp_path / "o.sqlite"
        with Outbox(path) as box:
            old = [box.add_numbered(verdict).seq for _ in range(5)]
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        with Outbox(path) as box:
            new = box.add_numbered(verdict).seq
        assert new is not None
        assert all(s is not None and new > s for s in old)

    def test_seq_continues_after_reopen(self, tmp_path: Path) -> None:
        """Closing and reopening the file continues the counter, even with all rows acked."""
        path = tmp_path / "o.sqlite"
        with Outbox(path) as box:
            for _ in range(4):
                box.ack(box.add_numbered(verdict).id)
            first = box.last_seq - 3
        with Outbox(path) as box:
            assert box.last_seq == first + 3
            assert box.add_numbered(verdict).seq == first + 4

    def test_unnumbered_rows_leave_seq_alone(self, tmp_path: Path) -> None:
        """add() (alarm changes) stores a row without a seq and does not use one up."""
        with Outbox(tmp_path / "o.sqlite") as box:
            first = box.add_numbered(verdict).seq
            assert first is not None
            alarm = box.add(Message("alarm", b'{"state":"alarm"}', 1, True))
            assert alarm.seq is None
            assert alarm.retain is True
            assert box.add_numbered(verdict).seq == first + 1

    def test_failed_build_stores_nothing_and_keeps_seq(self, tmp_path: Path) -> None:
        """A payload builder that raises leaves no row and does not consume the seq."""

        def broken(seq: int) -> Message:
            raise ValueError(f"cannot build {seq}")

        with Outbox(tmp_path / "o.sqlite") as box:
            first = box.add_numbered(verdict).seq
            assert first is not None
            with pytest.raises(ValueError, match=f"cannot build {first + 1}"):
                box.add_numbered(broken)
            assert box.depth() == 1
            assert box.add_numbered(verdict).seq == first + 1


CHILD = """
import json, sys
from daemon.deliver.outbox import Message, Outbox
box = Outbox(sys.argv[1])
while True:
    row = box.add_numbered(
        lambda s: Message("verdict", json.dumps({"seq": s}).encode(), 1, False)
    )
    print(row.seq, flush=True)
"""


class TestCrashSafety:
    def test_sigkill_loses_no_committed_row_and_reuses_no_seq(self, tmp_path: Path) -> None:
        """A writer killed with SIGKILL mid-stream leaves every reported row; seq carries on."""
        path = tmp_path / "o.sqlite"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, env=env, text=True
        )
        assert child.stdout is not None
        reported = [int(child.stdout.readline()) for _ in range(200)]
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        assert child.returncode == -signal.SIGKILL

        seqs = stored_seqs(path)
        assert set(reported) <= set(seqs)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no repeat
        with Outbox(path) as box:
            assert box.depth() == len(seqs)
            assert box.add_numbered(verdict).seq == seqs[-1] + 1


class TestBounds:
    def test_max_rows_drops_oldest_and_counts(self, tmp_path: Path) -> None:
        """Beyond max_rows the oldest rows go, the count persists, and a log line says so."""
        path = tmp_path / "o.sqlite"
        with capture_logs() as logs, Outbox(path, max_rows=5) as box:
            for _ in range(8):
                box.add_numbered(verdict)
            assert box.depth() == 5
            assert box.dropped == 3
            first = box.last_seq - 7
        assert stored_seqs(path) == [first + k for k in range(3, 8)]
        events = [e for e in logs if e["event"] == "outbox_dropped_oldest"]
        assert events
        assert events[0]["reason"] == "max_rows"
        assert events[0]["path"] == str(path)
        with Outbox(path, max_rows=5) as box:
            assert box.dropped == 3

    def test_every_drop_is_in_a_logged_count(self, tmp_path: Path) -> None:
        """A burst of drops inside one log interval: the first is logged at once, the rest are
        summed and logged at close, so the counts add up to the drops. Before: 21,908 drops were
        one line with count 1."""
        path = tmp_path / "o.sqlite"
        with capture_logs() as logs, Outbox(path, max_rows=5) as box:
            for _ in range(105):
                box.add_numbered(verdict)
            assert box.dropped == 100
        lines = [e for e in logs if e["event"] == "outbox_dropped_oldest"]
        assert sum(e["count"] for e in lines) == 100
        assert lines[-1]["dropped_total"] == 100

    def test_below_the_disk_floor_it_goes_on_in_memory(self, tmp_path: Path) -> None:
        """Below min_free_mb (checked before writing) the file is not written: its pending rows
        and the new ones are kept in memory, nothing is dropped, `degraded` says why, and acks
        work. Before: each new row replaced the oldest, so rows were dropped that a reachable
        broker could have taken."""
        path = tmp_path / "o.sqlite"
        with Outbox(path) as box:
            box.add_numbered(verdict)
            box.add_numbered(verdict)
            on_disk = box.last_seq
        size = path.stat().st_size
        # No disk has this much free space, so the floor is always undercut.
        with capture_logs() as logs, Outbox(path, min_free_mb=1e12) as box:
            assert box.degraded is not None
            assert "min_free_mb" in box.degraded
            rows = [box.add_numbered(verdict) for _ in range(3)]
            assert box.depth() == 5
            assert box.dropped == 0
            assert all(r.seq is not None and r.seq > on_disk for r in rows)
            for row in box.pending(10):
                assert box.ack(row.id)
            assert box.depth() == 0
        assert path.stat().st_size == size
        degraded = [e for e in logs if e["event"] == "outbox_degraded"]
        assert len(degraded) == 1
        assert degraded[0]["pending"] == 2

    def test_rows_that_must_go_are_normal_before_anomalous_and_never_alarms(
        self, tmp_path: Path
    ) -> None:
        """Over max_rows: the oldest normal verdicts go first, then anomalous ones; an alarm
        change is never dropped."""

        def labelled(label: str) -> Callable[[int], Message]:
            def build(seq: int) -> Message:
                body = {"seq": seq, "label": label, "replayed": False}
                return Message("verdict", json.dumps(body).encode(), 1, False)

            return build

        with Outbox(tmp_path / "o.sqlite", max_rows=4) as box:
            box.add(Message("alarm", b'{"state":"alarm"}', 1, True))
            anomalous = box.add_numbered(labelled("anomalous"))
            for _ in range(3):
                box.add_numbered(labelled("normal"))
            assert box.dropped == 1
            kept = box.pending(10)
            assert kept[0].topic == "alarm"
            assert anomalous.id in {r.id for r in kept}
            for _ in range(3):
                box.add_numbered(labelled("anomalous"))
            kept = box.pending(10)
        labels = [json.loads(r.payload).get("label") for r in kept if r.topic == "verdict"]
        assert [r.topic for r in kept].count("alarm") == 1
        assert labels == ["anomalous"] * 3  # the normal ones went first, then the oldest anomalous

    def test_disk_floor_keeps_at_least_the_newest_row(self, tmp_path: Path) -> None:
        """An empty outbox below the floor still keeps the message just added."""
        with Outbox(tmp_path / "o.sqlite", min_free_mb=1e12) as box:
            row = box.add_numbered(verdict)
            assert [r.id for r in box.pending(10)] == [row.id]

    def test_settings_are_applied(self, tmp_path: Path) -> None:
        """from_settings takes path, max_rows and min_free_mb from the config."""
        settings = OutboxSettings(path=tmp_path / "s" / "o.sqlite", max_rows=2, min_free_mb=0)
        with Outbox.from_settings(settings) as box:
            for _ in range(3):
                box.add_numbered(verdict)
            assert (box.depth(), box.dropped) == (2, 1)


class TestReadAndAck:
    def test_pending_is_oldest_first_with_bounds(self, tmp_path: Path) -> None:
        """pending() returns rows in the order added, limited and windowed by id."""
        with Outbox(tmp_path / "o.sqlite") as box:
            rows = [box.add_numbered(verdict) for _ in range(6)]
            assert box.pending(10) == rows
            assert box.pending(2) == rows[:2]
            assert box.pending(10, after_id=rows[1].id, upto_id=rows[3].id) == rows[2:4]
            assert box.last_id() == rows[-1].id

    def test_ack_deletes_once(self, tmp_path: Path) -> None:
        """ack() deletes the row for good; a second ack of it is a harmless False."""
        path = tmp_path / "o.sqlite"
        with Outbox(path) as box:
            first, second = box.add_numbered(verdict), box.add_numbered(verdict)
            assert box.ack(first.id) is True
            assert box.ack(first.id) is False
            assert box.depth() == 1
        with Outbox(path) as box:
            assert [r.id for r in box.pending(10)] == [second.id]

    def test_row_ids_never_repeat_after_deletes(self, tmp_path: Path) -> None:
        """Acking the newest row and adding again gives a larger id (ids order rows by age)."""
        path = tmp_path / "o.sqlite"
        with Outbox(path) as box:
            row = box.add_numbered(verdict)
            box.ack(row.id)
        with Outbox(path) as box:
            assert box.add_numbered(verdict).id > row.id

    def test_acks_from_another_thread_while_adding(self, tmp_path: Path) -> None:
        """Adds on one thread and acks on another never lose track of a row."""
        path = tmp_path / "o.sqlite"
        total = 300
        with Outbox(path) as box:
            first_seq = box.last_seq + 1
            done = threading.Event()
            acked: list[int] = []

            def acker() -> None:
                after = 0
                while not (done.is_set() and not box.pending(1, after_id=after)):
                    for row in box.pending(50, after_id=after):
                        assert box.ack(row.id)
                        acked.append(row.id)
                        after = row.id

            thread = threading.Thread(target=acker)
            thread.start()
            added = [box.add_numbered(verdict).id for _ in range(total)]
            done.set()
            thread.join(timeout=30)
            assert not thread.is_alive()
            assert sorted(acked) == added
            assert box.depth() == 0
        with Outbox(path) as box:
            assert box.depth() == 0
            assert box.last_seq == first_seq + total - 1


class TestFile:
    def test_wal_mode_and_private_modes(self, tmp_path: Path) -> None:
        """The file is in WAL mode, 0600, in a folder created 0700."""
        path = tmp_path / "state" / "deep" / "o.sqlite"
        with Outbox(path) as box:
            box.add_numbered(verdict)
            assert box._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            # Exclusive locking: the WAL index lives in heap memory, there is no -shm to map.
            assert box._conn.execute("PRAGMA locking_mode").fetchone()[0] == "exclusive"
            assert not Path(f"{path}-shm").exists()
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(Path(f"{path}-wal").stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    def test_folders_are_private_under_any_umask(self, tmp_path: Path) -> None:
        """Under umask 000 (a process of its own: the umask is per process) every folder the
        outbox creates, parents included, is 0700. Before: the parents were 0777."""
        path = tmp_path / "a" / "b" / "c" / "o.sqlite"
        script = "import os, sys\nos.umask(0)\nfrom daemon.deliver.outbox import Outbox\n"
        script += "Outbox(sys.argv[1]).close()\n"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-c", script, str(path)], env=env, check=True)
        for folder in (tmp_path / "a", tmp_path / "a" / "b", path.parent):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_unusable_folder_names_the_path(self, tmp_path: Path) -> None:
        """A state folder that cannot be created gives an OutboxError naming it."""
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        with pytest.raises(OutboxError, match=str(blocker)):
            Outbox(blocker / "o.sqlite")

    def test_a_second_process_on_the_file_is_an_outbox_error(self, tmp_path: Path) -> None:
        """The outbox holds its file exclusively: a second opener (another daemon, or a replay
        with the daemon's config) fails with an OutboxError naming the file, after the busy
        timeout, not a hang; the first goes on."""
        path = tmp_path / "o.sqlite"
        with Outbox(path) as box:
            first = box.add_numbered(verdict).seq
            assert first is not None
            script = "import sys\nfrom daemon.deliver.outbox import Outbox\nOutbox(sys.argv[1])\n"
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            done = subprocess.run(
                [sys.executable, "-c", script, str(path)],
                env=env, capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
            assert done.returncode != 0
            assert "OutboxError" in done.stderr
            assert f"{path}: cannot open the outbox database: database is locked" in done.stderr
            assert box.add_numbered(verdict).seq == first + 1


class TestCorruption:
    def test_garbage_file_is_set_aside_and_replaced(self, tmp_path: Path) -> None:
        """A file that is not a database moves to .corrupt-<time>; a new outbox starts."""
        path = tmp_path / "o.sqlite"
        garbage = os.urandom(8192)
        path.write_bytes(garbage)
        before_us = time.time_ns() // 1_000
        with capture_logs() as logs, Outbox(path) as box:
            row = box.add_numbered(verdict)
            assert box.depth() == 1
        aside = list(tmp_path.glob("o.sqlite.corrupt-*"))
        assert len(aside) == 1
        assert aside[0].read_bytes() == garbage
        # The counter was lost with the file: seq restarts above any value used before.
        assert row.seq is not None
        assert row.seq > before_us
        event = next(e for e in logs if e["event"] == "outbox_corrupt")
        assert event["log_level"] == "error"
        assert event["path"] == str(path)
        assert event["moved_to"] == str(aside[0])

    def test_damaged_pages_are_set_aside_and_seq_does_not_go_back(self, tmp_path: Path) -> None:
        """A database whose table pages are overwritten is replaced and seq keeps rising."""
        path = tmp_path / "o.sqlite"
        with Outbox(path) as box:
            for _ in range(200):
                box.add_numbered(
                    lambda s: Message("verdict", bytes(2000) + bytes([s % 256]), 1, False)
                )
        size = path.stat().st_size
        with path.open("r+b") as f:
            f.seek(size // 2)
            f.write(b"\xff" * 16384)
        with Outbox(path) as box:
            assert box.depth() == 0
            seq = box.add_numbered(verdict).seq
            assert seq is not None
            assert seq > 200
        assert list(tmp_path.glob("o.sqlite.corrupt-*"))


class TestState:
    def test_state_survives_reopen(self, tmp_path: Path) -> None:
        """A value stored with set_state is there after the file is closed and reopened."""
        path = tmp_path / "outbox.sqlite"
        with Outbox(path) as outbox:
            assert outbox.get_state("alarm_active", default=7) == 7
            outbox.set_state("alarm_active", 1)
        with Outbox(path) as outbox:
            assert outbox.get_state("alarm_active") == 1

    def test_counters_are_not_writable_as_state(self, tmp_path: Path) -> None:
        """seq and dropped belong to the outbox; set_state refuses them."""
        with Outbox(tmp_path / "outbox.sqlite") as outbox, pytest.raises(ValueError, match="seq"):
            outbox.set_state("seq", 0)
