"""Durable outbox: a message is committed to SQLite before MQTT sees it and deleted on its PUBACK.

One connection behind one lock, so the service thread (add) and paho's network thread (ack) may
both call it; a seq is allocated in the same transaction as the row that carries it, so a crash
can never hand out the same seq twice. Bounded by max_rows: when rows must go, normal verdicts go
before anomalous ones (oldest first) and alarm changes never; drops are counted (persisted) and
logged, never silently.

A tower never stops listening for lack of disk. When the file cannot be written (a full or
read-only card, an immutable file, an I/O error) or the free space is below the disk floor
(checked before each write, not discovered by an SQLite error), the outbox goes on in memory:
`degraded` says why, the pending rows move with it, at most `MEMORY_MAX_ROWS` are kept, and while
the broker is reachable they are sent and acknowledged as before, so nothing is dropped. Every
`RETRY_DISK_S` it tries the file again and, once it can, writes what is pending back and goes on
from there. Seqs taken in memory start at the clock (`seq_floor`), so a crash in memory, whose
counter the file never saw, cannot make the next run repeat them.
"""

from __future__ import annotations

import contextlib
import errno
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
from daemon.private_dirs import make_private_dir

log = structlog.get_logger(__name__)

T = TypeVar("T")

BYTES_PER_MB: Final = 1024 * 1024
FILE_MODE: Final = 0o600
BUSY_TIMEOUT_S: Final = 5.0
"""How long a statement waits for a lock held by another connection (a second daemon on the same
file, or an operator's sqlite3 shell) before failing with OutboxError."""
DROP_LOG_INTERVAL_S: Final = 60.0
"""Drops during a long outage are logged at most this often (with the count since the last
line), which spares the SD card a log line per verdict."""

_CORRUPT_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_UNWRITABLE_CODES: Final = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PERM,
    }
)
_UNWRITABLE_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM,
                                       errno.EDQUOT, errno.EIO})  # fmt: skip
MEMORY_MAX_ROWS: Final = 5_000
"""Rows kept in memory at most while the disk cannot be used (about 5 MB of verdicts: 42 hours
of 30 s windows), on top of max_rows."""
RETRY_DISK_S: Final = 60.0
"""How often the degraded outbox tries the file again."""
WAL_CHECKPOINT_PAGES: Final = 64
"""Checkpoint the WAL every 64 pages (256 KiB) and truncate it back to `WAL_LIMIT_BYTES`: with
SQLite's default of 1000 pages the WAL alone filled a 1 MiB card after 59 verdicts."""
WAL_LIMIT_BYTES: Final = 256 * 1024

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

_DROP_SQL: Final = """
DELETE FROM messages WHERE id IN (
    SELECT id FROM messages WHERE retain = 0
    ORDER BY json_extract(CAST(payload AS TEXT), '$.label') = 'anomalous', id LIMIT ?
)
"""
"""The rows to drop first: unretained (never an alarm change), normal before anomalous, oldest
first. A payload that is not JSON counts as normal."""

