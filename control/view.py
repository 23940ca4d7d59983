"""What the control room knows about one node (`NodeView`), folded from checked messages.

`fold` takes a document `control.messages.read` has already checked against its schema, so the
fields are of the right types; their text is still untrusted (the table escapes it). Freshness
follows the verdict's own clock for live nodes, the file position for replays (which have no
wall clock), and the watcher's clock of arrival when the node's clock runs ahead of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from control.messages import Status
from daemon.constants import WINDOW_S

STALE_WINDOWS: Final = 2
"""A node whose last verdict ended more than this many windows ago is stale."""
CLOCK_AHEAD_TOLERANCE_S: Final = 10.0
"""How far a live verdict's window_end may lie ahead of the watcher's clock before the node's
clock is suspect: NTP-synced clocks agree to milliseconds, and a verdict is published after its
window ends; a Pi without a real-time clock can be hours off."""


@dataclass(frozen=True)
class NodeView:
    """One node's latest known state; None (or has_health False) where nothing arrived yet."""

    node: str
    status: str | None = None
    label: str | None = None
    score: float | None = None
    mod_db: float | None = None
    """Line-locked modulation of the last verdict's high band (physics.mod_db), dB."""
    line_hz: int | None = None
    seq: int | None = None
    verdict_end: datetime | None = None
    received: datetime | None = None
    """The watcher's clock when the last verdict arrived."""
    source: str | None = None
    """The last verdict's `source`: live, or replay (times are positions in a file)."""
    file: str | None = None
    offset_s: float | None = None
    alarm: str | None = None
    has_health: bool = False
    capture: str | None = None
    outbox_depth: int | None = None
    window_s: float | None = None

    @property
    def replay(self) -> bool:
        return self.source == "replay"

    def _window_s(self) -> float:
        return self.window_s if self.window_s is not None else WINDOW_S

    def clock_ahead(self, now: datetime) -> bool:
        """A live verdict whose window ends beyond the tolerance after `now`."""
        if self.replay or self.verdict_end is None:
            return False
        return (self.verdict_end - now).total_seconds() > CLOCK_AHEAD_TOLERANCE_S

    def age_s(self, now: datetime) -> float | None:
        """Seconds since the end of the last live verdict's window (negative: ahead of now).

        None without a verdict, and for a replay, whose window times count from 1970.
        """
        if self.verdict_end is None or self.replay:
            return None
        return (now - self.verdict_end).total_seconds()

    def stale(self, now: datetime, after_s: float | None = None) -> bool:
        """No verdict yet, or the last live one is more than two windows (or after_s) old.

        A replay is never stale by the wall clock. A node whose clock runs ahead is judged by
        when its verdict arrived, so a far-future window_end cannot keep it fresh forever.
        after_s is control.yaml's stale_after_s, when set.
        """
        if self.verdict_end is None:
            return True
        if self.replay:
            return False
        # Seconds as floats: a timedelta of a hostile window_s (1e300) would overflow.
        limit_s = after_s if after_s is not None else STALE_WINDOWS * self._window_s()
        if self.clock_ahead(now):
            return self.received is None or (now - self.received).total_seconds() > limit_s
        return (now - self.verdict_end).total_seconds() > limit_s


def _finite(value: Any) -> float | None:
    """value as a float if it is a JSON number a float can hold, else None."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits
        return None


def _utc(text: str) -> datetime:
    # The schema's pattern admits only ISO-8601 in UTC (Z or +00:00).
    return datetime.fromisoformat(text).astimezone(UTC)


def _fold_verdict(view: NodeView, data: dict[str, Any], received: datetime) -> NodeView:
    seq: int = data["seq"]
    # The outbox replays old verdicts after an outage: the newest (highest seq) stays shown.
    if view.seq is not None and seq < view.seq:
        return view
    physics = data.get("physics") or {}
    file = data.get("file")
    return replace(
        view,
        label=data["label"],
        score=_finite(data["score"]),
        mod_db=_finite(physics.get("mod_db")),
        line_hz=physics.get("line_hz"),
        seq=seq,
        verdict_end=_utc(data["window_end"]),
        received=received,
        source=data["source"],
        # Not in the schema: replay adds them, anyone may send them; keep only the right types.
        file=file if isinstance(file, str) else None,
        offset_s=_finite(data.get("offset_s")),
    )


def fold(view: NodeView, kind: str, doc: dict[str, Any] | Status, received: datetime) -> NodeView:
    """The node's view after one checked message of `kind`, arrived at `received`."""
    if isinstance(doc, Status):
        return replace(view, status=doc.text)
    if kind == "verdict":
        return _fold_verdict(view, doc, received)
    if kind == "alarm":
        return replace(view, alarm=doc["state"])
    if kind == "health":
        window_s = _finite(doc.get("window_s"))
        return replace(
            view,
            has_health=True,
            capture=doc["capture"],
            outbox_depth=doc["outbox_depth"],
            window_s=window_s if window_s is not None else view.window_s,
        )
    return view
