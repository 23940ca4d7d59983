"""A tower never stops listening for lack of disk: the outbox on a real, small, full or read-only
filesystem.

Real parts: a 1 MiB tmpfs mounted for the test (the suite runs as root, as `.ci/run` does), files
made immutable with `chattr +i` (the probe's read-only outbox), a real mosquitto and the daemon as
a process. What the probe found before: on a full state disk the live daemon exited ("database or
disk is full") at every restart; on 1 MiB the WAL alone filled the disk after 59 verdicts;
replay on a full disk with the broker reachable dropped 76 of 78 verdicts; an immutable outbox
ended in SIGBUS and the daemon could not start again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon import schemas
from daemon.deliver.outbox import Message, Outbox
from tests.daemon_runs import (
    json_lines,
    noisy_clip,
    run_monitor,
    wait_until,
    write_wav,
)
from tests.fixtures.live_daemon import TOPICS, Rig, verdicts

REPO = Path(__file__).resolve().parents[1]

SMALL_DISK = "1m"
TURNS_IMMUTABLE = """
import json, subprocess, sys
from daemon.deliver.outbox import Message, Outbox
path = sys.argv[1]
build = lambda s: Message("verdict", json.dumps({"seq": s, "label": "normal"}).encode(), 1, False)
box = Outbox(path)
for _ in range(5):
    box.add_numbered(build)
import os
parts = [p for p in (path, path + "-wal", path + "-shm") if os.path.exists(p)]
subprocess.run(["chattr", "+i", *parts], check=True)
for _ in range(5):
    box.add_numbered(build)
print(box.degraded is not None, box.depth(), flush=True)
for row in box.pending(100):
    box.ack(row.id)
