"""bench/fleet's own measuring: its simulated node sends what a real one does, and the numbers
it prints (rates, lags, CPU shares, sizes per node-year) are computed right. No broker here: the
bench itself is run by hand (python -m bench.fleet), not by the suite."""

from __future__ import annotations

import json
import os
import random
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from bench import fleet
from control.ingest import to_record
from control.store import Store
from control.store.records import HealthIn, VerdictIn
from daemon.schemas import validate


def sim() -> fleet.NodeSim:
    return fleet.NodeSim("tower-0007", 1_796_144_157_038_979, random.Random(3))  # noqa: S311


def test_the_simulated_node_publishes_what_the_collector_stores_as_a_real_nodes() -> None:
    node = sim()
    at = time.time()
    first, second = node.verdict(at), node.verdict(at + 5)
    doc = json.loads(first)
    validate("verdict", doc)
    for key in ("physics", "sensor", "label_by", "clock_synced", "clip", "baseline"):
        assert key in doc
    assert doc["source"] == "live"
    assert json.loads(second)["seq"] == doc["seq"] + 1 == node.first_seq + 1
    assert abs(datetime.fromisoformat(doc["window_end"]).timestamp() - at) < 0.001
    # A real node's verdict is 650-720 bytes (a replay printed 720 with its file and offset_s).
    assert 600 <= len(first) <= 800
    record = to_record(fleet.PREFIX, f"{fleet.PREFIX}/tower-0007/verdict", first, time.time())
    assert isinstance(record, VerdictIn)
    assert record.seq == node.first_seq
    health = node.health(at)
    validate("health", json.loads(health))
    assert 900 <= len(health) <= 1500
    stored = to_record(fleet.PREFIX, f"{fleet.PREFIX}/tower-0007/health", health, time.time())
    assert isinstance(stored, HealthIn)


def test_rates_lags_and_the_node_year() -> None:
    times = np.array([0.5, 1.0, 1.5, 2.0, 2.5, 9.0])
    assert fleet.rate_in(times, 0.0, 2.0) == 1.5  # 0.5, 1.0, 1.5: the end is open
    ends = np.arange(10.0)
    assert fleet.lag_slope(ends, 0.5 * ends + 2.0) == pytest.approx(0.5)
    assert fleet.quantile(np.arange(101.0), 0.99) == pytest.approx(99.0)
    assert fleet.VERDICTS_PER_NODE_YEAR == 1_051_200
    assert fleet.node_year_bytes(1000.0, 0.0) == 1_051_200_000
    assert fleet.node_year_bytes(0.0, 2.0) == 2 * 525_600


def test_cpu_shares_count_whole_processes_once_and_the_rest_as_other_work() -> None:
    cores = os.cpu_count() or 1
    a = fleet.CpuSample(
        0.0, {"collector 0": 0.0, "collector 0 writer": 0.0, "mosquitto": 0.0}, 0, 0
    )
    b = fleet.CpuSample(
        10.0,
        {"collector 0": 5.0, "collector 0 writer": 4.0, "mosquitto": 1.0},
        machine_busy=10.0,
        machine_total=10.0 * cores,
    )
    cpu = fleet.cpu_percent(a, b)
    assert cpu["collector 0"] == 50.0
    assert cpu["collector 0 writer"] == 40.0
    assert cpu["machine"] == pytest.approx(100.0)  # one core's worth of the machine was busy
    assert cpu["other"] == pytest.approx(40.0)  # 100 - (50 + 10): the writer is in the 50


def test_sizes_are_read_per_table_from_a_real_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'control.db'}"
    store = Store.open(url)
    node = sim()
    now = time.time()
    payloads = [node.verdict(now + i) for i in range(200)]
    records = [
        to_record(fleet.PREFIX, f"{fleet.PREFIX}/tower-0007/verdict", p, now) for p in payloads
    ]
    store.write([r for r in records if isinstance(r, VerdictIn)])
    store.close()
    db = fleet.Db("sqlite", url)
    assert db.verdicts() == 200
    db.compact()
    tables = db.table_bytes()
    # The payload and its indexes: more than the payload, less than three times it.
    per_row = tables["verdicts"] / 200
    assert sum(map(len, payloads)) / 200 < per_row < 3 * sum(map(len, payloads)) / 200
    assert db.size() >= sum(tables.values())
