"""Store records made from valid node payloads (tests/watch_messages.py's documents), and a
small fleet of them: what the collector would store after hearing these nodes.

Every document built here passes the node's JSON Schemas (checked, so a test cannot store
something the gate would have quarantined); `payload` is the text as a node publishes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from control.store import Store
from control.store.records import AlarmIn, HealthIn, Record, StatusIn, VerdictIn
from daemon.schemas import validate
from tests.watch_messages import iso, verdict_doc

WINDOW_S = 30.0


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def physics(mod_db: float = 4.0, hum_db: float = 10.0, crackle_db: float = 0.5) -> dict[str, Any]:
    return {
        "line_hz": 50,
        "mod_db": mod_db,
        "mod_depth": 0.1,
        "hum_db": hum_db,
        "sub_db": 1.0,
        "crackle_db": crackle_db,
    }


def verdict_record(
    doc: dict[str, Any], received_at: float, payload: str | None = None
) -> VerdictIn:
    """A stored verdict from its document (payload: the text as sent, default its JSON)."""
    validate("verdict", doc)
    p = doc.get("physics") or {}
    return VerdictIn(
        node=doc["node"],
        seq=doc["seq"],
        window_end=ts(doc["window_end"]),
        received_at=received_at,
        source=doc["source"],
        replayed=doc["replayed"],
        label=doc["label"],
        score=doc["score"],
        level_dbfs=doc["level_dbfs"],
        mod_db=p.get("mod_db"),
        hum_db=p.get("hum_db"),
        crackle_db=p.get("crackle_db"),
        payload=payload if payload is not None else json.dumps(doc),
    )


def alarm_doc(state: str, since: datetime, seq: int | None = None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"state": state, "since": iso(since), "k": 3, "n": 5, "score": 0.9}
    if seq is not None:
        doc["seq"] = seq
    return {**doc, **extra}


def alarm_record(node: str, doc: dict[str, Any], received_at: float) -> AlarmIn:
    validate("alarm", doc)
    return AlarmIn(
        node=node,
        seq=doc.get("seq"),
        state=doc["state"],
        since=doc["since"],
        since_ts=ts(doc["since"]),
        replayed=bool(doc.get("replayed", False)),
        received_at=received_at,
        payload=json.dumps(doc),
    )


def health_doc(capture: str = "running", depth: int = 0, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "uptime_s": 600.0,
        "windows": 20,
        "overflows": 0,
        "capture": capture,
        "outbox_depth": depth,
        "outbox_dropped": 0,
        "last_window": None,
        "model": {"name": "corona-demo", "sha256": "cd" * 32},
    }
    return {**doc, **extra}


def health_record(node: str, doc: dict[str, Any], received_at: float) -> HealthIn:
    validate("health", doc)
    return HealthIn(node=node, received_at=received_at, payload=json.dumps(doc))


def status_record(node: str, status: str, received_at: float) -> StatusIn:
    return StatusIn(node=node, status=status, received_at=received_at)


def verdict_run(
    node: str,
    end: datetime,
    count: int,
    *,
    first_seq: int = 0,
    skip: frozenset[int] = frozenset(),
    anomalous_from: int | None = None,
    received_at: float | None = None,
    **extra: Any,
) -> list[Record]:
    """count verdicts of one node every 30 s, the last ending at `end`; seqs in skip not sent;
    from seq anomalous_from on, anomalous with a high score and louder physics. Each arrives
    half a second after its window, or at received_at (a replay's windows lie in 1970)."""
    records: list[Record] = []
    for i in range(count):
        seq = first_seq + i
        if seq in skip:
            continue
        window_end = end - timedelta(seconds=WINDOW_S * (count - 1 - i))
        hot = anomalous_from is not None and seq >= anomalous_from
        score = 0.92 if hot else 0.05 + 0.002 * (i % 20)
        doc = verdict_doc(
            node,
            seq,
            window_end,
            "anomalous" if hot else "normal",
            score,
            level_dbfs=-38.0 if hot else -42.0 + (i % 5) * 0.2,
            physics=physics(mod_db=14.0 if hot else 4.0, crackle_db=3.0 if hot else 0.5),
            **extra,
        )
        arrived = received_at if received_at is not None else window_end.timestamp() + 0.5
        records.append(verdict_record(doc, arrived))
    return records


@dataclass(frozen=True)
class Fleet:
    """The nodes fill_fleet stores, by role."""

    quiet: str = "tower-0001"
    alarm: str = "tower-0002"
    replay: str = "bench-replay"
    stale: str = "tower-0004"
    gap_seqs: tuple[int, ...] = (5, 6, 7)


def fill_fleet(store: Store, now: datetime) -> Fleet:
    """Four nodes: a quiet live one with health; one in alarm (raised, not acknowledged, after
    an earlier acknowledged-and-cleared one); a replay (times from 1970, no health); and a
    stale offline one with three verdicts missing."""
    fleet = Fleet()
    t = now.timestamp()
    records: list[Record] = []
    records += verdict_run(fleet.quiet, now - timedelta(seconds=5), 120)
    records += [
        status_record(fleet.quiet, "online", t - 3600),
        health_record(fleet.quiet, health_doc(depth=0), t - 30),
    ]
    records += verdict_run(fleet.alarm, now - timedelta(seconds=5), 120, anomalous_from=100)
    raised = now - timedelta(seconds=5 + 30 * 17)
    records += [
        status_record(fleet.alarm, "online", t - 3600),
        health_record(fleet.alarm, health_doc(depth=3), t - 20),
        alarm_record(fleet.alarm, alarm_doc("alarm", raised - timedelta(hours=1), seq=1), t - 7000),
        alarm_record(
            fleet.alarm, alarm_doc("clear", raised - timedelta(minutes=30), seq=2), t - 5000
        ),
        alarm_record(fleet.alarm, alarm_doc("alarm", raised, seq=102), raised.timestamp() + 1),
    ]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    records += verdict_run(
        fleet.replay,
        epoch + timedelta(seconds=30 * 40),
        40,
        source="replay",
        file="/data/tower17/2026-11-02.wav",
        offset_s=1170.0,
        received_at=t - 60,
    )
    records += [status_record(fleet.replay, "online", t - 100)]
    records += verdict_run(
        fleet.stale, now - timedelta(hours=1), 30, skip=frozenset(fleet.gap_seqs)
    )
    records += [
        status_record(fleet.stale, "offline", t - 3000),
        health_record(fleet.stale, health_doc(capture="fault", depth=12), t - 3600),
    ]
    store.write(records)
    return fleet


def first_alarm_ack(store: Store, node: str) -> None:
    """Acknowledge the node's oldest raised alarm (the history's earlier, cleared one)."""
    raised = [a for a in store.alarms(open_only=False, node=node) if a.state == "alarm"]
    oldest = min(raised, key=lambda a: a.received_at)
    store.ack(oldest.id, "night-shift", "crew checked it: a bird", oldest.received_at + 60)
