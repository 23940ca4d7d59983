"""Hands outbox rows to MQTT: live rows at once, the backlog oldest first at a bounded rate.

The service thread calls ``tick(connected, publish)`` often (every loop turn); paho's network
thread deletes a row through the ``on_ack`` callback given with each publish. No lock of ours is
held while ``publish`` runs: paho calls on_publish with its own message lock held, and publish
takes that lock too, so holding ours across it could deadlock the two threads.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Final, Protocol

import structlog

from daemon.deliver.outbox import Outbox, Row
from daemon.errors import CoronaError

log = structlog.get_logger(__name__)

DRAIN_RATE_PER_S: Final = 20.0
"""Backlog rows handed to MQTT per second at most: a day-long outage (2880 verdicts) drains in
under three minutes, while a thin uplink keeps room for live verdicts and health."""
DRAIN_BURST: Final = 20
"""Backlog rows that may go out at once after a pause (the token bucket's depth)."""
DRAIN_MAX_INFLIGHT: Final = 20
"""Backlog rows sent but not yet acknowledged at most; live rows never wait for this."""
LIVE_BATCH: Final = 100
"""Live rows handed over per tick at most (replay at full speed makes many per second)."""
ACK_TIMEOUT_S: Final = 60.0
"""A row unacknowledged this long on a connection that looks up means the session is broken
(the broker dropped it or the link is half-open): start over and send every stored row again."""


class PublishFn(Protocol):
    """The shape of ``daemon.deliver.publish.Publisher.publish``; ``on_ack`` fires on the PUBACK.

    Returns None when the message was not handed over (not connected), anything else when it was.
    """

    def __call__(
        self,
        topic_suffix: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool,
        on_ack: Callable[..., None],
    ) -> object: ...


class Drainer:
    """Sends outbox rows over one connection session at a time; see the module docstring.

    A session starts on the first tick that sees the publisher connected: rows stored before
    it (from an outage or an earlier run) are the backlog and go out with ``"replayed": true``
    in their JSON payload; rows stored during it are live and go out at once with the payload
    unchanged. A disconnect ends the session; unacknowledged rows are sent again in the next.

    Retained topics (the alarm) must always hold the node's current state, so a backlog's state
    changes are history: they go out without retain, except the newest stored one per topic,
    which is sent first in the session, retained, as the current truth. A live change stored
    later is newer still and is retained as usual. (Before: the backlog's old `alarm` then
    `clear`, retained and sent after a live `alarm`, left the topic saying `clear` while the
    tower was in alarm.)
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        rate_per_s: float = DRAIN_RATE_PER_S,
        burst: int = DRAIN_BURST,
        max_inflight: int = DRAIN_MAX_INFLIGHT,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox = outbox
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_inflight = max_inflight
        self.ack_timeout_s = ack_timeout_s
        self._clock = clock
        # Shared with paho's thread: row id -> (monotonic send time, is backlog).
        self._lock = threading.Lock()
        self._inflight: dict[int, tuple[float, bool]] = {}
        # Owned by the service thread (only tick touches them).
        self._in_session = False
        self._watermark = 0
        self._backlog_cursor = 0
        self._live_cursor = 0
        self._tokens = 0.0
        self._refilled_at = 0.0
        self._truth: list[Row] = []
        """The backlog's newest retained row per topic, still to send this session."""
        self._truth_ids: set[int] = set()
        self.sent_live = 0
        self.sent_replayed = 0

    def tick(self, connected: bool, publish: PublishFn) -> int:
        """Hand what is due to ``publish``; returns the number of rows handed over."""
        if not connected:
            if self._in_session:
                log.info("drain_paused", depth=self.outbox.depth(), inflight=self.inflight)
                self._in_session = False
            return 0
        now = self._clock()
        if not self._in_session:
            self._start_session(now)
        elif self._ack_overdue(now):
            log.warning("drain_ack_timeout", timeout_s=self.ack_timeout_s, inflight=self.inflight)
            self._start_session(now)
        sent = self._send_truth(publish, now)
        if self._in_session:
            sent += self._send_live(publish, now)
        if self._in_session:
            sent += self._send_backlog(publish, now)
        return sent

    @property
    def inflight(self) -> int:
        """Rows handed to MQTT and not yet acknowledged."""
        with self._lock:
            return len(self._inflight)

    def _start_session(self, now: float) -> None:
        self._in_session = True
        self._watermark = self.outbox.last_id()
        self._backlog_cursor = 0
        self._live_cursor = self._watermark
        self._tokens = float(self.burst)
        self._refilled_at = now
        with self._lock:
            self._inflight.clear()  # sent again below; a late PUBACK still deletes its row
        self._truth = self.outbox.newest_retained(upto_id=self._watermark)
        self._truth_ids = {row.id for row in self._truth}
        log.info("drain_session", backlog=self.outbox.depth(), up_to_row=self._watermark)

    def _send_truth(self, publish: PublishFn, now: float) -> int:
        """The backlog's current state per retained topic, before anything else."""
        sent = 0
        while self._truth:
            row = self._truth[0]
            payload = mark_replayed(row.payload)
            if not self._send(row, payload, backlog=True, publish=publish, now=now):
                break
            self._truth.pop(0)
            self.sent_replayed += 1
            sent += 1
        return sent

    def _ack_overdue(self, now: float) -> bool:
        with self._lock:
            oldest = min((sent_at for sent_at, _ in self._inflight.values()), default=now)
        return now - oldest > self.ack_timeout_s

    def _send_live(self, publish: PublishFn, now: float) -> int:
        rows = self.outbox.pending(LIVE_BATCH, after_id=self._live_cursor)
        sent = 0
        for row in rows:
            if not self._send(row, row.payload, backlog=False, publish=publish, now=now):
                break
            self._live_cursor = row.id
            self.sent_live += 1
            sent += 1
        return sent

    def _send_backlog(self, publish: PublishFn, now: float) -> int:
        self._tokens = min(
            float(self.burst), self._tokens + (now - self._refilled_at) * self.rate_per_s
        )
        self._refilled_at = now
        with self._lock:
            busy = sum(1 for _, backlog in self._inflight.values() if backlog)
        room = min(int(self._tokens), self.max_inflight - busy)
        if room <= 0:
            return 0
        rows = self.outbox.pending(room, after_id=self._backlog_cursor, upto_id=self._watermark)
        sent = 0
        for row in rows:
            if row.id in self._truth_ids:  # already sent first, as the retained state
                self._backlog_cursor = row.id
                continue
            # An older state change is history: never retained over the current state.
            if not self._send(
                row, mark_replayed(row.payload), backlog=True, publish=publish, now=now,
                retain=False,
            ):  # fmt: skip
                break
            self._backlog_cursor = row.id
            self._tokens -= 1.0
            self.sent_replayed += 1
            sent += 1
        return sent

    def _send(
        self,
        row: Row,
        payload: bytes,
        *,
        backlog: bool,
        publish: PublishFn,
        now: float,
        retain: bool | None = None,
    ) -> bool:
        """Hand one row to publish (retain as stored unless given); False if it was refused."""
        # In flight before publish: the PUBACK may arrive before publish returns.
        with self._lock:
            self._inflight[row.id] = (now, backlog)
        try:
            handed = publish(
                row.topic,
                payload,
                qos=row.qos,
                retain=row.retain if retain is None else retain,
                on_ack=self._on_ack_for(row.id),
            )
            error = None if handed is not None else "not handed over (connection just dropped)"
        except CoronaError as err:
            error = str(err)
        if error is None:
            return True
        with self._lock:
            self._inflight.pop(row.id, None)
        # The link broke under us: end the session, so the next one sends this row again (then
        # as backlog, since it is late by then). Counting a refused row as in flight would leave
        # it waiting for an ack that never comes until ACK_TIMEOUT_S.
        log.warning("drain_publish_failed", row=row.id, error=error)
        self._in_session = False
        return False

    def _on_ack_for(self, row_id: int) -> Callable[..., None]:
        def on_ack(*_args: object) -> None:
            self.outbox.ack(row_id)
            with self._lock:
                self._inflight.pop(row_id, None)

        return on_ack


def mark_replayed(payload: bytes) -> bytes:
    """The payload with ``"replayed": true`` if it is a JSON object that has that field.

    Only payloads that carry the field (the verdict) are touched, so other messages (alarm
    changes) go out byte for byte as stored and keep matching their schema.
    """
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return payload
    if not isinstance(data, dict) or "replayed" not in data:
        return payload
    data["replayed"] = True
    return json.dumps(data, separators=(",", ":")).encode("utf-8")
