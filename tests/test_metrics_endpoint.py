"""daemon.metrics and daemon.metrics_server: Prometheus metrics of the health snapshot.

The rendering on its own (escaping, families, absent values), then the live daemon on the ALSA
file microphone with a real mosquitto: a scrape over HTTP and the textfile carry exactly the
numbers of the health message the same daemon published; the endpoint listens only where it is
told to (checked in /proc, not in the daemon's own words), and a port in use does not stop it.
(tests/test_metrics.py is about training metrics.)
"""

from __future__ import annotations

import os
import re
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest
import structlog.testing

from daemon import metrics, schemas
from daemon.analyse.verdict import ModelRef
from daemon.config import MetricsSettings
from daemon.health import HealthSnapshot
from tests.daemon_runs import MonitorProcess, noisy_clip, wait_until
from tests.fixtures.broker import free_port
from tests.fixtures.live_daemon import EVENT_TIMEOUT_S, NODE, TOPICS, WINDOW_S, Rig
from tests.prometheus_text import ParsedFamily, parse

SHA: Final = "ab" * 32
N_WINDOWS: Final = 4
COUNTERS: Final = {
    "corona_windows_total",
    "corona_capture_frames_total",
    "corona_capture_overflows_total",
    "corona_capture_dropped_frames_total",
    "corona_outbox_dropped_total",
    "corona_messages_sent_total",
    "corona_mqtt_connect_failures_total",
    "corona_clips_skipped_total",
    "corona_clips_deleted_total",
}
GAUGES: Final = {
    "corona_outbox_degraded",
    "corona_node_info",
    "corona_health_timestamp_seconds",
    "corona_uptime_seconds",
    "corona_window_length_seconds",
    "corona_last_window_timestamp_seconds",
    "corona_last_score",
    "corona_alarm_active",
    "corona_capture_state",
    "corona_outbox_depth",
    "corona_mqtt_connected",
    "corona_baseline_state",
    "corona_baseline_windows",
    "corona_baseline_learn_windows",
    "corona_clips",
    "corona_clips_bytes",
}


def snapshot(**changes: Any) -> HealthSnapshot:
    """A made-up snapshot; keyword arguments replace fields."""
    fields: dict[str, Any] = {
        "node": "tower-7",
        "taken_at": datetime(2026, 12, 1, 12, 0, 0, 250000, tzinfo=UTC),
        "uptime_s": 61.5,
        "windows": 5,
        "windows_normal": 3,
        "windows_anomalous": 2,
        "overflows": 1,
        "capture": "running",
        "capture_error": None,
        "device": "tower_mic",
        "frames_captured": 220500,
        "dropped_frames": 0,
        "outbox_depth": 2,
        "outbox_dropped": 0,
        "outbox": "ok",
        "outbox_error": None,
        "sent_live": 4,
        "sent_replayed": 1,
        "mqtt_connected": True,
        "mqtt_connect_failures": 0,
        "last_window": "2026-12-01T11:59:59.500Z",
        "last_label": "normal",
        "last_score": 0.125,
        "alarm": "clear",
        "window_s": 30.0,
        "model": ModelRef("corona-demo", SHA, "classifier"),
        "baseline_state": "learning",
        "baseline_windows": 3,
        "baseline_learn_windows": 20160,
    }
    return HealthSnapshot(**{**fields, **changes})


def scrape_text(snap: HealthSnapshot) -> dict[str, ParsedFamily]:
    return parse(metrics.render(metrics.families(snap)))


