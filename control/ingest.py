"""One MQTT message to one store record: a checked verdict, alarm, status or health, or a
quarantine entry saying why not. Never raises for anything a publisher can send.

The gate is `control.messages.read` (size, JSON, schema); this module adds what only the
collector needs: the topic's node must be a plain identifier and agree with the payload, and the
payload must be the UTF-8 text it will be served as.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from control.messages import Skip, Status, read
from control.store.records import (
    AlarmIn,
    ClipErrorIn,
    ClipIn,
    HealthIn,
    QuarantineIn,
    Record,
    StatusIn,
    VerdictIn,
)
from daemon.deliver.publish import KINDS
from daemon.evidence import names

MAX_NODE_CHARS: Final = 128
MAX_CLIP_BYTES: Final = 16 * 1024 * 1024
"""A 30 s clip is 1-2.6 MiB; the node sends at most clips.max_publish_kb (4 MiB by default)."""
MAX_CLIP_ERROR_BYTES: Final = 4096
MAX_ERROR_CHARS: Final = 300
MAX_SEQ: Final = 2**63 - 1
"""The schema only says seq >= 0; both databases store it as a signed 64-bit integer."""
_STATUS: Final = re.compile(r"[a-z][a-z_-]{0,31}")
"""A status is one lower-case word (online, offline, stopped)."""


@dataclass(frozen=True)
class Ignored:
    """A message under the prefix that is not ours to store (a clip, a clip request)."""

    kind: str


def node_problem(node: str) -> str | None:
    """Why a topic's node id cannot be stored, or None.

    Invisible characters (controls, bidi overrides, zero-width, surrogates) and spaces make
    names that look like another node's or forge a row; a real node id is a host name.
    """
    if len(node) > MAX_NODE_CHARS:
        return "node id too long"
    for char in node:
        category = unicodedata.category(char)
        if category[0] in "CZ":
            return "node id has an invisible character"
    return None


def parse_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """(node, kind) of `{prefix}/{node}/{kind...}`, else None (another prefix: not ours)."""
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head):
        return None
    node, sep, kind = topic[len(head) :].partition("/")
    if not sep or not node:
        return None
    return node, kind


def to_record(prefix: str, topic: str, payload: bytes, received_at: float) -> Record | Ignored:
    """The record to store for one message (a QuarantineIn when it fails a check)."""
    try:
        return _to_record(prefix, topic, payload, received_at)
    except Skip as skip:
        return QuarantineIn(topic, skip.reason, payload, received_at)
    except Exception as err:  # noqa: BLE001 - a publisher's message must never stop the room
        return QuarantineIn(topic, f"unreadable ({type(err).__name__})", payload, received_at)


def _to_record(prefix: str, topic: str, payload: bytes, received_at: float) -> Record | Ignored:
    parsed = parse_topic(prefix, topic)
    if parsed is None:
        return QuarantineIn(topic, "unknown topic", payload, received_at)
    node, kind = parsed
    is_clip = kind.startswith("clip/")
    if kind not in KINDS and not is_clip:
        return Ignored(kind.split("/", 1)[0])
    problem = node_problem(node)
    if problem is not None:
        return QuarantineIn(topic, problem, payload, received_at)
    if is_clip:
        return _clip(node, kind.removeprefix("clip/"), topic, payload, received_at)
    return _checked(node, kind, payload, received_at)


def _clip(node: str, leaf: str, topic: str, payload: bytes, at: float) -> Record | Ignored:
    """A node's clip (clip/NAME), its refusal (clip/error), or a request (not ours to store)."""
    if leaf == "request":
        return Ignored("clip request")
    if leaf == "error":
        return _clip_error(node, payload, at)
    name = names.parse(leaf)
    if name is None:
        return QuarantineIn(topic, "not a clip name", payload, at)
    problem = (
        "clip of another node"
        if name.node != names.safe_node(node)
        else "clip too large"
        if len(payload) > MAX_CLIP_BYTES
        else "not a FLAC clip"
        if not payload.startswith(b"fLaC")
        else None
    )
    if problem is not None:
        return QuarantineIn(topic, problem, payload, at)
    return ClipIn(node, leaf, name.seq, payload, at)


def _clip_error(node: str, payload: bytes, at: float) -> ClipErrorIn:
    if len(payload) > MAX_CLIP_ERROR_BYTES:
        raise Skip("too large")
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Skip("not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str):
        raise Skip("invalid")
    name = names.parse(doc.get("id"))
    seq = doc.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        seq = None
    error = doc["error"][:MAX_ERROR_CHARS]
    return ClipErrorIn(node, None if name is None else name.name, seq, error, at)


def _checked(node: str, kind: str, payload: bytes, received_at: float) -> Record:
    """The record of a message on one of our kinds' topics; raises Skip when it fails a check."""
    doc = read(kind, payload)
    if isinstance(doc, Status):
        if not _STATUS.fullmatch(doc.text):
            raise Skip("invalid")
        return StatusIn(node, doc.text, received_at)
    if doc.get("node", node) != node:
        raise Skip("node differs from the topic")
    if not 0 <= doc.get("seq", 0) <= MAX_SEQ:
        raise Skip("seq out of range")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Skip("not UTF-8") from None  # JSON over MQTT is UTF-8; others parse but aren't
    if kind == "verdict":
        return _verdict(node, doc, text, received_at)
    if kind == "alarm":
        return AlarmIn(
            node=node,
            seq=doc.get("seq"),
            state=doc["state"],
            since=doc["since"],
            since_ts=_timestamp(doc["since"]),
            replayed=bool(doc.get("replayed", False)),
            received_at=received_at,
            payload=text,
        )
    return HealthIn(node, received_at, text)


def _verdict(node: str, doc: dict[str, Any], text: str, received_at: float) -> VerdictIn:
    physics = doc.get("physics") or {}
    level = float(doc["level_dbfs"])
    if not math.isfinite(level):
        raise Skip("invalid")  # 1e999 parses as infinity, and the schema only says "number"
    return VerdictIn(
        node=node,
        seq=doc["seq"],
        window_end=_timestamp(doc["window_end"]),
        received_at=received_at,
        source=doc["source"],
        replayed=bool(doc["replayed"]),
        label=doc["label"],
        score=float(doc["score"]),
        level_dbfs=level,
        mod_db=_number(physics.get("mod_db")),
        hum_db=_number(physics.get("hum_db")),
        crackle_db=_number(physics.get("crackle_db")),
        payload=text,
        clip=_clip_name(node, doc.get("clip")),
    )


def _clip_name(node: str, value: Any) -> str | None:
    """The verdict's clip when it is a clip name of this node (else the page offers none)."""
    name = clip_of(node, value)
    return None if name is None else name.name


def clip_of(node: str, value: object) -> names.ClipName | None:
    """value parsed as a clip name that belongs to `node` (its node part is the node's safe
    name), else None: the one check for clip names from verdicts, the page and requests."""
    name = names.parse(value)
    return name if name is not None and name.node == names.safe_node(node) else None


def _timestamp(text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise Skip("invalid time") from None  # the schema's pattern admits 2026-13-45


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
