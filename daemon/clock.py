"""Whether the system clock is synchronized: the kernel's NTP state, one `adjtimex` call.

A Pi has no real-time clock: it boots with the time of its last shutdown and keeps it until
NTP (timesyncd, chrony, ntpd: whichever runs) steps it, so a verdict's `window_end` can be
hours wrong. The kernel knows: every NTP client clears STA_UNSYNC once it disciplines the clock,
and the kernel sets it again (and answers TIME_ERROR) when nobody has for ~16 s of accumulated
error. Reading it is one syscall with modes = 0 (read only, no privilege), through libc's
`adjtimex(struct timex *)`, so no daemon of ours or D-Bus is needed.

`read()` answers `ClockStatus(synced=None)` when the call is not available (no glibc, or a
seccomp filter answering EPERM): unknown, not unsynchronized.

Tests cannot change the kernel's status, so `reader()` honours `CORONA_TEST_CLOCK`
(`synced` / `unsynced` / `unavailable`) in place of the kernel's answer; it is meant for tests
only and is logged when used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import structlog

from daemon.errors import ConfigError

log = structlog.get_logger(__name__)

TIME_ERROR: Final = 5
"""adjtimex's return value when the clock is not synchronized (<sys/timex.h>)."""
STA_UNSYNC: Final = 0x0040
"""The status bit an NTP client clears once it disciplines the clock."""
TEST_OVERRIDE_ENV: Final = "CORONA_TEST_CLOCK"
"""Tests only: replaces the kernel's answer (synced, unsynced, unavailable)."""


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    """glibc's struct timex (<sys/timex.h>): `long` fields, so it fits both 64-bit ABIs the
    daemon runs on (x86_64, aarch64) and the legacy 32-bit one. The trailing padding is the
    kernel's; a few spare ints beyond it cost nothing."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_padding", ctypes.c_int * 16),
    )


@dataclass(frozen=True)
class KernelAnswer:
    """One adjtimex answer, as the kernel gave it."""

    state: int
    """The return value: TIME_OK (0) ... TIME_ERROR (5)."""
    status: int
    max_error_us: int
    est_error_us: int
    time_s: float
    """The kernel's wall-clock time in the answer (its struct's `time` field)."""


@dataclass(frozen=True)
class ClockStatus:
    synced: bool | None
    """None: the kernel could not be asked (unknown)."""
    max_error_us: int | None = None
    """The kernel's bound on the clock's error (grows 500 ppm while nobody disciplines it)."""
    est_error_us: int | None = None


UNKNOWN: Final = ClockStatus(synced=None)


def _adjtimex() -> Callable[[_Timex], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        call = libc.adjtimex
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.POINTER(_Timex),)
    call.restype = ctypes.c_int
    return call


_CALL: Final = _adjtimex()


def query() -> KernelAnswer | None:
    """Ask the kernel (modes = 0: read only); None when the call is unavailable or refused."""
    if _CALL is None:
        return None
    timex = _Timex()
    state = _CALL(timex)
    if state < 0:  # EPERM from a seccomp filter (systemd's ProtectClock=), ENOSYS
        return None
    return KernelAnswer(
        state=state,
        status=timex.status,
        max_error_us=timex.maxerror,
        est_error_us=timex.esterror,
        time_s=timex.time.tv_sec + timex.time.tv_usec / 1e6,
    )


def interpret(answer: KernelAnswer | None) -> ClockStatus:
    """Synchronized unless the kernel says TIME_ERROR or STA_UNSYNC (either is enough)."""
    if answer is None:
        return UNKNOWN
    unsynced = answer.state == TIME_ERROR or bool(answer.status & STA_UNSYNC)
    return ClockStatus(
        synced=not unsynced,
        max_error_us=answer.max_error_us,
        est_error_us=answer.est_error_us,
    )


def read() -> ClockStatus:
    """The clock's state now, from the kernel."""
    return interpret(query())


_OVERRIDES: Final = {
    "synced": ClockStatus(synced=True, max_error_us=0, est_error_us=0),
    "unsynced": ClockStatus(synced=False, max_error_us=16_000_000, est_error_us=16_000_000),
    "unavailable": UNKNOWN,
}


def reader(environ: Mapping[str, str] = os.environ) -> Callable[[], ClockStatus]:
    """`read`, or the fixed answer `CORONA_TEST_CLOCK` names (tests only); ConfigError for a
    value it does not know, so a misspelt override cannot pass as the real clock."""
    override = environ.get(TEST_OVERRIDE_ENV)
    if override is None:
        return read
    if override not in _OVERRIDES:
        raise ConfigError(f"{TEST_OVERRIDE_ENV}={override!r}: expected one of {sorted(_OVERRIDES)}")
    fixed = _OVERRIDES[override]
    return lambda: fixed


class Tracker:
    """A reader that logs each change of state once: a Pi boots unsynchronized, then NTP steps
    the clock, and the log says from when on the verdict times can be trusted."""

    def __init__(self, read_status: Callable[[], ClockStatus]) -> None:
        self._read = read_status
        self._last: ClockStatus | None = None

    def __call__(self) -> ClockStatus:
        status = self._read()
        if self._last is None or status.synced != self._last.synced:
            if status.synced is False:
                log.warning(
                    "clock_unsynchronized",
                    max_error_us=status.max_error_us,
                    hint="verdict times may be wrong until NTP synchronizes the clock",
                )
            else:
                log.info("clock_synchronized" if status.synced else "clock_unknown")
        self._last = status
        return status
