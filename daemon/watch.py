"""The control room's view: subscribe to `{prefix}/+/#` and keep one table row per node.

`WatchState` folds messages into rows (thread-safe), `render_table` is a pure function of rows and
the time, and `run_watch` is the CLI body (`corona-monitor watch [--prefix P] [--once]`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from daemon.config import MqttSettings, Settings
from daemon.constants import WINDOW_S
from daemon.deliver.publish import connect_and_wait, make_client, parse_topic
from daemon.errors import ConfigError, PublishError

STALE_WINDOWS: Final = 2
"""A node whose last verdict ended more than this many windows ago is stale."""
CONNECT_TIMEOUT_S: Final = 5.0
REDRAW_S: Final = 1.0
ONCE_WAIT_S: Final = 3.0
"""Default for --once: retained messages arrive at once; the rest is time for a live verdict."""
_CLEAR_SCREEN: Final = "\x1b[H\x1b[2J"


@dataclass(frozen=True)
class NodeView:
    """What the control room knows about one node, from its latest messages."""

    node: str
    status: str | None = None
    label: str | None = None
    score: float | None = None
    mod_db: float | None = None
    """Line-locked modulation of the last verdict's high band (physics.mod_db), dB."""
    line_hz: int | None = None
    seq: int | None = None
    verdict_end: datetime | None = None
    alarm: str | None = None
    capture: str | None = None
    outbox_depth: int | None = None
    window_s: float | None = None

    def age_s(self, now: datetime) -> float | None:
        """Seconds since the end of the last verdict's window."""
        if self.verdict_end is None:
            return None
        return (now - self.verdict_end).total_seconds()

    def stale(self, now: datetime) -> bool:
        """No verdict yet, or the last one ended more than two windows ago."""
        age = self.age_s(now)
        window_s = self.window_s if self.window_s is not None else WINDOW_S
        return age is None or age > STALE_WINDOWS * window_s


