"""`corona-control watch`: subscribe to `{prefix}/+/#` and keep one table row per node.

`WatchState` folds messages into rows; it is fed from paho's network thread and never raises
there (an exception in a paho callback stops that thread, and the table would silently freeze on
old data): whatever a message does wrong is counted under a reason and the message skipped.
`connect_watch` is the subscription, `run_watch` the command body (`--once`, or live redraws).
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from control.messages import Skip, read
from control.table import render_table
from control.view import NodeView, fold
from daemon.config import MqttSettings, Settings
from daemon.deliver.publish import connect_and_wait, make_client, parse_topic
from daemon.errors import ConfigError, PublishError

CONNECT_TIMEOUT_S: Final = 5.0
REDRAW_S: Final = 1.0
ONCE_WAIT_S: Final = 3.0
"""Default for --once: retained messages arrive at once; the rest is time for a live verdict."""
MAX_NODES: Final = 10_000
"""Rows kept at most: each new node id on the topic costs memory and a row, and any client that
may publish under the prefix can invent node ids."""
_CLEAR_SCREEN: Final = "\x1b[H\x1b[2J"


class WatchState:
    """Rows per node and counts of skipped messages, fed from paho's thread, read by the drawer."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeView] = {}
        self._skipped: Counter[str] = Counter()

    def update(self, topic: str, payload: bytes, received: datetime | None = None) -> None:
        """Fold in one message; never raises. Topics outside `{prefix}/{node}/{kind}` are ignored.

        received is the arrival time on the watcher's clock (default: now).
        """
        try:
            self._update(topic, payload, received or datetime.now(UTC))
        except Skip as skip:
            self._count(skip.reason)
        except Exception:  # noqa: BLE001 - paho's thread must survive any message; counted, shown
            self._count("unreadable")

    def _update(self, topic: str, payload: bytes, received: datetime) -> None:
        parsed = parse_topic(self.prefix, topic)
        if parsed is None:
            return
        node, kind = parsed
        doc = read(kind, payload)
        with self._lock:
            view = self._nodes.get(node)
            if view is None:
                if len(self._nodes) >= MAX_NODES:
                    raise Skip("over the node limit")
                view = NodeView(node=node)
            self._nodes[node] = fold(view, kind, doc, received)

    def _count(self, reason: str) -> None:
        with self._lock:
            self._skipped[reason] += 1

    def views(self) -> list[NodeView]:
        with self._lock:
            return [self._nodes[name] for name in sorted(self._nodes)]

    def skipped(self) -> dict[str, int]:
        """Messages skipped so far, by reason."""
        with self._lock:
            return dict(self._skipped)

    def render(self, now: datetime | None = None) -> str:
        return render_table(
            self.views(), now or datetime.now(UTC), prefix=self.prefix, skipped=self.skipped()
        )


def _client_for(source: MqttSettings | tuple[str, int]) -> tuple[mqtt.Client, str, int]:
    client_id = f"corona-watch-{uuid.uuid4().hex[:8]}"
    if isinstance(source, MqttSettings):
        if source.host is None:
            raise ConfigError("mqtt.host: not set, there is no broker to watch")
        return make_client(source, client_id), source.host, source.port
    host, port = source
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
    return client, host, port


@contextmanager
def connect_watch(
    source: Settings | MqttSettings | tuple[str, int], prefix: str | None
) -> Iterator[WatchState]:
    """A WatchState filled from the broker while the block runs.

    source is the settings (the broker, credentials and TLS as the daemon's) or a plain
    (host, port); prefix None means the settings' mqtt.prefix (the default one for a tuple).
    Raises PublishError when the broker cannot be reached or refuses us, ConfigError for bad
    settings.
    """
    if isinstance(source, Settings):
        source = source.mqtt
    if prefix is None:
        prefix = source.prefix if isinstance(source, MqttSettings) else MqttSettings().prefix
    state = WatchState(prefix)
    client, host, port = _client_for(source)
    # A second guard behind WatchState.update: an exception in any other callback is logged by
    # paho instead of ending its network thread.
    client.suppress_exceptions = True
    topic_filter = f"{state.prefix}/+/#"

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        state.update(msg.topic, bytes(msg.payload))

    client.on_message = on_message
    problem = connect_and_wait(
        client,
        host,
        port,
        timeout_s=CONNECT_TIMEOUT_S,
        on_accepted=lambda c: c.subscribe(topic_filter, qos=1),
    )
    if problem is not None:
        raise PublishError(f"watch: the broker at {host}:{port} {problem}")
    try:
        yield state
    finally:
        client.disconnect()
        client.loop_stop()


def run_watch(
    source: Settings | MqttSettings | tuple[str, int],
    prefix: str | None,
    once: bool,
    wait_s: float = ONCE_WAIT_S,
    out: TextIO | None = None,
) -> int:
    """Watch the nodes under `prefix`: print the table once after wait_s, or redraw it live.

    Arguments and errors as `connect_watch`. Live mode runs until interrupted (Ctrl-C) and then
    returns 0.
    """
    stream = out if out is not None else sys.stdout
    with connect_watch(source, prefix) as state:
        if once:
            time.sleep(wait_s)
            stream.write(state.render())
            stream.flush()
            return 0
        _draw_live(state, stream)
        return 0


def _draw_live(state: WatchState, stream: TextIO) -> None:
    terminal = stream.isatty()
    try:
        while True:
            table = state.render()
            # On a terminal redraw in place; into a pipe or file append one table per refresh.
            stream.write(_CLEAR_SCREEN + table if terminal else table + "\n")
            stream.flush()
            time.sleep(REDRAW_S)
    except KeyboardInterrupt:
        return
