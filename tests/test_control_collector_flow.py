"""The collector holds a bounded number of messages however much the broker has queued for it.

Its Receive Maximum (the batch size) should be the bound, but Debian 12's mosquitto 2.0.11 keeps
to it only until the first PUBACK: an acknowledgement that arrives while messages are queued for
the session sends every one of them (bench/fleet.py saw a collector hold 2,600 in overload; after
a day's outage of a 1,000-node fleet that would be millions, in the collector's memory). So the
collector's own hand-over queue is bounded, and a full one makes paho's network thread wait
(TCP then holds the broker back) instead of growing."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from control.collector import Collector
from control.config import CollectorSettings, ControlSettings
from control.store import Store
from control.store.records import Record, WriteResult
from daemon.config import MqttSettings
from tests.daemon_runs import wait_until
from tests.fixtures.broker import Broker
from tests.watch_messages import NOW, PREFIX, publish_raw, topic, verdict

BATCH = 20
MESSAGES = 600


class SlowStore(Store):
    """A store that takes its time over each batch, like a busy database."""

    delay_s = 0.02

    def write(self, records: Sequence[Record]) -> WriteResult:
        time.sleep(self.delay_s)
        return super().write(records)


class StuckStore(SlowStore):
    """So slow that the publisher is always far ahead of it."""

    delay_s = 0.5


def settings_for(broker: Broker) -> ControlSettings:
    return ControlSettings(
        mqtt=MqttSettings(host=broker.host, port=broker.port, prefix=PREFIX),
        collector=CollectorSettings(client_id="collector-flow", batch_max=BATCH),
    )


def test_a_backlog_is_held_by_the_broker_not_in_the_collectors_memory(
    broker: Broker, store_url: str
) -> None:
    store = SlowStore.open(store_url)
    collector = Collector(store, settings_for(broker))
    held: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            held.append(collector.queued)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    collector.start()
    try:
        wait_until(lambda: collector.stats.snapshot()["mqtt_connected"], "the collector's CONNACK")
        sampler.start()
        publish_raw(
            broker,
            [(topic("t1", "verdict"), verdict("t1", s, NOW)) for s in range(1, MESSAGES + 1)],
            retain=False,
        )
        wait_until(
            lambda: collector.stats.snapshot()["stored"].get("verdict", 0) == MESSAGES,
            "every verdict stored",
            timeout_s=60,
        )
    finally:
        done.set()
        if sampler.is_alive():
            sampler.join()
        collector.stop()
    assert max(held) <= 2 * BATCH
    assert store.gaps("t1") == []
    assert len(store.verdicts("t1", None, None, 10_000)) == MESSAGES
    store.close()


def test_a_collector_with_a_full_queue_stops_promptly(broker: Broker, store_url: str) -> None:
    store = StuckStore.open(store_url)
    collector = Collector(store, settings_for(broker))
    collector.start()
    wait_until(lambda: collector.stats.snapshot()["mqtt_connected"], "the collector's CONNACK")
    publish_raw(
        broker,
        [(topic("t1", "verdict"), verdict("t1", s, NOW)) for s in range(1, MESSAGES + 1)],
        retain=False,
    )
    wait_until(lambda: collector.queued >= BATCH, "a full queue")
    started = time.monotonic()
    collector.stop()
    assert time.monotonic() - started < 5.0
    stored: Any = collector.stats.snapshot()["stored"].get("verdict", 0)
    assert stored < MESSAGES  # stopped in the middle: the rest stays with the broker
    store.close()


def test_after_a_reconnect_only_what_came_on_the_new_connection_is_acknowledged(
    broker_factory: Callable[..., Broker], store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages still held from the last connection are stored but not acknowledged: the broker
    sends them again on the new one, where the same packet id may be given to another message
    once the first acknowledgement freed it (which would acknowledge that one unstored). A full
    queue makes this likely: paho's thread then waits, sends no keepalive while the database is
    away, and the broker drops the connection."""
    broker = broker_factory(persistent=True)
    gate = threading.Event()

    class GatedStore(Store):
        def write(self, records: Sequence[Record]) -> WriteResult:
            gate.wait(30)
            return super().write(records)

    store = GatedStore.open(store_url)
    collector = Collector(store, settings_for(broker))
    client = collector._client
    connection = [0]
    delivered: Counter[tuple[int, int]] = Counter()
    acked: Counter[tuple[int, int]] = Counter()
    on_connect, on_message, ack = client.on_connect, client.on_message, client.ack
    assert on_connect is not None
    assert on_message is not None

    def spy_connect(*args: Any) -> None:
        connection[0] += 1
        on_connect(*args)

    def spy_message(c: Any, userdata: Any, message: Any) -> None:
        delivered[(connection[0], message.mid)] += 1
        on_message(c, userdata, message)

    def spy_ack(mid: int, qos: int) -> Any:
        acked[(connection[0], mid)] += 1
        return ack(mid, qos)

    client.on_connect = spy_connect
    client.on_message = spy_message
    monkeypatch.setattr(client, "ack", spy_ack)
    collector.start()
    try:
        wait_until(lambda: connection[0] == 1, "the first CONNACK")
        publish_raw(
            broker,
            [(topic("t1", "verdict"), verdict("t1", s, NOW)) for s in range(1, 31)],
            retain=False,
        )
        # The writer waits at the gate with the first batch; the rest of a Receive Maximum
        # (BATCH) waits in the queue, unacknowledged.
        wait_until(lambda: sum(delivered.values()) >= BATCH, "a window's worth delivered")
        broker.stop()
        broker.start()
        wait_until(lambda: connection[0] == 2, "the collector back", timeout_s=30)
        wait_until(
            lambda: sum(n for (c, _), n in delivered.items() if c == 2) >= BATCH,
            "the unacknowledged ones sent again",
        )
        gate.set()
        wait_until(
            lambda: sum(n for (c, _), n in acked.items() if c == 2) >= 30, "30 acknowledgements"
        )
        time.sleep(0.5)  # any further (wrong) acknowledgement would come now
    finally:
        gate.set()
        collector.stop()
    assert len(store.verdicts("t1", None, None, 100)) == 30
    assert store.gaps("t1") == []
    over = {key: n for key, n in acked.items() if n > delivered[key]}
    assert over == {}, "acknowledged more often than delivered on that connection"
    store.close()
