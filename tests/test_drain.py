"""daemon.deliver.drain: live rows at once, backlog oldest first at a bounded rate, rows deleted on
ack.

The publisher here is a fake that records calls and lets the test deliver PUBACKs; the real
broker outage tests run the whole service against mosquitto.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from daemon.deliver.drain import Drainer, mark_replayed
from daemon.deliver.outbox import Message, Outbox
from daemon.errors import PublishError


def verdict(seq: int) -> Message:
    body = {"seq": seq, "label": "normal", "replayed": False}
    return Message("verdict", json.dumps(body).encode(), 1, False)


@dataclass
class Sent:
    topic: str
    payload: dict[str, object]
    qos: int
    retain: bool
    on_ack: Callable[..., None]


@dataclass
class FakePublisher:
    """Records publishes; ack() plays the broker's PUBACK for the oldest unacked ones."""

    base: int = 0
    """The outbox's seq before its first row (a new file starts at the clock): seqs() counts
    from 1 after it, so the tests read as positions."""
    sent: list[Sent] = field(default_factory=list)
    unacked: list[Sent] = field(default_factory=list)
    fail_next: bool = False

    def __call__(
        self,
        topic_suffix: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool,
        on_ack: Callable[..., None],
    ) -> int:
        if self.fail_next:
            self.fail_next = False
            raise PublishError("broker went away")
        item = Sent(topic_suffix, json.loads(payload), qos, retain, on_ack)
        self.sent.append(item)
        self.unacked.append(item)
        return len(self.sent)

    def ack(self, n: int | None = None) -> None:
        batch = self.unacked if n is None else self.unacked[:n]
        for item in list(batch):
            item.on_ack(len(self.sent))  # paho hands the mid; the drainer ignores it
            self.unacked.remove(item)

    def seqs(self) -> list[object]:
        return [int(str(s.payload["seq"])) - self.base for s in self.sent]


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Outbox]:
    outbox = Outbox(tmp_path / "o.sqlite")
    yield outbox
    outbox.close()


class TestLive:
    def test_live_row_goes_at_once_and_ack_deletes_it(self, box: Outbox) -> None:
        """A row added while connected is sent on the next tick, not replayed, deleted on ack."""
        pub, drainer = FakePublisher(base=box.last_seq), Drainer(box, clock=Clock())
        drainer.tick(True, pub)
        box.add_numbered(verdict)
        assert drainer.tick(True, pub) == 1
        assert pub.sent[0].payload["replayed"] is False
        assert (pub.sent[0].topic, pub.sent[0].qos, pub.sent[0].retain) == ("verdict", 1, False)
        assert box.depth() == 1
        pub.ack()
        assert box.depth() == 0
        assert drainer.inflight == 0
        assert drainer.tick(True, pub) == 0

    def test_nothing_is_sent_while_disconnected(self, box: Outbox) -> None:
        """Rows wait in the outbox while the publisher is not connected."""
        pub, drainer = FakePublisher(base=box.last_seq), Drainer(box, clock=Clock())
        box.add_numbered(verdict)
        assert drainer.tick(False, pub) == 0
        assert pub.sent == []
        assert box.depth() == 1

    def test_live_rows_are_not_starved_by_a_full_backlog(self, box: Outbox) -> None:
        """With the backlog's in-flight budget used up, a new live row still goes at once."""
        pub, drainer = FakePublisher(base=box.last_seq), Drainer(box, max_inflight=5, clock=Clock())
        for _ in range(50):
            box.add_numbered(verdict)
        drainer.tick(True, pub)
        assert len(pub.sent) == 5
        live = box.add_numbered(verdict)
        assert drainer.tick(True, pub) == 1
        assert pub.sent[-1].payload == {"seq": live.seq, "label": "normal", "replayed": False}


class TestBacklog:
    def test_backlog_goes_oldest_first_marked_replayed(self, box: Outbox) -> None:
        """Rows stored during an outage go out in seq order with replayed true, then are gone."""
        pub, clock = FakePublisher(base=box.last_seq), Clock()
        drainer = Drainer(box, clock=clock)
        drainer.tick(True, pub)
        drainer.tick(False, pub)  # the link drops
        for _ in range(30):
            box.add_numbered(verdict)
        while box.depth():
            drainer.tick(True, pub)
            pub.ack()
            clock.now_s += 0.5
        assert pub.seqs() == list(range(1, 31))
        assert all(s.payload["replayed"] is True for s in pub.sent)
        assert drainer.sent_replayed == 30

    def test_rows_from_an_earlier_run_are_backlog(self, tmp_path: Path) -> None:
        """Rows left by a previous process are replayed after a restart."""
        path = tmp_path / "o.sqlite"
        with Outbox(path) as first:
            seq = first.add_numbered(verdict).seq
        with Outbox(path) as second:
            pub = FakePublisher()
            Drainer(second, clock=Clock()).tick(True, pub)
            assert pub.sent[0].payload == {"seq": seq, "label": "normal", "replayed": True}

    def test_rate_is_bounded(self, box: Outbox) -> None:
        """Over any stretch, backlog sends stay within burst + rate x elapsed time."""
        pub, clock = FakePublisher(base=box.last_seq), Clock()
        drainer = Drainer(box, rate_per_s=20, burst=20, max_inflight=1000, clock=clock)
        for _ in range(300):
            box.add_numbered(verdict)
        start = clock.now_s
        counts = []
        for _ in range(50):  # 5 s in 0.1 s ticks, acking everything at once
            drainer.tick(True, pub)
            pub.ack()
            counts.append(len(pub.sent))
            clock.now_s += 0.1
        elapsed = clock.now_s - start
        assert len(pub.sent) <= 20 + 20 * elapsed
        assert len(pub.sent) >= 20 * (elapsed - 0.2)  # and it does keep draining
        assert max(b - a for a, b in itertools.pairwise(counts)) <= 3

    def test_inflight_is_bounded(self, box: Outbox) -> None:
        """Without PUBACKs the backlog stops at max_inflight; acks let more go."""
        pub, clock = FakePublisher(base=box.last_seq), Clock()
        drainer = Drainer(box, max_inflight=7, clock=clock)
        for _ in range(40):
            box.add_numbered(verdict)
        for _ in range(20):
            drainer.tick(True, pub)
            clock.now_s += 1.0
        assert len(pub.sent) == 7
        pub.ack(3)
        drainer.tick(True, pub)
        assert len(pub.sent) == 10
        assert pub.seqs() == list(range(1, 11))


