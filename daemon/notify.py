"""systemd's notify protocol (sd_notify) with the standard library, and a progress-gated watchdog.

Every call is a no-op when $NOTIFY_SOCKET is unset (run by hand, in tests, under another
supervisor), and a failed send is logged, never raised: supervision must not stop the daemon.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Final

import structlog

log = structlog.get_logger(__name__)

USEC_PER_S: Final = 1_000_000
PING_FRACTION: Final = 0.5
"""Ping at this fraction of WatchdogSec, as sd_watchdog_enabled(3) recommends, so one late
ping never trips the watchdog."""


def notify(**fields: str | int) -> bool:
    """Send ``KEY=value`` lines (``notify(READY=1, STATUS="...")``); True if a datagram went out."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not fields:
        return False
    # Values are one line each: a newline would start a bogus field.
    text = "".join(f"{key}={' '.join(str(value).splitlines())}\n" for key, value in fields.items())
    target = "\0" + address[1:] if address.startswith("@") else address  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never wait for the receiver: a manager that stops reading (its queue holds only
            # net.unix.max_dgram_qlen datagrams, 10 by default) must not stop the worker loop.
            sock.setblocking(False)
            sock.connect(target)
            sock.sendall(text.encode("utf-8"))
    except OSError as err:
        log.warning("notify_failed", socket=address, fields=sorted(fields), error=str(err))
        return False
    return True


def ready(status: str | None = None) -> bool:
    """READY=1: capture and model are up (ends systemd's start-up wait for Type=notify)."""
    return notify(READY=1, STATUS=status) if status else notify(READY=1)


def reloading(status: str | None = None) -> bool:
    """RELOADING=1 with MONOTONIC_USEC= (CLOCK_MONOTONIC, microseconds): a reload has begun;
    READY=1 (`ready`) ends it. systemd 253+ needs the timestamp to match the notification to
    the reload it started (Type=notify-reload); older ones, such as 252, ignore the field."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    if status:
        return notify(RELOADING=1, MONOTONIC_USEC=usec, STATUS=status)
    return notify(RELOADING=1, MONOTONIC_USEC=usec)


def status(text: str) -> bool:
    """STATUS=: the one-line summary `systemctl status` shows."""
    return notify(STATUS=text)


def stopping() -> bool:
    """STOPPING=1: a clean shutdown has begun."""
    return notify(STOPPING=1)


def watchdog() -> bool:
    """WATCHDOG=1: one keep-alive ping."""
    return notify(WATCHDOG=1)


def watchdog_interval_s() -> float | None:
    """WatchdogSec= in seconds when systemd watches this very process, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None  # meant for a parent process that exec'd or forked us
    try:
        value = int(usec)
    except ValueError:
        log.warning("watchdog_usec_invalid", value=usec)
        return None
    return value / USEC_PER_S if value > 0 else None


class Watchdog:
    """Pings only while the daemon makes progress, so a silent stall gets the service restarted.

    The service calls ``tick(last_progress_s)`` from its loop with the monotonic time of the
    last progress it saw (a captured block, a finished window): a ping goes out at most every
    ``ping_interval_s`` and only if that progress is at most ``stall_after_s`` old. A hung loop
    sends nothing either, since it no longer ticks.
    """

    def __init__(
        self,
        stall_after_s: float,
        *,
        ping_interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        send: Callable[[], bool] = watchdog,
    ) -> None:
        if ping_interval_s is None:
            interval_s = watchdog_interval_s()
            ping_interval_s = None if interval_s is None else interval_s * PING_FRACTION
        self.stall_after_s = stall_after_s
        self.ping_interval_s = ping_interval_s
        self._clock = clock
        self._send = send
        self._last_ping_s = float("-inf")
        self._stalled = False

    @property
    def enabled(self) -> bool:
        """False when systemd set no watchdog for this process: tick then does nothing."""
        return self.ping_interval_s is not None

    def tick(self, last_progress_s: float) -> bool:
        """Ping if progress is recent and a ping is due; True if one was sent."""
        if self.ping_interval_s is None:
            return False
        now = self._clock()
        idle_s = now - last_progress_s
        if idle_s > self.stall_after_s:
            if not self._stalled:
                log.error("watchdog_stalled", idle_s=round(idle_s, 1), limit_s=self.stall_after_s)
                self._stalled = True
            return False
        if self._stalled:
            log.warning("watchdog_resumed", idle_s=round(idle_s, 1))
            self._stalled = False
            self._last_ping_s = float("-inf")  # ping at once: the deadline may be close
        if now - self._last_ping_s < self.ping_interval_s:
            return False
        self._last_ping_s = now
        return self._send()
