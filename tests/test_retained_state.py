"""The retained alarm topic always holds the node's current state, also after an outage.

Real outbox file, real Drainer and Publisher, real mosquitto. The probe that found the fault:
after a reconnect a live `alarm` went out first, then the backlog's older `alarm` and `clear`,
each retained, so the topic (and every new subscriber) said `clear` while the tower was in
alarm. Here the backlog drains slowly (one row per 0.2 s) so a live change lands in the middle of
it, as it did on the probed node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon import schemas
from daemon.analyse.alarm import AlarmChange, AlarmState
from daemon.config import MqttSettings
from daemon.deliver.drain import Drainer
from daemon.deliver.outbox import Outbox
from daemon.deliver.publish import Publisher
from daemon.deliver.sinks import OutboxSink
from tests.daemon_runs import wait_until
from tests.fixtures.broker import Broker, Subscriber

NODE = "retain-node"
ALARM_TOPIC = f"corona/v1/{NODE}/alarm"


def change(state: AlarmState, seq: int) -> AlarmChange:
    return AlarmChange(state, f"2026-12-01T00:00:{seq:02d}.000Z", 3, 5, 0.5, seq)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Outbox]:
    outbox = Outbox(tmp_path / "o.sqlite")
    yield outbox
    outbox.close()


def test_backlog_state_changes_are_history_and_the_retained_state_is_current(
    box: Outbox, broker: Broker, subscribe: Callable[..., Subscriber]
) -> None:
    """Stored during an outage: alarm (seq 5), clear (seq 9). After the reconnect a live alarm
    (seq 12) arrives while the backlog drains. The topic's retained message is then the live
    alarm; the backlog's changes reach a live subscriber marked replayed, the older one without
    retain; every message carries its seq."""
    sink = OutboxSink(box, qos=1)
    for old in (change("alarm", 5), change("clear", 9)):
        sink.store(old)
    live_sub = subscribe(broker, ALARM_TOPIC)
    publisher = Publisher(MqttSettings(host=broker.host, port=broker.port), NODE)
    drainer = Drainer(box, rate_per_s=5.0, burst=1)
    publisher.start()
    try:
        assert publisher.wait_connected(15)
        drainer.tick(True, publisher.publish)  # the session starts: the backlog is due
        sink.store(change("alarm", 12))  # a live change in the middle of the backlog

        def drained() -> bool:
            drainer.tick(publisher.connected, publisher.publish)
            return box.depth() == 0

        wait_until(drained, "every stored alarm change acknowledged")
        # Acknowledged by the broker is not yet delivered: wait for all three at the subscriber.
        wait_until(lambda: len(live_sub.messages) >= 3, "three alarm messages delivered")
    finally:
        publisher.close()
    # (An existing subscriber gets retain 0 on forwarded messages under MQTT 3.1.1, so what the
    # broker kept as retained is read by a new subscriber below.)
    received = [
        (m.json()["seq"], m.json()["state"], m.json()["replayed"]) for m in live_sub.messages
    ]
    assert set(received) == {(9, "clear", True), (5, "alarm", True), (12, "alarm", False)}
    for m in live_sub.messages:
        schemas.validate("alarm", m.json())

    later = subscribe(broker, ALARM_TOPIC)
    current = later.on(ALARM_TOPIC)
    assert current.retain
    assert (current.json()["seq"], current.json()["state"]) == (12, "alarm")
