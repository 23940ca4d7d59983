"""The live daemon: the wiring of capture -> pipeline -> messenger, health, watchdog and signals.

The only module that imports all the steps. One thread runs this loop; PortAudio's callback
thread fills the capture ring and paho's network thread sends. SIGTERM/SIGINT stop the loop,
the partial window is dropped (a verdict is always over a full window live), `stopped` is
published and the process exits 0 within a few seconds.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Final

import structlog

from daemon import clock, health, notify
from daemon.analyse.alarm import Alarm
from daemon.analyse.model import Model
from daemon.analyse.verdict import ModelRef
from daemon.config import Settings
from daemon.constants import SAMPLE_RATE
from daemon.deliver.messenger import Messenger
from daemon.deliver.sinks import ALARM_STATE_KEY, RememberAlarm
from daemon.listen.capture import Capture
from daemon.metrics import MetricsExport
from daemon.pipeline import Pipeline, PipelineStats, open_baseline, open_clips, start_up

log = structlog.get_logger(__name__)

READ_TIMEOUT_S: Final = 0.2
"""Longest the loop waits for audio before it services MQTT, health and the watchdog anyway."""
READY_WAIT_S: Final = 1.0
"""How long start-up waits for the first audio before it tells systemd it is ready regardless
(a missing microphone is a reported fault, not a reason to fail the service)."""
STALL_AFTER_S: Final = 10.0
"""No captured block and no capture retry for this long: the capture is stuck; stop the
watchdog pings so systemd restarts the service. A shorter WatchdogSec= shortens it to match."""


class Service:
    """Runs until stop() (or a signal); returns the process exit status."""

    def __init__(
        self, settings: Settings, model: Model, *, launched_monotonic: float | None = None
    ) -> None:
        self.settings = settings
        self.model = model
        self.clips = open_clips(settings)
        self.messenger = Messenger(settings, clips=self.clips)
        self.metrics = MetricsExport(settings.metrics)
        self.capture = Capture(settings.audio)
        # A standing alarm survives a restart: the new process must be able to clear it.
        was_alarm = self.messenger.outbox.get_state(ALARM_STATE_KEY) == 1
        self.alarm = Alarm(
            k=settings.alarm.k, n=settings.alarm.n, state="alarm" if was_alarm else "clear"
        )
        self._sink = RememberAlarm(self.messenger.sink, self.messenger.outbox)
        self.baseline = open_baseline(settings, model)
        self.watchdog = notify.Watchdog(stall_after_s())
        read_clock = clock.reader()
        if read_clock is not clock.read:
            log.warning("clock_overridden", env=clock.TEST_OVERRIDE_ENV, synced=read_clock().synced)
        self.clock = clock.Tracker(read_clock)
        self._stop = threading.Event()
        # Start-up is timed from the launch (config and model loading included), not from here.
        self._started_monotonic = (
            launched_monotonic if launched_monotonic is not None else time.monotonic()
        )
        self._progress_at = time.monotonic()
        self._pipeline: Pipeline | None = None
        self.stats = PipelineStats()
        self._recoveries_seen = 0
        self._last_health = 0.0
        self._health_connections = 0

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        log.info(
            "starting",
            model=self.model.name,
            window_s=self.model.spec.window_s,
            mqtt=self.settings.mqtt.host or "disabled",
            device=self.settings.audio.device,
        )
        self.messenger.start()
        self.metrics.start()
        self.capture.start()
        self.capture.wait_running(READY_WAIT_S)
        notify.ready(self._status_line())
        try:
            while not self._stop.is_set():
                self._step()
        finally:
            notify.stopping()
            self.capture.stop()
            self._publish_health()
            self.metrics.close()
            self.messenger.close()
            log.info("stopped", windows=self._windows_done())
        return 0

    def _step(self) -> None:
        block = self.capture.read(READ_TIMEOUT_S)
        if block is not None:
            if self._pipeline is None:
                startup_s = time.monotonic() - self._started_monotonic
                log.info("first_block", frames=len(block), startup_s=round(startup_s, 3))
            self._pipeline_for_block(block).feed(block)
        self.messenger.pump()
        now = time.monotonic()
        # Health goes out on every interval and at once on each (re)connect: the retained report
        # is fresh from the first minute, and a node that is mostly disconnected (a node_id
        # conflict's backoff) still gets its state to the control room on its brief connections.
        connections = self.messenger.connections
        if (
            now - self._last_health >= self.settings.mqtt.health_interval_s
            or connections != self._health_connections
        ):
            self._health_connections = connections
            self._publish_health()
            notify.status(self._status_line())
        self.watchdog.tick(self._last_progress(now))

    def _pipeline_for_block(self, block: Any) -> Pipeline:
        """The current stream's pipeline; a new one after a device recovery (audio has a gap)."""
        recoveries = self.capture.recoveries
        if self._pipeline is None or recoveries != self._recoveries_seen:
            if self._pipeline is not None:
                # The recovered device has not been judged yet: forget the old sensor verdict.
                self.stats.last_sensor = None
                log.info("stream_restarted", reason="device_recovered", partial_window="dropped")
            self._recoveries_seen = recoveries
            # The block's first sample was captured len(block) samples before now.
            first_sample = datetime.now(UTC) - timedelta(seconds=len(block) / SAMPLE_RATE)
            self._pipeline = Pipeline(
                settings=self.settings,
                model=self.model,
                sink=self._sink,
                alarm=self.alarm,
                source="live",
                stream_start=first_sample,
                overflows=lambda: self.capture.overflows,
                stats=self.stats,
                baseline=self.baseline,
                clock_synced=lambda: self.clock().synced,
                clips=self.clips,
            )
        return self._pipeline

    def _last_progress(self, now: float) -> float:
        # Audio arriving is progress; so is a capture that is faulted and waiting to retry (the
        # daemon is doing its job: reporting the fault). A capture supervisor stuck inside a
        # PortAudio call (a hung device: the stream stalled, then closing it hangs) is not, even
        # though its state says fault: then the pings stop and systemd restarts the service.
        last_block = self.capture.last_block_monotonic
        if last_block is not None:
            self._progress_at = max(self._progress_at, last_block)
        if self.capture.state == "fault" and self.capture.device_call_since is None:
            self._progress_at = now
        return self._progress_at

    def _windows_done(self) -> int:
        return self.stats.windows

    def _capture_state(self) -> str:
        return health.capture_state(self.capture, self.stats)

    def snapshot(self) -> health.HealthSnapshot:
        """Every counter of the node, now (daemon.health)."""
        return health.collect(
            node=self.settings.node_id,
            uptime_s=time.monotonic() - self._started_monotonic,
            capture=self.capture,
            stats=self.stats,
            messenger=self.messenger,
            alarm=self.alarm,
            baseline=self.baseline,
            model=ModelRef(self.model.name, self.model.sha256, self.model.kind),
            window_s=self.model.spec.window_s,
            clock=self.clock(),
            clips=self.clips,
        )

    def _publish_health(self) -> None:
        self._last_health = time.monotonic()
        snapshot = self.snapshot()
        payload = snapshot.payload()
        log.info("health", **{k: v for k, v in payload.items() if k not in ("schema", "model")})
        self.messenger.publish_health(payload)
        self.metrics.publish(snapshot)  # the same snapshot: the same numbers as the health message

    def _status_line(self) -> str:
        return (
            f"capture {self._capture_state()}, {self._windows_done()} windows,"
            f" outbox {self.messenger.outbox.depth()}, alarm {self.alarm.state}"
        )


def stall_after_s() -> float:
    """STALL_AFTER_S, or systemd's WatchdogSec= when that is shorter: a stall must stop the pings
    before systemd would have to notice anyway."""
    interval_s = notify.watchdog_interval_s()
    return STALL_AFTER_S if interval_s is None else min(STALL_AFTER_S, interval_s)


def run_live(config_path: Path | None) -> int:
    """`corona-monitor [--config PATH]`: load, validate, run until SIGTERM/SIGINT."""
    launched = time.monotonic()  # the imports are done: start-up time counts from here
    settings, model = start_up(config_path)
    service = Service(settings, model, launched_monotonic=launched)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        service.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return service.run()
