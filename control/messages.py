"""Untrusted MQTT messages in, checked documents out: size, JSON and schema, or a skip reason.

The control room's one gate: every payload passes `read` before any code looks inside it. What
fails is not an error to raise (a publisher's bad message must not stop the room) but a `Skip`
with a short reason the caller counts and shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from daemon.errors import DataError
from daemon.schemas import SCHEMA_NAMES, validate

MAX_PAYLOAD_BYTES: Final = 64 * 1024
"""Largest payload read: a verdict is about 1 KiB and health about 2 KiB; a 10 MB one is an
attack on the table's size and the parser's time, not a report."""
MAX_STATUS_BYTES: Final = 256
"""A status is one word (online, stopped, offline)."""


class Skip(Exception):  # noqa: N818 - a skipped message is an outcome, not a failure of ours
    """A message the control room does not use; `reason` is a short counter name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Status:
    """A node's status payload, decoded (invalid UTF-8 replaced); still untrusted text."""

    text: str


def _no_constant(name: str) -> float:
    # NaN and Infinity are not JSON; Python's parser takes them unless told not to.
    raise ValueError(f"{name} is not JSON")


def read(kind: str, payload: bytes) -> dict[str, Any] | Status:
    """The checked document of one message of `kind` ("status", "verdict", "alarm", "health").

    Raises Skip("too large" | "not JSON" | "nested too deeply" | "not a JSON object" |
    "invalid" | "unknown kind").
    """
    if kind == "status":
        if len(payload) > MAX_STATUS_BYTES:
            raise Skip("too large")
        return Status(payload.decode("utf-8", errors="replace").strip())
    if kind not in SCHEMA_NAMES:
        raise Skip("unknown kind")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Skip("too large")
    try:
        data = json.loads(payload, parse_constant=_no_constant)
    except RecursionError:
        # json's C parser recurses per nesting level: [[[[...]]]] in 64 KiB is deep enough.
        raise Skip("nested too deeply") from None
    except ValueError:  # includes UnicodeDecodeError
        raise Skip("not JSON") from None
    if not isinstance(data, dict):
        raise Skip("not a JSON object")
    try:
        validate(kind, data)
    except DataError:
        raise Skip("invalid") from None
    except RecursionError:
        raise Skip("nested too deeply") from None
    return data
