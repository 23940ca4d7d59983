"""One health snapshot of a running node, collected in one place and rendered from there.

`collect` reads every counter the node keeps (capture, ring, pipeline, outbox, drainer, alarm,
baseline) into a frozen `HealthSnapshot`; `payload` is the retained MQTT health message (schema
1, daemon/schemas/health.schema.json) and `daemon.metrics` renders the same snapshot for
Prometheus. Nothing else builds either, so a counter added here reaches the control room, the log
and the metrics alike, with the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from daemon.analyse.verdict import ModelRef, iso_utc
from daemon.clock import ClockStatus
from daemon.config import ConfigSource

if TYPE_CHECKING:
    from daemon.analyse.alarm import Alarm
    from daemon.analyse.baseline import Baseline
    from daemon.deliver.messenger import Messenger
    from daemon.evidence.store import ClipStore
    from daemon.listen.capture import Capture
    from daemon.pipeline import PipelineStats

SCHEMA_VERSION: Final = 1


@dataclass(frozen=True)
class HealthSnapshot:
    node: str
    taken_at: datetime
    """When the counters were read (UTC)."""
    uptime_s: float
    windows: int
    windows_normal: int
    windows_anomalous: int
    """`windows` split by final label (after alarm.use); the two add up to `windows`."""
    overflows: int
    capture: str
    """The capture's state, or the last window's sensor fault while it runs (silent, ...)."""
    capture_error: str | None
    device: str | None
    frames_captured: int
    dropped_frames: int
    """Frames the ring buffer overwrote before the worker read them (the worker fell behind)."""
    outbox_depth: int
    outbox_dropped: int
    outbox: str
    """ok (the outbox file) or degraded (in memory: the disk cannot be used; outbox_error says
    why)."""
    outbox_error: str | None
    sent_live: int
    sent_replayed: int
    mqtt_connected: bool
    mqtt_connect_failures: int
    """Connection attempts to the broker that failed since start."""
    last_window: str | None
    last_label: str | None
    last_score: float | None
    alarm: str
    window_s: float
    model: ModelRef
    baseline_state: str
    baseline_windows: int
    baseline_learn_windows: int
    clock_synced: bool | None = None
    """The system clock's NTP state now (daemon.clock); None when the kernel cannot be asked."""
    clock_max_error_us: int | None = None
    mqtt_conflict: bool = False
    """Another node with this node_id keeps taking the broker session (daemon.deliver.takeover)."""
    mqtt_takeovers: int = 0
    clips_enabled: bool = False
    clips_count: int = 0
    clips_bytes: int = 0
    """Evidence clips in the folder and their bytes (daemon.evidence) when the snapshot was
    taken, earlier runs' clips included."""
    clips_kept: int = 0
    clips_skipped: int = 0
    """Clips that could not be kept since start (disk full, below clips.min_free_mb, ...)."""
    clips_deleted: int = 0
    """Clips deleted by retention (age, total size, free-disk floor) since start."""
    config: ConfigSource | None = None
    """The config the node runs on (its sha256 changes with each accepted reload)."""
    reloads: int = 0
    """Reloads (SIGHUP) applied since start."""
    reload_error: str | None = None
    """Why the last reload was refused; None after an accepted one (or before any)."""

    @property
    def time(self) -> str:
        """taken_at as the payload writes it (ISO-8601 UTC, milliseconds)."""
        return iso_utc(self.taken_at)

    @property
    def last_window_end(self) -> datetime | None:
        """The end of the last scored window as a time (`last_window` is its ISO text)."""
        return None if self.last_window is None else datetime.fromisoformat(self.last_window)

    def payload(self) -> dict[str, Any]:
        """The health JSON object (schema 1; fields are only ever added)."""
        return {
            "schema": SCHEMA_VERSION,
            "node": self.node,
            "time": self.time,
            "uptime_s": self.uptime_s,
            "windows": self.windows,
            "windows_by_label": {
                "normal": self.windows_normal,
                "anomalous": self.windows_anomalous,
            },
            "overflows": self.overflows,
            "capture": self.capture,
            "capture_error": self.capture_error,
            "device": self.device,
            "frames_captured": self.frames_captured,
            "dropped_frames": self.dropped_frames,
            "outbox_depth": self.outbox_depth,
            "outbox_dropped": self.outbox_dropped,
            "outbox": self.outbox,
            "outbox_error": self.outbox_error,
            "sent_live": self.sent_live,
            "sent_replayed": self.sent_replayed,
            "mqtt": {
                "connected": self.mqtt_connected,
                "connect_failures": self.mqtt_connect_failures,
            },
            "last_window": self.last_window,
            "last_label": self.last_label,
            "last_score": self.last_score,
            "alarm": self.alarm,
            "window_s": self.window_s,
            "model": {
                "name": self.model.name,
                "sha256": self.model.sha256,
                "kind": self.model.kind,
            },
            "baseline": {
                "state": self.baseline_state,
                "windows": self.baseline_windows,
                "learn_windows": self.baseline_learn_windows,
            },
            "clock_synced": self.clock_synced,
            "clock_max_error_us": self.clock_max_error_us,
            "mqtt_conflict": self.mqtt_conflict,
            "mqtt_takeovers": self.mqtt_takeovers,
            "clips": {
                "enabled": self.clips_enabled,
                "count": self.clips_count,
                "bytes": self.clips_bytes,
                "kept": self.clips_kept,
                "skipped": self.clips_skipped,
                "deleted": self.clips_deleted,
            },
            "config": {
                **(self.config.payload() if self.config is not None else {}),
                "reloads": self.reloads,
                "reload_error": self.reload_error,
            },
        }