DropReason = Literal["max_rows", "memory"]


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
        self,
        path: Path | str,
        *,
        max_rows: int = 100_000,
        min_free_mb: float = 0.0,
        retry_disk_s: float = RETRY_DISK_S,
    ) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.min_free_mb = min_free_mb
        self.retry_disk_s = retry_disk_s
        self._lock = threading.Lock()
        self._depth = 0
        self._seq = 0
        self._last_id = 0
        self._dropped = 0
        self._unlogged_drops = 0
        self._last_drop_log = float("-inf")
        self.degraded: str | None = None
        """Why the outbox runs in memory (the disk cannot be used), or None while on disk."""
        self._retry_disk_at = float("inf")
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
            if self._unlogged_drops:
                self._last_drop_log = float("-inf")
                self._log_drops(0, "memory" if self.degraded else "max_rows")
            if self.degraded is not None:
                self._try_disk_again()  # what is pending is not lost with the process if it can
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------

    def _insert(self, make: Callable[[sqlite3.Connection], tuple[int | None, Message]]) -> Row:
        with self._lock:
            if self.degraded is None and self._below_disk_floor():
                self._degrade(f"free disk below outbox.min_free_mb ({self.min_free_mb:g} MB)")
            elif self.degraded is not None and time.monotonic() >= self._retry_disk_at:
                self._try_disk_again()
            in_memory = self.degraded is not None

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
                    limit = min(self.max_rows, MEMORY_MAX_ROWS) if in_memory else self.max_rows
                    excess = max(0, self._depth + 1 - limit)
                    if excess:
                        excess = conn.execute(_DROP_SQL, (excess,)).rowcount
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
                self._log_drops(excess, "memory" if in_memory else "max_rows")
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
            if self.degraded is None and _is_unwritable(err):
                self._degrade(f"cannot write {self.path}: {err}")
                return op()
            if not _is_corrupt(err):
                raise self._error("cannot use", err) from err
            self._set_aside(err, lost_rows=self._depth)
            self._conn = self._connect_fresh(seq_at_least=self._seq, id_at_least=self._last_id)
            try:
                return op()
            except sqlite3.Error as again:
                raise self._error("cannot write the new file", again) from again

    # -- degraded: in memory while the disk cannot be used -------------------------------------

    def _open_in_memory(self, reason: str) -> sqlite3.Connection:
        """At start: the file cannot be written. What it still shows (pending rows, counters)
        moves to memory, so nothing it held is lost when the disk comes back."""
        rows: list[Row] = []
        if self.path.exists():
            self._seq = max(self._seq, _salvage_seq(self.path))
            with contextlib.suppress(sqlite3.Error):
                reader = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True)
                try:
                    rows = [_row(r) for r in reader.execute(_SELECT_ALL)]
                    self._dropped = self._read_meta(reader, "dropped")
                    last = reader.execute(
                        "SELECT seq FROM sqlite_sequence WHERE name = 'messages'"
                    ).fetchone()
                    self._last_id = int(last[0]) if last else 0
                finally:
                    reader.close()
        return self._memory_connection(reason, rows=rows)

    def _degrade(self, reason: str) -> None:
        """While running: move what is pending from the file to memory and go on there."""
        try:
            rows = self._conn.execute(_SELECT_ALL).fetchall()
        except sqlite3.Error as err:
            rows = []
            self._dropped += self._depth
            log.error("outbox_rows_lost", path=str(self.path), rows=self._depth, error=str(err))
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._conn = self._memory_connection(reason, rows=[_row(r) for r in rows])

    def _memory_connection(self, reason: str, *, rows: list[Row]) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.executescript(_SCHEMA)
        self._seq = max(self._seq, seq_floor())
        _copy_rows(conn, rows, seq=self._seq, dropped=self._dropped, last_id=self._last_id)
        self._depth = len(rows)
        self.degraded = reason
        self._retry_disk_at = time.monotonic() + self.retry_disk_s
        log.error(
            "outbox_degraded",
            path=str(self.path),
            reason=reason,
            pending=len(rows),
            keeps_at_most=min(self.max_rows, MEMORY_MAX_ROWS),
            hint="verdicts are kept in memory and sent while the broker is reachable",
        )
        return conn

    def _try_disk_again(self) -> None:
        """Write what is pending in memory to the file and go on there, if the disk allows."""
        self._retry_disk_at = time.monotonic() + self.retry_disk_s
        if self._below_disk_floor():
            return
        rows = [_row(r) for r in self._conn.execute(_SELECT_ALL)]
        try:
            make_private_dir(self.path.parent)
            disk, _created = _open_file(self.path)
        except OSError:
            return
        except sqlite3.Error as err:
            log.info("outbox_disk_still_unusable", path=str(self.path), error=str(err))
            return
        try:
            disk.execute("BEGIN IMMEDIATE")
            disk.execute("DELETE FROM messages")  # what the file still held was moved or sent
            _copy_rows(disk, rows, seq=self._seq, dropped=self._dropped, last_id=self._last_id)
            disk.execute("COMMIT")
        except sqlite3.Error as err:
            with contextlib.suppress(sqlite3.Error):
                disk.close()
            log.info("outbox_disk_still_unusable", path=str(self.path), error=str(err))
            return
        self._conn.close()
        self._conn = disk
        log.warning("outbox_on_disk_again", path=str(self.path), pending=len(rows),
                    was=self.degraded)  # fmt: skip
        self.degraded = None
        self._retry_disk_at = float("inf")

    def _open_or_recover(self) -> sqlite3.Connection:
        try:
            make_private_dir(self.path.parent)
        except OSError as err:
            if err.errno not in _UNWRITABLE_ERRNOS:
                raise OutboxError(
                    f"outbox.path: cannot create the folder {self.path.parent}: {err}"
                ) from err
            return self._open_in_memory(f"cannot create the folder {self.path.parent}: {err}")
        if self._below_disk_floor():
            return self._open_in_memory(
                f"free disk below outbox.min_free_mb ({self.min_free_mb:g} MB)"
            )
        try:
            return self._connect()
        except OSError as err:
            if err.errno not in _UNWRITABLE_ERRNOS:
                raise OutboxError(f"{self.path}: cannot create the outbox file: {err}") from err
            return self._open_in_memory(f"cannot create {self.path}: {err}")
        except sqlite3.DatabaseError as err:
            if _is_unwritable(err):
                return self._open_in_memory(f"cannot write {self.path}: {err}")
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
        conn, created = _open_file(self.path)
        try:
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