class TestSessions:
    def test_unacked_rows_are_sent_again_after_a_reconnect(self, box: Outbox) -> None:
        """A row sent but not acknowledged before the link dropped goes out again, replayed."""
        pub, clock = FakePublisher(base=box.last_seq), Clock()
        drainer = Drainer(box, clock=clock)
        drainer.tick(True, pub)
        box.add_numbered(verdict)
        drainer.tick(True, pub)
        drainer.tick(False, pub)
        pub.unacked.clear()  # the PUBACK never came
        drainer.tick(True, pub)
        assert pub.seqs() == [1, 1]
        assert [s.payload["replayed"] for s in pub.sent] == [False, True]
        pub.ack()
        assert box.depth() == 0

    def test_overdue_ack_restarts_the_session(self, box: Outbox) -> None:
        """A row unacknowledged past ack_timeout_s on a live connection is sent again."""
        pub, clock = FakePublisher(base=box.last_seq), Clock()
        drainer = Drainer(box, ack_timeout_s=10, clock=clock)
        drainer.tick(True, pub)
        box.add_numbered(verdict)
        drainer.tick(True, pub)
        pub.unacked.clear()
        clock.now_s += 5
        drainer.tick(True, pub)
        assert len(pub.sent) == 1
        clock.now_s += 6
        drainer.tick(True, pub)
        assert pub.seqs() == [1, 1]

    def test_publish_error_resends_the_row_later(self, box: Outbox) -> None:
        """A publish that raises keeps the row, which the next session sends as backlog."""
        pub, drainer = FakePublisher(base=box.last_seq), Drainer(box, clock=Clock())
        drainer.tick(True, pub)
        box.add_numbered(verdict)
        pub.fail_next = True
        assert drainer.tick(True, pub) == 0
        assert drainer.inflight == 0
        drainer.tick(True, pub)
        assert pub.seqs() == [1]
        assert pub.sent[0].payload["replayed"] is True

    def test_refused_publish_resends_the_row_at_once(self, box: Outbox) -> None:
        """A publish that hands nothing over (None: the link just dropped) is not counted as in
        flight: the row goes again on the next session instead of waiting for the ack timeout."""
        pub, drainer = FakePublisher(base=box.last_seq), Drainer(box, clock=Clock())
        refused: list[int] = []

        def dropped(topic_suffix: str, payload: bytes, **_kw: object) -> None:
            refused.append(json.loads(payload)["seq"])

        drainer.tick(True, pub)
        box.add_numbered(verdict)
        assert drainer.tick(True, dropped) == 0
        assert refused == [box.last_seq]
        assert drainer.inflight == 0
        drainer.tick(True, pub)
        assert pub.seqs() == [1]
        assert pub.sent[0].payload["replayed"] is True

    def test_threaded_acks_deliver_everything_once(self, box: Outbox) -> None:
        """Acks from another thread while rows are added and ticked: each row once, none left."""
        lock = threading.Lock()
        pending_acks: list[Callable[..., None]] = []
        seqs: list[int] = []
        stop = threading.Event()

        def publish(
            topic_suffix: str,
            payload: bytes,
            *,
            qos: int,
            retain: bool,
            on_ack: Callable[..., None],
        ) -> int:
            with lock:
                seqs.append(json.loads(payload)["seq"])
                pending_acks.append(on_ack)
            return len(seqs)

        def network_thread() -> None:
            while not stop.is_set() or pending_acks:
                with lock:
                    batch, pending_acks[:] = list(pending_acks), []
                for ack in batch:
                    ack(0)

        drainer = Drainer(box)
        base = box.last_seq
        thread = threading.Thread(target=network_thread)
        thread.start()
        for _ in range(200):
            box.add_numbered(verdict)
            drainer.tick(True, publish)
        stop.set()
        thread.join(timeout=30)
        assert sorted(seqs) == list(range(base + 1, base + 201))
        assert box.depth() == 0


class TestMarkReplayed:
    def test_sets_the_flag_on_verdicts(self) -> None:
        """A JSON object with a replayed field gets it set to true, other fields kept."""
        out = json.loads(mark_replayed(b'{"seq": 3, "replayed": false, "score": 0.5}'))
        assert out == {"seq": 3, "replayed": True, "score": 0.5}

    @pytest.mark.parametrize("payload", [b'{"state": "alarm"}', b"online", b"[1, 2]", b"\xff"])
    def test_leaves_other_payloads_alone(self, payload: bytes) -> None:
        """Payloads without the field, or not JSON objects, go out byte for byte."""
        assert mark_replayed(payload) == payload
