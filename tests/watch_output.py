"""Reading `corona-control watch` output in tests: rows by node, and what may never be in it."""

from __future__ import annotations

import re
import unicodedata


def cells(line: str) -> list[str]:
    """A table line's cells: columns are separated by two or more spaces."""
    return re.split(r"\s{2,}", line.strip())


def rows(table: str, node: str) -> list[list[str]]:
    """Every row whose first cell is node (a forged row would be a second one)."""
    return [cells(line) for line in table.splitlines() if cells(line)[0] == node]


def row(table: str, node: str) -> list[str]:
    """The one row of node; AssertionError when there is none or more than one."""
    found = rows(table, node)
    assert len(found) == 1, f"{len(found)} rows for {node} in\n{table}"
    return found[0]


def unsafe_characters(text: str) -> list[str]:
    """Characters other than newline a terminal would not show as one plain glyph: controls
    (ESC, BEL, CR, DEL, C1), format characters (bidi, zero-width), surrogates, separators."""
    return [
        c
        for c in text
        if c != "\n"
        and (unicodedata.category(c)[0] in "CM" or unicodedata.category(c) in ("Zl", "Zp"))
    ]