_SELECT_ALL: Final = (
    "SELECT id, seq, topic, payload, qos, retain, created FROM messages ORDER BY id"
)
_INSERT_WITH_ID: Final = (
    "INSERT INTO messages (id, seq, topic, payload, qos, retain, created)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _open_file(path: Path) -> tuple[sqlite3.Connection, bool]:
    """Open (or create, 0600) the outbox file with its pragmas and schema; (connection, whether
    the file was created here). The connection is closed again if any step fails."""
    created = not path.exists()
    if created:
        # Created here with 0600 so SQLite (which gives -wal and -shm the database file's
        # mode) never makes a world-readable file whatever the umask.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, FILE_MODE))
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        # Exclusive before WAL: SQLite then keeps the WAL index in heap memory instead of a
        # shared mmap of -shm. A write to that mapping after the file turned immutable or
        # read-only killed the daemon with SIGBUS; now it is an SQLite error, and the outbox
        # goes on in memory. It also makes a second process on the same file (another daemon,
        # or a replay with the daemon's config) fail with "database is locked" instead of
        # sharing its rows.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"journal_mode WAL refused (got {mode})")
        # FULL: in WAL mode each commit fsyncs the WAL, so a verdict that add() returned is on
        # the card even after a power cut. NORMAL would only lose the last commits, not corrupt
        # the file, but "committed" would then mean "committed unless the power goes": at one
        # verdict per 30 s the fsync is free. Acks relax it (see ack).
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        conn.executescript(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn, created


def _copy_rows(
    conn: sqlite3.Connection, rows: list[Row], *, seq: int, dropped: int, last_id: int
) -> None:
    """Insert rows (with their ids) and the counters into an outbox database (caller commits)."""
    conn.executemany(
        _INSERT_WITH_ID,
        [(r.id, r.seq, r.topic, r.payload, r.qos, int(r.retain), r.created) for r in rows],
    )
    conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'seq'", (seq,))
    conn.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'dropped'", (dropped,))
    # Row ids carry on, so the drainer's cursors (ids) stay valid across the switch.
    conn.execute("DELETE FROM sqlite_sequence WHERE name = 'messages'")
    conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?)", (last_id,))


def _is_unwritable(err: sqlite3.DatabaseError) -> bool:
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _UNWRITABLE_CODES
    text = str(err).lower()
    return any(word in text for word in ("full", "readonly", "read-only", "disk i/o"))


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
