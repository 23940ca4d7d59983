"""daemon.notify: sd_notify datagrams to a test-owned NOTIFY_SOCKET, and the progress watchdog."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon import notify


class Listener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(2.0)

    def next(self) -> str:
        return self.sock.recv(4096).decode()

    def drain(self) -> list[str]:
        """Every datagram received so far, without waiting."""
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(2.0)
        return out


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    # A short folder: AF_UNIX paths are limited to 108 bytes, pytest's tmp_path can be longer.
    folder = Path(tempfile.mkdtemp(prefix="notify-"))
    path = folder / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield Listener(sock)
    sock.close()
    path.unlink()
    folder.rmdir()


class TestNotify:
    def test_ready_status_stopping_arrive(self, listener: Listener) -> None:
        """READY=1, STATUS= and STOPPING=1 each arrive as a datagram of KEY=value lines."""
        assert notify.ready() is True
        assert listener.next() == "READY=1\n"
        assert notify.ready("capturing") is True
        assert listener.next() == "READY=1\nSTATUS=capturing\n"
        assert notify.status("42 windows\nok") is True
        assert listener.next() == "STATUS=42 windows ok\n"  # one line, always
        assert notify.stopping() is True
        assert listener.next() == "STOPPING=1\n"
        assert notify.watchdog() is True
        assert listener.next() == "WATCHDOG=1\n"

    def test_abstract_socket(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A NOTIFY_SOCKET starting with '@' names a socket in the abstract namespace."""
        name = f"corona-test-{uuid.uuid4().hex}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("\0" + name)
            sock.settimeout(2.0)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
            assert notify.notify(READY=1) is True
            assert sock.recv(4096) == b"READY=1\n"

    def test_no_socket_is_a_no_op(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without NOTIFY_SOCKET nothing is sent and nothing fails."""
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        assert notify.ready() is False
        assert notify.watchdog() is False

    def test_unreachable_socket_logs_and_carries_on(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A socket that is gone makes notify return False with a warning, never raise."""
        monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify.sock")
        with capture_logs() as logs:
            assert notify.status("x") is False
        assert logs[0]["event"] == "notify_failed"
        assert logs[0]["socket"] == "/nonexistent/notify.sock"


class TestWatchdogInterval:
    def test_reads_watchdog_usec(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """WATCHDOG_USEC is WatchdogSec in microseconds."""
        monkeypatch.setenv("WATCHDOG_USEC", "30000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        assert notify.watchdog_interval_s() == 30.0

    def test_pid_must_be_ours(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A WATCHDOG_PID of another process means the watchdog is not ours."""
        monkeypatch.setenv("WATCHDOG_USEC", "30000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        assert notify.watchdog_interval_s() == 30.0
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
        assert notify.watchdog_interval_s() is None

    @pytest.mark.parametrize("value", [None, "", "0", "soon"])
    def test_absent_or_invalid(self, monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
        """No, zero or unreadable WATCHDOG_USEC means no watchdog."""
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        if value is None:
            monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        else:
            monkeypatch.setenv("WATCHDOG_USEC", value)
        assert notify.watchdog_interval_s() is None


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


class TestWatchdog:
    def test_interval_from_environment(
        self, listener: Listener, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without an explicit interval, pings go at half of WatchdogSec; none without one."""
        monkeypatch.setenv("WATCHDOG_USEC", "20000000")
        assert notify.Watchdog(10.0).ping_interval_s == 10.0
        monkeypatch.delenv("WATCHDOG_USEC")
        idle = notify.Watchdog(10.0)
        assert not idle.enabled
        assert idle.tick(time.monotonic()) is False
        assert listener.drain() == []

    def test_pings_stop_on_stall_and_resume(self, listener: Listener) -> None:
        """Pings flow while progress is recent, stop when it stalls, and resume with it."""
        clock = FakeClock()
        dog = notify.Watchdog(5.0, ping_interval_s=1.0, clock=clock)
        progress_s = clock.now_s
        pings = 0
        for _ in range(30):  # 3 s of progress, ticked every 0.1 s
            progress_s = clock.now_s
            pings += dog.tick(progress_s)
            clock.now_s += 0.1
        assert pings == 3
        assert listener.drain() == ["WATCHDOG=1\n"] * 3

        with capture_logs() as logs:
            for _ in range(100):  # 10 s with no progress
                dog.tick(progress_s)
                clock.now_s += 0.1
            sent_during_stall = listener.drain()
            # Pings continue for the first stall_after_s, then stop.
            assert 4 <= len(sent_during_stall) <= 6
            assert dog.tick(progress_s) is False
            assert dog.tick(clock.now_s) is True  # progress again: ping at once
        assert [e["event"] for e in logs] == ["watchdog_stalled", "watchdog_resumed"]
        assert listener.next() == "WATCHDOG=1\n"

    def test_real_time_stall_of_a_producer_thread(self, listener: Listener) -> None:
        """A thread that stops producing blocks stops the pings within stall_after_s."""
        progress = {"at_s": time.monotonic()}
        producing = threading.Event()
        producing.set()
        stop = threading.Event()

        def capture() -> None:
            while not stop.is_set():
                if producing.is_set():
                    progress["at_s"] = time.monotonic()
                time.sleep(0.01)

        dog = notify.Watchdog(0.2, ping_interval_s=0.05)
        thread = threading.Thread(target=capture)
        thread.start()

        def run_for(seconds: float) -> list[str]:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                dog.tick(progress["at_s"])
                time.sleep(0.01)
            return listener.drain()

        try:
            assert len(run_for(0.4)) >= 4
            producing.clear()
            run_for(0.3)  # within the grace period some pings may still go
            assert run_for(0.5) == []
            producing.set()
            assert len(run_for(0.4)) >= 4
        finally:
            stop.set()
            thread.join()