box.close()
print("closed", flush=True)
"""
WRITER = """
import json, sys, time
from daemon.deliver.outbox import Message, Outbox
box = Outbox(sys.argv[1])
box.add_numbered(lambda s: Message("verdict", json.dumps({"seq": s}).encode(), 1, False))
print("stored", flush=True)
time.sleep(60)
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted at tmp_path/small, unmounted at teardown."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK},mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"cannot mount a tmpfs (the suite runs as root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Write a filler file until the filesystem is full; returns it (delete it to free space)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        block = b"\0" * 4096
        while True:
            try:
                os.write(fd, block)
            except OSError:
                break
        # A last byte at a time: tmpfs can have a partial page left.
        while True:
            try:
                os.write(fd, b"\0")
            except OSError:
                break
    finally:
        os.close(fd)
    return filler


def verdict_message(seq: int) -> Message:
    body = {"seq": seq, "label": "normal", "replayed": False, "pad": "x" * 400}
    return Message("verdict", json.dumps(body).encode(), 1, False)


def disk_files(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("o.sqlite"))


class TestOutboxOnASmallDisk:
    def test_a_steady_stream_fits_on_1_mib(self, small_disk: Path) -> None:
        """2000 verdicts of ~0.5 KB, each acknowledged: the file stays on disk and under 1 MiB
        (the WAL is checkpointed and truncated), nothing is dropped. Before: the WAL filled the
        disk after 59 verdicts."""
        with Outbox(small_disk / "o.sqlite") as box:
            for _ in range(2000):
                row = box.add_numbered(verdict_message)
                box.ack(row.id)
                assert box.degraded is None
            assert box.dropped == 0
            assert disk_files(small_disk) < 1024 * 1024

    def test_full_disk_goes_on_in_memory_and_back_to_disk(self, small_disk: Path) -> None:
        """The disk fills up under a running outbox: it goes on in memory with what was pending
        (nothing dropped, seqs continue upwards), and once space is freed it writes the pending
        rows back to the file, which then holds exactly them."""
        path = small_disk / "o.sqlite"
        box = Outbox(path, retry_disk_s=0.0)
        try:
            before = [box.add_numbered(verdict_message) for _ in range(3)]
            filler = fill(small_disk)
            during = []
            for _ in range(200):
                during.append(box.add_numbered(verdict_message))
                if box.degraded is not None:
                    break
            assert box.degraded is not None, "a full disk never degraded the outbox"
            assert box.dropped == 0
            more = [box.add_numbered(verdict_message) for _ in range(3)]
            stored = before + during + more
            seqs = [r.seq for r in stored if r.seq is not None]
            assert seqs == sorted(seqs)
            assert len(set(seqs)) == len(seqs)
            assert box.depth() == len(stored)
            filler.unlink()
            last = box.add_numbered(verdict_message)  # the retry (every 0 s here) finds space
            assert box.degraded is None
            pending = box.pending(1000)
        finally:
            box.close()
        assert [r.seq for r in pending] == [*seqs, last.seq]
        with Outbox(path) as reopened:
            assert [r.seq for r in reopened.pending(1000)] == [*seqs, last.seq]


class TestDaemonOnAFullDisk:
    def test_replay_with_the_broker_reachable_drops_nothing(
        self, rig: Rig, small_disk: Path, tmp_path: Path
    ) -> None:
        """State folder on a full disk, broker reachable: every verdict replay prints reaches
        the broker (none dropped), exit 0, and the log says the outbox ran in memory."""
        fill(small_disk)
        wav = write_wav(tmp_path / "clip.wav", noisy_clip(8.0, seed=41))
        cfg = rig.config(outbox={"path": str(small_disk / "state" / "outbox.sqlite")})
        sub = rig.watch("verdict")
        done = run_monitor(["--config", str(cfg), "--replay", str(wav)])
        assert done.returncode == 0, done.stderr
        printed = json_lines(done.stdout)
        assert len(printed) >= 10
        wait_until(
            lambda: {v["seq"] for v in verdicts(sub.messages)} >= {v["seq"] for v in printed},
            "every printed verdict at the subscriber",
        )
        events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
        assert any(e["event"] == "outbox_degraded" for e in events)
        assert not any(e["event"] == "outbox_dropped_oldest" for e in events)
        assert "Traceback" not in done.stderr

    def test_live_daemon_keeps_monitoring_and_says_degraded(
        self, rig: Rig, small_disk: Path
    ) -> None:
        """The live daemon on a full state disk: it starts, keeps scoring and delivering, health
        says `outbox: degraded` with the reason, and SIGTERM ends it with 0. Before: exit 1 at
        every start (a systemd restart loop)."""
        fill(small_disk)
        rig.mic.write(noisy_clip(3.0, seed=42))
        cfg = rig.config(outbox={"path": str(small_disk / "outbox.sqlite")})
        sub = rig.watch()
        daemon = rig.start(cfg)
        health = sub.wait_for(
            lambda m: m.topic == f"{TOPICS}/health" and m.json().get("outbox") == "degraded"
        ).json()
        schemas.validate("health", health)
        assert health["outbox_error"]
        wait_until(lambda: len(verdicts(sub.messages)) >= 5, "verdicts", process=daemon)
        code, _ = daemon.stop()
        assert code == 0, daemon.log()
        assert "Traceback" not in daemon.log()


class TestReadOnlyOutbox:
    @pytest.fixture
    def immutable(self) -> Iterator[Callable[[Path], None]]:
        made: list[Path] = []

        def make(path: Path) -> None:
            subprocess.run(["chattr", "+i", str(path)], check=True)
            made.append(path)

        yield make
        for path in made:
            subprocess.run(["chattr", "-i", str(path)], check=False)

    def test_files_turning_immutable_under_a_running_outbox(self, tmp_path: Path) -> None:
        """The database and its WAL made immutable while a process writes to them: the next
        write fails inside SQLite, the outbox goes on in memory with all ten rows, acks and
        closes. Before: the next write to the mapped -shm killed the process with SIGBUS."""
        path = tmp_path / "o.sqlite"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        try:
            done = subprocess.run(
                [sys.executable, "-c", TURNS_IMMUTABLE, str(path)],
                env=env, capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
        finally:
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{path}{suffix}").exists():
                    subprocess.run(["chattr", "-i", f"{path}{suffix}"], check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        # (structlog's default output, the log lines, shares stdout with the two prints)
        lines = done.stdout.splitlines()
        assert "True 10" in lines, done.stdout[-2000:]
        assert lines[-1] == "closed"

    def test_an_immutable_outbox_does_not_stop_the_daemon(
        self, rig: Rig, tmp_path: Path, immutable: Callable[[Path], None]
    ) -> None:
        """The outbox file and its -wal and -shm made immutable between runs: the daemon starts,
        runs in memory (health says why), delivers verdicts, and ends with 0 on SIGTERM. Before:
        SIGBUS after "disk I/O error", and it could not start again."""
        path = tmp_path / "state" / "outbox.sqlite"
        # A writer killed while it holds the file leaves the database, -wal and -shm behind
        # (closing it in this process would have SQLite write to them after chattr: SIGBUS).
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "stored"
        writer.kill()
        writer.wait(timeout=10)
        assert Path(f"{path}-wal").exists()
        for suffix in ("", "-wal", "-shm"):  # -shm only from before exclusive locking
            if Path(f"{path}{suffix}").exists():
                immutable(Path(f"{path}{suffix}"))
        rig.mic.write(noisy_clip(3.0, seed=43))
        sub = rig.watch()
        daemon = rig.start(rig.config(outbox={"path": str(path)}))
        health = sub.wait_for(
            lambda m: m.topic == f"{TOPICS}/health" and m.json().get("outbox") == "degraded"
        ).json()
        assert str(path) in health["outbox_error"]
        wait_until(lambda: len(verdicts(sub.messages)) >= 3, "verdicts", process=daemon)
        started = time.monotonic()
        code, _ = daemon.stop()
        assert code == 0, daemon.log()
        assert time.monotonic() - started < 30
        assert "Traceback" not in daemon.log()
        assert path.exists()
