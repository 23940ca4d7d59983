"""Benchmark: a fleet of simulated nodes through a real mosquitto into the control room's store.

Run from the repository root: python -m bench.fleet [--nodes 1000] [--seconds 60] [--rate R]
[--db sqlite|postgresql|both] [--collectors 1|2].

What runs, all on this machine:
- mosquitto 2 (tests/fixtures/broker.py, with a control room's queue setting: see --broker-queue);
- the nodes: publisher processes, each a few paho clients (MQTT 3.1.1, like a node) carrying
  --nodes-per-connection nodes each; every node sends one verdict (QoS 1) in turn at an
  accelerated window rate, so the fleet offers --rate verdicts/s in all, each verdict with the
  node's next seq and window_end = the moment it is published. Every --health-every verdicts a
  node also sends its retained health, as a node does every 60 s beside its 30 s windows.
  Payloads are a real node's: built with the daemon's own Verdict and HealthSnapshot classes;
- the collectors: `control.collector.Collector` (the one `corona-control serve` runs), each in
  its own process, into SQLite (a file on local disk, the store's WAL + synchronous=FULL) or a
  PostgreSQL server started here from Debian's binaries with its durable defaults (fsync on,
  synchronous_commit on; not the test fixture's fsync off). With --collectors 2 both use one
  shared subscription group into one PostgreSQL.

Per database: a warm-up, then --seconds at --rate (steady state), then --overload-seconds at
--overload-rate (more than it takes: what it ingests, and the lag growing), then publishing stops
and the backlog drains (the catch-up rate, with the publishers idle). Ingest lag is computed from
the stored rows (received_at - window_end: when the collector got it) and from each batch's commit
time noted in the collector process (commit - window_end: when it was durable and acknowledged).
Duplicates, lost verdicts and gaps are counted from the database against what was published.
Size per node-year: each table with its indexes (SQLite dbstat after a WAL checkpoint; PostgreSQL
pg_total_relation_size after VACUUM) per stored row, times a node's 1,051,200 verdicts (one per
30 s) and 525,600 health reports (one per 60 s) a year.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from bench.machine import machine_lines
from control.store.records import VerdictIn
from control.store.store import Store

DbKind = Literal["sqlite", "postgresql"]

PREFIX: Final = "corona/v1"
WINDOW_S: Final = 30.0
HEALTH_S: Final = 60.0
VERDICTS_PER_NODE_YEAR: Final = round(365 * 86400 / WINDOW_S)
"""1,051,200: one verdict per 30 s window."""
HEALTH_PER_NODE_YEAR: Final = round(365 * 86400 / HEALTH_S)
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
SHARE_GROUP: Final = "fleet"
READY_TIMEOUT_S: Final = 60.0
DRAIN_TIMEOUT_S: Final = 300.0
STALL_S: Final = 10.0
"""The drain ends when nothing more is stored for this long."""
ACK_TIMEOUT_S: Final = 120.0
POLL_S: Final = 0.01
"""How often a publisher looks for a command between messages."""
SAMPLE_S: Final = 1.0
LATE_S: Final = 1.0
"""A publisher this far behind its schedule is the limit, not the collector."""
NORMAL_CLIP_EVERY: Final = 120
"""A node keeps a normal window's clip every 120 windows (daemon evidence.normal_every_n)."""
ANOMALOUS_SHARE: Final = 0.02
SHA: Final = "9352b9b4e4f1211bfec28587b6aa80846945206b89ed036a6e7d4e7c92e98f5e"
BROKER_LOG_TYPES: Final = ("error", "warning", "notice")
"""Not the test broker's `log_type all`: a log line per message would load the broker."""
PG_SHOWN: Final = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "wal_sync_method",
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "autovacuum",
)
PG_SETTINGS: Final = {
    # Only where it listens and logs: everything else is PostgreSQL's default (durable).
    "listen_addresses": "127.0.0.1",
    "logging_collector": "off",
    "log_destination": "stderr",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}


# -- the nodes' messages -----------------------------------------------------------------------


class NodeSim:
    """One simulated node: its next seq and the verdict and health it would publish.

    The documents come from the daemon's own classes, so they have every field (and the size) a
    real node's have; the numbers vary a little from window to window like a quiet tower's.
    """

    def __init__(self, node: str, first_seq: int, rng: random.Random) -> None:
        from daemon.analyse.verdict import ModelRef

        self.node = node
        self.first_seq = first_seq
        self.seq = first_seq - 1
        self.sent = 0
        self._rng = rng
        self._model = ModelRef("corona-demo", SHA, "classifier")
        self._started = time.time()
        self._anomalous = 0

    def verdict(self, end: float) -> bytes:
        from daemon.analyse.baseline import Reading
        from daemon.analyse.verdict import Verdict, iso_utc

        rng = self._rng
        self.seq += 1
        self.sent += 1
        anomalous = rng.random() < ANOMALOUS_SHARE
        self._anomalous += anomalous
        end_at = datetime.fromtimestamp(end, UTC)
        score = rng.uniform(0.55, 0.99) if anomalous else rng.uniform(0.01, 0.3)
        clip: Literal["anomalous", "normal"] | None = None
        if anomalous:
            clip = "anomalous"
        elif self.sent % NORMAL_CLIP_EVERY == 0:
            clip = "normal"
        verdict = Verdict(
            node=self.node,
            window_start=iso_utc(end_at - timedelta(seconds=WINDOW_S)),
            window_end=iso_utc(end_at),
            label="anomalous" if anomalous else "normal",
            label_by="either",
            score=round(score, 6),
            threshold=0.5,
            model=self._model,
            level_dbfs=round(rng.gauss(-52.0, 3.0), 2),
            clipped=0.0,
            overflows=0,
            source="live",
            sensor="ok",
            physics={
                "line_hz": 50,
                "mod_db": round(rng.gauss(4.0, 1.0), 2),
                "mod_depth": round(abs(rng.gauss(0.02, 0.01)), 4),
                "hum_db": round(rng.gauss(12.0, 2.0), 2),
                "sub_db": round(rng.gauss(6.0, 1.5), 2),
                "crackle_db": round(rng.gauss(1.5, 0.5), 2),
            },
            baseline=Reading(
                "ready",
                round(abs(rng.gauss(8.0, 3.0)), 4),
                round(rng.uniform(0.05, 0.4), 6),
                20160,
                20160,
            ),
            clock_synced=True,
            seq=self.seq,
            clip_kind=clip,
        )
        return verdict.to_json()

    def health(self, at: float) -> bytes:
        from daemon.analyse.verdict import iso_utc
        from daemon.config import ConfigSource
        from daemon.health import HealthSnapshot

        taken = datetime.fromtimestamp(at, UTC)
        windows = self.sent
        snapshot = HealthSnapshot(
            node=self.node,
            taken_at=taken,
            uptime_s=round(at - self._started, 1),
            windows=windows,
            windows_normal=windows - self._anomalous,
            windows_anomalous=self._anomalous,
            overflows=0,
            capture="running",
            capture_error=None,
            device="USB Audio Device: - (hw:1,0)",
            frames_captured=windows * 480_000,
            dropped_frames=0,
            outbox_depth=0,
            outbox_dropped=0,
            outbox="ok",
            outbox_error=None,
            sent_live=windows,
            sent_replayed=0,
            mqtt_connected=True,
            mqtt_connect_failures=0,
            last_window=iso_utc(taken),
            last_label="normal",
            last_score=0.12,
            alarm="clear",
            window_s=WINDOW_S,
            model=self._model,
            baseline_state="ready",
            baseline_windows=20160,
            baseline_learn_windows=20160,
            clock_synced=True,
            clock_max_error_us=12_000,
            clips_enabled=True,
            clips_count=40,
            clips_bytes=40 * 700_000,
            clips_kept=windows // NORMAL_CLIP_EVERY + self._anomalous,
            config=ConfigSource(
                Path("/etc/corona-monitor/config.yaml"), "ab" * 32, "2026-11-20T08:00:00+00:00"
            ),
        )
        return json.dumps(snapshot.payload(), separators=(",", ":")).encode("utf-8")


