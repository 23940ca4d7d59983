"""MQTT publishing: one paho-mqtt 2 client per node, never blocking the caller.

The network runs on paho's own thread (`loop_start`). `publish()` hands a message over and returns
its mid; `on_ack` runs on paho's thread once the broker has it (QoS 1/2: PUBACK/PUBCOMP; QoS 0:
once written to the socket). A message handed over stays with paho (in memory) until acknowledged,
across reconnects; while disconnected `publish()` refuses (returns None) so the caller's durable
outbox keeps the backlog instead of this process's memory.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from daemon.config import MqttSettings
from daemon.deliver.takeover import DEFAULT_POLICY, Drop, Policy, TakeoverWatch
from daemon.errors import ConfigError

log = structlog.get_logger(__name__)

STATUS_ONLINE: Final = "online"
STATUS_STOPPED: Final = "stopped"
STATUS_OFFLINE: Final = "offline"
"""The Last Will: the broker publishes it when the connection dies without a DISCONNECT."""

STATUS_QOS: Final = 1
RECONNECT_MIN_S: Final = 1
"""First retry delay after a lost or failed connection; paho doubles it up to reconnect_max_s."""
CLOSE_ACK_TIMEOUT_S: Final = 2.0
"""How long close() waits for the broker to acknowledge `stopped` before disconnecting anyway."""
REPEAT_LOG_S: Final = 300.0
"""An identical connection error is logged once per this many seconds (spares the SD card)."""
SESSION_TAKEN_OVER: Final = 0x8E
"""MQTT 5's DISCONNECT reason when another client connected with our client id."""
CONFLICT_CAUSE: Final = (
    "another node with the same node_id is connected to this broker: each connection closes"
    " the other's (the broker keeps one session per client id)"
)
CONFLICT_HINT: Final = (
    "give every node its own node_id in its config; the default is the host name, which a"
    " cloned SD card shares"
)

AckCallback = Callable[[], None]
MessageHandler = Callable[[bytes], None]
SUBSCRIBE_QOS: Final = 1


@dataclass(frozen=True)
class Topics:
    status: str
    verdict: str
    alarm: str
    health: str


@dataclass(frozen=True)
class Retained:
    """A retained message the node (re)announces on every connect, such as a discovery config."""

    topic: str
    payload: str


def topics(prefix: str, node: str) -> Topics:
    """The node's four topics under the prefix (README, "MQTT")."""
    base = f"{prefix.rstrip('/')}/{node}"
    return Topics(
        status=f"{base}/status",
        verdict=f"{base}/verdict",
        alarm=f"{base}/alarm",
        health=f"{base}/health",
    )


KINDS: Final = ("status", "verdict", "alarm", "health")
"""The last topic level of every node message, in `Topics` order."""


def parse_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """(node, kind) of a `{prefix}/{node}/{kind}` topic (the inverse of `topics`), else None."""
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) != 2 or not parts[0] or parts[1] not in KINDS:
        return None
    return parts[0], parts[1]


def connect_and_wait(
    client: mqtt.Client,
    host: str,
    port: int,
    *,
    timeout_s: float,
    keepalive: int = 60,
    on_accepted: Callable[[mqtt.Client], object] | None = None,
) -> str | None:
    """Connect a short-lived client and wait for the broker's CONNACK.

    None when the broker accepted us (the client's network loop is then running, and
    ``on_accepted`` has run in paho's thread: subscribe there, so a reconnect subscribes
    again); otherwise why not, in words, with the loop stopped. For the long-lived node
    connection see `Publisher` (reconnects forever, never waits)."""
    answered = threading.Event()
    result: dict[str, ReasonCode] = {}

    def on_connect(
        c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None = None
    ) -> None:
        result["reason"] = reason
        answered.set()
        if not reason.is_failure and on_accepted is not None:
            on_accepted(c)

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=keepalive)
    except (OSError, ValueError) as err:
        return f"does not answer ({err})"
    client.loop_start()
    if not answered.wait(timeout_s):
        client.loop_stop()
        return f"did not answer within {timeout_s:g} s"
    reason = result["reason"]
    if reason.is_failure:
        client.loop_stop()
        return f"refused the connection: {reason}"
    return None


