"""The control room's database: every verdict, alarm change, status and health message, once.

`Store.write` takes a batch of records in one transaction (the collector acknowledges the batch
to the broker only after it returns). Verdicts are de-duplicated on (node, seq) by the primary
key; the seqs received are kept as ranges per node, so the gaps are read, never searched for.
Every other method is a read for the API, or the page's few writes (acknowledgements, users,
sessions). SQL is written once for SQLite and PostgreSQL (see backend.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, Final

from control.store import migrate
from control.store.backend import Backend, Pool, StoreError, driver_errors, parse_url, transaction
from control.store.records import (
    Alarm,
    AlarmIn,
    ClipErrorIn,
    ClipIn,
    ClipState,
    EvidenceWindow,
    ExportRow,
    Gap,
    HealthIn,
    Label,
    LabelledClip,
    NodeState,
    QuarantineIn,
    Record,
    SeriesPoint,
    Session,
    StatusIn,
    StoreCounts,
    VerdictIn,
    WriteResult,
)

QUARANTINE_KEEP_BYTES: Final = 4096
"""Of a quarantined payload, the first bytes kept: enough to see what it was, not a 10 MB one."""
QUARANTINE_MAX_ROWS: Final = 100_000
"""Quarantine rows kept at most (the oldest go first): a flood of junk must not fill the disk."""
NEW_OUTBOX_MIN_GAP: Final = 10**9
"""A hole this large cannot be lost verdicts (at one per second that is 31 years of them): the
node began a new outbox file, whose seqs start at its clock in microseconds (about 1.8e15)."""
DELETE_CHUNK: Final = 5000
"""Rows one retention statement deletes, so the collector's writes never wait long behind it."""

_ALARM_COLUMNS: Final = (
    "a.id, a.node, a.seq, a.state, a.since, a.received_at, a.replayed, a.acked_by, a.acked_at,"
    " a.ack_note, a.payload"
)