# -- the publishers (child processes) --------------------------------------------------------


@dataclass(frozen=True)
class PublisherSpec:
    index: int
    host: str
    port: int
    nodes: tuple[str, ...]
    first_seqs: tuple[int, ...]
    nodes_per_connection: int
    health_every: int
    seed: int


@dataclass
class PublisherReport:
    verdicts: int
    health: int
    acked: int
    publish_calls: int
    verdict_bytes: int
    health_bytes: int
    max_late_s: float
    late_at_end_s: float
    times: bytes
    """array('d') of each verdict's publish time (= its window_end)."""
    seqs: dict[str, tuple[int, int]]
    """Per node: the first and last seq published."""


class _Acks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def on_publish(self, *_: Any) -> None:
        with self._lock:
            self.count += 1


def _connect_publishers(spec: PublisherSpec, acks: _Acks) -> list[Any]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    clients: list[Any] = []
    connected: list[threading.Event] = []
    n_clients = -(-len(spec.nodes) // spec.nodes_per_connection)
    for c in range(n_clients):
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"fleet-pub-{spec.index}-{c}",
        )
        event = threading.Event()
        client.on_connect = lambda *_a, e=event: e.set()
        client.on_publish = acks.on_publish
        client.connect(spec.host, spec.port, keepalive=60)
        client.loop_start()
        clients.append(client)
        connected.append(event)
    for event in connected:
        if not event.wait(READY_TIMEOUT_S):
            raise SystemExit(f"publisher {spec.index}: no CONNACK within {READY_TIMEOUT_S} s")
    return clients