def _utc(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _number(value: Any) -> float | None:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if is_number else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _apply_verdict(view: NodeView, data: dict[str, Any]) -> NodeView:
    seq = _integer(data.get("seq"))
    # The outbox replays old verdicts after an outage: the newest (highest seq) stays shown.
    if seq is not None and view.seq is not None and seq < view.seq:
        return view
    physics = data.get("physics")
    physics = physics if isinstance(physics, dict) else {}
    line_hz = _integer(physics.get("line_hz"))
    return replace(
        view,
        label=str(data.get("label", "?")),
        score=_number(data.get("score")),
        mod_db=_number(physics.get("mod_db")),
        line_hz=line_hz if line_hz in (50, 60) else None,
        seq=seq,
        verdict_end=_utc(data.get("window_end")),
    )


def _apply_alarm(view: NodeView, data: dict[str, Any]) -> NodeView:
    return replace(view, alarm=str(data.get("state", "?")))


def _apply_health(view: NodeView, data: dict[str, Any]) -> NodeView:
    window_s = _number(data.get("window_s"))
    return replace(
        view,
        capture=str(data["capture"]) if "capture" in data else view.capture,
        outbox_depth=_integer(data.get("outbox_depth")),
        window_s=window_s if window_s is not None and window_s > 0 else view.window_s,
    )


_APPLY: Final = {"verdict": _apply_verdict, "alarm": _apply_alarm, "health": _apply_health}


def apply_message(view: NodeView, kind: str, payload: bytes) -> NodeView:
    """The node's view after one message of `kind`; payloads that do not parse change nothing."""
    if kind == "status":
        return replace(view, status=payload.decode("utf-8", errors="replace").strip()[:20])
    apply = _APPLY.get(kind)
    try:
        data = json.loads(payload)
    except ValueError:
        return view
    if apply is None or not isinstance(data, dict):
        return view
    return apply(view, data)


class WatchState:
    """Rows per node, fed from paho's thread and read by the drawing loop."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip("/")
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeView] = {}

    def update(self, topic: str, payload: bytes) -> None:
        """Fold in one message; topics outside `{prefix}/{node}/{kind}` are ignored."""
        parsed = parse_topic(self.prefix, topic)
        if parsed is None:
            return
        node, kind = parsed
        with self._lock:
            view = self._nodes.get(node, NodeView(node=node))
            self._nodes[node] = apply_message(view, kind, payload)

    def views(self) -> list[NodeView]:
        with self._lock:
            return [self._nodes[name] for name in sorted(self._nodes)]


def _age_text(age_s: float | None) -> str:
    if age_s is None:
        return "-"
    seconds = max(0, round(age_s))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


_COLUMNS: Final = (
    "NODE", "STATUS", "VERDICT", "SCORE", "MOD2F", "AGE", "ALARM", "CAPTURE", "OUTBOX", "",
)  # fmt: skip
"""MOD2F: how far the high band's modulation at twice the line frequency stands above its
floor (dB, and at which grid): the physical reason a window reads as corona."""


def _mod_text(view: NodeView) -> str:
    if view.mod_db is None:
        return "-"
    return f"{view.mod_db:.1f}dB" + (f"@{view.line_hz}" if view.line_hz else "")


def render_table(views: Sequence[NodeView], now: datetime, *, prefix: str = "") -> str:
    """The table as text: one row per node, stale ones marked STALE; ends with a newline."""
    rows = [
        (
            v.node,
            v.status or "-",
            v.label or "-",
            f"{v.score:.3f}" if v.score is not None else "-",
            _mod_text(v),
            _age_text(v.age_s(now)),
            v.alarm or "-",
            v.capture or "-",
            str(v.outbox_depth) if v.outbox_depth is not None else "-",
            "STALE" if v.stale(now) else "",
        )
        for v in views
    ]
    widths = [max(len(row[i]) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
    stamp = now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    title = ["corona-monitor watch", prefix, stamp, f"nodes: {len(views)}"]
    lines = ["  ".join(part for part in title if part)]
    for row in [_COLUMNS, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if not views:
        lines.append("(no node has published yet)")
    return "\n".join(lines) + "\n"


def _client_for(source: MqttSettings | tuple[str, int]) -> tuple[mqtt.Client, str, int]:
    client_id = f"corona-watch-{uuid.uuid4().hex[:8]}"
    if isinstance(source, MqttSettings):
        client = make_client(source, client_id)  # raises ConfigError when host is unset
        if source.host is None:
            raise ConfigError("mqtt.host: not set, there is no broker to watch")
        return client, source.host, source.port
    host, port = source
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
    return client, host, port


def run_watch(
    source: Settings | MqttSettings | tuple[str, int],
    prefix: str | None,
    once: bool,
    wait_s: float = ONCE_WAIT_S,
    out: TextIO | None = None,
) -> int:
    """Watch the nodes under `prefix`: print the table once after wait_s, or redraw it live.

    source is the settings (the broker, credentials and TLS as the daemon's) or a plain
    (host, port); prefix None means the settings' mqtt.prefix (the default one for a tuple).
    Raises PublishError when the broker cannot be reached or refuses us, ConfigError for bad
    settings. Live mode runs until interrupted (Ctrl-C) and then returns 0.
    """
    stream = out if out is not None else sys.stdout
    if isinstance(source, Settings):
        source = source.mqtt
    if prefix is None:
        prefix = source.prefix if isinstance(source, MqttSettings) else MqttSettings().prefix
    state = WatchState(prefix)
    client, host, port = _client_for(source)
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
        if once:
            time.sleep(wait_s)
            stream.write(render_table(state.views(), datetime.now(UTC), prefix=state.prefix))
            stream.flush()
            return 0
        _draw_live(state, stream)
        return 0
    finally:
        client.disconnect()
        client.loop_stop()


def _draw_live(state: WatchState, stream: TextIO) -> None:
    terminal = stream.isatty()
    try:
        while True:
            table = render_table(state.views(), datetime.now(UTC), prefix=state.prefix)
            # On a terminal redraw in place; into a pipe or file append one table per refresh.
            stream.write(_CLEAR_SCREEN + table if terminal else table + "\n")
            stream.flush()
            time.sleep(REDRAW_S)
    except KeyboardInterrupt:
        return
