"""Durable outbox: a message is committed to SQLite before MQTT sees it and deleted on its PUBACK.

One connection behind one lock, so the service thread (add) and paho's network thread (ack) may
both call it; a seq is allocated in the same transaction as the row that carries it, so a crash
can never hand out the same seq twice. Bounded by max_rows and a free-disk floor: the oldest rows
go first, counted (persisted) and logged, never silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, TypeVar

import structlog

from daemon.config import OutboxSettings
from daemon.errors import CoronaError

log = structlog.get_logger(__name__)

T = TypeVar("T")

BYTES_PER_MB: Final = 1024 * 1024
DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
BUSY_TIMEOUT_S: Final = 5.0
"""How long a statement waits for a lock held by another connection (a second daemon on the same
file, or an operator's sqlite3 shell) before failing with OutboxError."""
DROP_LOG_INTERVAL_S: Final = 60.0
"""Drops during a long outage are logged at most this often (with the count since the last
line), which spares the SD card a log line per verdict."""

_CORRUPT_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS messages (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so ids order rows by age
    seq     INTEGER,                            -- the verdict's seq; NULL for unnumbered rows
    topic   TEXT    NOT NULL,                   -- topic suffix under {prefix}/{node}/
    payload BLOB    NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL,
    created REAL    NOT NULL                    -- unix seconds
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('seq', 0), ('dropped', 0);
"""

DropReason = Literal["max_rows", "disk_floor"]


class OutboxError(CoronaError):
    """The outbox database cannot be opened or written; the message names the file."""


class Message(NamedTuple):
    """One MQTT message to store: topic suffix (``verdict``, ``alarm``), payload, QoS, retain."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True)
class Row:
    """A stored message; ``id`` orders rows by age and is what ``ack`` takes."""

    id: int
    seq: int | None
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float


class Outbox:
    """The SQLite outbox file; see the module docstring for the guarantees."""

    def __init__(
        self, path: Path | str, *, max_rows: int = 100_000, min_free_mb: float = 0.0
    ) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.min_free_mb = min_free_mb
        self._lock = threading.Lock()
        self._depth = 0
        self._seq = 0
        self._last_id = 0
        self._dropped = 0
        self._unlogged_drops = 0
        self._last_drop_log = float("-inf")
        self._conn = self._open_or_recover()

    @classmethod
    def from_settings(cls, settings: OutboxSettings) -> Outbox:
        return cls(settings.path, max_rows=settings.max_rows, min_free_mb=settings.min_free_mb)

    # -- writing -------------------------------------------------------------------------------

    def add(self, message: Message) -> Row:
        """Store a message without a seq (alarm changes); committed when this returns."""
        return self._insert(lambda _conn: (None, message))

    def add_numbered(self, build: Callable[[int], Message]) -> Row:
        """Allocate the next seq, build the message with it and store both in one transaction.

        ``build`` runs with the outbox locked, so keep it to formatting the payload. If it raises,
        nothing is stored and the seq is not used up.
        """

        def numbered(conn: sqlite3.Connection) -> tuple[int, Message]:
            seq = self._read_meta(conn, "seq") + 1
            message = build(seq)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (seq,))
            return seq, message

        return self._insert(numbered)

    def ack(self, row_id: int) -> bool:
        """Delete an acknowledged row; True if it was still there (a repeated ack is harmless)."""
        with self._lock:

            def delete() -> int:
                # An ack lost to a power cut only means the row is sent again (at least once,
                # seq de-duplicates), so deletes skip the fsync that adds pay for.
                self._conn.execute("PRAGMA synchronous = NORMAL")
                try:
                    return self._conn.execute(
                        "DELETE FROM messages WHERE id = ?", (row_id,)
                    ).rowcount
                finally:
                    self._conn.execute("PRAGMA synchronous = FULL")

            deleted = self._guarded(delete)
            self._depth -= deleted
            return deleted > 0

    # -- small persistent state -------------------------------------------------------------

    _RESERVED_KEYS = frozenset({"seq", "dropped"})

    def get_state(self, key: str, default: int = 0) -> int:
        """An integer the daemon keeps across restarts beside its messages (e.g. the alarm)."""
        with self._lock:
            row = self._guarded(
                lambda: self._conn.execute(
                    "SELECT value FROM meta WHERE key = ?", (key,)
                ).fetchone()
            )
        return default if row is None else int(row[0])

    def set_state(self, key: str, value: int) -> None:
        """Store an integer under key (committed before returning); seq and dropped are ours."""
        if key in self._RESERVED_KEYS:
            raise ValueError(f"outbox state key {key!r} is reserved")
        with self._lock:
            self._guarded(
                lambda: self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, int(value)),
                )
            )

    # -- reading -------------------------------------------------------------------------------

    def pending(self, limit: int, *, after_id: int = 0, upto_id: int | None = None) -> list[Row]:
        """Up to ``limit`` stored rows, oldest first, with after_id < id <= upto_id."""
        with self._lock:
            sql = "SELECT id, seq, topic, payload, qos, retain, created FROM messages WHERE id > ?"
            args: list[int] = [after_id]
            if upto_id is not None:
                sql += " AND id <= ?"
                args.append(upto_id)
            sql += " ORDER BY id LIMIT ?"
            args.append(limit)
            rows = self._guarded(lambda: self._conn.execute(sql, args).fetchall())
        return [_row(r) for r in rows]

    def newest_retained(self, *, upto_id: int) -> list[Row]:
        """Per topic, the newest stored row published retained (the node's state on that topic
        as far as the stored rows know), among rows with id <= upto_id."""
        with self._lock:
            sql = (
                "SELECT id, seq, topic, payload, qos, retain, created FROM messages WHERE id IN"
                " (SELECT MAX(id) FROM messages WHERE retain = 1 AND id <= ? GROUP BY topic)"
                " ORDER BY id"
            )
            rows = self._guarded(lambda: self._conn.execute(sql, (upto_id,)).fetchall())
        return [_row(r) for r in rows]

    def last_id(self) -> int:
        """The id of the newest row ever added (0 for a new file); later rows have larger ids."""
        with self._lock:
            return self._last_id

    def depth(self) -> int:
        """Rows waiting for an acknowledgement."""
        with self._lock:
            return self._depth

    @property
    def dropped(self) -> int:
        """Rows dropped (max_rows or the disk floor) over the file's whole life."""
        with self._lock:
            return self._dropped

    @property
    def last_seq(self) -> int:
        """The last seq handed out (0 before the first)."""
        with self._lock:
            return self._seq

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------

    def _insert(self, make: Callable[[sqlite3.Connection], tuple[int | None, Message]]) -> Row:
        with self._lock:
            low_disk = self._below_disk_floor()

            def transaction() -> tuple[Row, int]:
                conn = self._conn
                conn.execute("BEGIN IMMEDIATE")
                try:
                    seq, message = make(conn)
                    created = time.time()
                    cur = conn.execute(
                        "INSERT INTO messages (seq, topic, payload, qos, retain, created)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            seq,
                            message.topic,
                            bytes(message.payload),
                            message.qos,
                            int(message.retain),
                            created,
                        ),
                    )
                    row_id = cur.lastrowid
                    if row_id is None:  # an INSERT always sets it; not an assert: -O drops those
                        raise sqlite3.DatabaseError("INSERT returned no row id")
                    # Below the disk floor the file must stop growing: the new row replaces the
                    # oldest (SQLite reuses the freed pages), as if max_rows had been reached.
                    limit = max(1, self._depth) if low_disk else self.max_rows
                    excess = max(0, self._depth + 1 - limit)
                    if excess:
                        conn.execute(
                            "DELETE FROM messages WHERE id IN"
                            " (SELECT id FROM messages ORDER BY id LIMIT ?)",
                            (excess,),
                        )
                        conn.execute(
                            "UPDATE meta SET value = value + ? WHERE key = 'dropped'", (excess,)
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                row = Row(
                    row_id,
                    seq,
                    message.topic,
                    bytes(message.payload),
                    message.qos,
                    bool(message.retain),
                    created,
                )
                return row, excess

            row, excess = self._guarded(transaction)
            self._depth += 1 - excess
            self._last_id = row.id
            if row.seq is not None:
                self._seq = row.seq
            if excess:
                self._dropped += excess
                self._log_drops(excess, "disk_floor" if low_disk else "max_rows")
            return row

    def _below_disk_floor(self) -> bool:
        if self.min_free_mb <= 0:
            return False
        try:
            free_b = shutil.disk_usage(self.path.parent).free
        except OSError:
            return False  # cannot tell; the insert itself will report a full disk
        return free_b < self.min_free_mb * BYTES_PER_MB

    def _log_drops(self, count: int, reason: DropReason) -> None:
        self._unlogged_drops += count
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            log.warning(
                "outbox_dropped_oldest",
                path=str(self.path),
                reason=reason,
                count=self._unlogged_drops,
                dropped_total=self._dropped,
                max_rows=self.max_rows,
                min_free_mb=self.min_free_mb,
            )
            self._unlogged_drops = 0
            self._last_drop_log = now

    def _guarded(self, op: Callable[[], T]) -> T:
        """Run one database operation (lock held); a corrupt file is set aside and the op rerun."""
        try:
            return op()
        except sqlite3.DatabaseError as err:
            if not _is_corrupt(err):
                raise self._error("cannot use", err) from err
            self._set_aside(err, lost_rows=self._depth)
            self._conn = self._connect_fresh(seq_at_least=self._seq, id_at_least=self._last_id)
            try:
                return op()
            except sqlite3.Error as again:
                raise self._error("cannot write the new file", again) from again

    def _open_or_recover(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        except OSError as err:
            raise OutboxError(
                f"outbox.path: cannot create the folder {self.path.parent}: {err}"
            ) from err
        try:
            return self._connect()
        except sqlite3.DatabaseError as err:
            if not _is_corrupt(err):
                raise self._error("cannot open", err) from err
            # Nobody knows the last seq in memory yet: take it from the damaged file if it still
            # reads, and never from below the clock (the new file starts at seq_floor). Rows
            # it still shows count as dropped; when none can be read the loss is unknown.
            salvaged = _salvage_seq(self.path)
            self._set_aside(err, lost_rows=_salvage_row_count(self.path))
            try:
                return self._connect_fresh(seq_at_least=salvaged, id_at_least=0)
            except sqlite3.Error as again:
                raise self._error("cannot create a new file", again) from again

    def _connect(self) -> sqlite3.Connection:
        created = not self.path.exists()
        if created:
            # Created here with 0600 so SQLite (which gives -wal and -shm the database file's
            # mode) never makes a world-readable file whatever the umask.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, FILE_MODE))
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode WAL refused (got {mode})")
            # FULL: in WAL mode each commit fsyncs the WAL, so a verdict that add() returned is
            # on the card even after a power cut. NORMAL would only lose the last commits, not
            # corrupt the file, but "committed" would then mean "committed unless the power
            # goes": at one verdict per 30 s the fsync is free. Acks relax it (see ack).
            conn.execute("PRAGMA synchronous = FULL")
            conn.executescript(_SCHEMA)
            if created:
                # A new file cannot know what seqs this node used before: it was deleted, lost
                # with its card, or never existed. Starting at the clock keeps a seq from ever
                # repeating for the node (before: a deleted file restarted at 1 with new content,
                # and subscribers that de-duplicate by seq dropped real verdicts).
                conn.execute(
                    "UPDATE meta SET value = max(value, ?) WHERE key = 'seq'", (seq_floor(),)
                )
            self._seq = self._read_meta(conn, "seq")
            self._dropped = self._read_meta(conn, "dropped")
            self._depth = int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
            last = conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'messages'"
            ).fetchone()
            self._last_id = int(last[0]) if last else 0
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_fresh(self, *, seq_at_least: int, id_at_least: int) -> sqlite3.Connection:
        dropped = self._dropped
        conn = self._connect()
        # The rows of the damaged file are gone: they count as dropped, and seq carries on. Row
        # ids carry on too, so a reader that remembers the last id it saw (the drainer) never
        # mistakes a new row for an old one.
        conn.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?)", (id_at_least,)
        )
        self._last_id = id_at_least
        conn.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (max(seq_at_least, self._seq),))
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'dropped'", (max(dropped, self._dropped),)
        )
        self._seq = self._read_meta(conn, "seq")
        self._dropped = self._read_meta(conn, "dropped")
        return conn

    def _set_aside(self, err: sqlite3.DatabaseError, *, lost_rows: int | None) -> None:
        """Move the damaged file (and its -wal/-shm) to .corrupt-<UTC time>; a tower keeps going."""
        # AttributeError: found at open, before there was a connection.
        with contextlib.suppress(AttributeError, sqlite3.Error):
            self._conn.close()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    source.replace(Path(f"{aside}{suffix}"))
        except OSError as move_err:
            raise OutboxError(
                f"{self.path}: the outbox is corrupt ({err}) and cannot be moved aside: {move_err}"
            ) from move_err
        if lost_rows is not None:
            self._dropped += lost_rows
            self._depth = 0
        log.error(
            "outbox_corrupt",
            path=str(self.path),
            moved_to=str(aside),
            error=str(err),
            lost_rows=lost_rows,
            seq=self._seq,
        )

    @staticmethod
    def _read_meta(conn: sqlite3.Connection, key: str) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _error(self, what: str, err: sqlite3.Error) -> OutboxError:
        return OutboxError(f"{self.path}: {what} the outbox database: {err}")


