"""control.ingest: what the collector makes of each message, for what a broker may let through."""

from __future__ import annotations

import json

import pytest

from control.ingest import MAX_NODE_CHARS, Ignored, to_record
from control.store.records import AlarmIn, HealthIn, QuarantineIn, StatusIn, VerdictIn
from tests.watch_messages import NOW, PREFIX, alarm, health, topic, verdict


def reason(topic_name: str, payload: bytes) -> str:
    record = to_record(PREFIX, topic_name, payload, 0.0)
    assert isinstance(record, QuarantineIn), record
    assert record.payload == payload  # quarantine keeps what came, for a person to look at
    return record.reason


@pytest.mark.parametrize(
    "node",
    ["t\x1b]0;title\x07", "t\nfake row", "tower\u200b17", "\u202etower", "t\ud800", "a b"],
    ids=["osc-escape", "newline", "zero-width", "rtl-override", "lone-surrogate", "space"],
)
def test_a_node_id_with_invisible_characters_is_quarantined(node: str) -> None:
    assert reason(topic(node, "verdict"), verdict(node, 1, NOW)) == (
        "node id has an invisible character"
    )


def test_an_overlong_node_id_is_quarantined() -> None:
    node = "t" * (MAX_NODE_CHARS + 1)
    assert reason(topic(node, "status"), b"online") == "node id too long"


def test_topics_outside_our_layout() -> None:
    assert reason("corona/v1/just-a-node", b"{}") == "unknown topic"
    assert reason("elsewhere/t1/verdict", b"{}") == "unknown topic"
    assert to_record(PREFIX, topic("t1", "clip/w.flac"), b"fLaC", 0.0) == Ignored("clip")
    assert to_record(PREFIX, topic("t1", "clip/request"), b"{}", 0.0) == Ignored("clip")


def test_each_kind_becomes_its_record() -> None:
    v = to_record(PREFIX, topic("t1", "verdict"), verdict("t1", 5, NOW), 1.0)
    assert isinstance(v, VerdictIn)
    assert (v.seq, v.window_end, v.mod_db) == (5, NOW.timestamp(), None)
    a = to_record(PREFIX, topic("t1", "alarm"), alarm("alarm"), 1.0)
    assert isinstance(a, AlarmIn)
    assert (a.state, a.seq, a.since_ts) == ("alarm", None, NOW.timestamp())
    assert isinstance(to_record(PREFIX, topic("t1", "health"), health(), 1.0), HealthIn)
    assert to_record(PREFIX, topic("t1", "status"), b"offline", 1.0) == StatusIn(
        "t1", "offline", 1.0
    )


def test_a_payload_naming_another_node_is_quarantined() -> None:
    doc = json.loads(health())
    doc["node"] = "t2"
    assert reason(topic("t1", "health"), json.dumps(doc).encode()) == "node differs from the topic"


def test_an_impossible_date_the_pattern_admits_is_quarantined() -> None:
    payload = verdict("t1", 1, NOW).replace(
        b'"window_end": "2026-11-25', b'"window_end": "2026-13-45'
    )
    assert reason(topic("t1", "verdict"), payload) == "invalid"  # the schema checks date-time