def capture_state(capture: Capture, stats: PipelineStats) -> str:
    """The capture's state; while it runs, the last window's sensor fault wins (the microphone,
    not the tower: silent, flat, clipping)."""
    state = str(capture.state)
    sensor = stats.last_sensor
    if state == "running" and sensor not in (None, "ok"):
        return str(sensor)
    return state


def collect(
    *,
    node: str,
    uptime_s: float,
    capture: Capture,
    stats: PipelineStats,
    messenger: Messenger,
    alarm: Alarm,
    baseline: Baseline | None,
    model: ModelRef,
    window_s: float,
    clock: ClockStatus,
    clips: ClipStore | None = None,
    config: ConfigSource | None = None,
    reloads: int = 0,
    reload_error: str | None = None,
) -> HealthSnapshot:
    """Read every counter once, now."""
    drainer = messenger.drainer
    publisher = messenger.publisher
    clips_count, clips_bytes = clips.usage() if clips is not None else (0, 0)
    return HealthSnapshot(
        node=node,
        taken_at=datetime.now(UTC),
        uptime_s=round(uptime_s, 1),
        windows=stats.windows,
        windows_normal=stats.windows_by_label["normal"],
        windows_anomalous=stats.windows_by_label["anomalous"],
        overflows=capture.overflows,
        capture=capture_state(capture, stats),
        capture_error=capture.last_error,
        device=capture.device_name,
        frames_captured=capture.frames_captured,
        dropped_frames=capture.dropped_frames,
        outbox_depth=messenger.outbox.depth(),
        outbox_dropped=messenger.outbox.dropped,
        outbox="ok" if messenger.outbox.degraded is None else "degraded",
        outbox_error=messenger.outbox.degraded,
        sent_live=drainer.sent_live if drainer is not None else 0,
        sent_replayed=drainer.sent_replayed if drainer is not None else 0,
        mqtt_connected=messenger.connected,
        mqtt_connect_failures=publisher.connect_failures if publisher is not None else 0,
        last_window=stats.last_window_end,
        last_label=stats.last_label,
        last_score=stats.last_score,
        alarm=alarm.state,
        window_s=window_s,
        model=model,
        baseline_state=baseline.state if baseline is not None else "off",
        baseline_windows=baseline.windows if baseline is not None else 0,
        baseline_learn_windows=baseline.learn_windows if baseline is not None else 0,
        clock_synced=clock.synced,
        clock_max_error_us=clock.max_error_us,
        mqtt_conflict=publisher.conflict if publisher is not None else False,
        mqtt_takeovers=publisher.takeovers if publisher is not None else 0,
        clips_enabled=clips is not None,
        clips_count=clips_count,
        clips_bytes=clips_bytes,
        clips_kept=clips.kept if clips is not None else 0,
        clips_skipped=clips.skipped if clips is not None else 0,
        clips_deleted=clips.deleted if clips is not None else 0,
        config=config,
        reloads=reloads,
        reload_error=reload_error,
    )
