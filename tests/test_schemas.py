"""Contract tests: the MQTT payload schemas freeze the field names other programs rely on."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from daemon import schemas
from daemon.errors import DataError

VERDICT_FIELDS = (
    "schema", "node", "seq", "window_start", "window_end", "label", "score", "threshold",
    "model", "level_dbfs", "clipped", "overflows", "source", "replayed",
)  # fmt: skip
"""Schema 1's field names, as the design (README, "MQTT") lists them. Never remove or rename one."""

SHA = "0123456789abcdef" * 4


def verdict() -> dict[str, Any]:
    return {
        "schema": 1,
        "node": "tower-17",
        "seq": 42,
        "window_start": "2026-11-25T04:53:06.536Z",
        "window_end": "2026-11-25T04:53:36.536Z",
        "label": "anomalous",
        "score": 0.93,
        "threshold": 0.5,
        "model": {"name": "corona-demo", "sha256": SHA},
        "level_dbfs": -31.5,
        "clipped": 0.0,
        "overflows": 0,
        "source": "live",
        "replayed": False,
    }


def alarm() -> dict[str, Any]:
    return {"state": "alarm", "since": "2026-11-25T04:53:36.536Z", "k": 3, "n": 5, "score": 0.9}


def health() -> dict[str, Any]:
    return {
        "uptime_s": 3600.5,
        "windows": 120,
        "overflows": 0,
        "capture": "running",
        "outbox_depth": 0,
        "outbox_dropped": 0,
        "last_window": "2026-11-25T04:53:36.536Z",
        "model": {"name": "corona-demo", "sha256": SHA},
    }


class TestVerdictContract:
    def test_required_fields_are_exactly_schema_one(self) -> None:
        """The schema requires exactly the design's schema-1 field names."""
        assert set(schemas.load_schema("verdict")["required"]) == set(VERDICT_FIELDS)

    def test_example_is_valid(self) -> None:
        """A complete schema-1 verdict passes."""
        schemas.validate("verdict", verdict())

    @pytest.mark.parametrize("name", VERDICT_FIELDS)
    def test_each_required_field_is_needed(self, name: str) -> None:
        """Removing any one field makes the verdict invalid, and the error names it."""
        payload = verdict()
        del payload[name]
        with pytest.raises(DataError, match=name):
            schemas.validate("verdict", payload)

    def test_added_fields_are_allowed(self) -> None:
        """Fields may be added (never renamed): an extra field still validates."""
        schemas.validate("verdict", {**verdict(), "sensor": "ok", "future_field": [1, 2]})

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("label", "Anomalous"),
            ("label", 1),
            ("score", 1.5),
            ("score", -0.1),
            ("clipped", 2),
            ("seq", -1),
            ("seq", 1.5),
            ("schema", 2),
            ("source", "file"),
            ("replayed", "false"),
            ("window_end", "2026-11-25 04:53:36"),
            ("window_end", "2026-11-25T05:53:36+01:00"),
            ("window_start", "2026-13-25T04:53:36Z"),
            ("model", {"name": "corona-demo"}),
            ("model", {"name": "corona-demo", "sha256": "xyz"}),
            ("node", "a/b"),
            ("level_dbfs", None),
        ],
    )
    def test_wrong_values_are_invalid(self, name: str, value: Any) -> None:
        """A field with a value outside its contract is rejected, naming the field."""
        payload = verdict()
        payload[name] = value
        with pytest.raises(DataError, match=name):
            schemas.validate("verdict", payload)

    def test_raw_json_bytes_are_accepted(self) -> None:
        """validate takes the MQTT payload bytes as received."""
        schemas.validate("verdict", json.dumps(verdict()).encode())

    def test_non_json_is_a_clear_error(self) -> None:
        """Bytes that are not JSON give a DataError, not a traceback from json."""
        with pytest.raises(DataError, match="not JSON"):
            schemas.validate("verdict", b"\xff{")


class TestAlarmAndHealth:
    def test_alarm_example_is_valid(self) -> None:
        """A complete alarm change passes."""
        schemas.validate("alarm", alarm())

    @pytest.mark.parametrize("name", ["state", "since", "k", "n", "score"])
    def test_alarm_fields_are_required(self, name: str) -> None:
        """Each alarm field is required."""
        payload = alarm()
        del payload[name]
        assert not schemas.is_valid("alarm", payload)

    def test_alarm_state_is_alarm_or_clear(self) -> None:
        """Only the two states exist."""
        assert not schemas.is_valid("alarm", {**alarm(), "state": "on"})

    def test_health_example_is_valid_and_open(self) -> None:
        """A health report passes, with or without fields the daemon may add."""
        schemas.validate("health", health())
        schemas.validate("health", {**health(), "last_window": None, "window_s": 30.0, "x": 1})

    def test_health_by_label_and_mqtt_are_checked_when_present(self) -> None:
        """The optional windows_by_label and mqtt objects pass when well formed, fail when not."""
        good = {
            **health(),
            "windows_by_label": {"normal": 100, "anomalous": 20},
            "mqtt": {"connected": True, "connect_failures": 0},
        }
        schemas.validate("health", good)
        by_label = {"normal": -1, "anomalous": 0}
        assert not schemas.is_valid("health", {**good, "windows_by_label": by_label})
        mqtt = {"connected": "yes", "connect_failures": 0}
        assert not schemas.is_valid("health", {**good, "mqtt": mqtt})

    @pytest.mark.parametrize("name", list(health()))
    def test_health_fields_are_required(self, name: str) -> None:
        """Each health field the control room reads is required."""
        payload = copy.deepcopy(health())
        del payload[name]
        assert not schemas.is_valid("health", payload)


class TestLoading:
    def test_every_schema_is_a_valid_json_schema(self) -> None:
        """Each schema file parses and is itself a valid JSON Schema."""
        for name in schemas.SCHEMA_NAMES:
            assert schemas.is_valid(name, {}) is False

    def test_schema_files_ship_inside_the_package(self) -> None:
        """The files live in daemon/schemas/ (package data), one per payload."""
        folder = Path(schemas.__file__).parent / "schemas"
        assert sorted(p.name for p in folder.glob("*.json")) == [
            f"{n}.schema.json" for n in sorted(schemas.SCHEMA_NAMES)
        ]

    def test_unknown_name_is_refused(self) -> None:
        """Asking for a schema that does not exist says which ones do."""
        with pytest.raises(ValueError, match="verdict"):
            schemas.load_schema("verdikt")