def make_client(
    settings: MqttSettings,
    client_id: str,
    *,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
) -> mqtt.Client:
    """A paho client with the configured credentials and TLS; does not connect.

    Raises ConfigError when MQTT is disabled, the TLS files are unusable, or a password would go
    over plain TCP without `mqtt.allow_insecure: true`.
    """
    if settings.host is None:
        raise ConfigError("mqtt.host: not set, so MQTT is disabled; nothing to connect to")
    password = settings.password()
    tls_on = settings.tls.enabled
    if password is not None and not tls_on and not settings.allow_insecure:
        raise ConfigError(
            f"mqtt.allow_insecure: refusing to send the password in clear text to"
            f" {settings.host}:{settings.port}; set mqtt.tls.ca to use TLS, or"
            " mqtt.allow_insecure: true to accept the risk"
        )
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
    )
    if settings.username is not None or password is not None:
        client.username_pw_set(settings.username, password)
    if tls_on:
        tls = settings.tls
        try:
            client.tls_set(
                # None: the system's CAs (cert and key without ca still mean TLS).
                ca_certs=str(tls.ca) if tls.ca is not None else None,
                certfile=str(tls.cert) if tls.cert is not None else None,
                keyfile=str(tls.key) if tls.key is not None else None,
            )
        except (OSError, ssl.SSLError, ValueError) as err:
            # Never echo the key's content; the file names and the reason are enough.
            raise ConfigError(
                f"mqtt.tls: cannot load ca={tls.ca} cert={tls.cert} key={tls.key}: {err}"
            ) from err
    return client


class _RepeatFilter:
    """Lets an identical message through once per interval; forgets everything on success."""

    def __init__(self, interval_s: float = REPEAT_LOG_S) -> None:
        self._interval_s = interval_s
        self._last: dict[str, float] = {}

    def should_log(self, key: str) -> bool:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            return False
        self._last[key] = now
        return True

    def reset(self) -> None:
        self._last.clear()


