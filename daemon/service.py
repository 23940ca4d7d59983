"""The live daemon: the wiring of capture -> pipeline -> messenger, health, watchdog and signals.

The only module that imports all the steps. One thread runs this loop; PortAudio's callback
thread fills the capture ring and paho's network thread sends. SIGTERM/SIGINT stop the loop,
the partial window is dropped (a verdict is always over a full window live), `stopped` is
published and the process exits 0 within a few seconds. SIGHUP reloads the config and the model
(`daemon.reload` validates; `_switch` applies, in this thread, at a window boundary).
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

from daemon import clock, health, notify, reload
from daemon.analyse.alarm import Alarm
from daemon.analyse.model import Model
from daemon.analyse.verdict import ModelRef
from daemon.config import ConfigSource, Settings
from daemon.constants import SAMPLE_RATE
from daemon.deliver.messenger import Messenger
from daemon.deliver.sinks import ALARM_STATE_KEY, RememberAlarm
from daemon.errors import CoronaError
from daemon.listen.capture import Capture
from daemon.metrics import MetricsExport
from daemon.pipeline import (
    Pipeline,
    PipelineStats,
    baseline_terms,
    configure_logging,
    open_baseline,
    open_clips,
    start_up_with_source,
)

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
        self,
        settings: Settings,
        model: Model,
        *,
        launched_monotonic: float | None = None,
        source: ConfigSource | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.clips = open_clips(settings)
        self.source = source
        """The running config's file and identity; a reload re-reads `source.path`."""
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
        self.stop_signal: int | None = None
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
        self._reload_requested = threading.Event()
        self._validating: reload.Validation | None = None
        self._pending: tuple[reload.Candidate, Model] | None = None
        """A validated config and model waiting for the window in progress to complete."""
        self.reloads = 0
        self.reload_error: str | None = None
        self._first_block_seen = False

    def stop(self, signum: int | None = None) -> None:
        """Ask the loop to end (safe from a signal handler: it logs nothing and only sets a
        flag; the loop logs the signal)."""
        self.stop_signal = signum
        self._stop.set()

    def request_reload(self) -> None:
        """Ask the worker loop to reload (safe from a signal handler: it only sets a flag)."""
        self._reload_requested.set()

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
            if self.stop_signal is not None:
                log.info("signal", signal=signal.Signals(self.stop_signal).name)
            notify.stopping()
            self.capture.stop()
            self._publish_health()
            self.metrics.close()
            self.messenger.close()
            log.info("stopped", windows=self._windows_done())
        return 0

    def _step(self) -> None:
        if self._reload_requested.is_set() and self._validating is None:
            self._reload_requested.clear()
            self._begin_reload()
        if self._validating is not None and self._validating.done.is_set():
            self._end_validation(self._validating)
        if self._pending is not None and (
            self._pipeline is None or self.capture.state != "running"
        ):
            # No window is in progress (no audio yet), or the stream is broken and its partial
            # window will be dropped at recovery anyway: nothing to wait for.
            self._switch()
            self._pipeline = None
        block = self.capture.read(READ_TIMEOUT_S)
        if block is not None:
            if not self._first_block_seen:
                self._first_block_seen = True
                startup_s = time.monotonic() - self._started_monotonic
                log.info("first_block", frames=len(block), startup_s=round(startup_s, 3))
            self._feed(block)
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

    def _feed(self, block: Any) -> None:
        """Feed a block; with a reload pending, the part up to the end of the window in progress
        goes to the old pipeline, the rest to the new one, which starts at that very sample: no
        window is scored by two models or two configs, and back-to-back windows lose no audio."""
        pipeline = self._pipeline_for_block(block)
        if self._pending is not None:
            cut = pipeline.samples_to_boundary
            if cut > len(block):
                pipeline.feed(block)
                return
            if cut:
                pipeline.feed(block[:cut])
            start = pipeline.stream_position
            self._switch()
            pipeline = self._pipeline = self._new_pipeline(start)
            block = block[cut:]
            if not len(block):
                return
        pipeline.feed(block)

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
            self._pipeline = self._new_pipeline(first_sample)
        return self._pipeline

    def _new_pipeline(self, stream_start: datetime) -> Pipeline:
        return Pipeline(
            settings=self.settings,
            model=self.model,
            sink=self._sink,
            alarm=self.alarm,
            source="live",
            stream_start=stream_start,
            overflows=lambda: self.capture.overflows,
            stats=self.stats,
            baseline=self.baseline,
            clock_synced=lambda: self.clock().synced,
            clips=self.clips,
        )

    # --- reload (SIGHUP) ----------------------------------------------------------------------
    def _begin_reload(self) -> None:
        """Start validating the config file and its model (`daemon.reload.prepare`, trial load
        included) on a thread of its own: the trial takes 0.5 s idle, up to its 20 s timeout on
        a bad model, while this loop keeps audio, MQTT, health and the watchdog going. A SIGHUP
        during validation is served after it (the file may have changed again)."""
        notify.reloading("reloading config and model")
        path = self.source.path if self.source is not None else None
        log.info("reload_requested", config=None if path is None else str(path))
        self._validating = reload.Validation(path, self.settings)

    def _end_validation(self, validation: reload.Validation) -> None:
        """Refused: log why and keep everything; accepted: switch at the next window boundary."""
        self._validating = None
        if validation.error is not None or validation.candidate is None:
            self.reload_error = validation.error or "reload validation ended without a verdict"
            self._pending = None
            log.error(
                "reload_refused",
                reason=self.reload_error,
                kept_model=self.model.name,
                kept_sha256=self.model.sha256[:12],
            )
            notify.ready(self._status_line())
            return
        candidate = validation.candidate
        try:
            model = reload.load(candidate)
        except CoronaError as err:  # the file changed since it was checked, and fails now
            validation.error, validation.candidate = str(err), None
            self._end_validation(validation)
            return
        self._pending = (candidate, model)  # a later SIGHUP before the boundary replaces it
        log.info(
            "reload_accepted",
            changed=list(candidate.changed),
            switch_in_samples=self._pipeline.samples_to_boundary if self._pipeline else 0,
        )

    def _switch(self) -> None:
        """Make the pending candidate the running config and model (worker thread, between
        windows). The outbox, its seq, the alarm's state and recent labels, the baseline and the
        counters carry over; the caller starts the next pipeline."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        candidate, model = pending
        old_settings, old_model = self.settings, self.model
        new = candidate.settings
        self.settings, self.model, self.source = new, model, candidate.source
        if (new.alarm.k, new.alarm.n) != (self.alarm.k, self.alarm.n):
            self.alarm = self.alarm.reconfigured(k=new.alarm.k, n=new.alarm.n)
        self._retarget_baseline()
        if new.logging != old_settings.logging:
            configure_logging(new)
        self.reloads += 1
        self.reload_error = None
        log.info(
            "reloaded",
            changed=list(reload.changed_keys(old_settings, new)),  # against what ran until now
            old_model=old_model.name,
            old_sha256=old_model.sha256[:12],
            new_model=self.model.name,
            new_sha256=self.model.sha256[:12],
            config_sha256=(candidate.source.sha256 or "")[:12] or None,
        )
        notify.ready(self._status_line())

    def _retarget_baseline(self) -> None:
        """The baseline under the new terms: the same object when the features it learns from
        are unchanged (new learn_h or quantile applied in memory), else opened again as a
        restart would (a file learned for other features is moved aside)."""
        if self.baseline is None:
            return  # baseline.enabled is restart-only
        terms = baseline_terms(self.settings, self.model)
        if terms.fingerprint == self.baseline.fingerprint:
            self.baseline.retarget(learn_windows=terms.learn_windows, quantile=terms.quantile)
            return
        self.baseline.save()
        self.baseline = terms.open()

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
            config=self.source,
            reloads=self.reloads,
            reload_error=self.reload_error,
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
    # SIGHUP's default action ends the process: until the service exists, remember one instead
    # (the file may have been read before the edit it announces).
    early_hangup: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, _frame: early_hangup.append(signum))
    settings, model, source = start_up_with_source(config_path)
    service = Service(settings, model, launched_monotonic=launched, source=source)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # No logging here: structlog's write lock is not reentrant, and a signal landing while
        # the main thread holds it (mid log line) would deadlock the daemon on its way out.
        service.stop(signum)

    def on_hangup(_signum: int, _frame: FrameType | None) -> None:
        # Only a flag: the worker loop reloads between windows (never mid-window, never here).
        service.request_reload()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    if early_hangup:
        service.request_reload()
    return service.run()
