"""daemon.deliver.takeover and the Publisher's use of it: a twin node (same client id) is told from
an ordinary lost connection, the publisher backs off, says so once, and recovers by itself.

The watch's rules are pure functions of the times passed in (no clock to fake). The publisher
tests use a real mosquitto and real paho clients with a scaled-down `Policy` (seconds instead of
minutes), so the whole episode, from the first takeover to the conflict's end, fits in a test.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import pytest
import structlog

from daemon import log as daemon_log
from daemon.deliver.publish import Publisher
from daemon.deliver.takeover import Drop, Policy, TakeoverWatch
from tests.daemon_runs import wait_until
from tests.fixtures.broker import Broker
from tests.test_publish import NODE, events, plain

POLICY = Policy(short_s=5.0, streak=3, backoff_s=10.0, max_backoff_s=300.0, stable_s=360.0)


def taken_over_after(watch: TakeoverWatch, at: float, lasted_s: float) -> Drop:
    watch.connected(at)
    watch.settle(at + lasted_s)
    return watch.lost(at + lasted_s)


class TestWatch:
    def test_three_quick_drops_in_a_row_are_a_conflict_once(self) -> None:
        """Drops 1 s after each CONNACK: two are takeovers, the third starts the conflict (the
        one to log), later ones are in it; the backoff doubles from 10 s up to 300 s."""
        watch = TakeoverWatch(POLICY)
        drops = [taken_over_after(watch, 10.0 * i, 1.0) for i in range(9)]
        assert drops[:3] == [Drop.TAKEOVER, Drop.TAKEOVER, Drop.CONFLICT]
        assert set(drops[3:]) == {Drop.IN_CONFLICT}
        assert watch.takeovers == 9
        assert watch.backoff_s() == 300.0  # 10 * 2**6 capped
        assert [TakeoverWatch(POLICY).backoff_s()] == [None]

    def test_backoff_doubles_per_drop(self) -> None:
        watch = TakeoverWatch(POLICY)
        waits = []
        for i in range(7):
            taken_over_after(watch, 10.0 * i, 1.0)
            waits.append(watch.backoff_s())
        assert waits == [None, None, 10.0, 20.0, 40.0, 80.0, 160.0]

    def test_a_connection_that_lived_a_while_breaks_the_streak(self) -> None:
        """Short, short, then one that lasted a minute (a broker restart, say): no conflict; the
        streak starts again."""
        watch = TakeoverWatch(POLICY)
        assert taken_over_after(watch, 0.0, 1.0) is Drop.TAKEOVER
        assert taken_over_after(watch, 10.0, 1.0) is Drop.TAKEOVER
        assert taken_over_after(watch, 20.0, 60.0) is Drop.ORDINARY
        assert taken_over_after(watch, 90.0, 1.0) is Drop.TAKEOVER
        assert not watch.conflict

    def test_in_a_conflict_only_a_stable_connection_ends_it(self) -> None:
        """A twin sitting out its own backoff leaves us the session for up to max_backoff_s:
        that proves nothing; a connection of stable_s ends the conflict (settle says so once)."""
        watch = TakeoverWatch(POLICY)
        for i in range(3):
            taken_over_after(watch, 10.0 * i, 1.0)
        assert taken_over_after(watch, 100.0, 299.0) is Drop.IN_CONFLICT
        assert watch.conflict
        watch.connected(1000.0)
        assert not watch.settle(1000.0 + POLICY.stable_s - 1)
        assert watch.settle(1000.0 + POLICY.stable_s)
        assert not watch.settle(1000.0 + POLICY.stable_s + 1)
        assert not watch.conflict
        assert watch.backoff_s() is None

    def test_the_brokers_own_word_counts_at_once(self) -> None:
        """MQTT 5's "Session taken over" is a takeover however long the connection lasted."""
        watch = TakeoverWatch(POLICY)
        watch.connected(0.0)
        assert watch.lost(3600.0, taken_over=True) is Drop.TAKEOVER

    def test_huge_streaks_stay_finite(self) -> None:
        watch = TakeoverWatch(POLICY)
        watch.streak, watch.conflict = 10_000, True
        assert watch.backoff_s() == 300.0


FAST = Policy(short_s=3.0, streak=3, backoff_s=2.0, max_backoff_s=2.0, stable_s=4.0)
"""Seconds instead of minutes: a conflict after three quick drops, 2 s between reconnects, over
after 4 s of one connection."""
NEVER = Policy(streak=1_000_000)
"""The twin behaves as before this change: it never backs off (paho's 1 s every time)."""


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """What this process logs through structlog, as JSON lines (as in tests/test_publish.py)."""
    buffer = io.StringIO()
    daemon_log.configure(level="debug", fmt="json", node_id=NODE, stream=buffer)
    yield buffer
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def twins(broker: Broker, log_text: io.StringIO) -> Iterator[Callable[[Policy], Publisher]]:
    """twins(policy) -> a started Publisher on NODE; all are closed at teardown."""
    made: list[Publisher] = []

    def make(policy: Policy) -> Publisher:
        pub = Publisher(plain(broker), NODE, takeover=policy)
        made.append(pub)
        pub.start()
        return pub

    yield make
    for pub in made:
        pub.close(timeout_s=0.5)


class TestPublisherTwins:
    def test_conflict_is_logged_once_backed_off_and_over_when_the_twin_leaves(
        self, broker: Broker, twins: Callable[[Policy], Publisher], log_text: io.StringIO
    ) -> None:
        """A publisher and a twin that never backs off, on one real broker: the publisher
        declares the conflict (one error naming the node_id), stays in it while the twin is
        there, and once the twin is closed gets a connection that lasts, ends the conflict by
        itself (one info line) and publishes again."""
        node = twins(FAST)
        assert node.wait_connected(10.0)
        twin = twins(NEVER)
        wait_until(lambda: node.conflict, "the conflict declared", timeout_s=20.0)
        assert node.takeovers >= 3
        assert not twin.conflict
        conflict = events(log_text, "mqtt_node_id_conflict")
        assert len(conflict) == 1
        assert conflict[0]["node_id"] == NODE
        assert conflict[0]["level"] == "error"
        assert conflict[0]["retry_s"] == FAST.backoff_s

        twin.close(timeout_s=0.5)
        wait_until(lambda: not node.conflict, "the conflict over", timeout_s=20.0)
        assert node.connected
        assert len(events(log_text, "mqtt_node_id_conflict_over")) == 1
        assert len(events(log_text, "mqtt_node_id_conflict")) == 1
        assert node.publish("verdict", b"after", qos=1) is not None

    def test_a_lone_node_restarting_broker_is_no_conflict(
        self, broker: Broker, twins: Callable[[Policy], Publisher], log_text: io.StringIO
    ) -> None:
        """Restarting the broker right after the connect, twice (under the streak of three),
        is two quick drops and no conflict: the node reconnects at paho's 1 s as before."""
        node = twins(FAST)
        for _ in range(2):
            assert node.wait_connected(10.0)
            broker.stop()
            wait_until(lambda: not node.connected, "the drop noticed", timeout_s=10.0)
            broker.start()
        assert node.wait_connected(10.0)
        assert node.takeovers == 2
        assert not node.conflict
        assert events(log_text, "mqtt_node_id_conflict") == []
