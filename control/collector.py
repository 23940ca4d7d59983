"""The collector: every message under `{prefix}/+/#` into the store, acknowledged only once stored.

The MQTT side is a persistent session (fixed client id, clean start off, a session expiry) at
QoS 1 with manual acknowledgements: paho hands a message over, the writer thread stores a batch
in one transaction, and only then PUBACKs each message of it. A collector killed at any point
therefore loses nothing: whatever it had not acknowledged, the broker sends again when it is
back, and the (node, seq) key drops what was stored twice.

A batch the database refuses is written again one record at a time, so one message the database
cannot take (it passed our checks but not the database's) goes to quarantine instead of
blocking every message behind it. When the database itself is gone, nothing is acknowledged and
the batch is retried until it is back: the broker holds the rest.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from control.config import ControlSettings
from control.ingest import Ignored, clip_of, node_problem, to_record
from control.store import Store, StoreError
from control.store.records import QuarantineIn, Record, VerdictIn
from daemon.deliver.publish import make_client
from daemon.errors import CoronaError

log = structlog.get_logger(__name__)

RETRY_S: Final = 2.0
"""Wait between attempts to store a batch while the database is away."""
LAG_SAMPLES: Final = 2000
"""Live verdicts whose ingest lag the quantiles are computed over (the most recent)."""
RECONNECT_MAX_S: Final = 30
STOP_TIMEOUT_S: Final = 10.0
HAND_OVER_WAIT_S: Final = 0.2
"""How long paho's thread waits at a full queue before it looks whether the collector stops."""


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_at: float
    connection: int = 0
    """The connection it came on: its packet id (mid) names it only there."""


class ClipRequestError(CoronaError):
    """A clip request that cannot be sent (a bad name, no broker); the message says which."""


class CollectorStats:
    """Counters for /metrics and /healthz; updated by the writer and paho's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.stored: Counter[str] = Counter()
        self.quarantined: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        self.duplicates = 0
        self.unrequested = 0
        self.batches = 0
        self.database_errors = 0
        self.database_ok = True
        self.connected = False
        self.subscribed = False
        """The broker acknowledged our subscriptions on the current connection."""
        self.connects = 0
        self.last_stored_at: float | None = None
        self._lags: deque[float] = deque(maxlen=LAG_SAMPLES)

    def lag_quantile(self, q: float) -> float | None:
        """Seconds from a live verdict's window_end to its commit, at quantile q."""
        with self._lock:
            lags = sorted(self._lags)
        if not lags:
            return None
        return lags[min(len(lags) - 1, int(q * len(lags)))]

    def add_lags(self, lags: list[float]) -> None:
        with self._lock:
            self._lags.extend(lags)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "received": dict(self.received),
                "stored": dict(self.stored),
                "quarantined": dict(self.quarantined),
                "ignored": dict(self.ignored),
                "duplicates": self.duplicates,
                "unrequested": self.unrequested,
                "batches": self.batches,
                "database_errors": self.database_errors,
                "database_ok": self.database_ok,
                "mqtt_connected": self.connected,
                "mqtt_connects": self.connects,
                "last_stored_at": self.last_stored_at,
            }


def subscriptions(settings: ControlSettings) -> list[str]:
    """The topic filters: the fleet (shared when a group is set), and with a group also the
    retained alarm and status directly, because a shared subscription gets no retained messages
    and a collector that starts must still learn each node's current state."""
    fleet = f"{settings.mqtt.prefix.rstrip('/')}/+/#"
    group = settings.collector.share_group
    if group is None:
        return [fleet]
    prefix = settings.mqtt.prefix.rstrip("/")
    return [f"$share/{group}/{fleet}", f"{prefix}/+/alarm", f"{prefix}/+/status"]