class TestRender:
    def test_names_types_and_help(self) -> None:
        """Counters end in _total and say counter; every family has HELP and TYPE."""
        parsed = scrape_text(snapshot())
        assert set(parsed) == COUNTERS | GAUGES
        for name, family in parsed.items():
            assert family.kind == ("counter" if name in COUNTERS else "gauge"), name
            assert family.help, name
            assert name.startswith("corona_")

    def test_values_are_the_snapshot(self) -> None:
        """Each number is the snapshot's, windows split by label, states one-hot."""
        snap = snapshot()
        parsed = scrape_text(snap)
        assert parsed["corona_windows_total"].value(label="normal") == 3
        assert parsed["corona_windows_total"].value(label="anomalous") == 2
        assert parsed["corona_capture_overflows_total"].value() == 1
        assert parsed["corona_outbox_depth"].value() == 2
        assert parsed["corona_messages_sent_total"].value(delivery="replayed") == 1
        assert parsed["corona_last_score"].value() == 0.125
        assert parsed["corona_health_timestamp_seconds"].value() == snap.taken_at.timestamp()
        last = datetime(2026, 12, 1, 11, 59, 59, 500000, tzinfo=UTC).timestamp()
        assert parsed["corona_last_window_timestamp_seconds"].value() == last
        states = parsed["corona_capture_state"].samples
        assert {dict(k)["state"] for k, v in states.items() if v == 1} == {"running"}
        assert len(states) == 7  # starting running fault stopped silent flat clipping
        info = parsed["corona_node_info"]
        assert info.value(node="tower-7", model="corona-demo", model_sha256=SHA,
                          model_kind="classifier") == 1  # fmt: skip

    def test_label_values_and_help_are_escaped(self) -> None:
        """Backslash, double quote and newline in a label value survive a strict reader."""
        odd = 'tower "7" \\ north\nend'
        parsed = scrape_text(snapshot(node=odd, model=ModelRef(odd, SHA, "one-class")))
        (labels,) = parsed["corona_node_info"].samples
        assert dict(labels)["node"] == odd
        assert dict(labels)["model"] == odd
        family = metrics.Family("x_total", "counter", "a \\ b\nc", (metrics.Sample(1),))
        assert parse(metrics.render([family]))["x_total"].help == "a \\ b\nc"

    def test_unknown_values_are_absent_not_zero(self) -> None:
        """Before the first window there is no last window time or score (not a fake 0)."""
        parsed = scrape_text(snapshot(last_window=None, last_score=None, windows=0))
        assert parsed["corona_last_window_timestamp_seconds"].samples == {}
        assert parsed["corona_last_score"].samples == {}


class TestExport:
    def test_endpoint_answers_503_until_the_first_snapshot(self) -> None:
        """In process: before any snapshot GET /metrics is 503, then the rendering; other paths
        are 404; close frees the port."""
        port = free_port()
        export = metrics.MetricsExport(MetricsSettings(listen=port))
        export.start()
        try:
            assert fetch(port)[0] == 503
            export.publish(snapshot())
            status, body = fetch(port)
            assert status == 200
            assert body == metrics.render(metrics.families(snapshot()))
            assert fetch(port, "/healthz")[0] == 404
        finally:
            export.close()
        assert not reachable("127.0.0.1", port)

    def test_textfile_failure_is_logged_once_and_recovers(self, tmp_path: Path) -> None:
        """A folder that is not there: one error for any number of snapshots, no exception;
        once it exists the file is written and the recovery logged."""
        textfile = tmp_path / "later" / "corona.prom"
        export = metrics.MetricsExport(MetricsSettings(textfile=textfile))
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                export.publish(snapshot())
            textfile.parent.mkdir()
            export.publish(snapshot())
        assert [e["event"] for e in logs] == ["metrics_textfile_failed", "metrics_textfile_written"]
        assert logs[0]["log_level"] == "error"
        assert parse(textfile.read_text(encoding="utf-8")) == scrape_text(snapshot())


# -- the live daemon -----------------------------------------------------------------------------


