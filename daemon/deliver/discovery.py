"""Home Assistant MQTT discovery: the retained configs that make a node appear without YAML.

Four entities of one device per node, each reading the node's own topics (README, "MQTT"): status
(a sensor of the status topic itself), alarm (a problem binary sensor of the retained alarm),
score and level (sensors of each verdict). All but status are unavailable unless the status
topic says online, so `stopped` and the Last Will `offline` grey them out. The configs are data
only: `daemon.deliver.publish.Publisher` sends them, retained, on every connect.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from daemon import __version__
from daemon.deliver.publish import Retained, Topics

STATUS_OPTIONS: Final = ("online", "offline", "stopped")
AVAILABLE_TEMPLATE: Final = "{{ 'online' if value == 'online' else 'offline' }}"
"""Home Assistant knows available/unavailable only: `stopped` (a clean exit) is unavailable too."""
_NOT_IN_OBJECT_ID: Final = re.compile(r"[^a-zA-Z0-9_-]")
"""Home Assistant accepts only these characters in a discovery topic's node and object ids."""


def object_id(node: str) -> str:
    """The node id as a discovery topic level (other characters become _)."""
    return _NOT_IN_OBJECT_ID.sub("_", node)


def configs(*, discovery_prefix: str, node: str, topics: Topics, qos: int) -> list[Retained]:
    """The discovery config messages of one node: status, alarm, score and level."""
    device = {
        "identifiers": [f"corona-monitor-{node}"],
        "name": f"Corona monitor {node}",
        "manufacturer": "corona-monitor",
        "model": "acoustic corona-discharge monitor",
        "sw_version": __version__,
    }
    availability = {
        "availability": [{"topic": topics.status, "value_template": AVAILABLE_TEMPLATE}],
        "availability_mode": "all",
    }
    entities: list[tuple[str, str, dict[str, Any]]] = [
        ("sensor", "status", {
            "name": "Status",
            "state_topic": topics.status,
            "device_class": "enum",
            "options": list(STATUS_OPTIONS),
            "entity_category": "diagnostic",
        }),
        ("binary_sensor", "alarm", {
            "name": "Corona alarm",
            "state_topic": topics.alarm,
            "value_template": "{{ value_json.state }}",
            "payload_on": "alarm",
            "payload_off": "clear",
            "device_class": "problem",
            "json_attributes_topic": topics.alarm,
            **availability,
        }),
        ("sensor", "score", {
            "name": "Score",
            "state_topic": topics.verdict,
            "value_template": "{{ value_json.score }}",
            "state_class": "measurement",
            "suggested_display_precision": 3,
            **availability,
        }),
        ("sensor", "level", {
            "name": "Level",
            "state_topic": topics.verdict,
            "value_template": "{{ value_json.level_dbfs }}",
            "unit_of_measurement": "dBFS",
            "state_class": "measurement",
            **availability,
        }),
    ]  # fmt: skip
    prefix = discovery_prefix.rstrip("/")
    messages = []
    for component, name, entity in entities:
        body = {
            **entity,
            "unique_id": f"corona-monitor-{node}-{name}",
            "qos": qos,
            "device": device,
            "origin": {"name": "corona-monitor", "sw_version": __version__},
        }
        topic = f"{prefix}/{component}/{object_id(node)}/{name}/config"
        messages.append(Retained(topic, json.dumps(body, separators=(",", ":"))))
    return messages
