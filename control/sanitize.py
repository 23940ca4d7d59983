"""Make untrusted text safe to print on an operator's terminal: one function per kind of text.

A publisher controls topic levels and payload strings. Printed raw, an ESC starts a terminal
escape sequence (clear the screen, retitle the window), a newline forges a table row, bidi and
zero-width characters make lookalike names, and a lone surrogate makes `print` raise. So every
character that is not plainly visible is replaced by its escape (`\\x1b`, `\\u202e`), a
backslash itself by `\\\\` (so an escape shown cannot be faked with literal text), and the result
is cut to a bounded number of terminal cells, ending in an ellipsis when cut.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

ELLIPSIS: Final = "…"
_PLAIN_NODE: Final = re.compile(r"[A-Za-z0-9._-]+")
NODE_MARK: Final = "?"
"""Prefix of a node id shown escaped: it holds characters outside [A-Za-z0-9._-]."""

# Unicode categories never printed as themselves: controls (C0, DEL, C1), format characters
# (bidi overrides and isolates, zero-width space/joiners, word joiner, BOM), surrogates,
# private use, unassigned; line and paragraph separators; combining marks (they stack onto the
# cell before them, including the column separator, and can spill over the rows around).
_HIDDEN_PREFIXES: Final = ("C", "M")
_HIDDEN_CATEGORIES: Final = frozenset({"Zl", "Zp"})
_WIDE: Final = frozenset({"W", "F"})
_LAST_ASCII: Final = 0x7E


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _visible(char: str) -> str:
    """The character itself if a terminal shows it as one plain glyph, else its escape."""
    if char == "\\":
        return "\\\\"
    if char == " ":
        return char
    category = unicodedata.category(char)
    if category.startswith(_HIDDEN_PREFIXES) or category in _HIDDEN_CATEGORIES:
        return _escape(char)
    if category == "Zs":  # no-break, em, ideographic ... spaces: lookalikes of " "
        return _escape(char)
    return char


def _cells(char: str) -> int:
    """Terminal cells one visible character takes (East Asian wide and fullwidth take two)."""
    return 2 if unicodedata.east_asian_width(char) in _WIDE else 1


def width(text: str) -> int:
    """Terminal cells that already-safe text takes."""
    return sum(_cells(char) for char in text)


def terminal_safe(text: str, max_cells: int, *, ascii_only: bool = False) -> str:
    """text with every hidden character escaped, cut to at most max_cells cells (ellipsis).

    ascii_only escapes all of non-ASCII too (for names, where a Cyrillic o, U+043E, must not
    pass for a Latin one). Stops reading at the first character past the bound, so a 10 MB
    string costs no more than a short one.
    """
    if max_cells < 1:
        raise ValueError(f"max_cells: must be at least 1, got {max_cells}")
    parts: list[str] = []
    used = 0
    for char in text:
        piece = _escape(char) if ascii_only and ord(char) > _LAST_ASCII else _visible(char)
        cells = sum(_cells(c) for c in piece)
        if used + cells > max_cells:
            # Cut: make room for the ellipsis within the bound.
            while parts and used + 1 > max_cells:
                used -= width(parts.pop())
            parts.append(ELLIPSIS)
            return "".join(parts)
        parts.append(piece)
        used += cells
    return "".join(parts)


def node_label(node: str, max_cells: int) -> str:
    """A node id for display: plain ids ([A-Za-z0-9._-]) as they are, others marked, with all
    but printable ASCII escaped.

    Node ids are how an operator tells towers apart: `tower-1` with a zero-width space or a
    Cyrillic letter in it shows as `?tower\\u200b-1` or `?t\\u043ewer-1`, never as a second
    `tower-1`; a node id that is literally `tower\\u200b1` shows its backslash doubled.
    """
    if _PLAIN_NODE.fullmatch(node):
        return terminal_safe(node, max_cells)
    return terminal_safe(NODE_MARK + node, max_cells, ascii_only=True)
