"""The JSON Schemas of the MQTT payloads (daemon/schemas/NAME.schema.json) and a validator.

Names: "verdict", "alarm", "health". Used by the daemon's tests and by anyone checking messages.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from daemon.errors import DataError

SCHEMA_NAMES = ("verdict", "alarm", "health")

_FORMATS = jsonschema.FormatChecker()


def _is_utc_date_time(value: object) -> bool:
    # jsonschema's own date-time check needs an optional package; ISO-8601 in UTC is all we use.
    if not isinstance(value, str):
        return True
    return datetime.fromisoformat(value).utcoffset() == timedelta(0)


_FORMATS.checks("date-time", raises=ValueError)(_is_utc_date_time)


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema `name` ("verdict", "alarm" or "health")."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    text = (resources.files("daemon") / "schemas" / f"{name}.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=_FORMATS)


def validate(name: str, payload: Any) -> None:
    """Raise DataError naming the field and the reason unless payload fits schema `name`.

    payload may be the decoded object, or the raw JSON as bytes or str.
    """
    if isinstance(payload, bytes | str):
        try:
            payload = json.loads(payload)
        except ValueError as err:
            raise DataError(f"{name} payload: not JSON: {err}") from err
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(payload))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise DataError(f"{name} payload: {where}: {error.message}")


def is_valid(name: str, payload: Any) -> bool:
    """Whether payload fits schema `name`."""
    try:
        validate(name, payload)
    except DataError:
        return False
    return True
