"""Evidence clips from a real live node into the control room: requested by the collector,
answered by the daemon's clip server, stored byte for byte; refusals and unrequested clips."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import paho.mqtt.publish as mqtt_publish
import pytest
import yaml

from control.collector import ClipRequestError, Collector
from control.config import CollectorSettings, ControlSettings
from control.store import Store
from daemon.config import MqttSettings
from tests.daemon_runs import CONTROL, noisy_clip, wait_until
from tests.fixtures.live_daemon import EVENT_TIMEOUT_S, NODE, TOPICS, Rig
from train.data import discover

NO_NORMALS = {"normal_every_n": 0, "min_free_mb": 0}


def export_labelled(store: Store, name: str, tmp_path: Path) -> None:
    """A person labels the window normal (the model said anomalous); `corona-control labels
    export` writes a data set corona-train's loader reads with the person's label."""
    seq = int(name.split("_")[1])
    store.set_label(NODE, seq, "normal", user="ana", note="a crow", at=1.0)
    store.set_label(NODE, seq + 10_000, "anomalous", user="ana", note="no clip", at=1.0)
    config = tmp_path / "control.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": store_url_of(store)}}))
    dest = tmp_path / "labelled"
    done = subprocess.run([*CONTROL, "labels", "export", str(dest), "--config", str(config)],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 labelled clip(s)" in done.stdout
    assert "1 label(s) without a fetched clip" in done.stdout
    data = discover(dest)
    ((file, label),) = [(f.path.name, f.label) for f in data.files]
    assert (file, label) == (name, 0)
    (row,) = csv.DictReader((dest / "manifest.csv").open(encoding="utf-8"))
    assert (row["label_by"], row["seq"], row["kept_as"]) == ("person:ana", str(seq), "anomalous")
    assert (dest / "normal" / name).read_bytes() == store.clip(NODE, name)


def store_url_of(store: Store) -> str:
    return store.backend.url


def test_a_requested_clip_arrives_exactly_and_a_refusal_is_recorded(
    rig: Rig, store: Store, tmp_path: Path
) -> None:
    rig.mic.write(noisy_clip(2.0, seed=41, amplitude=0.3))
    settings = ControlSettings(
        mqtt=MqttSettings(host=rig.broker.host, port=rig.broker.port),
        collector=CollectorSettings(client_id="room-clips"),
    )
    collector = Collector(store, settings)
    collector.start()
    try:
        daemon = rig.start(rig.config(threshold=0.0, clips=NO_NORMALS))

        def first_clip() -> str | None:
            for text in store.verdicts(NODE, None, None, 100):
                clip = json.loads(text).get("clip")
                if clip:
                    return str(clip)
            return None

        wait_until(lambda: first_clip() is not None, "a verdict naming its clip",
                   timeout_s=EVENT_TIMEOUT_S, process=daemon)  # fmt: skip
        name = first_clip()
        assert name is not None

        def state(clip: str) -> str | None:
            known = store.clip_state(NODE, clip)
            return None if known is None else known.state

        collector.request_clip(NODE, name, "ana")
        assert state(name) == "pending"
        wait_until(lambda: store.clip(NODE, name) is not None, "the clip",
                   timeout_s=EVENT_TIMEOUT_S, process=daemon)  # fmt: skip
        assert store.clip(NODE, name) == (rig.folder / "clips" / name).read_bytes()
        export_labelled(store, name, tmp_path)

        missing = name.replace("_anomalous", "_normal").replace(
            f"_{name.split('_')[1]}_", "_999999_"
        )
        collector.request_clip(NODE, missing, "ana")
        wait_until(lambda: state(missing) == "refused", "the node's refusal",
                   timeout_s=EVENT_TIMEOUT_S, process=daemon)  # fmt: skip

        # A clip nobody asked for (any client allowed to publish there) is not stored.
        other = name.replace(f"_{name.split('_')[1]}_", "_424242_")
        mqtt_publish.single(f"{TOPICS}/clip/{other}", b"fLaC" + bytes(1000), qos=1,
                            hostname=rig.broker.host, port=rig.broker.port)  # fmt: skip
        wait_until(lambda: collector.stats.snapshot()["unrequested"] == 1, "the unrequested clip")
        assert store.clip(NODE, other) is None
    finally:
        collector.stop()

    with pytest.raises(ClipRequestError, match="not a clip name"):
        collector.request_clip(NODE, "../../etc/passwd", "ana")
