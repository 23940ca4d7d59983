"""daemon.deliver.discovery: Home Assistant MQTT discovery configs, retained, off by default.

The live daemon on the ALSA file microphone and a real mosquitto: with `homeassistant.enabled`
the four configs are on the broker (retained) under the discovery prefix before the node says
online, and every state and availability topic is one the node really publishes on.
"""

from __future__ import annotations

import json
from typing import Any, Final

from daemon.deliver import discovery
from daemon.deliver.publish import topics
from tests.daemon_runs import noisy_clip
from tests.fixtures.broker import Received
from tests.fixtures.live_daemon import NODE, TOPICS, WINDOW_S, Rig

PREFIX: Final = "homeassistant"
ENTITIES: Final = {
    f"{PREFIX}/sensor/{NODE}/status/config",
    f"{PREFIX}/binary_sensor/{NODE}/alarm/config",
    f"{PREFIX}/sensor/{NODE}/score/config",
    f"{PREFIX}/sensor/{NODE}/level/config",
}
STATUS: Final = f"{TOPICS}/status"


def under_prefix(messages: list[Received]) -> list[Received]:
    return [m for m in messages if m.topic.startswith(f"{PREFIX}/")]


def is_online(message: Received) -> bool:
    return message.topic == STATUS and message.text == "online"


class TestConfigs:
    def test_topic_levels_are_safe_for_any_node_id(self) -> None:
        """A node id with characters Home Assistant refuses in a topic level still gives valid
        config topics; the unique ids keep the node id as it is."""
        node = "tower.7 north"
        made = discovery.configs(
            discovery_prefix=PREFIX, node=node, topics=topics("corona/v1", node), qos=1
        )
        assert [m.topic for m in made] == [
            f"{PREFIX}/sensor/tower_7_north/status/config",
            f"{PREFIX}/binary_sensor/tower_7_north/alarm/config",
            f"{PREFIX}/sensor/tower_7_north/score/config",
            f"{PREFIX}/sensor/tower_7_north/level/config",
        ]
        assert all(node in json.loads(m.payload)["unique_id"] for m in made)


class TestLiveDiscovery:
    def test_configs_retained_and_pointing_at_the_nodes_topics(self, rig: Rig) -> None:
        """Four retained configs arrive before `online`; their state topics carry the fields
        their templates read, availability is the node's status topic, ids name the node."""
        rig.mic.write(noisy_clip(2 * WINDOW_S, seed=31))
        everything = rig.subscribe(rig.broker, "#")
        # Threshold 0 and k = n = 1: the first window raises the alarm the binary sensor reads.
        cfg = rig.config(threshold=0.0, alarm={"k": 1, "n": 1}, homeassistant={"enabled": True})
        daemon = rig.start(cfg)
        online = everything.wait_for(is_online)
        # The broker keeps one connection's messages in order: all configs came before online.
        before = everything.messages[: everything.messages.index(online)]
        assert {m.topic for m in under_prefix(before)} == ENTITIES
        everything.wait_for(lambda m: m.topic == f"{TOPICS}/alarm")
        verdict = everything.wait_for(lambda m: m.topic == f"{TOPICS}/verdict").json()

        late = rig.subscribe(rig.broker, f"{PREFIX}/#")  # retained: a Home Assistant started later
        for topic in ENTITIES:
            late.on(topic)
        configs = {m.topic: m for m in late.messages}
        assert all(m.retain for m in configs.values())
        bodies: dict[str, dict[str, Any]] = {
            topic.split("/")[-2]: m.json() for topic, m in configs.items()
        }
        for name, body in bodies.items():
            assert NODE in body["unique_id"]
            assert body["device"]["identifiers"] == [f"corona-monitor-{NODE}"]
            if name != "status":  # the status entity shows offline/stopped itself
                assert [a["topic"] for a in body["availability"]] == [STATUS]
        assert bodies["status"]["state_topic"] == STATUS
        assert set(bodies["status"]["options"]) == {"online", "offline", "stopped"}
        alarm = bodies["alarm"]
        assert alarm["state_topic"] == f"{TOPICS}/alarm"
        alarm_state = rig.watch("alarm").on(f"{TOPICS}/alarm").json()["state"]  # retained
        assert alarm_state == alarm["payload_on"]
        assert alarm["payload_off"] == "clear"
        for name, field in (("score", "score"), ("level", "level_dbfs")):
            assert bodies[name]["state_topic"] == f"{TOPICS}/verdict"
            assert bodies[name]["value_template"] == f"{{{{ value_json.{field} }}}}"
            assert isinstance(verdict[field], float | int)
        assert daemon.process.poll() is None

    def test_nothing_under_the_prefix_by_default(self, rig: Rig) -> None:
        """Without homeassistant.enabled the node publishes nothing under homeassistant/: its
        `online` and a health report (which would follow any config) are the barrier."""
        rig.mic.write(noisy_clip(WINDOW_S, seed=32))
        everything = rig.subscribe(rig.broker, "#")
        rig.start()
        everything.wait_for(is_online)
        everything.wait_for(lambda m: m.topic == f"{TOPICS}/health")
        assert under_prefix(everything.messages) == []