def _is_corrupt(err: sqlite3.DatabaseError) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _CORRUPT_CODES
    text = str(err).lower()
    return "malformed" in text or "not a database" in text


def _salvage_seq(path: Path) -> int:
    """The last seq a damaged file still shows (its meta row or its newest row), else 0."""
    best = 0
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        for sql in ("SELECT value FROM meta WHERE key = 'seq'", "SELECT max(seq) FROM messages"):
            try:
                row = conn.execute(sql).fetchone()
            except sqlite3.Error:
                continue
            if row and row[0] is not None:
                best = max(best, int(row[0]))
    finally:
        conn.close()
    return best


def _salvage_row_count(path: Path) -> int | None:
    """How many stored rows a damaged file still shows, or None when it cannot be counted."""
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def _row(r: tuple[Any, ...]) -> Row:
    """A Row from one `SELECT id, seq, topic, payload, qos, retain, created` result."""
    return Row(
        id=r[0], seq=r[1], topic=r[2], payload=bytes(r[3]), qos=r[4], retain=bool(r[5]),
        created=r[6],
    )  # fmt: skip


def seq_floor() -> int:
    """The first seq of a new outbox file: microseconds since 1970, so no earlier file of this
    node can have reached it. Safe while fewer than a million messages a second are numbered
    (one per window live; replay at full speed makes tens) and the clock does not go back; an
    RTC-less board before NTP can undercut it (its verdicts then say the clock was not
    synchronized), and a salvaged value from a damaged file wins if higher. Below 2**53 (exact
    in JSON and JavaScript) until the year 2255."""
    return time.time_ns() // 1_000