def publisher_main(spec: PublisherSpec, conn: Connection) -> None:  # noqa: PLR0915 - one loop
    """Publish the nodes' verdicts at the rate the parent sets; report when told to finish."""
    rng = random.Random(spec.seed)  # noqa: S311 - a simulation, not a secret
    acks = _Acks()
    clients = _connect_publishers(spec, acks)
    sims = [
        NodeSim(node, first, random.Random(rng.random()))  # noqa: S311 - a simulation
        for node, first in zip(spec.nodes, spec.first_seqs, strict=True)
    ]
    client_of = [clients[i // spec.nodes_per_connection] for i in range(len(sims))]
    calls = 0
    for sim, client in zip(sims, client_of, strict=True):
        client.publish(f"{PREFIX}/{sim.node}/status", b"online", qos=1, retain=True)
        calls += 1
    conn.send(("ready", os.getpid()))
    times: array[float] = array("d")
    verdict_bytes = health_bytes = n_health = 0
    rate = 0.0
    base_t = time.time()
    base_i = i = 0
    max_late = late = 0.0
    next_poll = 0.0
    while True:
        now = time.time()
        if now >= next_poll or rate == 0.0:
            next_poll = now + POLL_S
            if conn.poll(0.0 if rate > 0.0 else 0.05):
                command, value = conn.recv()
                if command == "finish":
                    break
                rate, base_t, base_i = float(value), time.time(), i
                continue
        if rate == 0.0:
            continue
        due = base_t + (i - base_i) / rate
        if due > now:
            time.sleep(min(due - now, POLL_S))
            continue
        late = now - due
        max_late = max(max_late, late)
        k = i % len(sims)
        sim = sims[k]
        payload = sim.verdict(now)
        client_of[k].publish(f"{PREFIX}/{sim.node}/verdict", payload, qos=1)
        times.append(now)
        verdict_bytes += len(payload)
        calls += 1
        if spec.health_every and sim.sent % spec.health_every == 0:
            body = sim.health(now)
            client_of[k].publish(f"{PREFIX}/{sim.node}/health", body, qos=1, retain=True)
            n_health += 1
            health_bytes += len(body)
            calls += 1
        i += 1
    deadline = time.monotonic() + ACK_TIMEOUT_S
    while acks.count < calls and time.monotonic() < deadline:
        time.sleep(0.05)
    for client in clients:
        client.disconnect()
        client.loop_stop()
    conn.send(
        PublisherReport(
            verdicts=len(times),
            health=n_health,
            acked=acks.count,
            publish_calls=calls,
            verdict_bytes=verdict_bytes,
            health_bytes=health_bytes,
            max_late_s=max_late,
            late_at_end_s=late,
            times=times.tobytes(),
            seqs={s.node: (s.first_seq, s.seq) for s in sims if s.sent},
        )
    )


# -- the collectors (child processes) --------------------------------------------------------


class TimedStore(Store):
    """The store, noting when each stored verdict's batch was committed (for the commit lag)."""

    def __init__(self, pool: Any) -> None:
        super().__init__(pool)
        self.window_end: array[float] = array("d")
        self.committed: array[float] = array("d")
        self.verdict_duplicates = 0
        """Verdicts the (node, seq) key dropped (the collector's own count has every kind: with a
        share group each collector also gets every retained status directly)."""

    def write(self, records: Sequence[Any]) -> Any:
        result = super().write(records)
        now = time.time()
        verdicts = 0
        for record in records:
            if isinstance(record, VerdictIn):
                verdicts += 1
                self.window_end.append(record.window_end)
                self.committed.append(now)
        self.verdict_duplicates += verdicts - result.stored.get("verdict", 0)
        return result


@dataclass(frozen=True)
class CollectorSpec:
    index: int
    url: str
    host: str
    port: int
    share_group: str | None
    batch_max: int


@dataclass
class CollectorReport:
    stats: dict[str, Any]
    lag_p50: float | None
    lag_p99: float | None
    window_end: bytes
    committed: bytes


def collector_main(spec: CollectorSpec, conn: Connection) -> None:
    """One collector (as `corona-control serve` runs it) until the parent says stop."""
    import logging

    import structlog

    from control.collector import Collector
    from control.config import CollectorSettings, ControlSettings, DatabaseSettings
    from daemon.config import MqttSettings

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    settings = ControlSettings(
        mqtt=MqttSettings(host=spec.host, port=spec.port, prefix=PREFIX),
        collector=CollectorSettings(
            client_id=f"fleet-collector-{spec.index}",
            share_group=spec.share_group,
            batch_max=spec.batch_max,
        ),
        database=DatabaseSettings(url=spec.url),
    )
    store = TimedStore.open(spec.url)
    assert isinstance(store, TimedStore)  # noqa: S101 - Store.open builds cls
    collector = Collector(store, settings)
    collector.start()
    # Subscribed once a probe the parent keeps sending arrives (a clip topic: counted, not stored).
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not collector.stats.snapshot()["ignored"].get("clip"):
        if time.monotonic() > deadline:
            raise SystemExit(f"collector {spec.index}: not subscribed within {READY_TIMEOUT_S} s")
        time.sleep(0.02)
    threads = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    conn.send(("ready", os.getpid(), threads))
    while True:
        command = conn.recv()
        if command == "stats":
            conn.send(
                {
                    **collector.stats.snapshot(),
                    "queued": collector.queued,
                    "verdict_duplicates": store.verdict_duplicates,
                }
            )
        elif command == "stop":
            break
    collector.stop()
    store.close()
    conn.send(
        CollectorReport(
            stats={
                **collector.stats.snapshot(),
                "verdict_duplicates": store.verdict_duplicates,
            },
            lag_p50=collector.stats.lag_quantile(0.5),
            lag_p99=collector.stats.lag_quantile(0.99),
            window_end=store.window_end.tobytes(),
            committed=store.committed.tobytes(),
        )
    )


# -- CPU accounting --------------------------------------------------------------------------


def cpu_s(pid: int, tid: int | None = None) -> float:
    """utime + stime of a process (all threads) or one of its threads, seconds; 0 when gone."""
    path = Path(f"/proc/{pid}/stat") if tid is None else Path(f"/proc/{pid}/task/{tid}/stat")
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry.name))
    return found


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


@dataclass
class CpuSample:
    at: float
    groups: dict[str, float]
    machine_busy: float
    machine_total: float


@dataclass
class Accounting:
    """The processes of one run, grouped: each collector (and its writer and paho threads), the
    broker, the database server (postmaster and every backend), the publishers, the bench."""

    collectors: list[tuple[int, dict[int, str]]] = field(default_factory=list)
    broker_pid: int = 0
    postmaster_pid: int | None = None
    publisher_pids: list[int] = field(default_factory=list)

    def sample(self) -> CpuSample:
        groups: dict[str, float] = {}
        for n, (pid, threads) in enumerate(self.collectors):
            groups[f"collector {n}"] = cpu_s(pid)
            for tid, name in threads.items():
                role = "writer" if name == "collector-writer" else None
                if name.startswith("paho-mqtt-client"):
                    role = "paho"
                if role is not None:
                    groups[f"collector {n} {role}"] = cpu_s(pid, tid)
        groups["mosquitto"] = cpu_s(self.broker_pid)
        if self.postmaster_pid is not None:
            pids = [self.postmaster_pid, *children_of(self.postmaster_pid)]
            groups["postgres"] = sum(cpu_s(p) for p in pids)
        groups["publishers"] = sum(cpu_s(p) for p in self.publisher_pids)
        groups["bench"] = cpu_s(os.getpid())
        busy, total = machine_busy_s()
        return CpuSample(time.time(), groups, busy, total)


def cpu_percent(a: CpuSample, b: CpuSample) -> dict[str, float]:
    """Percent of one core per group between two samples, plus the machine and the rest."""
    wall = b.at - a.at
    out = {k: 100.0 * (b.groups.get(k, 0.0) - v) / wall for k, v in a.groups.items()}
    cores = os.cpu_count() or 1
    machine = 100.0 * (b.machine_busy - a.machine_busy) / (b.machine_total - a.machine_total)
    # Whole processes only ("collector 0", not its threads "collector 0 writer").
    ours = sum(v for k, v in out.items() if k.count(" ") <= 1)
    out["machine"] = machine * cores
    out["other"] = out["machine"] - ours
    return out


# -- measuring ----------------------------------------------------------------------------------


def quantile(values: npt.NDArray[np.float64], q: float) -> float:
    return float(np.quantile(values, q)) if values.size else float("nan")


def rate_in(times: npt.NDArray[np.float64], start: float, end: float) -> float:
    """Events per second with a time in [start, end)."""
    if end <= start:
        return float("nan")
    return float(np.count_nonzero((times >= start) & (times < end))) / (end - start)


