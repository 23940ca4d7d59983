"""Clip names: what a kept clip is called, and the one check a requested name must pass.

``{node}_{seq}_{start}_{kind}.flac``: the node id with every character outside [A-Za-z0-9-]
made '-' (at most 64), the verdict's seq, the window start as 20261201T143000123Z and why it was
kept (anomalous, or a normal sample). The same string is the verdict's ``clip``, the file name
in the clips folder and the id a control room asks for. Nothing here touches the filesystem: a
request is parsed with `parse` and only a name that matches is ever looked up, among the names
the folder lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

Kind = Literal["anomalous", "normal"]
KINDS: Final[tuple[Kind, ...]] = ("anomalous", "normal")
SUFFIX: Final = ".flac"
NODE_MAX: Final = 64
MAX_NAME: Final = 128
"""Longer than any name `clip_name` makes (64 + 20 digits + 19 + 9 + 10); longer input is refused
before the pattern runs."""

PATTERN: Final = re.compile(
    r"(?P<node>[A-Za-z0-9-]{1,64})_(?P<seq>[0-9]{1,20})_(?P<start>[0-9]{8}T[0-9]{9}Z)"
    r"_(?P<kind>anomalous|normal)\.flac"
)
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9-]")
_ISO_MS: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{3})Z"
)


@dataclass(frozen=True)
class ClipName:
    """A valid clip name and its parts."""

    name: str
    node: str
    seq: int
    start: str
    """Window start, compact UTC: 20261201T143000123Z."""
    kind: Kind


def safe_node(node: str) -> str:
    """The node id as a name part: [A-Za-z0-9-] only, 1-64 characters."""
    return _UNSAFE.sub("-", node)[:NODE_MAX] or "node"


def compact_time(iso: str) -> str:
    """2026-12-01T14:30:00.123Z -> 20261201T143000123Z (the verdict's time format)."""
    match = _ISO_MS.fullmatch(iso)
    if match is None:
        raise ValueError(f"not an ISO-8601 UTC time with milliseconds: {iso!r}")
    y, mo, d, h, mi, s, ms = match.groups()
    return f"{y}{mo}{d}T{h}{mi}{s}{ms}Z"


def clip_name(node: str, seq: int, window_start: str, kind: Kind) -> str:
    """The name of the clip of verdict ``seq`` of ``node`` whose window started at window_start."""
    return f"{safe_node(node)}_{seq}_{compact_time(window_start)}_{kind}{SUFFIX}"


def parse(text: object) -> ClipName | None:
    """The parts of a clip name, or None for anything else (wrong type, too long, a path, ...)."""
    if not isinstance(text, str) or len(text) > MAX_NAME:
        return None
    match = PATTERN.fullmatch(text)
    if match is None:
        return None
    kind: Kind = "anomalous" if match["kind"] == "anomalous" else "normal"
    return ClipName(text, match["node"], int(match["seq"]), match["start"], kind)
