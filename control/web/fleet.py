"""A node's row for the API (`GET /api/nodes`): the store's state, judged by control.view.

Freshness is `NodeView`'s (the same rules as `corona-control watch`: a replay is never stale by
the wall clock and its age is its position in the file; a clock ahead of ours is judged by
arrival), so the page and the terminal cannot disagree about a node. The documents a node sent
(last verdict, last health) are spliced in as published.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Final

import structlog

from control.sanitize import node_label, terminal_safe
from control.store.records import Alarm, NodeState
from control.view import NodeView, fold
from control.web.exchange import finite, with_raw

log = structlog.get_logger(__name__)

LABEL_CELLS: Final = 64
"""Characters of a node's display label: a 10 kB node id must not widen every row."""
FILE_CHARS: Final = 64


def alarm_json(alarm: Alarm | None) -> dict[str, Any]:
    """The node's current alarm change; every key present (null) before its first."""
    if alarm is None:
        return {
            "id": None,
            "state": None,
            "since": None,
            "acked_by": None,
            "acked_at": None,
            "ack_note": None,
        }
    doc = alarm.as_json()
    return {key: doc[key] for key in ("id", "state", "since", "acked_by", "acked_at", "ack_note")}


def _loads(text: str | None, node: str, kind: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        log.warning("stored_payload_unreadable", node=terminal_safe(node, LABEL_CELLS), kind=kind)
        return None
    return doc if isinstance(doc, dict) else None


def view_of(state: NodeState) -> NodeView:
    """The node's NodeView, folded from what the store kept (checked documents)."""
    view = NodeView(node=state.node, status=state.status)
    verdict = _loads(state.last_verdict, state.node, "verdict")
    health = _loads(state.last_health, state.node, "health")
    arrived = datetime.fromtimestamp(state.last_verdict_at or state.first_seen, UTC)
    try:
        if verdict is not None:
            view = fold(view, "verdict", verdict, arrived)
        if health is not None:
            view = fold(view, "health", health, arrived)
    except (KeyError, TypeError, ValueError, OverflowError):
        # The gate checked these documents before they were stored: this is a damaged row,
        # shown as a node that sent nothing readable rather than a failed fleet page.
        log.warning("stored_payload_unusable", node=terminal_safe(state.node, LABEL_CELLS))
        return NodeView(node=state.node, status=state.status)
    if state.alarm is not None:
        view = fold(view, "alarm", {"state": state.alarm.state}, arrived)
    return view


def node_json(
    state: NodeState,
    now: datetime,
    extra: Mapping[str, Any] | None = None,
    *,
    stale_after_s: float | None = None,
) -> str:
    """One node as a JSON object's text (with `extra` members added); stale_after_s is
    control.yaml's (None: two of the node's windows)."""
    view = view_of(state)
    doc = {
        "node": state.node,
        "label": node_label(state.node, LABEL_CELLS),
        "status": state.status,
        "status_at": state.status_at,
        "alarm": alarm_json(state.alarm),
        "seq": state.last_seq,
        "verdict": view.label,
        "score": finite(view.score),
        "mod_db": finite(view.mod_db),
        "line_hz": view.line_hz,
        "window_end": None if view.verdict_end is None else view.verdict_end.timestamp(),
        "received_at": state.last_verdict_at,
        "source": view.source,
        "file": None if view.file is None else PurePosixPath(view.file).name[:FILE_CHARS],
        "offset_s": finite(view.offset_s),
        "age_s": finite(view.age_s(now)),
        "stale": view.stale(now, stale_after_s),
        "clock_ahead": view.clock_ahead(now),
        "health": view.has_health,
        "health_at": state.health_at,
        "health_age_s": None if state.health_at is None else now.timestamp() - state.health_at,
        "capture": view.capture,
        "outbox_depth": view.outbox_depth,
        "gaps": state.missing,
        "gap_ranges": sum(1 for g in state.gaps if g.reason == "missing"),
        "new_outbox": sum(1 for g in state.gaps if g.reason == "new_outbox"),
        "first_seen": state.first_seen,
        **(extra or {}),
    }
    return with_raw(doc, {"last_verdict": state.last_verdict, "last_health": state.last_health})


def nodes_json(
    states: list[NodeState], now: datetime, *, stale_after_s: float | None = None
) -> str:
    rows = (node_json(s, now, stale_after_s=stale_after_s) for s in states)
    return "[" + ",".join(rows) + "]"
