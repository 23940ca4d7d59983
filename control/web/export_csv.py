"""Verdicts as CSV (`GET /api/export.csv`), produced in chunks while the store pages through them.

Spreadsheets run a cell that starts with `=`, `+`, `-` or `@` (and tab or CR) as a formula, so a
node id like `=HYPERLINK(...)` would run on the engineer's machine: such text cells get a `'`
in front (OWASP's advice). Numbers are written by us as numbers and left alone: prefixing -40.0
would turn every level into text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Final

from control.store.records import ExportRow
from control.web.exchange import finite

HEADER: Final = (
    "node", "seq", "window_end", "received_at", "source", "label", "score", "level_dbfs",
    "mod_db", "hum_db", "crackle_db",
)  # fmt: skip
FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")
CHUNK_BYTES: Final = 64 * 1024
"""Bytes gathered before a chunk goes to the socket: few syscalls, little memory."""


def safe_cell(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _time(seconds: float) -> str:
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return ""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _number(value: float | None) -> str:
    checked = finite(value)
    return "" if checked is None else repr(checked)


def cells(row: ExportRow) -> list[str]:
    return [
        safe_cell(row.node),
        str(row.seq),
        _time(row.window_end),
        _time(row.received_at),
        safe_cell(row.source),
        safe_cell(row.label),
        _number(row.score),
        _number(row.level_dbfs),
        _number(row.mod_db),
        _number(row.hum_db),
        _number(row.crackle_db),
    ]


def csv_chunks(rows: Iterable[ExportRow]) -> Iterator[bytes]:
    """The CSV (header first) in chunks of about CHUNK_BYTES, UTF-8."""
    buffer = io.StringIO()
    # csv quotes a cell holding a comma, quote or newline; a newline in a node id stays inside
    # its quoted cell instead of starting a forged row.
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow(cells(row))
        if buffer.tell() >= CHUNK_BYTES:
            yield _drain(buffer)
    yield _drain(buffer)


def _drain(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue().encode("utf-8", "replace")
    buffer.seek(0)
    buffer.truncate()
    return data
