"""Store records built from realistic payloads (tests/watch_messages.py's documents)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from control.ingest import Ignored, to_record
from control.store.records import AlarmIn, Record, VerdictIn
from tests.watch_messages import NOW, PREFIX, iso, verdict_doc

RECEIVED = NOW.timestamp() + 1.0


def verdict_in(node: str, seq: int, *, end: datetime | None = None, **extra: Any) -> VerdictIn:
    """The record the collector makes of a verdict with this seq; its window ends seq windows
    after NOW (modulo a million: seqs of a new outbox are about 1.8e15)."""
    moment = end if end is not None else NOW + timedelta(seconds=30 * (seq % 10**6))
    doc = verdict_doc(node, seq, moment, **extra)
    record = to_record(PREFIX, f"{PREFIX}/{node}/verdict", json.dumps(doc).encode(), RECEIVED)
    assert isinstance(record, VerdictIn), record
    return record


def alarm_in(
    node: str, state: str, seq: int | None, *, since: datetime = NOW, replayed: bool = False
) -> AlarmIn:
    doc: dict[str, Any] = {"state": state, "since": iso(since), "k": 3, "n": 5, "score": 0.9}
    if seq is not None:
        doc |= {"seq": seq, "replayed": replayed}
    record = to_record(PREFIX, f"{PREFIX}/{node}/alarm", json.dumps(doc).encode(), RECEIVED)
    assert isinstance(record, AlarmIn), record
    return record


def records_of(topic_payloads: list[tuple[str, bytes]]) -> list[Record]:
    out = []
    for topic, payload in topic_payloads:
        record = to_record(PREFIX, topic, payload, RECEIVED)
        if isinstance(record, Ignored):
            raise AssertionError(f"{topic}: not a kind the store keeps")
        out.append(record)
    return out
