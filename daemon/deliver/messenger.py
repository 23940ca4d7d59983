"""The durable road from a finished message to the broker: outbox -> drainer -> publisher.

Every verdict and alarm change is committed to the outbox first; the drainer hands rows to MQTT
and the PUBACK deletes them. With MQTT disabled the outbox still numbers verdicts (seq never
repeats for a node, across runs) but keeps nothing.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Final

import structlog

from daemon.config import Settings
from daemon.deliver.drain import Drainer
from daemon.deliver.outbox import Outbox
from daemon.deliver.sinks import NumberOnlySink, OutboxSink, Sink

if TYPE_CHECKING:
    from daemon.deliver.clip_requests import ClipServer

    # paho (with ssl, email, urllib) costs about 60 ms of CPU to import: only when MQTT is on.
    from daemon.deliver.publish import Publisher, Retained
    from daemon.evidence.store import ClipStore

log = structlog.get_logger(__name__)

DRAIN_POLL_S: Final = 0.05
"""Pause between drainer ticks while waiting for the outbox to empty."""


class Messenger:
    """Owns the outbox, the drainer and (when MQTT is configured) the publisher."""

    def __init__(self, settings: Settings, *, clips: ClipStore | None = None) -> None:
        self.settings = settings
        self.clip_server: ClipServer | None = None
        self.outbox = Outbox.from_settings(settings.outbox)
        self.publisher: Publisher | None = None
        self.drainer: Drainer | None = None
        self.sink: Sink
        if settings.mqtt.enabled:
            from daemon.deliver.publish import Publisher

            self.publisher = Publisher(
                settings.mqtt, settings.node_id, announcements=announcements(settings)
            )
            self.drainer = Drainer(self.outbox)
            self.sink = OutboxSink(self.outbox, qos=settings.mqtt.qos)
            if clips is not None:
                from daemon.deliver.clip_requests import REQUEST_TOPIC, ClipServer

                self.clip_server = ClipServer(
                    clips,
                    self.publisher,
                    max_bytes=settings.clips.max_publish_kb * 1024,
                    qos=settings.mqtt.qos,
                )
                self.publisher.subscribe(REQUEST_TOPIC, self.clip_server.offer)
        else:
            self.sink = NumberOnlySink(self.outbox)

    @property
    def connected(self) -> bool:
        return self.publisher is not None and self.publisher.connected

    @property
    def connections(self) -> int:
        """Accepted connections since start (0 without MQTT): a change means just (re)connected."""
        return self.publisher.connections if self.publisher is not None else 0

    def start(self) -> None:
        """Start connecting in the background (never blocks on the network)."""
        if self.publisher is not None:
            self.publisher.start()

    def pump(self) -> None:
        """Hand due outbox rows to MQTT; call often from the service loop."""
        if self.publisher is not None and self.drainer is not None:
            self.drainer.tick(self.publisher.connected, self.publisher.publish)
        if self.clip_server is not None:
            self.clip_server.serve()

    def publish_health(self, payload: dict[str, Any]) -> None:
        """Health is a snapshot, not a record: retained, sent only when connected, never queued."""
        if self.publisher is not None and self.publisher.connected:
            body = json.dumps(payload, separators=(",", ":"))
            self.publisher.publish("health", body, qos=self.settings.mqtt.qos, retain=True)

    def drain(self, timeout_s: float) -> bool:
        """Keep sending until the outbox is empty (True) or timeout_s passes while connected."""
        deadline = time.monotonic() + timeout_s
        while self.publisher is not None and self.outbox.depth() > 0:
            if time.monotonic() >= deadline:
                return False
            self.pump()
            time.sleep(DRAIN_POLL_S)
        return True

    def close(self) -> None:
        """Publish `stopped`, disconnect, close the outbox; what is unsent stays for next time."""
        if self.publisher is not None:
            self.publisher.close()
        depth = self.outbox.depth()
        if depth:
            log.info("outbox_kept", depth=depth)
        self.outbox.close()


def announcements(settings: Settings) -> list[Retained]:
    """What the node re-publishes, retained, on every connect: Home Assistant's discovery configs
    when `homeassistant.enabled`, else nothing."""
    if not settings.homeassistant.enabled:
        return []
    from daemon.deliver import discovery
    from daemon.deliver.publish import topics

    return discovery.configs(
        discovery_prefix=settings.homeassistant.discovery_prefix,
        node=settings.node_id,
        topics=topics(settings.mqtt.prefix, settings.node_id),
        qos=settings.mqtt.qos,
    )