def lag_slope(ends: npt.NDArray[np.float64], lags: npt.NDArray[np.float64]) -> float:
    """Seconds of lag gained per second (least squares of lag over window_end)."""
    if ends.size < 2:
        return float("nan")
    slope = np.polyfit(ends - ends[0], lags, 1)[0]
    return float(slope)


def node_year_bytes(verdict_row_bytes: float, health_row_bytes: float) -> float:
    return verdict_row_bytes * VERDICTS_PER_NODE_YEAR + health_row_bytes * HEALTH_PER_NODE_YEAR


@dataclass(frozen=True)
class Phase:
    name: str
    start: float
    end: float


class Db:
    """The bench's own connection to the database under test (read-only queries and sizes)."""

    def __init__(self, kind: DbKind, url: str, admin_url: str | None = None) -> None:
        self.kind = kind
        self.url = url
        self.admin_url = admin_url
        self.path = Path(url.removeprefix("sqlite:///")) if kind == "sqlite" else None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.path is not None:
            with sqlite3.connect(self.path) as conn:
                return list(conn.execute(sql, tuple(params)).fetchall())
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as pconn:
            return list(pconn.execute(sql.replace("?", "%s"), tuple(params)).fetchall())

    def verdicts(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM verdicts")[0][0])

    def compact(self) -> None:
        """What a size is read after: the WAL checkpointed (SQLite), VACUUM ANALYZE (PostgreSQL)."""
        if self.path is not None:
            with sqlite3.connect(self.path) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as pconn:
            pconn.execute("VACUUM (ANALYZE)")

    def size(self) -> int:
        """The database's bytes: the file and its WAL (SQLite), pg_database_size (PostgreSQL)."""
        if self.path is not None:
            wal = self.path.with_name(self.path.name + "-wal")
            return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        return int(self.query("SELECT pg_database_size(current_database())")[0][0])

    def table_bytes(self) -> dict[str, int]:
        """Each table's bytes with its indexes."""
        if self.path is not None:
            rows = self.query(
                "SELECT m.tbl_name, SUM(d.pgsize) FROM dbstat d JOIN sqlite_master m"
                " ON m.name = d.name GROUP BY m.tbl_name"
            )
        else:
            rows = self.query(
                "SELECT relname, pg_total_relation_size(relid) FROM pg_stat_user_tables"
            )
        return {str(name): int(size) for name, size in rows}

    def wal_lsn(self) -> int | None:
        if self.kind != "postgresql":
            return None
        return int(self.query("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0])

    def settings(self) -> str:
        if self.kind == "sqlite":
            return "journal_mode=WAL, synchronous=FULL (control/store/backend.py)"
        placeholders = ", ".join("?" for _ in PG_SHOWN)
        rows = self.query(
            f"SELECT name, setting, unit FROM pg_settings WHERE name IN ({placeholders})",  # noqa: S608 - constant names
            PG_SHOWN,
        )
        shown = {name: f"{setting}{_unit(unit)}" for name, setting, unit in rows}
        version = self.query("SHOW server_version")[0][0]
        return f"PostgreSQL {version}: " + ", ".join(f"{k}={shown[k]}" for k in PG_SHOWN)


def _unit(unit: str | None) -> str:
    if unit is None:
        return ""
    return f"x{unit}" if unit[0].isdigit() else unit


@dataclass
class RunResult:
    label: str
    kind: DbKind
    collectors: int
    settings: str
    phases: dict[str, Phase]
    offered: dict[str, float]
    ingested: dict[str, float]
    ingested_db: dict[str, float]
    lag_received: dict[str, tuple[float, float, float]]
    """p50, p99, max of received_at - window_end of the verdicts sent in the phase."""
    lag_commit: dict[str, tuple[float, float, float]]
    lag_slope: float
    lag_end_overload: float
    drain_s: float
    catch_up_rate: float
    cpu: dict[str, dict[str, float]]
    published: int
    health_published: int
    stored: int
    health_stored: int
    lost: int
    duplicate_rows: int
    duplicates_delivered: int
    gaps_missing: int
    seq_mismatch: int
    quarantined: int
    batches: int
    mean_batch: float
    table_bytes: dict[str, int]
    db_growth: int
    wal_bytes_per_verdict: float | None
    collector_lag: list[tuple[float | None, float | None]]
    verdict_payload: float
    health_payload: float
    publisher_late_s: float
    split: list[int]
    held: dict[str, int]
    """Per phase, the most messages a collector held received and not yet stored."""


# -- one run: a broker, collectors and publishers, one database -----------------------------


def write_broker_config(broker: Any, max_queued: int) -> None:
    """The test broker's config with quiet logging and the control room's queue length."""
    lines = [
        line
        for line in broker.config_path.read_text().splitlines()
        if not line.startswith("log_type")
    ]
    lines += [f"log_type {t}" for t in BROKER_LOG_TYPES]
    lines.append(f"max_queued_messages {max_queued}")
    broker.config_path.write_text("\n".join(lines) + "\n")


def publish_probes(host: str, port: int, until: Callable[[], bool]) -> None:
    """Send probes (a clip topic the collectors count and do not store) until `until()`."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="fleet-probe")
    client.connect(host, port)
    client.loop_start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    n = 0
    while not until():
        if time.monotonic() > deadline:
            raise SystemExit("the collectors did not subscribe")
        client.publish(f"{PREFIX}/fleet-probe/clip/{n}", b"probe", qos=1)
        n += 1
        time.sleep(0.1)
    client.disconnect()
    client.loop_stop()


def spread(n: int, parts: int) -> list[range]:
    step = -(-n // parts)
    return [range(p * step, min(n, (p + 1) * step)) for p in range(parts) if p * step < n]


@dataclass(frozen=True)
class Plan:
    nodes: int
    rate: float
    warmup_s: float
    seconds: float
    overload_rate: float
    overload_s: float
    publishers: int
    nodes_per_connection: int
    health_every: int
    batch_max: int
    broker_queue: int


class Children:
    """Child processes (spawned, so no paho thread is forked) and their pipes."""

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self.processes: list[Any] = []

    def start(self, target: Callable[[Any, Connection], None], spec: Any) -> Connection:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=target, args=(spec, child), daemon=True)
        process.start()
        child.close()
        self.processes.append(process)
        return parent

    def stop(self) -> None:
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()


def receive(conn: Connection, timeout_s: float, what: str) -> Any:
    if not conn.poll(timeout_s):
        raise SystemExit(f"no {what} within {timeout_s:.0f} s")
    return conn.recv()


class FleetRun:
    """One run: a broker, the collectors and the publishers, into one database, phase by phase."""

    def __init__(
        self, kind: DbKind, collectors: int, plan: Plan, folder: Path, stack: ExitStack
    ) -> None:
        from tests.fixtures.broker import Broker
        from tests.fixtures.postgres import running_postgres

        self.kind = kind
        self.plan = plan
        self.label = f"{kind}, {collectors} collector{'s' if collectors > 1 else ''}"
        self.accounting = Accounting()
        if kind == "sqlite":
            self.db = Db(kind, f"sqlite:///{folder / kind / 'control.db'}")
        else:
            server = stack.enter_context(running_postgres(PG_SETTINGS))
            self.db = Db(kind, server.url(server.create_database()), server.admin_url())
            assert server.process is not None  # noqa: S101 - running_postgres started it
            self.accounting.postmaster_pid = server.process.pid
        Store.open(self.db.url).close()  # the schema, before the size of the empty database
        self.empty_size = self.db.size()
        self.broker = Broker(folder / f"broker-{kind}-{collectors}")
        write_broker_config(self.broker, plan.broker_queue)
        self.broker.start()
        stack.callback(self.broker.stop)
        assert self.broker._process is not None  # noqa: S101 - started
        self.accounting.broker_pid = self.broker._process.pid
        self.children = Children()
        stack.callback(self.children.stop)
        self.collectors = self._start_collectors(collectors)
        self.publishers, self._shares = self._start_publishers()
        self.samples: dict[str, CpuSample] = {}
        self.phases: dict[str, Phase] = {}
        self.lsn: dict[str, int | None] = {}
        self.held: dict[str, int] = {}
        """Per phase, the most messages one collector held received and not yet stored."""

    def _start_collectors(self, n: int) -> list[Connection]:
        group = SHARE_GROUP if n > 1 else None
        conns = [
            self.children.start(
                collector_main,
                CollectorSpec(
                    i, self.db.url, self.broker.host, self.broker.port, group, self.plan.batch_max
                ),
            )
            for i in range(n)
        ]
        ready: list[Any] = []

        def all_ready() -> bool:
            ready.extend(c.recv() for c in conns if c.poll())
            return len(ready) == len(conns)

        publish_probes(self.broker.host, self.broker.port, all_ready)
        self.accounting.collectors = [(pid, threads) for _, pid, threads in ready]
        return conns

    def _start_publishers(self) -> tuple[list[Connection], list[float]]:
        plan = self.plan
        rng = random.Random(12)  # noqa: S311 - a simulation
        names = [f"tower-{n:04d}" for n in range(plan.nodes)]
        # Seqs as a node's outbox starts them: its clock in microseconds when it was made.
        first = [int(time.time() * 1e6) - rng.randrange(10**12) for _ in names]
        parts = spread(plan.nodes, plan.publishers)
        conns = [
            self.children.start(
                publisher_main,
                PublisherSpec(
                    p,
                    self.broker.host,
                    self.broker.port,
                    tuple(names[i] for i in part),
                    tuple(first[i] for i in part),
                    plan.nodes_per_connection,
                    plan.health_every,
                    seed=100 + p,
                ),
            )
            for p, part in enumerate(parts)
        ]
        self.accounting.publisher_pids = [
            receive(c, READY_TIMEOUT_S, "publisher")[1] for c in conns
        ]
        return conns, [len(part) / plan.nodes for part in parts]

    def set_rate(self, rate: float) -> None:
        for conn, share in zip(self.publishers, self._shares, strict=True):
            conn.send(("rate", rate * share))

    def phase(self, name: str, rate: float, seconds: float) -> None:
        if seconds <= 0:
            return
        self.set_rate(rate)
        start = time.time()
        self.samples[name + ".start"] = self.accounting.sample()
        self.lsn[name + ".start"] = self.db.wal_lsn()
        print(f"  {name}: {rate:.0f} verdicts/s for {seconds:.0f} s", flush=True)
        held = 0
        while (left := start + seconds - time.time()) > 0:
            time.sleep(min(SAMPLE_S, left))
            held = max(held, *(int(s["queued"]) for s in self._collector_stats()))
        self.held[name] = held
        self.samples[name + ".end"] = self.accounting.sample()
        self.lsn[name + ".end"] = self.db.wal_lsn()
        self.phases[name] = Phase(name, start, time.time())

    def _collector_stats(self) -> list[dict[str, Any]]:
        for conn in self.collectors:
            conn.send("stats")
        return [receive(conn, 30, "collector stats") for conn in self.collectors]

    def finish(self) -> tuple[float, list[PublisherReport], list[CollectorReport]]:
        """Stop publishing, wait until everything published is stored (or nothing more comes),
        stop the collectors; when publishing stopped, and the reports."""
        self.set_rate(0.0)
        stopped = time.time()
        self.samples["drain.start"] = self.accounting.sample()
        for conn in self.publishers:
            conn.send(("finish", 0))
        reports: list[PublisherReport] = [
            receive(c, ACK_TIMEOUT_S + 30, "publisher report") for c in self.publishers
        ]
        published = sum(r.verdicts for r in reports)

        def handled() -> int:
            # Stored, or dropped as already stored: every published verdict counts once here.
            stats = self._collector_stats()
            return sum(int(s["stored"].get("verdict", 0)) + s["verdict_duplicates"] for s in stats)

        print(f"  drain: {published - handled()} verdicts to store", flush=True)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        progress = (-1, time.monotonic())
        while (done := handled()) < published:
            now = time.monotonic()
            if done != progress[0]:
                progress = (done, now)
            elif now - progress[1] > STALL_S or now > deadline:
                # What the broker dropped never comes (see --broker-queue).
                print(f"  drain: nothing stored for {now - progress[1]:.0f} s; gave up", flush=True)
                break
            time.sleep(0.2)
        self.samples["drain.end"] = self.accounting.sample()
        for conn in self.collectors:
            conn.send("stop")
        col_reports: list[CollectorReport] = [
            receive(c, 60, "collector report") for c in self.collectors
        ]
        self.children.stop()
        return stopped, reports, col_reports

    def result(
        self, stopped: float, reports: list[PublisherReport], col_reports: list[CollectorReport]
    ) -> RunResult:
        """Everything measured, read back from the reports and the database."""
        db, phases = self.db, self.phases
        sent_times = np.sort(np.concatenate([np.frombuffer(r.times) for r in reports]))
        commit_end = np.concatenate([np.frombuffer(r.window_end) for r in col_reports])
        committed = np.concatenate([np.frombuffer(r.committed) for r in col_reports])
        rows = db.query("SELECT window_end, received_at FROM verdicts")
        stored_end = np.array([r[0] for r in rows], dtype=np.float64)
        stored_recv = np.array([r[1] for r in rows], dtype=np.float64)
        last_commit = float(committed.max()) if committed.size else stopped
        drain_s = max(0.0, last_commit - stopped)

        def lags(
            sel: npt.NDArray[np.bool_], at: npt.NDArray[np.float64], end: npt.NDArray[np.float64]
        ) -> tuple[float, float, float]:
            values = at[sel] - end[sel]
            return quantile(values, 0.5), quantile(values, 0.99), _max(values)

        offered, ingested, ingested_db = {}, {}, {}
        lag_received, lag_commit, cpu = {}, {}, {}
        for name, ph in phases.items():
            offered[name] = rate_in(sent_times, ph.start, ph.end)
            ingested[name] = rate_in(committed, ph.start, ph.end)
            ingested_db[name] = rate_in(stored_recv, ph.start, ph.end)
            in_rows = (stored_end >= ph.start) & (stored_end < ph.end)
            lag_received[name] = lags(in_rows, stored_recv, stored_end)
            in_commits = (commit_end >= ph.start) & (commit_end < ph.end)
            lag_commit[name] = lags(in_commits, committed, commit_end)
            cpu[name] = cpu_percent(self.samples[name + ".start"], self.samples[name + ".end"])
        cpu["drain"] = cpu_percent(self.samples["drain.start"], self.samples["drain.end"])
        slope = end_lag = float("nan")
        if "overload" in phases:
            # The commit lag: a collector receives a message before it can store it (it holds
            # up to two batches, and the sockets more), so received_at hides part of a backlog.
            ph = phases["overload"]
            sel = (commit_end >= ph.start) & (commit_end < ph.end)
            slope = lag_slope(commit_end[sel], committed[sel] - commit_end[sel])
            tail = sel & (commit_end >= ph.end - 1.0)
            end_lag = quantile(committed[tail] - commit_end[tail], 0.5)
        wal_per_verdict = None
        start_lsn, end_lsn = self.lsn.get("steady.start"), self.lsn.get("steady.end")
        if start_lsn is not None and end_lsn is not None:
            ph = phases["steady"]
            n_steady = int(np.count_nonzero((committed >= ph.start) & (committed < ph.end)))
            wal_per_verdict = (end_lsn - start_lsn) / max(1, n_steady)

        published = sum(r.verdicts for r in reports)
        stored = db.verdicts()
        distinct = int(
            db.query("SELECT COUNT(*) FROM (SELECT DISTINCT node, seq FROM verdicts) AS d")[0][0]
        )
        health_stored = int(db.query("SELECT COUNT(*) FROM health")[0][0])
        opened = Store.open(db.url)
        try:
            missing = opened.counts().missing
        finally:
            opened.close()
        db.compact()
        stats = [r.stats for r in col_reports]
        batches = sum(int(s["batches"]) for s in stats)
        health_published = sum(r.health for r in reports)
        return RunResult(
            label=self.label,
            kind=self.kind,
            collectors=len(col_reports),
            settings=db.settings(),
            phases=phases,
            offered=offered,
            ingested=ingested,
            ingested_db=ingested_db,
            lag_received=lag_received,
            lag_commit=lag_commit,
            lag_slope=slope,
            lag_end_overload=end_lag,
            drain_s=drain_s,
            # A backlog of a second or two says nothing about the rate it drains at.
            catch_up_rate=rate_in(committed, stopped, last_commit) if drain_s >= 2 else math.nan,
            cpu=cpu,
            published=published,
            health_published=health_published,
            stored=stored,
            health_stored=health_stored,
            lost=published - stored,
            duplicate_rows=stored - distinct,
            duplicates_delivered=sum(int(s["verdict_duplicates"]) for s in stats),
            gaps_missing=missing,
            seq_mismatch=self._seq_mismatches(reports),
            quarantined=sum(sum(s["quarantined"].values()) for s in stats),
            batches=batches,
            mean_batch=sum(sum(s["stored"].values()) for s in stats) / max(1, batches),
            table_bytes=db.table_bytes(),
            db_growth=db.size() - self.empty_size,
            wal_bytes_per_verdict=wal_per_verdict,
            collector_lag=[(r.lag_p50, r.lag_p99) for r in col_reports],
            verdict_payload=sum(r.verdict_bytes for r in reports) / max(1, published),
            health_payload=sum(r.health_bytes for r in reports) / max(1, health_published),
            publisher_late_s=max((r.late_at_end_s for r in reports), default=0.0),
            split=[int(s["stored"].get("verdict", 0)) for s in stats],
            held=self.held,
        )

    def _seq_mismatches(self, reports: list[PublisherReport]) -> int:
        """Nodes whose stored seqs are not exactly first..last published (or that nobody sent)."""
        seqs: dict[str, tuple[int, int]] = {}
        for r in reports:
            seqs.update(r.seqs)
        per_node = {
            str(node): (int(lo), int(hi), int(n))
            for node, lo, hi, n in self.db.query(
                "SELECT node, MIN(seq), MAX(seq), COUNT(*) FROM verdicts GROUP BY node"
            )
        }
        bad = sum(
            1 for node, (lo, hi) in seqs.items() if per_node.get(node) != (lo, hi, hi - lo + 1)
        )
        return bad + len(set(per_node) - set(seqs))


def run_one(kind: DbKind, collectors: int, plan: Plan, folder: Path) -> RunResult:
    with ExitStack() as stack:
        run = FleetRun(kind, collectors, plan, folder, stack)
        print(f"\n== {run.label}", flush=True)
        run.phase("warm-up", plan.rate, plan.warmup_s)
        run.phase("steady", plan.rate, plan.seconds)
        run.phase("overload", plan.overload_rate, plan.overload_s)
        return run.result(*run.finish())


def _max(values: npt.NDArray[np.float64]) -> float:
    return float(values.max()) if values.size else float("nan")


# -- the machine and the disk ---------------------------------------------------------------


def fsync_ms(folder: Path, n: int = 200) -> float:
    """Median time of an 8 KiB write + fdatasync in `folder` (the disk the databases use)."""
    path = folder / "fsync-probe"
    block = os.urandom(8192)
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for i in range(n):
            os.pwrite(fd, block, (i % 16) * 8192)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return 1000.0 * statistics.median(times)


# -- the report ----------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if seconds >= 10:
        return f"{seconds:.0f}s"
    if seconds >= 1:
        return f"{seconds:.1f}s"
    return f"{1000 * seconds:.0f}ms"


def _gb(value: float) -> str:
    return f"{value / 1e9:.2f}GB"


def report_lines(results: Sequence[RunResult], plan: Plan) -> list[str]:
    lines = [
        f"{'':24s} {'phase':8s} {'offered/s':>9s} {'ingested/s':>10s} {'lag p50':>8s}"
        f" {'p99':>6s} {'commit p50':>10s} {'p99':>6s} {'collector CPU':>13s} {'machine':>8s}"
    ]
    for r in results:
        for name in ("steady", "overload"):
            if name not in r.phases:
                continue
            cpu = r.cpu[name]
            col = sum(v for k, v in cpu.items() if k.startswith("collector ") and k.count(" ") == 1)
            lines.append(
                f"{r.label:24s} {name:8s} {r.offered[name]:9.0f} {r.ingested[name]:10.0f}"
                f" {_ms(r.lag_received[name][0]):>8s} {_ms(r.lag_received[name][1]):>6s}"
                f" {_ms(r.lag_commit[name][0]):>10s} {_ms(r.lag_commit[name][1]):>6s}"
                f" {col:12.0f}% {cpu['machine']:7.0f}%"
            )
        cpu = r.cpu["drain"]
        col = sum(v for k, v in cpu.items() if k.startswith("collector ") and k.count(" ") == 1)
        catch_up = "-" if math.isnan(r.catch_up_rate) else f"{r.catch_up_rate:.0f}"
        lines.append(
            f"{r.label:24s} {'catch-up':8s} {'-':>9s} {catch_up:>10s}"
            f" {'':>8s} {'':>6s} {'':>10s} {'':>6s} {col:12.0f}% {cpu['machine']:7.0f}%"
        )
    lines.append("")
    lines.append(
        f"{'':24s} {'verdicts':>9s} {'stored':>9s} {'lost':>5s} {'dup rows':>8s}"
        f" {'redelivered':>11s} {'gaps':>5s} {'seq check':>9s} {'health':>8s}"
        f" {'batch':>6s} {'split':>13s}"
    )
    for r in results:
        split = "/".join(str(s) for s in r.split) if len(r.split) > 1 else "-"
        lines.append(
            f"{r.label:24s} {r.published:9d} {r.stored:9d} {r.lost:5d} {r.duplicate_rows:8d}"
            f" {r.duplicates_delivered:11d} {r.gaps_missing:5d}"
            f" {'ok' if r.seq_mismatch == 0 else f'{r.seq_mismatch} bad':>9s}"
            f" {r.health_stored:8d} {r.mean_batch:6.0f} {split:>13s}"
        )
    lines.append("")
    lines.append(
        f"{'':24s} {'verdict B/row':>13s} {'health B/row':>12s} {'node-year: verdicts':>19s}"
        f" {'+ health':>8s} {'= total':>8s} {'DB growth/verdict':>17s} {'WAL B/verdict':>13s}"
    )
    for r in results:
        v_bytes = r.table_bytes.get("verdicts", 0) / max(1, r.stored)
        h_bytes = r.table_bytes.get("health", 0) / max(1, r.health_stored)
        wal = f"{r.wal_bytes_per_verdict:.0f}" if r.wal_bytes_per_verdict is not None else "-"
        lines.append(
            f"{r.label:24s} {v_bytes:13.0f} {h_bytes:12.0f}"
            f" {_gb(node_year_bytes(v_bytes, 0)):>19s} {_gb(node_year_bytes(0, h_bytes)):>8s}"
            f" {_gb(node_year_bytes(v_bytes, h_bytes)):>8s}"
            f" {r.db_growth / max(1, r.stored):17.0f} {wal:>13s}"
        )
    lines.append("")
    for r in results:
        lines.append(f"{r.label}: {capacity_line(r)}")
    lines.append("")
    lines.append("CPU, percent of one core, by phase (collector threads: writer = parse, check,")
    lines.append("store, ack; paho = the MQTT network thread):")
    for r in results:
        for name, cpu in r.cpu.items():
            shown = ", ".join(
                f"{k} {v:.0f}%" for k, v in cpu.items() if k not in ("machine", "other")
            )
            lines.append(
                f"  {r.label:24s} {name:8s} {shown}; machine {cpu['machine']:.0f}%"
                f" (other work {cpu['other']:.0f}%)"
            )
    lines.append("")
    for r in results:
        lines.append(f"{r.label}: {r.settings}")
        tables = ", ".join(
            f"{name} {size / 1e6:.1f}"
            for name, size in sorted(r.table_bytes.items(), key=lambda kv: -kv[1])
            if size >= 100_000
        )
        lines.append(
            f"  MB by table with its indexes: {tables}; the database grew {r.db_growth / 1e6:.1f}"
        )
        lines.append(
            f"  overload: lag grew {r.lag_slope:.2f} s per s, {_ms(r.lag_end_overload)} at its"
            f" end; the backlog drained in {r.drain_s:.1f} s after publishing stopped;"
            f" collector's own lag stats (last {2000} verdicts) p50/p99"
            f" {', '.join(f'{_ms(a or 0)}/{_ms(b or 0)}' for a, b in r.collector_lag)};"
            f" quarantined {r.quarantined}; mean payload verdict {r.verdict_payload:.0f} B,"
            f" health {r.health_payload:.0f} B; publishers behind schedule at the end by"
            f" {r.publisher_late_s:.2f} s; rows by received_at: "
            + ", ".join(f"{name} {rate:.0f}/s" for name, rate in r.ingested_db.items())
            + "; most held in a collector, received and not yet stored: "
            + ", ".join(f"{name} {n}" for name, n in r.held.items())
        )
    return lines


def capacity_line(r: RunResult) -> str:
    """The most it takes: the overload phase's ingest rate (while the fleet publishes at more than
    that), and the catch-up rate (the same backlog, the publishers idle)."""
    if "overload" not in r.phases:
        return "no overload phase: capacity not measured"
    offered, ingested = r.offered["overload"], r.ingested["overload"]
    catch_up = "" if math.isnan(r.catch_up_rate) else f", catching up at {r.catch_up_rate:.0f}/s"
    if ingested >= 0.95 * offered:
        return (
            f"not saturated at {offered:.0f} verdicts/s offered: takes at least {ingested:.0f}/s"
            f" ({30 * ingested:,.0f} nodes at one verdict per 30 s){catch_up}"
        )
    return (
        f"saturated: {offered:.0f} verdicts/s offered, {ingested:.0f}/s stored (lag growing"
        f" {r.lag_slope:.2f} s per s){catch_up}; at most about {30 * ingested:,.0f} nodes"
        " at one verdict per 30 s on this machine"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0, help="steady-state measurement")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="verdicts/s the whole fleet offers (steady)"
    )
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--collectors",
        type=int,
        choices=(1, 2),
        default=1,
        help="collectors into PostgreSQL (one shared subscription group); SQLite always has one",
    )
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument(
        "--overload-rate",
        type=float,
        default=None,
        help="verdicts/s offered after the steady state (default 4 x --rate)",
    )
    parser.add_argument("--overload-seconds", type=float, default=10.0, help="0: none")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--nodes-per-connection", type=int, default=50)
    parser.add_argument(
        "--health-every", type=int, default=2, help="a health report per N verdicts (0: none)"
    )
    parser.add_argument("--batch-max", type=int, default=500, help="collector.batch_max")
    parser.add_argument(
        "--broker-queue",
        type=int,
        default=0,
        help="mosquitto max_queued_messages (0: no limit; mosquitto's own default 1000 drops"
        " a collector's messages beyond 1000 + its 500 in flight)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    plan = Plan(
        nodes=args.nodes,
        rate=args.rate,
        warmup_s=args.warmup,
        seconds=args.seconds,
        overload_rate=args.overload_rate or 4 * args.rate,
        overload_s=args.overload_seconds,
        publishers=args.publishers,
        nodes_per_connection=args.nodes_per_connection,
        health_every=args.health_every,
        batch_max=args.batch_max,
        broker_queue=args.broker_queue,
    )
    machine = machine_lines(("paho-mqtt", "psycopg", "jsonschema", "structlog"))
    kinds: list[DbKind] = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    started = time.monotonic()
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="corona-bench-fleet-") as tmp:
        folder = Path(tmp)
        disk_ms = fsync_ms(folder)
        for kind in kinds:
            collectors = args.collectors if kind == "postgresql" else 1
            results.append(run_one(kind, collectors, plan, folder))
    load_end = os.getloadavg()
    period = plan.nodes / plan.rate
    print()
    print("\n".join(machine))
    print(
        f"load average at the end {load_end[0]:.2f} (1 min) / {load_end[1]:.2f} (5 min);"
        f" disk: 8 KiB write + fdatasync {disk_ms:.2f} ms (median) in {tempfile.gettempdir()}"
    )
    print(
        f"fleet: {plan.nodes} nodes over {plan.publishers} publisher processes,"
        f" {plan.nodes_per_connection} nodes per MQTT connection"
        f" ({-(-plan.nodes // plan.nodes_per_connection)} connections), QoS 1;"
        f" each node a verdict every {period:.2f} s ({WINDOW_S / period:.0f}x a 30 s window)"
        + (f" and its health every {plan.health_every} verdicts" if plan.health_every else "")
    )
    print(
        f"phases: warm-up {plan.warmup_s:.0f} s, steady {plan.seconds:.0f} s at {plan.rate:.0f}"
        f" verdicts/s, overload {plan.overload_s:.0f} s at {plan.overload_rate:.0f}/s, then"
        f" the drain; collector batch_max {plan.batch_max}; mosquitto max_queued_messages"
        f" {plan.broker_queue or 'unlimited'}; everything on this machine\n"
    )
    print("\n".join(report_lines(results, plan)))
    print(
        "\noffered = verdicts published per second in the phase; ingested = verdicts committed"
        " per second in it (the collectors' commit times; by the rows' received_at, below, the"
        " rate runs ahead by what the collector holds);"
        "\nlag = received_at - window_end of the phase's verdicts (from the stored rows),"
        " commit = the batch's commit - window_end (window_end has 1 ms resolution);"
        "\ncatch-up = the rate the backlog was stored at once publishing stopped;"
        " lost = published - stored; dup rows = rows - distinct (node, seq);"
        "\nredelivered = verdicts the collectors got again and dropped by the (node, seq) key;"
        " gaps = the store's missing seqs; seq check = each node's stored seqs are exactly"
        " first..last published;"
        f"\nper node-year = verdict B/row x {VERDICTS_PER_NODE_YEAR:,} + health B/row x"
        f" {HEALTH_PER_NODE_YEAR:,} (tables with their indexes);"
        " DB growth/verdict = the whole database's growth per verdict, health included"
        f"\nran {time.monotonic() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
