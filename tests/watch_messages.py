"""Messages for `corona-control watch` tests: valid payloads, hostile ones, and how to send them.

`publish_raw` sends any bytes on any topic from a plain client (a hostile publisher, not the
daemon's Publisher); `run_once` runs `watch --once` from this checkout as a real process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.fixtures.broker import Broker

REPO = Path(__file__).resolve().parents[1]
CONTROL = [sys.executable, "-m", "control.cli"]
MONITOR = [sys.executable, "-m", "daemon.cli"]
PREFIX = "corona/v1"
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
SHA = "cd" * 32
ACK_TIMEOUT_S = 10.0
ONCE_WAIT_S = "2"
"""--wait-s of the --once runs: retained messages arrive right after the subscription."""


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def verdict_doc(
    node: str, seq: int, end: datetime, label: str = "normal", score: float = 0.1, **extra: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": 1,
        "node": node,
        "seq": seq,
        "window_start": iso(end - timedelta(seconds=30)),
        "window_end": iso(end),
        "label": label,
        "score": score,
        "threshold": 0.5,
        "model": {"name": "corona-demo", "sha256": SHA},
        "level_dbfs": -40.0,
        "clipped": 0.0,
        "overflows": 0,
        "source": "live",
        "replayed": False,
    }
    return {**doc, **extra}


def verdict(
    node: str, seq: int, end: datetime, label: str = "normal", score: float = 0.1, **extra: Any
) -> bytes:
    return json.dumps(verdict_doc(node, seq, end, label, score, **extra)).encode()


def health(capture: str = "running", depth: int = 0, window_s: float | None = None) -> bytes:
    data: dict[str, object] = {
        "uptime_s": 60.0,
        "windows": 2,
        "overflows": 0,
        "capture": capture,
        "outbox_depth": depth,
        "outbox_dropped": 0,
        "last_window": iso(NOW),
        "model": {"name": "corona-demo", "sha256": SHA},
    }
    if window_s is not None:
        data["window_s"] = window_s
    return json.dumps(data).encode()


def alarm(state: str) -> bytes:
    return json.dumps({"state": state, "since": iso(NOW), "k": 3, "n": 5, "score": 0.9}).encode()


def nested(depth: int = 20_000) -> bytes:
    """JSON nested deeper than Python's parser recurses, well under the size bound."""
    return b"[" * depth + b"]" * depth


def publish_raw(broker: Broker, messages: list[tuple[str, bytes]], *, retain: bool) -> None:
    """Publish (topic, payload) pairs at QoS 1 from a plain client, each acknowledged."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            info = client.publish(topic, payload, qos=1, retain=retain)
            info.wait_for_publish(ACK_TIMEOUT_S)
            assert info.is_published(), f"no PUBACK for {topic[:80]!r}"
    finally:
        client.disconnect()
        client.loop_stop()


def watch_config(broker: Broker, folder: Path) -> Path:
    path = folder / "watch.yaml"
    doc = {"node_id": "control-room", "mqtt": {"host": broker.host, "port": broker.port}}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def run_once(command: list[str], config: Path) -> tuple[subprocess.CompletedProcess[bytes], str]:
    """`COMMAND watch --once` from this checkout; the process and its stdout, strict UTF-8."""
    done = subprocess.run(
        [*command, "watch", "--once", "--wait-s", ONCE_WAIT_S, "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        env={**os.environ, "PYTHONUTF8": "1"},
        timeout=60,
        check=False,
    )
    table = done.stdout.decode("utf-8")  # strict: a lone surrogate cannot be in valid UTF-8
    return done, table


def topic(node: str, kind: str) -> str:
    return f"{PREFIX}/{node}/{kind}"
