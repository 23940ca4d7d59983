"""What goes into the store (one record per checked message) and what comes out of it.

The collector builds the `*In` records from documents the gate has checked; the web side reads
the others. Text in them is still untrusted: whoever shows it escapes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class VerdictIn:
    node: str
    seq: int
    window_end: float
    """Unix seconds of the verdict's window_end (replays: a position in the file, from 1970)."""
    received_at: float
    source: str
    replayed: bool
    """Sent late from the node's outbox (its lag is the outage, not the collector's)."""
    label: str
    score: float
    level_dbfs: float
    mod_db: float | None
    hum_db: float | None
    crackle_db: float | None
    payload: str
    """The verdict JSON exactly as published."""
    clip: str | None = None
    """The evidence clip the verdict names (a checked clip name), if any."""


@dataclass(frozen=True)
class AlarmIn:
    node: str
    seq: int | None
    state: str
    since: str
    since_ts: float
    replayed: bool
    received_at: float
    payload: str


@dataclass(frozen=True)
class StatusIn:
    node: str
    status: str
    received_at: float


@dataclass(frozen=True)
class HealthIn:
    node: str
    received_at: float
    payload: str


@dataclass(frozen=True)
class QuarantineIn:
    topic: str
    reason: str
    payload: bytes
    """The whole payload as received; the store keeps its first bytes and its size."""
    received_at: float


@dataclass(frozen=True)
class ClipIn:
    """A node's answer to a clip request: the FLAC bytes of one window."""

    node: str
    name: str
    seq: int
    flac: bytes
    received_at: float


@dataclass(frozen=True)
class ClipErrorIn:
    """A node's refusal of a clip request (no such clip, too large, ...)."""

    node: str
    name: str | None
    seq: int | None
    error: str
    received_at: float


Record = VerdictIn | AlarmIn | StatusIn | HealthIn | QuarantineIn | ClipIn | ClipErrorIn


@dataclass(frozen=True)
class WriteResult:
    """What one batch did: rows stored per kind, and messages already stored (duplicates)."""

    stored: dict[str, int]
    duplicates: int
    unrequested: int = 0
    """Clips nobody asked for: not stored."""


@dataclass(frozen=True)
class Alarm:
    """One alarm change and, for a raised alarm, its acknowledgement."""

    id: int
    node: str
    seq: int | None
    state: str
    since: str
    received_at: float
    replayed: bool
    acked_by: str | None
    acked_at: float | None
    ack_note: str | None
    payload: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "node": self.node,
            "seq": self.seq,
            "state": self.state,
            "since": self.since,
            "received_at": self.received_at,
            "replayed": self.replayed,
            "acked_by": self.acked_by,
            "acked_at": self.acked_at,
            "ack_note": self.ack_note,
        }


@dataclass(frozen=True)
class Gap:
    """Seqs from_seq..to_seq (inclusive) were never received.

    reason "missing": verdicts lost or not yet delivered. "new_outbox": the node started a new
    outbox file (lost, deleted or set aside as corrupt), whose seqs start at its clock in
    microseconds: those seqs were never handed out, but what the old file still held is lost.
    """

    from_seq: int
    to_seq: int
    reason: Literal["missing", "new_outbox"]

    @property
    def count(self) -> int:
        return self.to_seq - self.from_seq + 1

    def as_json(self) -> dict[str, Any]:
        return {
            "from_seq": self.from_seq,
            "to_seq": self.to_seq,
            "count": self.count,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class NodeState:
    """A node as the store knows it; the JSON documents as published (None before the first)."""

    node: str
    first_seen: float
    status: str | None
    status_at: float | None
    last_seq: int | None
    last_verdict: str | None
    last_verdict_at: float | None
    last_health: str | None
    health_at: float | None
    alarm: Alarm | None
    gaps: list[Gap]

    @property
    def missing(self) -> int:
        """Seqs missing in "missing" gaps: the number the fleet table shows."""
        return sum(g.count for g in self.gaps if g.reason == "missing")


@dataclass(frozen=True)
class SeriesPoint:
    """The verdicts of one time bucket, summarized for a plot."""

    start: float
    end: float
    count: int
    anomalous: int
    score_max: float
    score_mean: float
    level_dbfs: float
    mod_db: float | None
    hum_db: float | None
    crackle_db: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "count": self.count,
            "anomalous": self.anomalous,
            "score_max": self.score_max,
            "score_mean": self.score_mean,
            "level_dbfs": self.level_dbfs,
            "mod_db": self.mod_db,
            "hum_db": self.hum_db,
            "crackle_db": self.crackle_db,
        }


@dataclass(frozen=True)
class ExportRow:
    node: str
    seq: int
    window_end: float
    received_at: float
    source: str
    label: str
    score: float
    level_dbfs: float
    mod_db: float | None
    hum_db: float | None
    crackle_db: float | None


@dataclass(frozen=True)
class Session:
    user: str
    csrf_token: str
    expires_at: float


@dataclass(frozen=True)
class StoreCounts:
    """Sizes the collector's /metrics reports (cheap: bounded tables and per-node ranges)."""

    nodes: int
    quarantined: int
    missing: int


@dataclass(frozen=True)
class ClipState:
    """Where a clip request stands: stored (with its size), refused by the node, or pending."""

    state: Literal["stored", "refused", "pending"]
    size: int | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "size": self.size, "error": self.error}


@dataclass(frozen=True)
class Label:
    node: str
    seq: int
    label: str
    labelled_by: str
    labelled_at: float
    note: str

    def as_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "seq": self.seq,
            "label": self.label,
            "labelled_by": self.labelled_by,
            "labelled_at": self.labelled_at,
            "note": self.note,
        }


@dataclass(frozen=True)
class LabelledClip:
    """A label with its clip's audio and the verdict it judges: one row of a training set."""

    label: Label
    clip_name: str
    flac: bytes
    verdict: str | None
    """The verdict JSON as published (None when retention already took it)."""


@dataclass(frozen=True)
class EvidenceWindow:
    """A window whose verdict names a clip: its verdict, the clip's state here, its label."""

    seq: int
    window_end: float
    label: str
    score: float
    clip: str
    clip_state: ClipState | None
    person: Label | None

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "window_end": self.window_end,
            "label": self.label,
            "score": self.score,
            "clip": self.clip,
            "clip_state": None if self.clip_state is None else self.clip_state.as_json(),
            "person": None if self.person is None else self.person.as_json(),
        }
