"""control.ingest: what the collector makes of each message, for what a broker may let through."""

from __future__ import annotations

import json

import pytest

from control.ingest import MAX_CLIP_BYTES, MAX_NODE_CHARS, Ignored, to_record
from control.store.records import (
    AlarmIn,
    ClipErrorIn,
    ClipIn,
    HealthIn,
    QuarantineIn,
    StatusIn,
    VerdictIn,
)
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
    assert to_record(PREFIX, topic("t1", "clip/request"), b"{}", 0.0) == Ignored("clip request")
    assert to_record(PREFIX, topic("t1", "metrics"), b"1", 0.0) == Ignored("metrics")


CLIP = "t1_5_20261125T120000000Z_anomalous.flac"


def test_clip_answers_are_checked_before_they_are_stored() -> None:
    record = to_record(PREFIX, topic("t1", f"clip/{CLIP}"), b"fLaC\x00\x00", 0.0)
    assert isinstance(record, ClipIn)
    assert (record.name, record.seq) == (CLIP, 5)
    assert reason(topic("t1", "clip/w.flac"), b"fLaC") == "not a clip name"
    assert reason(topic("t1", "clip/../../etc/passwd"), b"fLaC") == "not a clip name"
    assert reason(topic("t2", f"clip/{CLIP}"), b"fLaC") == "clip of another node"
    assert reason(topic("t1", f"clip/{CLIP}"), b"RIFF....WAVE") == "not a FLAC clip"
    big = b"fLaC" + bytes(MAX_CLIP_BYTES)
    assert reason(topic("t1", f"clip/{CLIP}"), big) == "clip too large"


def test_a_clip_refusal_names_the_clip_by_id_or_seq() -> None:
    by_id = json.dumps({"error": "no such clip", "id": CLIP}).encode()
    assert to_record(PREFIX, topic("t1", "clip/error"), by_id, 0.0) == ClipErrorIn(
        "t1", CLIP, None, "no such clip", 0.0
    )
    long = json.dumps({"error": "x" * 4000, "seq": 5}).encode()
    refusal = to_record(PREFIX, topic("t1", "clip/error"), long, 0.0)
    assert isinstance(refusal, ClipErrorIn)
    assert (refusal.seq, len(refusal.error)) == (5, 300)
    assert reason(topic("t1", "clip/error"), b"[1]") == "invalid"


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
