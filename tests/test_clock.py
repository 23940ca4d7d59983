"""daemon.clock: the kernel's NTP state through a real adjtimex call, and the flag it puts on every
live verdict and health report (`clock_synced`).

The kernel's answer is real in every test here. What a test cannot do is change it (that takes
CAP_SYS_TIME and an NTP client; this machine's kernel says what it says, and in a container it is
usually unsynchronized): the daemon tests therefore also run with `CORONA_TEST_CLOCK` set to the
state opposite to the kernel's, the test-only override daemon.clock.reader() honours, and show
that the daemon's verdicts and health follow it.
"""

from __future__ import annotations

import time

import pytest
import structlog.testing

from daemon import clock, schemas
from daemon.errors import ConfigError
from tests.daemon_runs import noisy_clip, wait_until
from tests.fixtures.broker import Received
from tests.fixtures.live_daemon import EVENT_TIMEOUT_S, TOPICS, Rig, verdicts

KERNEL_MAX_ERROR_US = 16_000_000
"""The kernel caps maxerror at NTP_PHASE_LIMIT (16 s) and sets STA_UNSYNC when it gets there."""


class TestKernelCall:
    def test_real_call_is_read_at_the_right_offsets(self) -> None:
        """The real adjtimex answers here, and the struct is read where glibc lays it out: the
        answer's own `time` field (after modes, offset, ..., status, tolerance) is the wall
        clock, so the fields before it (status, maxerror) are read from their places too."""
        before = time.time()
        answer = clock.query()
        after = time.time()
        assert answer is not None, "adjtimex is unavailable on this machine"
        assert before - 1.0 <= answer.time_s <= after + 1.0
        assert 0 <= answer.state <= clock.TIME_ERROR
        assert 0 <= answer.max_error_us <= KERNEL_MAX_ERROR_US
        assert 0 <= answer.est_error_us <= KERNEL_MAX_ERROR_US

    def test_real_answer_is_interpreted_by_the_kernels_rules(self) -> None:
        """The status read now follows the kernel's own invariants: unsynchronized exactly when
        it answered TIME_ERROR or set STA_UNSYNC, and always so once maxerror hit its cap."""
        answer = clock.query()
        assert answer is not None
        status = clock.interpret(answer)
        unsynced = answer.state == clock.TIME_ERROR or bool(answer.status & clock.STA_UNSYNC)
        assert status.synced is (not unsynced)
        assert status.max_error_us == answer.max_error_us
        if answer.max_error_us >= KERNEL_MAX_ERROR_US:
            assert status.synced is False
        assert clock.read().synced is status.synced  # the state did not change in between


class TestInterpret:
    @pytest.mark.parametrize(
        ("state", "status", "synced"),
        [
            (0, 0x0001, True),  # TIME_OK, STA_PLL: an NTP client disciplines the clock
            (1, 0x2001, True),  # TIME_INS (leap second pending) is still synchronized
            (clock.TIME_ERROR, 0x0001, False),  # the return value alone is enough
            (0, clock.STA_UNSYNC, False),  # so is the status bit alone
            (clock.TIME_ERROR, clock.STA_UNSYNC, False),  # a board that booted without NTP
        ],
    )
    def test_state_and_status_bit(self, state: int, status: int, synced: bool) -> None:
        """Either TIME_ERROR or STA_UNSYNC means unsynchronized; anything else synchronized."""
        answer = clock.KernelAnswer(state, status, 1234, 56, time.time())
        got = clock.interpret(answer)
        assert got.synced is synced
        assert (got.max_error_us, got.est_error_us) == (1234, 56)

    def test_no_answer_is_unknown_not_unsynchronized(self) -> None:
        """A call that could not be made (EPERM under a seccomp filter) says nothing: None."""
        assert clock.interpret(None) == clock.ClockStatus(synced=None)


class TestOverride:
    def test_without_the_variable_the_kernel_is_asked(self) -> None:
        """The daemon's reader is daemon.clock.read itself unless the test variable is set."""
        assert clock.reader({}) is clock.read

    @pytest.mark.parametrize(
        ("value", "synced"), [("synced", True), ("unsynced", False), ("unavailable", None)]
    )
    def test_override_values(self, value: str, synced: bool | None) -> None:
        """Each override gives its fixed state."""
        assert clock.reader({clock.TEST_OVERRIDE_ENV: value})().synced is synced

    def test_misspelt_override_is_refused(self) -> None:
        """A value the reader does not know is a ConfigError naming the variable, never the
        real clock in disguise."""
        with pytest.raises(ConfigError, match=clock.TEST_OVERRIDE_ENV):
            clock.reader({clock.TEST_OVERRIDE_ENV: "yes"})


class TestTracker:
    def test_each_change_is_logged_once(self) -> None:
        """Unsynchronized at boot, then synchronized by NTP: one warning, then one info line,
        however often it is read. The states come from an injected reader: the kernel's own
        cannot be changed by a test."""
        states = iter([False, False, False, True, True])
        tracker = clock.Tracker(lambda: clock.ClockStatus(synced=next(states)))
        with structlog.testing.capture_logs() as logged:
            seen = [tracker().synced for _ in range(5)]
        assert seen == [False, False, False, True, True]
        assert [(e["event"], e["log_level"]) for e in logged] == [
            ("clock_unsynchronized", "warning"),
            ("clock_synchronized", "info"),
        ]


def _opposite_of_the_kernel() -> tuple[str, bool]:
    real = clock.read().synced
    return ("synced", True) if real is not True else ("unsynced", False)


class TestDaemonCarriesTheFlag:
    @pytest.mark.parametrize("source", ["kernel", "override"])
    def test_verdicts_and_health_say_whether_the_clock_was_synced(
        self, rig: Rig, source: str
    ) -> None:
        """A real daemon process: every live verdict and its health carry `clock_synced`, valid
        under both schemas. With the kernel's answer (whatever this machine's is), they equal
        what this test process reads; with the override set to the opposite state (the only way
        to make a kernel say otherwise in a test), they follow the override, so the flag is the
        reader's and not a constant."""
        if source == "kernel":
            env, expected = rig.mic.env, clock.read().synced
        else:
            value, expected = _opposite_of_the_kernel()
            env = {**rig.mic.env, clock.TEST_OVERRIDE_ENV: value}
        rig.mic.write(noisy_clip(2.0, seed=31))
        sub = rig.watch()
        daemon = rig.start(env=env)
        wait_until(lambda: len(verdicts(sub.messages)) >= 3, "3 verdicts", process=daemon,
                   timeout_s=EVENT_TIMEOUT_S)  # fmt: skip
        for v in verdicts(sub.messages):
            schemas.validate("verdict", v)
            assert v["clock_synced"] is expected, v

        def health_after_a_window(m: Received) -> bool:
            return m.topic == f"{TOPICS}/health" and m.json()["windows"] >= 1

        health = sub.wait_for(health_after_a_window, EVENT_TIMEOUT_S).json()
        schemas.validate("health", health)
        assert health["clock_synced"] is expected
        if expected is False:
            assert health["clock_max_error_us"] > 0
        first = daemon.events_named("clock_synchronized" if expected else "clock_unsynchronized")
        assert len(first) == 1, daemon.log()
