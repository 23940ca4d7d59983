"""The control room's store on both databases: de-duplication, gaps, alarm state, reads,
acknowledgements, retention and migrations (real SQLite files and a real PostgreSQL server)."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from control.store import AckError, Store, StoreError
from control.store.backend import Pool, parse_url
from control.store.migrate import current_version, latest_version, migrate
from control.store.records import QuarantineIn, StatusIn
from control.store.store import NEW_OUTBOX_MIN_GAP
from tests.control_records import RECEIVED, alarm_in, verdict_in
from tests.watch_messages import NOW


def test_each_verdict_is_stored_once_and_the_holes_are_the_gaps(store: Store) -> None:
    missing = {7, 8, 20, 41}
    seqs = [s for s in range(1, 51) if s not in missing]
    shuffled = seqs * 2  # every verdict twice: a redelivery after a reconnect
    random.Random(3).shuffle(shuffled)  # noqa: S311 - an arrival order, not a secret
    for i in range(0, len(shuffled), 9):
        store.write([verdict_in("tower-1", s) for s in shuffled[i : i + 9]])

    stored = [json.loads(p)["seq"] for p in store.verdicts("tower-1", None, None, 1000)]
    assert stored == seqs  # once each, oldest first
    gaps = [(g.from_seq, g.to_seq, g.reason) for g in store.gaps("tower-1")]
    assert gaps == [(7, 8, "missing"), (20, 20, "missing"), (41, 41, "missing")]
    (node,) = store.nodes()
    assert node.missing == 4
    assert json.loads(node.last_verdict or "")["seq"] == 50

    store.write([verdict_in("tower-1", s) for s in missing])  # the backlog arrives
    assert store.gaps("tower-1") == []


def test_a_new_outbox_file_is_a_gap_of_its_own_kind(store: Store) -> None:
    floor = 1_800_000_000_000_000  # a new outbox starts at the clock in microseconds
    store.write([verdict_in("n", s) for s in (1, 2, 3, floor, floor + 2)])
    gaps = store.gaps("n")
    assert [(g.from_seq, g.to_seq, g.reason) for g in gaps] == [
        (4, floor - 1, "new_outbox"),
        (floor + 1, floor + 1, "missing"),
    ]
    assert gaps[0].count >= NEW_OUTBOX_MIN_GAP
    assert store.nodes()[0].missing == 1  # the fleet table counts lost verdicts, not the jump


def test_the_alarm_state_is_the_newest_change_and_retained_repeats_are_one(store: Store) -> None:
    live = alarm_in("n", "alarm", 40)
    store.write([live, live])  # the retained message again at a reconnect
    # The backlog's older history arrives after the live change: the state stays "alarm".
    store.write([alarm_in("n", "clear", 30, replayed=True), alarm_in("n", "alarm", 10)])
    (node,) = store.nodes()
    assert node.alarm is not None
    assert (node.alarm.state, node.alarm.seq) == ("alarm", 40)
    assert len(store.alarms(open_only=False)) == 3
    (open_alarm,) = store.alarms(open_only=True)
    assert open_alarm.seq == 40
    store.write([alarm_in("n", "clear", 41)])
    assert store.alarms(open_only=True) == []


def test_acknowledging_an_alarm_records_who_when_and_why_once(store: Store) -> None:
    store.write([alarm_in("n", "alarm", 5), alarm_in("n", "clear", 9)])
    raised, cleared = sorted(store.alarms(open_only=False), key=lambda a: a.seq or 0)
    acked = store.ack(raised.id, "ana", "crew sent <b>now</b>", 1000.0)
    assert (acked.acked_by, acked.acked_at, acked.ack_note) == (
        "ana",
        1000.0,
        "crew sent <b>now</b>",
    )
    stored = next(a for a in store.alarms(open_only=False) if a.id == raised.id)
    assert stored.acked_by == "ana"
    with pytest.raises(AckError) as again:
        store.ack(raised.id, "bo", "me too", 1001.0)
    assert again.value.status == 409
    with pytest.raises(AckError) as clear:
        store.ack(cleared.id, "bo", "x", 1001.0)
    assert clear.value.status == 409
    with pytest.raises(AckError) as missing:
        store.ack(cleared.id + 1000, "bo", "x", 1001.0)
    assert missing.value.status == 404


def test_a_status_is_stored_when_it_changes(store: Store) -> None:
    result = store.write(
        [StatusIn("n", "online", 1.0), StatusIn("n", "online", 2.0), StatusIn("n", "offline", 3.0)]
    )
    assert result.stored == {"status": 2}
    assert result.duplicates == 1
    assert store.nodes()[0].status == "offline"


def test_series_buckets_and_export_pages_cover_every_verdict(store: Store) -> None:
    store.write([verdict_in("a", s, label="anomalous", score=0.9) for s in range(1, 11)])
    store.write([verdict_in("b", s) for s in range(1, 6)])
    start = NOW.timestamp()
    points = store.series("a", start, start + 30 * 11, 5)
    assert sum(p.count for p in points) == 10
    assert all(p.anomalous == p.count and p.score_max == 0.9 for p in points)
    assert len(points) <= 5
    rows = list(store.export(None, None, None, chunk=3))  # keyset pages of 3
    assert [(r.node, r.seq) for r in rows] == [("a", s) for s in range(1, 11)] + [
        ("b", s) for s in range(1, 6)
    ]
    only_b = list(store.export("b", start + 30 * 2, start + 30 * 4, chunk=1))
    assert [r.seq for r in only_b] == [2, 3]


def test_retention_deletes_by_arrival_and_keeps_the_current_alarm(store: Store) -> None:
    store.write([verdict_in("n", s) for s in range(1, 6)] + [alarm_in("n", "alarm", 3)])
    store.write([QuarantineIn("t", "invalid", b"x", RECEIVED)])
    later = RECEIVED + 10 * 86400
    deleted = store.prune(later, retention_days=5)
    assert deleted["verdicts"] == 5
    assert deleted["quarantine"] == 1
    assert store.verdicts("n", None, None, 100) == []
    assert store.gaps("n") == []
    (node,) = store.nodes()
    assert node.alarm is not None
    assert node.alarm.state == "alarm"  # the current state outlives its age
    # Verdicts after the retention start a range of their own: no false gap from the old ones.
    store.write([verdict_in("n", s) for s in (6, 7)])
    assert store.gaps("n") == []


def test_hostile_text_is_stored_exactly_and_never_breaks_a_batch(store: Store) -> None:
    name = "<script>alert(1)</script>\u202e"
    payload = '"\\ud800 \\u0000 \\u001b[2J"'  # JSON escapes: a lone surrogate, NUL, ESC
    record = verdict_in("n", 1, model={"name": name, "sha256": "cd" * 32}, note=json.loads(payload))
    poison = QuarantineIn("corona/v1/\x00evil/verdict", "invalid", b"\x00\xff" * 10_000, RECEIVED)
    store.write([record, poison])
    (text,) = store.verdicts("n", None, None, 10)
    assert text == record.payload
    assert json.loads(text)["model"]["name"] == name
    ((_, topic, reason, size, first),) = store.quarantined()
    assert (topic, reason, size) == ("corona/v1/\ufffdevil/verdict", "invalid", 20_000)
    assert first == (b"\x00\xff" * 10_000)[:4096]


def test_two_writers_on_one_database_store_each_seq_once_without_false_gaps(
    store_url: str,
) -> None:
    """Two collectors of a shared subscription (and their redeliveries) into one database."""
    writers = [Store.open(store_url), Store.open(store_url)]
    errors: list[BaseException] = []

    def write(store: Store, seqs: list[int]) -> None:
        try:
            for i in range(0, len(seqs), 7):
                store.write([verdict_in(f"n{s % 3}", s) for s in seqs[i : i + 7]])
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    seqs = list(range(1, 301))
    halves = [seqs[::2] + seqs[:40], seqs[1::2] + seqs[:40]]  # overlapping: duplicates race
    threads = [
        threading.Thread(target=write, args=(w, h)) for w, h in zip(writers, halves, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    reader = writers[0]
    for n in range(3):
        got = [json.loads(p)["seq"] for p in reader.verdicts(f"n{n}", None, None, 1000)]
        assert got == [s for s in seqs if s % 3 == n]
        # Seqs of one node are every third: holes of 2 between consecutive ones, never more.
        assert {g.count for g in reader.gaps(f"n{n}")} == {2}
    for w in writers:
        w.close()


def test_migrations_apply_once_and_a_newer_database_is_refused(store_url: str) -> None:
    pool = Pool(parse_url(store_url))
    try:
        assert [m.version for m in migrate(pool)] == list(range(1, latest_version() + 1))
        assert migrate(pool) == []
        assert current_version(pool) == latest_version()
        with pool.connection() as conn:
            conn.execute(
                pool.backend.sql(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"
                ),
                (latest_version() + 1, "from_the_future", 0.0),
            )
    finally:
        pool.close()
    with pytest.raises(StoreError, match="newer than this corona-control"):
        Store.open(store_url)


def test_an_unusable_database_url_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot open the database"):
        Store.open(f"sqlite:///{blocker / 'control.db'}")
    with pytest.raises(StoreError, match=r"postgresql://127\.0\.0\.1:1/x: cannot connect"):
        Store.open("postgresql://u:secret@127.0.0.1:1/x")
