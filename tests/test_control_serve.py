"""`corona-control serve` end to end: real replaying nodes, a real mosquitto, the collector
process killed and started again, and the API's answers; on SQLite and on PostgreSQL."""

from __future__ import annotations

import signal
import threading
import urllib.error
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.control_serve import ServeProcess, control_config
from tests.daemon_runs import (
    MonitorProcess,
    mqtt_section,
    noisy_clip,
    wait_until,
    write_config,
    write_wav,
)
from tests.fixtures.broker import Broker
from tests.watch_messages import NOW, publish_raw, topic, verdict

NODES = ("tower-1", "tower-2", "tower-3")


@pytest.fixture
def model_path(exported: Callable[[str, str], Any]) -> Path:
    return Path(exported("sigmoid", "int8").tflite_path)


def seqs(serve: ServeProcess, node: str) -> list[int]:
    """The node's stored seqs, oldest first ([] before the node's first message: a 404)."""
    path = f"api/nodes/{urllib.parse.quote(node, safe='')}/verdicts?limit=10000"
    try:
        return [v["seq"] for v in serve.get_json(path)]
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return []
        raise


def test_three_replaying_nodes_every_verdict_in_the_database_once(
    tmp_path: Path, broker: Broker, model_path: Path, store_url: str
) -> None:
    config = control_config(tmp_path / "control", broker, database_url=store_url)
    serve = ServeProcess(config, tmp_path / "serve.log")
    try:
        printed: dict[str, list[dict[str, Any]]] = {}
        for i, node in enumerate(NODES):
            folder = tmp_path / node
            folder.mkdir()
            wav = write_wav(folder / "clip.wav", noisy_clip(6.0, seed=i))
            cfg = write_config(folder, model_path, node_id=node, mqtt=mqtt_section(broker))
            replay = MonitorProcess(
                ["--config", str(cfg), "--replay", str(wav)], log_path=folder / "log"
            )
            assert replay.finish() == 0, replay.log()
            printed[node] = replay.lines
        for node in NODES:
            want = [v["seq"] for v in printed[node]]

            def arrived(node: str = node, want: list[int] = want) -> bool:
                return seqs(serve, node) == want

            wait_until(arrived, f"{node}'s verdicts", process=serve)
        stored = {node: serve.get_json(f"api/nodes/{node}/verdicts?limit=10000") for node in NODES}
        assert stored == printed  # each verdict as published, once, oldest first
        fleet = {n["node"]: n for n in serve.get_json("api/nodes")}
        assert sorted(fleet) == list(NODES)
        assert all(n["gaps"] == 0 for n in fleet.values())
        assert all(serve.get_json(f"api/nodes/{node}/gaps") == [] for node in NODES)
    finally:
        code, _ = serve.stop()
        serve.close()
    assert code == 0, serve.log()


def test_a_killed_collector_loses_nothing_and_a_skipped_seq_is_a_gap(
    tmp_path: Path, broker: Broker, store_url: str
) -> None:
    config = control_config(tmp_path / "control", broker, database_url=store_url)
    steady = [(topic("k1", "verdict"), verdict("k1", s, NOW)) for s in range(1, 401)]
    holed = [(topic("k2", "verdict"), verdict("k2", s, NOW)) for s in range(1, 41) if s != 17]
    publisher = threading.Thread(
        target=publish_raw, args=(broker, steady + holed), kwargs={"retain": False}
    )
    first = ServeProcess(config, tmp_path / "serve1.log")
    try:
        publisher.start()
        wait_until(lambda: len(seqs(first, "k1")) >= 50, "the collector storing", process=first)
        first.stop(signal.SIGKILL)
    finally:
        first.close()
    publisher.join(120)
    assert not publisher.is_alive()
    second = ServeProcess(config, tmp_path / "serve2.log")  # the same client id: its session
    try:
        wait_until(lambda: seqs(second, "k1") == list(range(1, 401)), "all 400", process=second)
        wait_until(lambda: len(seqs(second, "k2")) == 39, "k2's 39", process=second)
        assert second.get_json("api/nodes/k1/gaps") == []
        (gap,) = second.get_json("api/nodes/k2/gaps")
        assert (gap["from_seq"], gap["to_seq"], gap["count"]) == (17, 17, 1)
        fleet = {n["node"]: n["gaps"] for n in second.get_json("api/nodes")}
        assert fleet == {"k1": 0, "k2": 1}
    finally:
        code, _ = second.stop()
        second.close()
    assert code == 0, second.log()
