"""The collector on a real mosquitto into a real database (SQLite and PostgreSQL): every
message stored once, gaps, quarantine, the persistent session, and shared subscriptions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from control.collector import Collector
from control.config import CollectorSettings, ControlSettings
from control.store import Store
from daemon.config import MqttSettings, TlsSettings
from tests.daemon_runs import wait_until
from tests.fixtures.broker import Broker, TlsFiles
from tests.watch_messages import NOW, PREFIX, alarm, health, nested, publish_raw, topic, verdict


def settings_for(broker: Broker, client_id: str, share_group: str | None = None) -> ControlSettings:
    return ControlSettings(
        mqtt=MqttSettings(host=broker.host, port=broker.port, prefix=PREFIX),
        collector=CollectorSettings(client_id=client_id, share_group=share_group, batch_max=50),
    )


@contextmanager
def running(store: Store, settings: ControlSettings) -> Iterator[Collector]:
    collector = Collector(store, settings)
    collector.start()
    try:
        # The SUBACK, not the CONNACK: a message published in between reaches no subscription.
        wait_until(lambda: collector.stats.subscribed, "the collector's SUBACK")
        yield collector
    finally:
        collector.stop()


def stored_seqs(store: Store, node: str) -> list[int]:
    return [json.loads(p)["seq"] for p in store.verdicts(node, None, None, 10_000)]


def verdicts(node: str, seqs: range | list[int]) -> list[tuple[str, bytes]]:
    return [(topic(node, "verdict"), verdict(node, s, NOW)) for s in seqs]


def test_three_nodes_every_message_stored_once_with_the_gap_reported(
    broker: Broker, store: Store
) -> None:
    with running(store, settings_for(broker, "collector-a")) as collector:
        messages = verdicts("t1", range(1, 21)) + verdicts("t2", range(1, 21))
        messages += verdicts("t3", [s for s in range(1, 21) if s != 13])  # one lost on the way
        messages += [
            (topic("t1", "alarm"), alarm("alarm")),
            (topic("t2", "health"), health(depth=4)),
            (topic("t1", "clip/request"), b'{"id": "x"}'),  # a request: not ours to store
        ]
        publish_raw(broker, messages, retain=False)
        publish_raw(broker, verdicts("t1", range(15, 21)), retain=False)  # sent again
        wait_until(lambda: collector.stats.snapshot()["duplicates"] >= 6, "the repeats")
        wait_until(lambda: collector.stats.snapshot()["stored"].get("health") == 1, "health")
        assert stored_seqs(store, "t1") == list(range(1, 21))
        assert stored_seqs(store, "t2") == list(range(1, 21))
        assert stored_seqs(store, "t3") == [s for s in range(1, 21) if s != 13]
        gaps = {n.node: [(g.from_seq, g.to_seq) for g in n.gaps] for n in store.nodes()}
        assert gaps == {"t1": [], "t2": [], "t3": [(13, 13)]}
        (t1,) = [n for n in store.nodes() if n.node == "t1"]
        assert t1.alarm is not None
        assert t1.alarm.state == "alarm"
        snap = collector.stats.snapshot()
        assert snap["ignored"] == {"clip request": 1}
        assert snap["quarantined"] == {}


HOSTILE: list[tuple[str, bytes, str]] = [
    (topic("t1", "verdict"), b"{not json", "not JSON"),
    (topic("t1", "verdict"), nested(), "nested too deeply"),
    (topic("t1", "verdict"), b"x" * 70_000, "too large"),
    (topic("t1", "verdict"), b'{"schema": 1}', "invalid"),
    (topic("t1", "verdict"), verdict("someone-else", 1, NOW), "node differs from the topic"),
    (topic("t1", "verdict"), verdict("t1", 2**63, NOW), "seq out of range"),
    (topic("t1", "verdict"), verdict("t1", 1, NOW).replace(b"-40.0", b"1e999"), "invalid"),
    (topic("t1", "status"), b"online\x1b[2J", "invalid"),
    (
        topic("tower\u200b1", "verdict"),
        verdict("tower\u200b1", 1, NOW),
        "node id has an invisible character",
    ),
    # (mosquitto itself refuses control characters in topics: disconnects the publisher; see
    # test_control_ingest for the collector's own check against brokers that let them through.)
    (topic("tower\u202e1", "status"), b"online", "node id has an invisible character"),
    # A lone surrogate as raw bytes (not UTF-8; Python's json reads it anyway) in a valid health.
    (topic("t1", "health"), health()[:-1] + b', "x": "\xed\xa0\x80"}', "not UTF-8"),
]


def test_hostile_messages_are_quarantined_and_the_collector_goes_on(
    broker: Broker, store: Store
) -> None:
    with running(store, settings_for(broker, "collector-h")) as collector:
        publish_raw(broker, [(t, p) for t, p, _ in HOSTILE], retain=False)
        publish_raw(broker, verdicts("t1", [7]), retain=False)  # a good one after them
        wait_until(lambda: stored_seqs(store, "t1") == [7], "the good verdict after the bad")
        wait_until(
            lambda: sum(collector.stats.snapshot()["quarantined"].values()) == len(HOSTILE),
            "every hostile message quarantined",
        )
    reasons = sorted(r for _, _, r, _, _ in store.quarantined())
    assert reasons == sorted(r for _, _, r in HOSTILE)
    assert {n.node for n in store.nodes()} == {"t1"}  # no node made of a hostile name


def test_messages_sent_while_the_collector_is_down_arrive_when_it_returns(
    broker_factory: Callable[..., Broker], store: Store
) -> None:
    broker = broker_factory(persistent=True)
    settings = settings_for(broker, "collector-p")
    with running(store, settings):
        publish_raw(broker, verdicts("t1", range(1, 6)), retain=False)
        wait_until(lambda: stored_seqs(store, "t1") == list(range(1, 6)), "the first five")
    publish_raw(broker, verdicts("t1", range(6, 31)), retain=False)  # nobody connected
    with running(store, settings):
        wait_until(lambda: stored_seqs(store, "t1") == list(range(1, 31)), "the queued 25")
    assert store.gaps("t1") == []


def test_a_shared_subscription_splits_the_fleet_without_duplicates(
    broker: Broker, store_url: str
) -> None:
    stores = [Store.open(store_url), Store.open(store_url)]
    try:
        with (
            running(stores[0], settings_for(broker, "collector-1", "fleet")) as one,
            running(stores[1], settings_for(broker, "collector-2", "fleet")) as two,
        ):
            nodes = [f"t{i}" for i in range(6)]
            publish_raw(broker, [m for n in nodes for m in verdicts(n, range(1, 31))], retain=False)
            wait_until(
                lambda: all(stored_seqs(stores[0], n) == list(range(1, 31)) for n in nodes),
                "all 180 verdicts",
            )
            shares = [c.stats.snapshot()["stored"].get("verdict", 0) for c in (one, two)]
        assert sum(shares) == 180  # each stored by exactly one collector
        assert min(shares) > 0  # and both took part
        assert all(n.gaps == [] for n in stores[0].nodes())
    finally:
        for s in stores:
            s.close()


def test_the_collector_uses_the_nodes_tls_password_and_acl_rules(
    broker_factory: Callable[..., Broker], tls_files: TlsFiles, store: Store, tmp_path: Path
) -> None:
    """A broker with TLS, passwords and an ACL that lets the room read only: the collector
    connects with the node's settings section, stores, and is refused with a wrong password."""
    acl = f"user tower-1\ntopic readwrite {PREFIX}/tower-1/#\nuser control\ntopic read {PREFIX}/#\n"
    broker = broker_factory(tls=tls_files, users={"tower-1": "t-pw", "control": "c-pw"}, acl=acl)
    secret = tmp_path / "control.pw"
    secret.write_text("c-pw\n")

    def settings(password_file: Path) -> ControlSettings:
        mqtt = MqttSettings(
            host=broker.host,
            port=broker.port,
            prefix=PREFIX,
            username="control",
            password_file=password_file,
            tls=TlsSettings(ca=tls_files.ca),
        )
        return ControlSettings(mqtt=mqtt, collector=CollectorSettings(client_id="room-tls"))

    with running(store, settings(secret)):
        publish_tls(broker, tls_files, "tower-1", "t-pw", verdicts("tower-1", range(1, 4)))
        wait_until(lambda: stored_seqs(store, "tower-1") == [1, 2, 3], "verdicts over TLS")
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("nope\n")
    collector = Collector(store, settings(wrong))
    collector.start()
    try:
        wait_until(
            lambda: "room-tls" in broker.log_text() and "not authorised" in broker.log_text(),
            "the refusal",
        )
        assert not collector.stats.snapshot()["mqtt_connected"]
    finally:
        collector.stop()


def publish_tls(
    broker: Broker, tls: TlsFiles, user: str, password: str, messages: list[tuple[str, bytes]]
) -> None:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=user)
    client.username_pw_set(user, password)
    client.tls_set(ca_certs=str(tls.ca))
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for name, payload in messages:
            info = client.publish(name, payload, qos=1)
            info.wait_for_publish(30)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
