"""The live table as text: a pure function of node views, the time and the skip counts.

The one place where what nodes sent reaches the terminal, so every cell goes through
`control.sanitize` here, bounded per column: the table's size depends on the number of nodes,
never on what they send.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Final

from control.sanitize import node_label, terminal_safe, width
from control.view import NodeView

TITLE: Final = "corona-control watch"
_COLUMNS: Final = (
    "NODE", "STATUS", "VERDICT", "SCORE", "MOD2F", "AGE", "ALARM", "CAPTURE", "OUTBOX", "",
)  # fmt: skip
"""MOD2F: how far the high band's modulation at twice the line frequency stands above its
floor (dB, and at which grid): the physical reason a window reads as corona. AGE: since the
last verdict's window ended, or for a replay the file and position of that window. The last
column flags STALE (no recent verdict) and CLOCK? (the node's clock is ahead of ours)."""
NODE_CELLS: Final = 40
CELL_CELLS: Final = 16
"""Every other cell, e.g. a status; the schema keeps most of them to short words anyway."""
FILE_CELLS: Final = 24
NO_HEALTH: Final = "no health"
"""CAPTURE of a node that never sent health: nothing is known of its microphone or outbox."""
STALE: Final = "STALE"
CLOCK_AHEAD: Final = "CLOCK?"


def _duration(seconds_f: float) -> str:
    seconds = round(abs(seconds_f))
    sign = "-" if seconds_f < 0 and seconds else ""
    if seconds < 60:
        return f"{sign}{seconds}s"
    if seconds < 3600:
        return f"{sign}{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{sign}{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{sign}{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _age_text(view: NodeView, now: datetime) -> str:
    """Wall-clock age of a live verdict (negative when ahead); file@position for a replay."""
    if view.replay:
        name = terminal_safe(PurePosixPath(view.file).name, FILE_CELLS) if view.file else "replay"
        if view.offset_s is None:
            return name
        return f"{name}@{terminal_safe(f'{view.offset_s:.1f}', CELL_CELLS)}s"
    age = view.age_s(now)
    return "-" if age is None else _duration(age)


def _mod_text(view: NodeView) -> str:
    if view.mod_db is None:
        return "-"
    return f"{view.mod_db:.1f}dB" + (f"@{view.line_hz}" if view.line_hz else "")


def _flags(view: NodeView, now: datetime) -> str:
    flags = [STALE] if view.stale(now) else []
    if view.clock_ahead(now):
        flags.append(CLOCK_AHEAD)
    return ",".join(flags)


def _cell(text: str | None) -> str:
    return "-" if text is None else terminal_safe(text, CELL_CELLS)


def _row(view: NodeView, now: datetime) -> tuple[str, ...]:
    return (
        node_label(view.node, NODE_CELLS),
        _cell(view.status),
        _cell(view.label),
        _cell(f"{view.score:.3f}" if view.score is not None else None),
        _cell(_mod_text(view)),
        _age_text(view, now),
        _cell(view.alarm),
        _cell(view.capture) if view.has_health else NO_HEALTH,
        _cell(str(view.outbox_depth) if view.outbox_depth is not None else None),
        _flags(view, now),
    )


def _footer(skipped: Mapping[str, int]) -> str | None:
    total = sum(skipped.values())
    if not total:
        return None
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items()))
    noun = "message" if total == 1 else "messages"
    return f"skipped {total} invalid {noun} ({reasons})"


def render_table(
    views: Sequence[NodeView],
    now: datetime,
    *,
    prefix: str = "",
    skipped: Mapping[str, int] | None = None,
) -> str:
    """The table: a title, one row per node, then a footer counting skipped messages.

    Every line ends in a newline, none holds a control character.
    """
    rows = [_row(v, now) for v in views]
    widths = [max(width(row[i]) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
    stamp = now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    title = [TITLE, terminal_safe(prefix, NODE_CELLS), stamp, f"nodes: {len(views)}"]
    lines = ["  ".join(part for part in title if part)]
    for row in [_COLUMNS, *rows]:
        padded = (cell + " " * (w - width(cell)) for cell, w in zip(row, widths, strict=True))
        lines.append("  ".join(padded).rstrip())
    if not views:
        lines.append("(no node has published yet)")
    footer = _footer(skipped or {})
    if footer is not None:
        lines.append(footer)
    return "\n".join(lines) + "\n"