class Collector:
    def __init__(
        self, store: Store, settings: ControlSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._prefix = settings.mqtt.prefix
        # Bounded: mosquitto 2.0.11 honours our Receive Maximum only until the first PUBACK, then
        # sends everything it holds for the session. A full queue makes paho's thread wait, so a
        # backlog stays with the broker (TCP holds it back), not in our memory.
        self._queue: queue.Queue[Incoming] = queue.Queue(maxsize=2 * settings.collector.batch_max)
        self._stopping = threading.Event()
        # Bumped at every connect and disconnect. What came on an earlier connection is stored
        # but not acknowledged: the broker sends it again on the new one, and an old packet id
        # acknowledged there could name another message once the resend's acknowledgement
        # freed it. The lock makes the check and the acknowledgement one step.
        self._connection = 0
        self._ack_lock = threading.Lock()
        self._writer = threading.Thread(target=self._write_loop, name="collector-writer")
        self.stats = CollectorStats()
        self._known_nodes = {n.node for n in store.nodes()}
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        collector = self._settings.collector
        client = make_client(
            self._settings.mqtt, collector.client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        client.manual_ack_set(True)
        client.reconnect_delay_set(1, RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    @property
    def queued(self) -> int:
        """Messages received and not yet stored."""
        return self._queue.qsize()

    def health(self) -> dict[str, Any]:
        """/healthz: ok while the broker is connected and the database takes writes."""
        snap = self.stats.snapshot()
        return {
            "ok": bool(snap["mqtt_connected"] and snap["database_ok"]),
            "mqtt_connected": snap["mqtt_connected"],
            "database_ok": snap["database_ok"],
            "queued": self.queued,
            "last_stored_at": snap["last_stored_at"],
        }

    def start(self) -> None:
        """Connect in the background (reconnecting forever) and start storing."""
        collector = self._settings.collector
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = collector.session_expiry_s
        # As many unacknowledged messages in flight as one batch holds: the broker's default
        # window for us is the batch size, not mosquitto's 20 that would cap the ingest rate.
        properties.ReceiveMaximum = min(collector.batch_max, 65535)
        self._writer.start()
        mqtt_settings = self._settings.mqtt
        assert mqtt_settings.host is not None  # noqa: S101 - make_client refused a missing host
        self._client.connect_async(
            mqtt_settings.host,
            mqtt_settings.port,
            keepalive=mqtt_settings.keepalive_s,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect and stop the writer; what was not stored stays unacknowledged (the broker
        sends it again to this session)."""
        self._stopping.set()
        self._client.disconnect()
        self._client.loop_stop()
        self._writer.join(STOP_TIMEOUT_S)

    def request_clip(self, node: str, name: str, user: str) -> None:
        """Ask `node` for evidence clip `name` (QoS 1); it arrives on clip/NAME and is stored."""
        clip = clip_of(node, name)
        if node_problem(node) is not None or clip is None:
            raise ClipRequestError(f"not a clip name of this node: {name!r}"[:200])
        if not self.stats.snapshot()["mqtt_connected"]:
            raise ClipRequestError("not connected to the broker: try again when it is back")
        self._store.request_clip(node, clip.name, clip.seq, user=user, at=self._clock())
        topic = f"{self._prefix.rstrip('/')}/{node}/clip/request"
        self._client.publish(topic, json.dumps({"id": clip.name}), qos=1)
        log.info("clip_requested", node=node, clip=clip.name, user=user)

    # -- paho's thread ---------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any = None
    ) -> None:
        if reason.is_failure:
            log.warning("collector_connect_refused", reason=str(reason))
            return
        with self._ack_lock:
            self._connection += 1
        with self.stats._lock:
            self.stats.connected = True
            self.stats.connects += 1
        log.info(
            "collector_connected",
            session_present=bool(getattr(flags, "session_present", False)),
            client_id=self._settings.collector.client_id,
        )
        options = SubscribeOptions(qos=1)
        client.subscribe([(topic, options) for topic in subscriptions(self._settings)])

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None
    ) -> None:
        with self._ack_lock:
            self._connection += 1
        with self.stats._lock:
            self.stats.connected = False
            self.stats.subscribed = False
        if not self._stopping.is_set():
            log.warning("collector_disconnected", reason=str(reason))

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, _codes: Any, _p: Any) -> None:
        self.stats.subscribed = True

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        # Only hand over: storing happens on the writer, so paho's thread waits on disk only
        # when two batches are waiting already.
        incoming = Incoming(
            message.topic,
            bytes(message.payload),
            message.mid,
            message.qos,
            self._clock(),
            self._connection,
        )
        while not self._stopping.is_set():
            try:
                self._queue.put(incoming, timeout=HAND_OVER_WAIT_S)
                return
            except queue.Full:
                continue
        # Stopping: not stored and not acknowledged, so the broker sends it again.

    # -- the writer thread -----------------------------------------------------------------

    def _write_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            limit = self._settings.collector.batch_max
            while len(batch) < limit:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._handle(batch)

    def _handle(self, batch: list[Incoming]) -> None:
        records: list[Record] = []
        counted: Counter[str] = Counter()
        for message in batch:
            record = self._record(message)
            if isinstance(record, Ignored):
                counted["ignored:" + record.kind] += 1
                continue
            counted[_kind(record)] += 1
            records.append(record)
        with self.stats._lock:
            for key, n in counted.items():
                if key.startswith("ignored:"):
                    self.stats.ignored[key.removeprefix("ignored:")] += n
                else:
                    self.stats.received[key] += n
        while not self._stopping.is_set():
            if self._store_all(records):
                with self._ack_lock:
                    for message in batch:
                        if message.qos > 0 and message.connection == self._connection:
                            self._client.ack(message.mid, message.qos)
                return
            self._stopping.wait(RETRY_S)

    def _record(self, message: Incoming) -> Record | Ignored:
        record = to_record(self._prefix, message.topic, message.payload, message.received_at)
        node = getattr(record, "node", None)
        if isinstance(node, str) and node not in self._known_nodes:
            if len(self._known_nodes) >= self._settings.collector.max_nodes:
                return QuarantineIn(
                    message.topic, "too many nodes", message.payload, message.received_at
                )
            self._known_nodes.add(node)
        return record

    def _store_all(self, records: list[Record]) -> bool:
        """Store the batch; True once everything is stored or quarantined."""
        try:
            self._account(records, self._store.write(records))
            return True
        except StoreError as err:
            self._database_failed(err)
        except Exception as err:  # noqa: BLE001 - a driver's own refusal (OverflowError, ...)
            log.warning("collector_batch_refused", error=f"{type(err).__name__}: {err}")
        # One at a time: a record the database refuses goes to quarantine.
        for record in records:
            try:
                self._account([record], self._store.write([record]))
            except Exception as err:  # noqa: BLE001 - as above; the quarantine write tells which
                if not self._quarantine_refused(record, err):
                    return False  # the database is gone, not the record: retry it all later
        return True

    def _quarantine_refused(self, record: Record, err: Exception) -> bool:
        topic = f"{self._prefix.rstrip('/')}/{getattr(record, 'node', '?')}/{_kind(record)}"
        poison = QuarantineIn(topic, "database refused", _payload(record), self._clock())
        try:
            self._account([poison], self._store.write([poison]))
        except StoreError:
            return False
        log.warning("collector_record_refused", topic=topic, error=f"{type(err).__name__}: {err}")
        return True

    def _database_failed(self, err: StoreError) -> None:
        with self.stats._lock:
            self.stats.database_errors += 1
            self.stats.database_ok = False
        log.error("collector_store_failed", error=str(err))

    def _account(self, records: list[Record], result: Any) -> None:
        now = self._clock()
        lags = [
            now - r.window_end
            for r in records
            if isinstance(r, VerdictIn) and r.source == "live" and not r.replayed
        ]
        with self.stats._lock:
            self.stats.stored.update(result.stored)
            self.stats.duplicates += result.duplicates
            self.stats.unrequested += result.unrequested
            for r in records:
                if isinstance(r, QuarantineIn):
                    self.stats.quarantined[r.reason] += 1
            self.stats.batches += 1
            self.stats.database_ok = True
            self.stats.last_stored_at = now
        self.stats.add_lags(lags)


def _kind(record: Record) -> str:
    return type(record).__name__.removesuffix("In").lower()


def _payload(record: Record) -> bytes:
    text = getattr(record, "payload", b"")
    return text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)