def fetch(port: int, path: str = "/metrics", host: str = "127.0.0.1") -> tuple[int, str]:
    """(status, body) of GET http://host:port/path; an HTTP error status is returned too."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8")


def scrape_when(
    port: int, daemon: MonitorProcess, ready: Any = lambda parsed: True
) -> dict[str, ParsedFamily]:
    """The first scrape that answers 200 and satisfies ready(parsed)."""
    got: dict[str, dict[str, ParsedFamily]] = {}

    def answered() -> bool:
        try:
            status, body = fetch(port)
        except (urllib.error.URLError, ConnectionError):
            return False  # not listening yet
        if status != 200:
            return False
        got["parsed"] = parse(body)
        return bool(ready(got["parsed"]))

    wait_until(answered, "a scrape of /metrics", timeout_s=EVENT_TIMEOUT_S, process=daemon)
    return got["parsed"]


def windows(parsed: dict[str, ParsedFamily]) -> float:
    return sum(parsed["corona_windows_total"].samples.values())


def health_of(health: list[Any], parsed: dict[str, ParsedFamily]) -> dict[str, Any]:
    """The health message made from the same snapshot as this scrape (same `time`)."""
    taken = parsed["corona_health_timestamp_seconds"].value()
    same = [h for h in health if abs(datetime.fromisoformat(h["time"]).timestamp() - taken) < 0.01]
    assert len(same) == 1, (taken, [h["time"] for h in health])
    return dict(same[0])


def assert_same_numbers(parsed: dict[str, ParsedFamily], health: dict[str, Any]) -> None:
    """Every metric equals its field of the health message."""
    by_label = parsed["corona_windows_total"]
    assert by_label.value(label="normal") == health["windows_by_label"]["normal"]
    assert by_label.value(label="anomalous") == health["windows_by_label"]["anomalous"]
    assert windows(parsed) == health["windows"]
    assert parsed["corona_capture_overflows_total"].value() == health["overflows"]
    assert parsed["corona_capture_frames_total"].value() == health["frames_captured"]
    assert parsed["corona_capture_dropped_frames_total"].value() == health["dropped_frames"]
    assert parsed["corona_outbox_depth"].value() == health["outbox_depth"]
    assert parsed["corona_outbox_dropped_total"].value() == health["outbox_dropped"]
    assert parsed["corona_outbox_degraded"].value() == (health["outbox"] == "degraded")
    sent = parsed["corona_messages_sent_total"]
    assert sent.value(delivery="live") == health["sent_live"]
    assert sent.value(delivery="replayed") == health["sent_replayed"]
    assert parsed["corona_mqtt_connected"].value() == float(health["mqtt"]["connected"])
    failures = parsed["corona_mqtt_connect_failures_total"].value()
    assert failures == health["mqtt"]["connect_failures"]
    assert parsed["corona_uptime_seconds"].value() == health["uptime_s"]
    assert parsed["corona_window_length_seconds"].value() == health["window_s"]
    assert parsed["corona_last_score"].value() == health["last_score"]
    last_window = datetime.fromisoformat(health["last_window"]).timestamp()
    assert parsed["corona_last_window_timestamp_seconds"].value() == pytest.approx(last_window)
    assert parsed["corona_alarm_active"].value() == float(health["alarm"] == "alarm")
    assert parsed["corona_capture_state"].value(state=health["capture"]) == 1
    assert sum(parsed["corona_capture_state"].samples.values()) == 1
    assert parsed["corona_baseline_state"].value(state=health["baseline"]["state"]) == 1
    assert parsed["corona_baseline_windows"].value() == health["baseline"]["windows"]
    learn = parsed["corona_baseline_learn_windows"].value()
    assert learn == health["baseline"]["learn_windows"]
    clips = health["clips"]
    assert parsed["corona_clips"].value() == clips["count"]
    assert parsed["corona_clips_bytes"].value() == clips["bytes"]
    assert parsed["corona_clips_skipped_total"].value() == clips["skipped"]
    assert parsed["corona_clips_deleted_total"].value() == clips["deleted"]
    model = health["model"]
    assert parsed["corona_node_info"].value(node=health["node"], model=model["name"],
        model_sha256=model["sha256"], model_kind=model["kind"]) == 1  # fmt: skip


def listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) of every TCP socket the process listens on, read from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue  # closed meanwhile
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(match.group(1))
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                host_hex, port_hex = local.split(":")
                host = (
                    socket.inet_ntop(socket.AF_INET, bytes.fromhex(host_hex)[::-1])
                    if len(host_hex) == 8
                    else host_hex
                )
                found.add((host, int(port_hex, 16)))
    return found


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port that another socket is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


class TestLiveMetrics:
    def test_scrape_and_textfile_equal_the_health_message(self, rig: Rig, tmp_path: Path) -> None:
        """GET /metrics and the textfile each carry exactly the numbers of the health message
        published from the same snapshot; any other path is 404."""
        port = free_port()
        textfile = tmp_path / "textfile" / "corona.prom"
        textfile.parent.mkdir()
        rig.mic.write(noisy_clip(N_WINDOWS * WINDOW_S, seed=21, amplitude=0.3))
        sub = rig.watch("health")
        daemon = rig.start(
            rig.config(metrics={"listen": f"127.0.0.1:{port}", "textfile": str(textfile)})
        )
        # Once the clip's windows were scored the counters no longer all read 0 (the file
        # microphone then goes on with silence, so they keep moving).
        parsed = scrape_when(port, daemon, lambda p: windows(p) >= N_WINDOWS)
        assert set(parsed) == COUNTERS | GAUGES
        for name in COUNTERS:
            assert parsed[name].kind == "counter"
        topic = f"{TOPICS}/health"
        taken = parsed["corona_health_timestamp_seconds"].value()
        sub.wait_for(
            lambda m: (
                m.topic == topic
                and abs(datetime.fromisoformat(m.json()["time"]).timestamp() - taken) < 0.01
            )
        )
        health = health_of(sub.bodies(topic), parsed)
        schemas.validate("health", health)
        assert health["node"] == NODE
        assert health["windows"] >= N_WINDOWS
        assert health["sent_live"] + health["sent_replayed"] >= N_WINDOWS
        assert_same_numbers(parsed, health)

        from_file = parse(textfile.read_text(encoding="utf-8"))
        assert set(from_file) == COUNTERS | GAUGES
        taken = from_file["corona_health_timestamp_seconds"].value()
        sub.wait_for(
            lambda m: (
                m.topic == topic
                and abs(datetime.fromisoformat(m.json()["time"]).timestamp() - taken) < 0.01
            )
        )
        assert_same_numbers(from_file, health_of(sub.bodies(topic), from_file))

        assert fetch(port, "/")[0] == 404
        assert fetch(port, "/metrics/x")[0] == 404
        assert daemon.process.poll() is None

    def test_textfile_is_replaced_whole_and_says_stopped_at_exit(
        self, rig: Rig, tmp_path: Path
    ) -> None:
        """Each rewrite is a new file moved into place (a reader never sees half of one); no
        temporary file is left behind; the last one, at exit, reports the capture stopped."""
        folder = tmp_path / "textfile"
        folder.mkdir()
        textfile = folder / "corona.prom"
        rig.mic.write(noisy_clip(2 * WINDOW_S, seed=22))
        daemon = rig.start(rig.config(metrics={"textfile": str(textfile)}))
        wait_until(textfile.exists, "the first textfile", timeout_s=EVENT_TIMEOUT_S, process=daemon)
        # Held open, the first file keeps its inode: a freed one could be reused by a later
        # rewrite's temporary file, and the comparison below would then fail by chance.
        with textfile.open(encoding="utf-8") as first:
            first_inode = os.fstat(first.fileno()).st_ino
            first_text = first.read()
            assert set(parse(first_text)) == COUNTERS | GAUGES
            code, _ = daemon.stop(signal.SIGTERM)  # the exit writes one last snapshot
            assert code == 0, daemon.log()
            # A new file took the old one's place: written beside it, then renamed over it;
            # the old one, still open here, is whole and unchanged.
            assert textfile.stat().st_ino != first_inode
            first.seek(0)
            assert first.read() == first_text
        assert sorted(p.name for p in folder.iterdir()) == ["corona.prom"]
        last = parse(textfile.read_text(encoding="utf-8"))
        assert set(last) == COUNTERS | GAUGES
        assert last["corona_capture_state"].value(state="stopped") == 1
        assert textfile.stat().st_mode & 0o777 == 0o644  # node_exporter reads as another user

    def test_no_endpoint_by_default(self, rig: Rig) -> None:
        """Without metrics.listen the daemon listens on no TCP port at all."""
        rig.mic.write(noisy_clip(WINDOW_S, seed=23))
        sub = rig.watch("health")
        daemon = rig.start()
        sub.on(f"{TOPICS}/health")  # running: connected, capturing, reporting
        assert listening(daemon.process.pid) == set()
        assert daemon.events_named("metrics_listening") == []

    @pytest.mark.parametrize(
        ("listen", "bound", "others_reach_it"),
        [("{port}", "127.0.0.1", False), ("0.0.0.0:{port}", "0.0.0.0", True)],  # noqa: S104
        ids=["port-only-is-loopback", "named-address"],
    )
    def test_listens_only_where_configured(
        self, rig: Rig, listen: str, bound: str, others_reach_it: bool
    ) -> None:
        """A bare port binds 127.0.0.1 alone (127.0.0.2, another address of this host, is
        refused); every interface only when 0.0.0.0 is named."""
        port = free_port()
        rig.mic.write(noisy_clip(WINDOW_S, seed=24))
        daemon = rig.start(rig.config(metrics={"listen": listen.format(port=port)}))
        scrape_when(port, daemon)
        assert listening(daemon.process.pid) == {(bound, port)}
        assert reachable("127.0.0.2", port) is others_reach_it
        status, body = fetch(port, host="127.0.0.2") if others_reach_it else fetch(port)
        assert status == 200
        assert "corona_windows_total" in body

    def test_port_in_use_is_one_error_and_monitoring_goes_on(
        self, rig: Rig, busy_port: int, tmp_path: Path
    ) -> None:
        """The endpoint cannot bind: one error line naming the address; verdicts, health and
        the textfile carry on."""
        textfile = tmp_path / "corona.prom"
        rig.mic.write(noisy_clip(2 * WINDOW_S, seed=25))
        sub = rig.watch()
        cfg = rig.config(metrics={"listen": busy_port, "textfile": str(textfile)})
        daemon = rig.start(cfg)
        failed = daemon.wait_event("metrics_listen_failed")
        assert failed["level"] == "error"
        assert failed["listen"] == f"127.0.0.1:{busy_port}"
        sub.wait_for(lambda m: m.topic == f"{TOPICS}/verdict")
        sub.wait_for(lambda m: m.topic == f"{TOPICS}/health" and m.json()["windows"] >= 2)
        wait_until(textfile.exists, "the textfile", process=daemon)
        assert len(daemon.events_named("metrics_listen_failed")) == 1
        assert "Traceback" not in daemon.log()
        assert daemon.process.poll() is None