class Publisher:
    """A node's MQTT connection: status and Last Will, reconnects, and acknowledged publishes."""

    def __init__(
        self,
        settings: MqttSettings,
        node_id: str,
        *,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
        announcements: Sequence[Retained] = (),
        takeover: Policy = DEFAULT_POLICY,
    ) -> None:
        self._settings = settings
        self._node_id = node_id
        self._announcements = tuple(announcements)
        self.topics = topics(settings.prefix, node_id)
        self._client = make_client(settings, node_id, protocol=protocol)
        self._client.will_set(self.topics.status, STATUS_OFFLINE, qos=STATUS_QOS, retain=True)
        self._set_reconnect_delay(None)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._handlers: dict[str, MessageHandler] = {}
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[int, AckCallback | None] = {}
        # paho may deliver the ack before publish() has returned the mid to us; such acks wait
        # here until publish() registers the mid (it then runs the callback itself).
        self._early_acks: dict[int, bool] = {}  # mid -> accepted by the broker
        self._repeat = _RepeatFilter()
        self.connect_failures = 0
        """Connection attempts that failed (the log says it once per interval; this counts all)."""
        self.connections = 0
        """CONNACKs accepted since start: a change means (re)connected."""
        self._takeover = TakeoverWatch(takeover)
        self._started = False
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Begin connecting in the background; returns at once, even if the broker is down."""
        if self._started:
            return
        self._started = True
        host = self._settings.host
        if host is None:  # make_client refused a disabled config; not an assert: -O drops those
            raise ConfigError("mqtt.host: not set, MQTT is disabled")
        self._client.connect_async(host, self._settings.port, keepalive=self._settings.keepalive_s)
        self._client.loop_start()
        log.info(
            "mqtt_starting",
            host=host,
            port=self._settings.port,
            tls=self._settings.tls.enabled,
            username=self._settings.username,
            client_id=self._node_id,
        )

    def close(self, timeout_s: float = CLOSE_ACK_TIMEOUT_S) -> None:
        """Publish `stopped` (retained), wait briefly for its ack, disconnect, stop the thread."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        if self._connected.is_set():
            acked = threading.Event()
            mid = self._send(
                self.topics.status, STATUS_STOPPED, qos=STATUS_QOS, retain=True, on_ack=acked.set
            )
            if mid is None or not acked.wait(timeout_s):
                log.warning("mqtt_stopped_not_acknowledged", timeout_s=timeout_s)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        log.info("mqtt_closed")

    def __enter__(self) -> Publisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def subscribe(self, topic_suffix: str, handler: MessageHandler) -> None:
        """Deliver each message on `{prefix}/{node}/{topic_suffix}` to handler (on paho's
        thread: it must be quick). Subscribed on every (re)connect; call before start()."""
        topic = f"{self._settings.prefix.rstrip('/')}/{self._node_id}/{topic_suffix}"
        self._handlers[topic] = handler

    # -- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def conflict(self) -> bool:
        """Whether another node with this node_id keeps taking the session (daemon.deliver.
        takeover); ends by itself once a connection has lasted the policy's stable_s."""
        with self._lock:
            if self._takeover.settle(time.monotonic()):
                self._log_conflict_over()
            return self._takeover.conflict

    @property
    def takeovers(self) -> int:
        """Connections the broker closed moments after accepting them, since start."""
        with self._lock:
            return self._takeover.takeovers

    def wait_connected(self, timeout_s: float) -> bool:
        """True once connected (CONNACK accepted), False after timeout_s without it."""
        return self._connected.wait(timeout_s)

    @property
    def pending_count(self) -> int:
        """Messages handed to paho and not yet acknowledged by the broker."""
        with self._lock:
            return len(self._pending)

    def is_pending(self, mid: int) -> bool:
        """Whether this mid was handed over and is still awaiting its ack (paho resends it)."""
        with self._lock:
            return mid in self._pending

    # -- publishing --------------------------------------------------------------------------

    def publish(
        self,
        topic_suffix: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        on_ack: AckCallback | None = None,
    ) -> int | None:
        """Publish on `{prefix}/{node}/{topic_suffix}`; see publish_to."""
        return self.publish_to(
            f"{self._settings.prefix.rstrip('/')}/{self._node_id}/{topic_suffix}",
            payload,
            qos=qos,
            retain=retain,
            on_ack=on_ack,
        )

    def publish_to(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        on_ack: AckCallback | None = None,
    ) -> int | None:
        """Hand a message to the broker connection; the mid, or None when nothing was handed over.

        None means not connected (or paho's queue is full): keep the message and try later. A
        returned mid is paho's until acknowledged: on_ack then runs once, on paho's thread, and
        must be quick and must not call close(). A broker that rejects the message (MQTT 5
        reason code) gets it logged and on_ack is not called.
        """
        if self._closed or not self._connected.is_set():
            return None
        return self._send(topic, payload, qos=qos, retain=retain, on_ack=on_ack)

    def _send(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int,
        retain: bool,
        on_ack: AckCallback | None,
    ) -> int | None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        # QoS 0 that could not be written is gone; QoS > 0 that met a just-dropped connection
        # stays in paho's queue and goes out after the reconnect, so it still counts as handed.
        handed = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0
        )
        with self._lock:
            early = self._early_acks.pop(info.mid, None)
            if handed and early is None:
                self._pending[info.mid] = on_ack
        if not handed:
            log.debug("mqtt_publish_not_sent", topic=topic, rc=info.rc.name)
            return None
        if early is not None:
            self._finish(on_ack, info.mid, accepted=early)
        return info.mid

    def _finish(self, on_ack: AckCallback | None, mid: int, *, accepted: bool) -> None:
        if not accepted:
            log.error("mqtt_publish_rejected", mid=mid)
            return
        if on_ack is None:
            return
        try:
            on_ack()
        except Exception:
            # A failing callback must not kill paho's network thread (and with it all delivery).
            log.exception("mqtt_on_ack_failed", mid=mid)

    # -- paho callbacks (run on paho's thread) -----------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            # Wrong credentials or not authorised: paho closes and retries with backoff.
            if self._repeat.should_log(f"refused:{reason_code}"):
                log.error(
                    "mqtt_connection_refused",
                    host=self._settings.host,
                    port=self._settings.port,
                    username=self._settings.username,
                    reason=str(reason_code),
                    retry_max_s=self._settings.reconnect_max_s,
                )
            return
        self._repeat.reset()
        with self._lock:
            self._takeover.connected(time.monotonic())
            self.connections += 1
        self._connected.set()
        log.info(
            "mqtt_connected",
            host=self._settings.host,
            port=self._settings.port,
            session_present=flags.session_present,
        )
        for topic in self._handlers:
            self._client.subscribe(topic, qos=SUBSCRIBE_QOS)
        # Before `online`: a subscriber that sees online has every announcement already (the
        # broker keeps one connection's messages in order), so online is their barrier.
        for message in self._announcements:
            self._send(message.topic, message.payload, qos=STATUS_QOS, retain=True, on_ack=None)
        self._send(self.topics.status, STATUS_ONLINE, qos=STATUS_QOS, retain=True, on_ack=None)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho does not pass the cause: a closed port, a DNS failure or a failed TLS handshake.
        self.connect_failures += 1
        if self._repeat.should_log("connect_failed"):
            log.warning(
                "mqtt_connect_failed",
                host=self._settings.host,
                port=self._settings.port,
                tls=self._settings.tls.enabled,
                hint="broker unreachable or TLS handshake failed; retrying",
                retry_max_s=self._settings.reconnect_max_s,
            )

    def _closed_before_connack(self, reason_code: ReasonCode) -> None:
        # The TCP connection was accepted and then closed before any CONNACK: without this line
        # the node retried in silence.
        self.connect_failures += 1
        if self._repeat.should_log("closed_before_connack"):
            log.warning(
                "mqtt_closed_before_connack",
                host=self._settings.host,
                port=self._settings.port,
                tls=self._settings.tls.enabled,
                reason=str(reason_code),
                hint="the broker accepted the connection and closed it without answering: a TLS"
                " port spoken to without TLS (or the reverse), a broker at its connection"
                " limit, a proxy, or not an MQTT broker; retrying",
                retry_max_s=self._settings.reconnect_max_s,
            )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if not was_connected:
            if not self._closed:
                self._closed_before_connack(reason_code)
            return
        if self._closed:
            log.info("mqtt_disconnected", reason=str(reason_code), will_retry=False)
            return
        said_so = flags.is_disconnect_packet_from_server and reason_code == SESSION_TAKEN_OVER
        with self._lock:
            if self._takeover.settle(time.monotonic()):
                self._log_conflict_over()
            drop = self._takeover.lost(time.monotonic(), taken_over=said_so)
            backoff_s = self._takeover.backoff_s()
            takeovers = self._takeover.takeovers
        self._set_reconnect_delay(backoff_s)
        if drop is Drop.CONFLICT:
            # The one error of this conflict; each later takeover is only an info line.
            log.error(
                "mqtt_node_id_conflict",
                node_id=self._node_id,
                cause=CONFLICT_CAUSE,
                hint=CONFLICT_HINT,
                takeovers=takeovers,
                retry_s=backoff_s,
            )
        elif drop is Drop.IN_CONFLICT:
            log.info("mqtt_disconnected", reason=str(reason_code), conflict=True, retry_s=backoff_s)
        else:
            log.warning("mqtt_disconnected", reason=str(reason_code), will_retry=True)

    def _set_reconnect_delay(self, backoff_s: float | None) -> None:
        """paho's delays: its own doubling from 1 s, or during a conflict a fixed backoff (paho
        resets its doubling on every accepted CONNECT, which a twin always gets)."""
        if backoff_s is None:
            low, high = RECONNECT_MIN_S, max(RECONNECT_MIN_S, round(self._settings.reconnect_max_s))
        else:
            low = high = max(RECONNECT_MIN_S, round(backoff_s))
        self._client.reconnect_delay_set(min_delay=low, max_delay=high)

    def _log_conflict_over(self) -> None:
        log.info(
            "mqtt_node_id_conflict_over",
            node_id=self._node_id,
            stable_s=self._takeover.policy.stable_s,
        )

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        handler = self._handlers.get(message.topic)
        if handler is None:
            return
        try:
            handler(bytes(message.payload))
        except Exception:
            # A failing handler must not kill paho's network thread (and with it all delivery).
            log.exception("mqtt_on_message_failed", topic=message.topic)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        with self._lock:
            if mid in self._pending:
                on_ack = self._pending.pop(mid)
            else:
                self._early_acks[mid] = not reason_code.is_failure
                return
        self._finish(on_ack, mid, accepted=not reason_code.is_failure)
