"""daemon.deliver.messenger: the outbox -> drainer -> publisher road on a real outbox file and a
real mosquitto.

What only the messenger decides: which sink a config gets (MQTT off: numbered, nothing kept;
on: stored until the broker acknowledges), that health is a retained snapshot that is never
queued, that `drain` ends when the outbox is empty or its time is up, and that `close` keeps
what was not sent and says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from structlog.testing import capture_logs

from daemon import schemas
from daemon.analyse import verdict
from daemon.analyse.verdict import Verdict
from daemon.config import MqttSettings, OutboxSettings, Settings
from daemon.constants import SAMPLE_RATE
from daemon.deliver.messenger import Messenger
from daemon.deliver.outbox import Outbox
from daemon.deliver.sinks import NumberOnlySink, OutboxSink
from daemon.listen.windows import windows_of
from tests.fixtures.broker import Broker, Subscriber

NODE = "msg-node"
TOPICS = f"corona/v1/{NODE}"


def a_verdict() -> Verdict:
    samples = 0.05 * np.random.default_rng(5).standard_normal(SAMPLE_RATE).astype(np.float32)
    return verdict.build(
        node=NODE,
        window=windows_of(samples, length_s=1.0)[0],
        stream_start=datetime(2026, 12, 1, tzinfo=UTC),
        score=0.2,
        threshold=0.5,
        model=verdict.ModelRef("m", "d" * 64),
        overflows=0,
        source="live",
    )


def settings(tmp_path: Path, broker: Broker | None) -> Settings:
    mqtt = (
        MqttSettings(host=broker.host, port=broker.port, reconnect_max_s=1.0)
        if broker is not None
        else MqttSettings()
    )
    outbox = OutboxSettings(path=tmp_path / "outbox.sqlite", min_free_mb=0)
    return replace(Settings(node_id=NODE), mqtt=mqtt, outbox=outbox)


def stored(path: Path) -> int:
    with Outbox(path) as box:
        return box.depth()


class TestWithoutMqtt:
    def test_verdicts_are_numbered_across_runs_and_nothing_is_kept(self, tmp_path: Path) -> None:
        """MQTT off: seq s, s+1 in the first run and s+2 in the next (never repeated for the node),
        the outbox keeps no row, drain has nothing to wait for, health goes nowhere."""
        cfg = settings(tmp_path, None)
        first = Messenger(cfg)
        assert isinstance(first.sink, NumberOnlySink)
        assert first.publisher is None
        seqs = [first.sink.store(a_verdict()) for _ in range(2)]
        first.publish_health({"schema": 1})  # no publisher: must not raise or queue
        assert first.drain(timeout_s=0.0)
        assert not first.connected
        first.close()
        again = Messenger(cfg)
        third = again.sink.store(a_verdict())
        again.close()
        numbers = [v.seq for v in seqs if isinstance(v, Verdict)]
        assert numbers == [numbers[0], numbers[0] + 1]
        assert isinstance(third, Verdict)
        assert third.seq == numbers[0] + 2
        assert stored(cfg.outbox.path) == 0


class TestWithMqtt:
    def test_stored_verdict_is_delivered_and_then_deleted(
        self, tmp_path: Path, broker: Broker, subscribe: Callable[..., Subscriber]
    ) -> None:
        """MQTT on: the verdict is in the outbox until the broker's PUBACK, then gone; the
        subscriber gets the stored verdict, marked replayed (it was stored before the
        connection, so it is backlog)."""
        sub = subscribe(broker, f"{TOPICS}/verdict")
        messenger = Messenger(settings(tmp_path, broker))
        try:
            assert isinstance(messenger.sink, OutboxSink)
            sent = messenger.sink.store(a_verdict())
            assert isinstance(sent, Verdict)
            assert messenger.outbox.depth() == 1  # stored before any network
            messenger.start()
            assert messenger.publisher is not None
            assert messenger.publisher.wait_connected(10)
            assert messenger.drain(timeout_s=10)
            assert messenger.outbox.depth() == 0
            got = sub.on(f"{TOPICS}/verdict")
        finally:
            messenger.close()
        assert got.json() == {**json.loads(sent.to_json()), "replayed": True}
        assert got.json()["seq"] == sent.seq
        schemas.validate("verdict", got.json())

    def test_health_is_retained_and_never_queued(
        self, tmp_path: Path, broker_factory: Callable[..., Broker],
        subscribe: Callable[..., Subscriber],
    ) -> None:  # fmt: skip
        """Health while disconnected is dropped (a snapshot, not a record); once connected it
        is published retained, so a subscriber that comes later still gets the last one."""
        broker = broker_factory(start=False)
        messenger = Messenger(settings(tmp_path, broker))
        try:
            messenger.start()
            messenger.publish_health({"schema": 1, "note": "while down"})
            assert messenger.outbox.depth() == 0
            broker.start()
            assert messenger.publisher is not None
            assert messenger.publisher.wait_connected(15)
            early = subscribe(broker, f"{TOPICS}/health")
            messenger.publish_health({"schema": 1, "note": "connected"})
            early.on(f"{TOPICS}/health")  # the broker has it, so it is retained by now
            later = subscribe(broker, f"{TOPICS}/health")
            retained = later.on(f"{TOPICS}/health")
        finally:
            messenger.close()
        assert retained.retain
        assert retained.json()["note"] == "connected"
        assert [m.json()["note"] for m in early.messages] == ["connected"]

    def test_close_without_broker_keeps_the_backlog_and_says_so(
        self, tmp_path: Path, broker_factory: Callable[..., Broker]
    ) -> None:
        """Broker unreachable: drain gives up at its deadline with the verdict still stored;
        close logs `outbox_kept` with the depth, and the row is there for the next run."""
        broker = broker_factory(start=False)
        cfg = settings(tmp_path, broker)
        messenger = Messenger(cfg)
        messenger.start()
        messenger.sink.store(a_verdict())
        assert not messenger.drain(timeout_s=0.3)
        with capture_logs() as logs:
            messenger.close()
        kept = [e for e in logs if e["event"] == "outbox_kept"]
        assert kept
        assert kept[0]["depth"] == 1
        assert stored(cfg.outbox.path) == 1