class AckError(Exception):
    """Why an acknowledgement was refused: `status` is the HTTP status the API answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UserExistsError(Exception):
    pass


class Store:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self.backend: Backend = pool.backend

    @classmethod
    def open(cls, url: str, *, migrate_schema: bool = True) -> Store:
        """The store at `url`, its schema brought up to date (or checked to be, when not asked)."""
        pool = Pool(parse_url(url))
        try:
            if migrate_schema:
                migrate.migrate(pool)
            else:
                have, want = migrate.current_version(pool), migrate.latest_version()
                if have != want:
                    raise StoreError(
                        f"{pool.backend.display}: schema {have}, this corona-control needs"
                        f" {want}: run `corona-control migrate`"
                    )
        except BaseException:
            pool.close()
            raise
        return cls(pool)

    def close(self) -> None:
        self._pool.close()

    def _sql(self, text: str) -> str:
        return self.backend.sql(text)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            with self._pool.connection() as conn:
                return list(conn.execute(self._sql(sql), tuple(params)).fetchall())
        except driver_errors(self.backend) as err:
            raise StoreError(f"{self.backend.display}: {err}") from err

    # -- writing (the collector) -------------------------------------------------------------

    def write(self, records: Sequence[Record]) -> WriteResult:
        """Store a batch in one transaction; committed (durably) when this returns."""
        stored: Counter[str] = Counter()
        duplicates = unrequested = 0
        # One order for every writer: two collectors on one PostgreSQL lock nodes in the same
        # order, so their batches cannot deadlock.
        ordered = sorted(records, key=_write_order)
        try:
            with self._pool.connection() as conn, transaction(self.backend, conn):
                for record in ordered:
                    kind, new = self._write_one(conn, record)
                    if new:
                        stored[kind] += 1
                    elif kind == "clip":
                        unrequested += 1
                    else:
                        duplicates += 1
        except driver_errors(self.backend) as err:
            raise StoreError(f"{self.backend.display}: cannot store a batch: {err}") from err
        return WriteResult(dict(stored), duplicates, unrequested)

    def _write_one(self, conn: Any, record: Record) -> tuple[str, bool]:
        """(kind, whether it was new) for one record, written on conn."""
        writers: dict[type, tuple[str, Any]] = {
            VerdictIn: ("verdict", self._write_verdict),
            AlarmIn: ("alarm", self._write_alarm),
            StatusIn: ("status", self._write_status),
            HealthIn: ("health", self._write_health),
            ClipIn: ("clip", self._write_clip),
            ClipErrorIn: ("clip_error", self._write_clip_error),
            QuarantineIn: ("quarantine", self._write_quarantine),
        }
        kind, write = writers[type(record)]
        return kind, bool(write(conn, record))

    def _ensure_node(self, conn: Any, node: str, at: float) -> None:
        conn.execute(
            self._sql("INSERT INTO nodes (node, first_seen) VALUES (?, ?) ON CONFLICT DO NOTHING"),
            (node, at),
        )
        if self.backend.kind == "postgresql":
            # The node's row is the lock for its seq ranges (SQLite has one writer anyway).
            conn.execute("SELECT 1 FROM nodes WHERE node = %s FOR UPDATE", (node,))

    def _write_verdict(self, conn: Any, v: VerdictIn) -> bool:
        self._ensure_node(conn, v.node, v.received_at)
        inserted = conn.execute(
            self._sql(
                "INSERT INTO verdicts (node, seq, window_end, received_at, source, label, score,"
                " level_dbfs, mod_db, hum_db, crackle_db, payload, clip)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
            ),
            (
                v.node,
                v.seq,
                v.window_end,
                v.received_at,
                v.source,
                v.label,
                v.score,
                v.level_dbfs,
                v.mod_db,
                v.hum_db,
                v.crackle_db,
                v.payload,
                v.clip,
            ),
        ).rowcount
        if inserted != 1:
            return False
        self._add_seq(conn, v.node, v.seq)
        # The node's last verdict is its newest by seq: replayed ones arrive after live ones.
        conn.execute(
            self._sql(
                "UPDATE nodes SET last_seq = ?, last_verdict = ?, last_verdict_at = ?"
                " WHERE node = ? AND (last_seq IS NULL OR last_seq < ?)"
            ),
            (v.seq, v.payload, v.received_at, v.node, v.seq),
        )
        return True

    def _add_seq(self, conn: Any, node: str, seq: int) -> None:
        """Merge seq into the node's ranges (it is new: the verdict insert just succeeded)."""
        left = conn.execute(
            self._sql(
                "SELECT first_seq, last_seq FROM seq_ranges WHERE node = ? AND first_seq <= ?"
                " ORDER BY first_seq DESC LIMIT 1"
            ),
            (node, seq),
        ).fetchone()
        if left is not None and left[1] >= seq:
            return  # inside a range already: only after retention trimmed the verdicts' start
        right = conn.execute(
            self._sql("SELECT last_seq FROM seq_ranges WHERE node = ? AND first_seq = ?"),
            (node, seq + 1),
        ).fetchone()
        joins_left = left is not None and left[1] == seq - 1
        if joins_left and right is not None:
            conn.execute(
                self._sql("DELETE FROM seq_ranges WHERE node = ? AND first_seq = ?"),
                (node, seq + 1),
            )
            conn.execute(
                self._sql("UPDATE seq_ranges SET last_seq = ? WHERE node = ? AND first_seq = ?"),
                (right[0], node, left[0]),
            )
        elif joins_left:
            conn.execute(
                self._sql("UPDATE seq_ranges SET last_seq = ? WHERE node = ? AND first_seq = ?"),
                (seq, node, left[0]),
            )
        elif right is not None:
            conn.execute(
                self._sql("UPDATE seq_ranges SET first_seq = ? WHERE node = ? AND first_seq = ?"),
                (seq, node, seq + 1),
            )
        else:
            conn.execute(
                self._sql("INSERT INTO seq_ranges (node, first_seq, last_seq) VALUES (?, ?, ?)"),
                (node, seq, seq),
            )

    def _write_alarm(self, conn: Any, a: AlarmIn) -> bool:
        self._ensure_node(conn, a.node, a.received_at)
        # The retained alarm comes again at every reconnect: the same change, stored once.
        key = f"seq:{a.seq}" if a.seq is not None else f"since:{a.since}:{a.state}"
        row = conn.execute(
            self._sql(
                "INSERT INTO alarms (node, dedupe_key, seq, state, since, since_ts, received_at,"
                " replayed, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING id"
            ),
            (
                a.node,
                key,
                a.seq,
                a.state,
                a.since,
                a.since_ts,
                a.received_at,
                a.replayed,
                a.payload,
            ),
        ).fetchone()
        if row is None:
            return False
        # The node's alarm state is its newest change by seq (then time): a replayed history
        # arriving after a live change does not overwrite it.
        seq = -1 if a.seq is None else a.seq
        conn.execute(
            self._sql(
                "UPDATE nodes SET alarm_id = ?, alarm_seq = ?, alarm_since = ? WHERE node = ?"
                " AND (alarm_id IS NULL OR alarm_seq < ? OR (alarm_seq = ? AND alarm_since <= ?))"
            ),
            (row[0], seq, a.since_ts, a.node, seq, seq, a.since_ts),
        )
        return True

    def _write_status(self, conn: Any, s: StatusIn) -> bool:
        self._ensure_node(conn, s.node, s.received_at)
        changed = conn.execute(
            self._sql(
                "UPDATE nodes SET status = ?, status_at = ? WHERE node = ?"
                " AND (status IS NULL OR status <> ?)"
            ),
            (s.status, s.received_at, s.node, s.status),
        ).rowcount
        if changed != 1:
            return False  # the retained status again: nothing changed
        conn.execute(
            self._sql("INSERT INTO statuses (node, status, received_at) VALUES (?, ?, ?)"),
            (s.node, s.status, s.received_at),
        )
        return True

    def _write_health(self, conn: Any, h: HealthIn) -> bool:
        self._ensure_node(conn, h.node, h.received_at)
        conn.execute(
            self._sql("INSERT INTO health (node, received_at, payload) VALUES (?, ?, ?)"),
            (h.node, h.received_at, h.payload),
        )
        conn.execute(
            self._sql(
                "UPDATE nodes SET last_health = ?, health_at = ? WHERE node = ?"
                " AND (health_at IS NULL OR health_at <= ?)"
            ),
            (h.payload, h.received_at, h.node, h.received_at),
        )
        return True

    def _write_clip(self, conn: Any, c: ClipIn) -> bool:
        """Store a clip that was asked for (False, nothing stored, for any other)."""
        inserted = conn.execute(
            self._sql(
                "INSERT INTO clips (node, name, seq, received_at, size, flac)"
                " SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM clip_requests"
                " WHERE node = ? AND name = ?) ON CONFLICT DO NOTHING"
            ),
            (c.node, c.name, c.seq, c.received_at, len(c.flac), c.flac, c.node, c.name),
        ).rowcount
        return int(inserted) == 1

    def _write_clip_error(self, conn: Any, e: ClipErrorIn) -> bool:
        # A refusal names the clip by id, or by seq when asked by seq: mark the matching requests.
        key: str | int
        if e.name is not None:
            where, key = "name = ?", e.name
        elif e.seq is not None:
            where, key = "seq = ?", e.seq
        else:
            return False
        changed = conn.execute(
            self._sql(f"UPDATE clip_requests SET error = ? WHERE node = ? AND {where}"),
            (_storable(e.error), e.node, key),
        ).rowcount
        return int(changed) > 0

    def _write_quarantine(self, conn: Any, q: QuarantineIn) -> bool:
        conn.execute(
            self._sql(
                "INSERT INTO quarantine (received_at, topic, reason, size, payload)"
                " VALUES (?, ?, ?, ?, ?)"
            ),
            (
                q.received_at,
                _storable(q.topic),
                q.reason,
                len(q.payload),
                q.payload[:QUARANTINE_KEEP_BYTES],
            ),
        )
        return True

    # -- reading (the API) -------------------------------------------------------------------

    def nodes(self, only: str | None = None) -> list[NodeState]:
        """Every node (or the one named `only`), by name."""
        where, params = (" WHERE n.node = ?", (only,)) if only is not None else ("", ())
        rows = self._read(
            "SELECT n.node, n.first_seen, n.status, n.status_at, n.last_seq, n.last_verdict,"
            f" n.last_verdict_at, n.last_health, n.health_at, {_ALARM_COLUMNS}"
            f" FROM nodes n LEFT JOIN alarms a ON a.id = n.alarm_id{where} ORDER BY n.node",
            params,
        )
        gaps = self._all_gaps(only)
        return [
            NodeState(
                node=r[0],
                first_seen=r[1],
                status=r[2],
                status_at=r[3],
                last_seq=r[4],
                last_verdict=r[5],
                last_verdict_at=r[6],
                last_health=r[7],
                health_at=r[8],
                alarm=None if r[9] is None else _alarm(r[9:]),
                gaps=gaps.get(r[0], []),
            )
            for r in rows
        ]

    def node(self, node: str) -> NodeState | None:
        """One node's state: its row and ranges only (the node page polls this)."""
        found = self.nodes(only=node)
        return found[0] if found else None

    def has_node(self, node: str) -> bool:
        """Whether the node ever sent anything (one indexed row: the API's 404 check)."""
        return bool(self._read("SELECT 1 FROM nodes WHERE node = ?", (node,)))

    def _all_gaps(self, node: str | None = None) -> dict[str, list[Gap]]:
        where, params = ("WHERE node = ?", (node,)) if node is not None else ("", ())
        rows = self._read(
            f"SELECT node, first_seq, last_seq FROM seq_ranges {where} ORDER BY node, first_seq",
            params,
        )
        gaps: dict[str, list[Gap]] = {}
        previous: tuple[str, int] | None = None
        for name, first, last in rows:
            if previous is not None and previous[0] == name:
                hole_from, hole_to = previous[1] + 1, first - 1
                big = hole_to - hole_from + 1 >= NEW_OUTBOX_MIN_GAP
                gaps.setdefault(name, []).append(
                    Gap(hole_from, hole_to, "new_outbox" if big else "missing")
                )
            previous = (name, last)
        return gaps

    def gaps(self, node: str) -> list[Gap]:
        return self._all_gaps(node).get(node, [])

    def verdicts(self, node: str, start: float | None, end: float | None, limit: int) -> list[str]:
        """The node's verdicts (as published) with window_end in [start, end), oldest first."""
        return [
            r[0]
            for r in self._read(
                "SELECT payload FROM verdicts WHERE node = ? AND window_end >= ?"
                " AND window_end < ? ORDER BY window_end, seq LIMIT ?",
                (node, _lo(start), _hi(end), limit),
            )
        ]

    def health(self, node: str, start: float | None, end: float | None, limit: int) -> list[str]:
        """The node's health reports received in [start, end), oldest first."""
        return [
            r[0]
            for r in self._read(
                "SELECT payload FROM health WHERE node = ? AND received_at >= ?"
                " AND received_at < ? ORDER BY received_at LIMIT ?",
                (node, _lo(start), _hi(end), limit),
            )
        ]

    def series(self, node: str, start: float, end: float, points: int) -> list[SeriesPoint]:
        """The node's verdicts in [start, end) summarized in up to `points` equal buckets."""
        step = max((end - start) / max(points, 1), 1e-3)
        # SQLite's CAST truncates; PostgreSQL's rounds, so it floors first.
        bucket = (
            "CAST((window_end - ?) / ? AS BIGINT)"
            if self.backend.kind == "sqlite"
            else "CAST(FLOOR((window_end - ?) / ?) AS BIGINT)"
        )
        rows = self._read(
            f"SELECT {bucket} AS b, MIN(window_end), MAX(window_end), COUNT(*),"
            " SUM(CASE WHEN label = 'anomalous' THEN 1 ELSE 0 END), MAX(score), AVG(score),"
            " AVG(level_dbfs), AVG(mod_db), AVG(hum_db), AVG(crackle_db)"
            " FROM verdicts WHERE node = ? AND window_end >= ? AND window_end < ?"
            " GROUP BY b ORDER BY b",
            (start, step, node, start, end),
        )
        return [
            SeriesPoint(
                start=r[1],
                end=r[2],
                count=int(r[3]),
                anomalous=int(r[4]),
                score_max=float(r[5]),
                score_mean=float(r[6]),
                level_dbfs=float(r[7]),
                mod_db=_float(r[8]),
                hum_db=_float(r[9]),
                crackle_db=_float(r[10]),
            )
            for r in rows
        ]

    def window_span(self, node: str) -> tuple[float, float] | None:
        """The first and last window_end the node's stored verdicts have."""
        row = self._read(
            "SELECT MIN(window_end), MAX(window_end) FROM verdicts WHERE node = ?", (node,)
        )
        if not row or row[0][0] is None:
            return None
        return float(row[0][0]), float(row[0][1])

    def alarms(self, *, open_only: bool, node: str | None = None, limit: int = 1000) -> list[Alarm]:
        """Alarm changes, newest first. Open: raised and not cleared since (acked or not)."""
        join = " JOIN nodes n ON n.alarm_id = a.id AND a.state = 'alarm'" if open_only else ""
        where, params = (" WHERE a.node = ?", [node]) if node is not None else ("", [])
        rows = self._read(
            f"SELECT {_ALARM_COLUMNS} FROM alarms a{join}{where}"
            " ORDER BY a.received_at DESC, a.id DESC LIMIT ?",
            [*params, limit],
        )
        return [_alarm(r) for r in rows]

    def ack(self, alarm_id: int, user: str, note: str, at: float) -> Alarm:
        """Acknowledge a raised alarm; AckError(404 | 409) when there is none to acknowledge."""
        try:
            with self._pool.connection() as conn, transaction(self.backend, conn):
                row = conn.execute(
                    self._sql(f"SELECT {_ALARM_COLUMNS} FROM alarms a WHERE a.id = ?"),
                    (alarm_id,),
                ).fetchone()
                if row is None:
                    raise AckError(404, f"no alarm {alarm_id}")
                alarm = _alarm(row)
                if alarm.state != "alarm":
                    raise AckError(409, f"alarm change {alarm_id} is a clear, not an alarm")
                if alarm.acked_by is not None:
                    raise AckError(409, f"alarm {alarm_id} is already acknowledged")
                conn.execute(
                    self._sql(
                        "UPDATE alarms SET acked_by = ?, acked_at = ?, ack_note = ? WHERE id = ?"
                    ),
                    (user, at, note, alarm_id),
                )
        except driver_errors(self.backend) as err:
            raise StoreError(f"{self.backend.display}: {err}") from err
        return Alarm(**{**alarm.__dict__, "acked_by": user, "acked_at": at, "ack_note": note})

    def export(
        self, node: str | None, start: float | None, end: float | None, chunk: int = 2000
    ) -> Iterator[ExportRow]:
        """Verdicts for CSV, by node then window_end; read in chunks (keyset paging), so a year
        of a fleet never sits in memory."""
        after: tuple[str, float, int] = ("", float("-inf"), -1)
        node_filter = " AND node = ?" if node is not None else ""
        while True:
            params: list[Any] = [_lo(start), _hi(end)]
            if node is not None:
                params.append(node)
            params += [*after, chunk]
            rows = self._read(
                "SELECT node, seq, window_end, received_at, source, label, score, level_dbfs,"
                " mod_db, hum_db, crackle_db FROM verdicts"
                f" WHERE window_end >= ? AND window_end < ?{node_filter}"
                " AND (node, window_end, seq) > (?, ?, ?)"
                " ORDER BY node, window_end, seq LIMIT ?",
                params,
            )
            for r in rows:
                yield ExportRow(*r)
            if len(rows) < chunk:
                return
            after = (rows[-1][0], rows[-1][2], rows[-1][1])

    def counts(self) -> StoreCounts:
        nodes = self._read("SELECT COUNT(*) FROM nodes")[0][0]
        quarantined = self._read("SELECT COUNT(*) FROM quarantine")[0][0]
        missing = sum(
            g.count for gs in self._all_gaps().values() for g in gs if g.reason == "missing"
        )
        return StoreCounts(int(nodes), int(quarantined), missing)

    def quarantined(self, limit: int = 100) -> list[tuple[float, str, str, int, bytes]]:
        """The newest quarantined messages: (received_at, topic, reason, size, first bytes)."""
        rows = self._read(
            "SELECT received_at, topic, reason, size, payload FROM quarantine"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [(r[0], r[1], r[2], int(r[3]), bytes(r[4])) for r in rows]

    # -- clips and labels (the node page) -----------------------------------------------------

    def request_clip(self, node: str, name: str, seq: int, *, user: str, at: float) -> None:
        """Record that `user` asked `node` for clip `name` (again: the old refusal is cleared)."""
        self._execute(
            "INSERT INTO clip_requests (node, name, seq, requested_by, requested_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (node, name) DO UPDATE SET"
            " requested_by = excluded.requested_by, requested_at = excluded.requested_at,"
            " error = NULL",
            (node, name, seq, user, at),
        )

    def clip_state(self, node: str, name: str) -> ClipState | None:
        """Stored, refused or pending; None when nobody asked for it."""
        stored = self._read("SELECT size FROM clips WHERE node = ? AND name = ?", (node, name))
        if stored:
            return ClipState("stored", size=int(stored[0][0]))
        asked = self._read(
            "SELECT error FROM clip_requests WHERE node = ? AND name = ?", (node, name)
        )
        if not asked:
            return None
        error = asked[0][0]
        return ClipState("pending") if error is None else ClipState("refused", error=error)

    def clip(self, node: str, name: str) -> bytes | None:
        rows = self._read("SELECT flac FROM clips WHERE node = ? AND name = ?", (node, name))
        return bytes(rows[0][0]) if rows else None

    def set_label(
        self, node: str, seq: int, label: str, *, user: str, note: str, at: float
    ) -> Label:
        """A person's label for a window (replacing an earlier one: the last judgement counts)."""
        self._execute(
            "INSERT INTO labels (node, seq, label, labelled_by, labelled_at, note)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node, seq) DO UPDATE SET"
            " label = excluded.label, labelled_by = excluded.labelled_by,"
            " labelled_at = excluded.labelled_at, note = excluded.note",
            (node, seq, label, user, at, note),
        )
        return Label(node, seq, label, user, at, note)

    def labels(self, node: str | None = None) -> list[Label]:
        where, params = (" WHERE node = ?", (node,)) if node is not None else ("", ())
        rows = self._read(
            "SELECT node, seq, label, labelled_by, labelled_at, note FROM labels"
            f"{where} ORDER BY node, seq",
            params,
        )
        return [Label(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def evidence(self, node: str, limit: int) -> list[EvidenceWindow]:
        """The node's newest windows that name a clip, with the clip's state and the label."""
        rows = self._read(
            "SELECT v.seq, v.window_end, v.label, v.score, v.clip, c.size, r.error,"
            " r.requested_at, l.label, l.labelled_by, l.labelled_at, l.note FROM verdicts v"
            " LEFT JOIN clips c ON c.node = v.node AND c.name = v.clip"
            " LEFT JOIN clip_requests r ON r.node = v.node AND r.name = v.clip"
            " LEFT JOIN labels l ON l.node = v.node AND l.seq = v.seq"
            " WHERE v.node = ? AND v.clip IS NOT NULL ORDER BY v.seq DESC LIMIT ?",
            (node, limit),
        )
        out = []
        for r in rows:
            state = (
                ClipState("stored", size=int(r[5]))
                if r[5] is not None
                else ClipState("refused", error=r[6])
                if r[6] is not None
                else ClipState("pending")
                if r[7] is not None
                else None
            )
            person = None if r[8] is None else Label(node, r[0], r[8], r[9], r[10], r[11])
            out.append(EvidenceWindow(r[0], r[1], r[2], r[3], r[4], state, person))
        return out

    def labelled_clips(self) -> Iterator[LabelledClip]:
        """Every label whose window's clip is stored, with the verdict it judges."""
        for label in self.labels():
            rows = self._read(
                "SELECT c.name, c.flac, v.payload FROM clips c LEFT JOIN verdicts v"
                " ON v.node = c.node AND v.seq = c.seq WHERE c.node = ? AND c.seq = ?"
                " ORDER BY c.name LIMIT 1",
                (label.node, label.seq),
            )
            if rows:
                yield LabelledClip(label, rows[0][0], bytes(rows[0][1]), rows[0][2])

    # -- users and sessions (the page) -------------------------------------------------------

    def add_user(self, name: str, password_hash: str) -> None:
        try:
            with self._pool.connection() as conn, transaction(self.backend, conn):
                inserted = conn.execute(
                    self._sql(
                        "INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)"
                        " ON CONFLICT DO NOTHING"
                    ),
                    (name, password_hash, time.time()),
                ).rowcount
        except driver_errors(self.backend) as err:
            raise StoreError(f"{self.backend.display}: {err}") from err
        if inserted != 1:
            raise UserExistsError(name)

    def set_password(self, name: str, password_hash: str) -> bool:
        """Replace a user's password and end their sessions; False when there is no such user."""
        try:
            with self._pool.connection() as conn, transaction(self.backend, conn):
                changed = conn.execute(
                    self._sql("UPDATE users SET password_hash = ? WHERE name = ?"),
                    (password_hash, name),
                ).rowcount
                conn.execute(self._sql("DELETE FROM sessions WHERE user_name = ?"), (name,))
        except driver_errors(self.backend) as err:
            raise StoreError(f"{self.backend.display}: {err}") from err
        return int(changed) == 1

    def users(self) -> list[str]:
        return [r[0] for r in self._read("SELECT name FROM users ORDER BY name")]

    def password_hash(self, name: str) -> str | None:
        rows = self._read("SELECT password_hash FROM users WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def create_session(
        self, token_hash: str, user: str, csrf_token: str, now: float, expires_at: float
    ) -> None:
        self._execute(
            "INSERT INTO sessions (token_hash, user_name, csrf_token, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (token_hash, user, csrf_token, now, expires_at),
        )

    def session(self, token_hash: str, now: float) -> Session | None:
        rows = self._read(
            "SELECT user_name, csrf_token, expires_at FROM sessions"
            " WHERE token_hash = ? AND expires_at > ?",
            (token_hash, now),
        )
        return Session(rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def delete_session(self, token_hash: str) -> None:
        self._execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    def _execute(self, sql: str, params: Sequence[Any]) -> int:
        try:
            with self._pool.connection() as conn, transaction(self.backend, conn):
                return int(conn.execute(self._sql(sql), tuple(params)).rowcount)
        except driver_errors(self.backend) as err:
            raise StoreError(f"{self.backend.display}: {err}") from err

    # -- retention ---------------------------------------------------------------------------

    def prune(self, now: float, retention_days: float) -> dict[str, int]:
        """Delete what arrived more than retention_days ago (a node's current alarm stays), the
        expired sessions and the quarantine beyond its cap; rows deleted per table."""
        cutoff = now - retention_days * 86400.0
        deleted = {
            "verdicts": self._delete_chunked(
                "DELETE FROM verdicts WHERE (node, seq) IN (SELECT node, seq FROM verdicts"
                " WHERE received_at < ? LIMIT ?)",
                cutoff,
            ),
            "health": self._delete_chunked(
                "DELETE FROM health WHERE (node, received_at) IN (SELECT node, received_at"
                " FROM health WHERE received_at < ? LIMIT ?)",
                cutoff,
            ),
            "statuses": self._delete_chunked(
                "DELETE FROM statuses WHERE (node, received_at) IN (SELECT node, received_at"
                " FROM statuses WHERE received_at < ? LIMIT ?)",
                cutoff,
            ),
            "alarms": self._delete_chunked(
                "DELETE FROM alarms WHERE id IN (SELECT id FROM alarms WHERE received_at < ?"
                " AND id NOT IN (SELECT alarm_id FROM nodes WHERE alarm_id IS NOT NULL) LIMIT ?)",
                cutoff,
            ),
            "quarantine": self._delete_chunked(
                "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine"
                " WHERE received_at < ? LIMIT ?)",
                cutoff,
            ),
        }
        deleted["quarantine"] += self._execute(
            "DELETE FROM quarantine WHERE id <= (SELECT COALESCE(MAX(id), 0) - ? FROM quarantine)",
            (QUARANTINE_MAX_ROWS,),
        )
        deleted["sessions"] = self._execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
        if deleted["verdicts"]:
            self._trim_ranges()
        return deleted

    def _delete_chunked(self, sql: str, cutoff: float) -> int:
        total = 0
        while True:
            n = self._execute(sql, (cutoff, DELETE_CHUNK))
            total += n
            if n < DELETE_CHUNK:
                return total

    def _trim_ranges(self) -> None:
        """Seq ranges start at each node's oldest stored verdict again: gaps older than the
        retention are forgotten with the verdicts around them."""
        for (node,) in self._read("SELECT node FROM nodes"):
            oldest = self._read("SELECT MIN(seq) FROM verdicts WHERE node = ?", (node,))[0][0]
            if oldest is None:
                self._execute("DELETE FROM seq_ranges WHERE node = ?", (node,))
                continue
            self._execute("DELETE FROM seq_ranges WHERE node = ? AND last_seq < ?", (node, oldest))
            self._execute(
                "UPDATE seq_ranges SET first_seq = ? WHERE node = ? AND first_seq < ?",
                (oldest, node, oldest),
            )


def _write_order(record: Record) -> tuple[str, int, int]:
    node = getattr(record, "node", "")
    seq = getattr(record, "seq", None)
    return (node, 0 if isinstance(record, VerdictIn) else 1, seq if isinstance(seq, int) else 0)


def _alarm(r: Sequence[Any]) -> Alarm:
    return Alarm(
        id=int(r[0]),
        node=r[1],
        seq=r[2],
        state=r[3],
        since=r[4],
        received_at=r[5],
        replayed=bool(r[6]),
        acked_by=r[7],
        acked_at=r[8],
        ack_note=r[9],
        payload=r[10],
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _lo(value: float | None) -> float:
    return -1e300 if value is None else value


def _hi(value: float | None) -> float:
    return 1e300 if value is None else value


def _storable(text: str) -> str:
    # PostgreSQL's text cannot hold NUL, and a topic must never make an insert fail.
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
