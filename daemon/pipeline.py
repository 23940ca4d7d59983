"""The one path from audio blocks to delivered verdicts, shared by live capture and replay.

blocks -> Windower -> Model.score_one -> Verdict -> alarm -> Sink. The caller owns where the
blocks come from (a microphone or a file) and where the messages go (stdout, outbox + MQTT).
How windows are cut and featurized comes from the model's `FeatureSpec`, resolved against the
config (`daemon.analyse.featurespec.resolve`: a contradiction is a ConfigError naming both values).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import structlog

from daemon import config
from daemon import log as logsetup
from daemon.analyse import verdict
from daemon.analyse.alarm import Alarm
from daemon.analyse.baseline import (
    OFF,
    Baseline,
    BaselineBusyError,
    Reading,
    fingerprint,
    learn_windows_for,
    lock,
    novelty_vector,
)
from daemon.analyse.featurespec import FeatureSpec, resolve
from daemon.analyse.model import Model
from daemon.analyse.physics import LineSetting
from daemon.analyse.verdict import Verdict
from daemon.config import AlarmSource, ConfigSource, Settings
from daemon.constants import SAMPLE_RATE
from daemon.deliver.sinks import Sink
from daemon.evidence.keeper import ClipKeeper
from daemon.evidence.store import ClipStore, Staged
from daemon.listen.windows import Window, Windower

log = structlog.get_logger(__name__)


def _no_windows() -> dict[verdict.Label, int]:
    return {"normal": 0, "anomalous": 0}


@dataclass
class PipelineStats:
    windows: int = 0
    windows_by_label: dict[verdict.Label, int] = field(default_factory=_no_windows)
    """Windows per final label (after alarm.use): metrics count them by label."""
    last_window_end: str | None = None
    last_label: str | None = None
    last_score: float | None = None
    last_sensor: str | None = None


def start_up(config_path: Path | None, *, log_level: str | None = None) -> tuple[Settings, Model]:
    """The one start-up path of every command that runs the model (live, replay, baseline):
    the config, then logging as it says (``log_level`` overrides its level), then the model
    checked against the config. Each step's error is one CoronaError for the CLI."""
    settings, model, _ = start_up_with_source(config_path, log_level=log_level)
    return settings, model


def start_up_with_source(
    config_path: Path | None, *, log_level: str | None = None
) -> tuple[Settings, Model, ConfigSource]:
    """`start_up`, and the identity of the config it read (the live daemon reports it)."""
    settings, source = config.read(config_path)
    configure_logging(settings, level=log_level)
    return settings, load_model(settings), source


def configure_logging(settings: Settings, *, level: str | None = None) -> None:
    """Logging as the config says (at start-up, and again when a reload changes it)."""
    logsetup.configure(
        level=level or settings.logging.level,
        fmt=settings.logging.format,
        node_id=settings.node_id,
    )


def load_model(settings: Settings) -> Model:
    """The configured model; a config that contradicts it is refused (ConfigError naming both
    values) before its interpreter is created, so start-up fails with that one line. The model
    is trial-loaded in a child process first (`daemon.analyse.model_trial`): a file that would
    crash the runtime is a ModelError, in check-config as in the daemon and replay."""
    path = settings.model.path
    return Model.load(path, check_spec=lambda spec: _resolve(settings, spec, path.name), trial=True)


def check_model(settings: Settings) -> FeatureSpec:
    """What `load_model` checks (the trial load included), without creating an interpreter in
    this process (`Model.check`); the model's FeatureSpec resolved against the config."""
    path = settings.model.path
    resolved: list[FeatureSpec] = []

    def check_spec(spec: FeatureSpec) -> None:
        resolved.append(_resolve(settings, spec, path.name))

    Model.check(path, check_spec=check_spec)
    return resolved[0]


def runtime_spec(settings: Settings, model: Model) -> FeatureSpec:
    """The model's FeatureSpec with the config's line frequency; ConfigError on a contradiction."""
    return _resolve(settings, model.spec, model.path.name)


def _resolve(settings: Settings, spec: FeatureSpec, model_name: str) -> FeatureSpec:
    configured = settings.features
    return resolve(
        spec,
        model_name=model_name,
        config={
            "n_fft": configured.n_fft,
            "hop_length": configured.hop_length,
            "window": configured.window,
            "center": configured.center,
            "window_s": settings.window.length_s,
            "force_length": settings.window.force_length,
            "line_hz": configured.line_hz,
        },
    )


def report_line_hz(settings: Settings, spec: FeatureSpec) -> LineSetting:
    """The line frequency physics are read at: the model's, or for a model without a physics
    block the configured one (verdicts carry physics either way)."""
    return spec.line_setting if spec.physics else settings.features.line_hz


def hop_s(settings: Settings, spec: FeatureSpec) -> float:
    """Seconds between window starts: `window.hop_s`, else back to back."""
    return settings.window.hop_s if settings.window.hop_s is not None else spec.window_s


def windower_for(settings: Settings, spec: FeatureSpec) -> Windower:
    """The windows this config and model cut (ConfigError on an impossible hop)."""
    return Windower(
        sample_rate=SAMPLE_RATE,
        length_s=spec.window_s,
        hop_s=hop_s(settings, spec),
        n_fft=spec.n_fft,
        hop_length=spec.hop_length,
    )


@dataclass(frozen=True)
class BaselineTerms:
    """What a baseline file must match and aim for under these settings and this model."""

    path: Path
    fingerprint: dict[str, Any]
    learn_windows: int
    quantile: float
    line_hz: LineSetting

    def load(self) -> Baseline:
        """The file as it is (BaselineError when it cannot be used)."""
        return Baseline.load(self.path, **self._kwargs())

    def open(self) -> Baseline:
        """The daemon's start-up (`Baseline.open`: a foreign or damaged file is moved aside)."""
        return Baseline.open(self.path, **self._kwargs())

    def new(self) -> Baseline:
        """An empty baseline (import learns it from files)."""
        return Baseline(self.path, **self._kwargs())

    def _kwargs(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "learn_windows": self.learn_windows,
            "quantile": self.quantile,
        }


def baseline_terms(settings: Settings, model: Model) -> BaselineTerms:
    """The one derivation of the baseline's fingerprint and learning target (daemon, replay,
    check-config and `corona-monitor baseline`)."""
    spec = runtime_spec(settings, model)
    line = report_line_hz(settings, spec)
    return BaselineTerms(
        path=settings.baseline_path,
        fingerprint=fingerprint(spec, line),
        learn_windows=learn_windows_for(settings.baseline.learn_h, hop_s(settings, spec)),
        quantile=settings.baseline.quantile,
        line_hz=line,
    )


def open_baseline(settings: Settings, model: Model, *, shared: bool = False) -> Baseline | None:
    """The node's on-site baseline for this model's features (None when disabled), locked for
    this process. When another process holds it: `shared` (replay) scores with it without
    learning; otherwise (the live daemon) BaselineBusyError."""
    if not settings.baseline.enabled:
        return None
    readonly = False
    try:
        lock(settings.baseline_path)  # held until the process exits
    except BaselineBusyError:
        if not shared:
            raise
        log.warning("baseline_shared", path=str(settings.baseline_path), learning="off")
        readonly = True
    baseline = baseline_terms(settings, model).open()
    baseline.readonly = readonly
    return baseline


def open_clips(settings: Settings, *, replay: bool = False) -> ClipStore | None:
    """The node's clips folder under `clips.*` (None when clips are off, and in replay unless
    `clips.in_replay`); nothing is created until the first clip."""
    wanted = settings.clips.enabled and (settings.clips.in_replay or not replay)
    if not wanted:
        return None
    return ClipStore.from_settings(settings)


def decide(
    rule: AlarmSource, *, classifier: bool, reading: Reading
) -> tuple[verdict.Label, AlarmSource]:
    """The window's label under `alarm.use`, and the rule that actually decided it (the model
    alone while the baseline is not ready)."""
    if reading.state != "ready" or reading.score is None or rule == "classifier":
        return ("anomalous" if classifier else "normal"), "classifier"
    near = reading.score >= BASELINE_THRESHOLD
    anomalous = {"baseline": near, "both": classifier and near, "either": classifier or near}[rule]
    return ("anomalous" if anomalous else "normal"), rule


SENSOR_RULE: Final = "sensor"
"""`label_by` of a window whose sensor state is not ok (the model was not asked to judge it)."""

BASELINE_THRESHOLD = 0.5
"""The baseline's score is 0.5 exactly at its threshold distance
(daemon.analyse.novelty.Threshold)."""


class Pipeline:
    """Turns one stream of mono float32 blocks at 44.1 kHz into verdicts and alarm changes."""

    def __init__(
        self,
        *,
        settings: Settings,
        model: Model,
        sink: Sink,
        alarm: Alarm,
        source: verdict.Source,
        stream_start: datetime,
        overflows: Callable[[], int] = lambda: 0,
        extra: dict[str, Any] | None = None,
        stats: PipelineStats | None = None,
        baseline: Baseline | None = None,
        clock_synced: Callable[[], bool | None] = lambda: None,
        clips: ClipStore | None = None,
    ) -> None:
        self._settings = settings
        self._model = model
        self._sink = sink
        self._alarm = alarm
        self._source: verdict.Source = source
        self._stream_start = stream_start
        self._overflows = overflows
        self._extra = extra or {}
        self._model_ref = verdict.ModelRef(model.name, model.sha256, model.kind)
        self._baseline = baseline
        # Asked as each window completes: live, that is when the window ended (daemon.clock).
        self._clock_synced = clock_synced
        self._threshold = (
            settings.model.threshold if settings.model.threshold is not None else model.threshold
        )
        self.spec = runtime_spec(settings, model)
        # Physics are reported at the configured line frequency even for a model without them.
        self._line_hz = report_line_hz(settings, self.spec)
        self._windower = windower_for(settings, self.spec)
        # Clips keep the window's own samples: the keeper holds one window of them (int16).
        self._clips = (
            None
            if clips is None
            else ClipKeeper(
                clips,
                normal_every_n=settings.clips.normal_every_n,
                window_samples=self._windower.length_samples,
            )
        )
        # The live service passes one stats object to each stream's pipeline, so counts and the
        # last window carry over a device recovery.
        self.stats = stats if stats is not None else PipelineStats()

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def samples_to_boundary(self) -> int:
        """Samples to feed before the window in progress completes (0: none is in progress).
        A reload switches models here, so no window is ever scored by two (daemon.service)."""
        return self._windower.samples_to_boundary

    @property
    def stream_position(self) -> datetime:
        """The time of the next sample this pipeline would be fed: where a successor starts."""
        return self._stream_start + timedelta(seconds=self._windower.received_samples / SAMPLE_RATE)

    def feed(self, block: np.ndarray) -> list[Verdict]:
        """Push audio; returns the verdicts (as stored, with their seq) of the windows it
        completed."""
        windows = self._windower.push(block)
        if self._clips is not None:  # after the Windower accepted it: the offsets stay in step
            self._clips.push(block)
        return [self._finish(window) for window in windows]

    def flush(self) -> list[Verdict]:
        """End of stream: the tail window, if the tail policy keeps it (daemon.listen.windows)."""
        window = self._windower.flush()
        finished = [] if window is None else [self._finish(window)]
        if self._clips is not None:
            self._clips.reset()
        return finished

    def _finish(self, window: Window) -> Verdict:
        score = self._model.score_one(self.spec.vector(window.features, window.physics))
        sensor = verdict.sensor_state(window)
        classifier = score >= self._threshold
        reading = OFF
        if self._baseline is not None:
            # Only usable windows the model calls normal are learned: a tower that already has
            # corona while commissioning must not learn it as its normal sound.
            reading = self._baseline.observe(
                novelty_vector(window.physics, self._line_hz),
                learn=sensor == "ok" and not classifier,
            )
        label_by: str
        label, label_by = decide(self._settings.alarm.use, classifier=classifier, reading=reading)
        if sensor != "ok":
            # A dead, stuck or overdriven input says nothing about the tower: the model's score
            # is kept for diagnosis, but the window never reads as corona (nor counts for the
            # alarm: Alarm skips unusable windows).
            label, label_by = "normal", SENSOR_RULE
        extra = dict(self._extra)
        if self._source == "replay":
            extra["offset_s"] = round(window.start_sample / SAMPLE_RATE, 3)

        built = verdict.build(
            node=self._settings.node_id,
            window=window,
            stream_start=self._stream_start,
            score=score,
            threshold=self._threshold,
            model=self._model_ref,
            overflows=self._overflows(),
            source=self._source,
            line_hz=self._line_hz,
            label=label,
            label_by=label_by,
            baseline=reading,
            extra=extra,
            sensor=sensor,
            clock_synced=self._clock_synced(),
            clip_kind=self._clips.kind_for(label) if self._clips is not None else None,
        )
        staged: Staged | None = None
        if self._clips is not None and built.clip_kind is not None:
            staged = self._clips.prepare(window, built)
            if staged is None:  # not kept (logged by the store): the verdict must not name it
                built = dataclasses.replace(built, clip_kind=None)
        try:
            stored = self._sink.store(built)
        except BaseException:
            if staged is not None and self._clips is not None:
                self._clips.store.discard(staged)
            raise
        if not isinstance(stored, Verdict):  # a Sink returns what it was given, stamped
            raise TypeError(f"sink returned {type(stored).__name__} for a verdict")
        if staged is not None and self._clips is not None:
            self._clips.commit(staged, stored)
        log.debug("verdict", seq=stored.seq, label=stored.label, score=stored.score)
        self._track(stored, score)
        return stored

    def _track(self, stored: Verdict, score: float) -> None:
        self.stats.windows += 1
        self.stats.windows_by_label[stored.label] += 1
        self.stats.last_window_end = stored.window_end
        self.stats.last_label = stored.label
        self.stats.last_score = stored.score
        self.stats.last_sensor = stored.sensor
        change = self._alarm.update(
            anomalous=stored.anomalous, usable=stored.usable, score=score, at=stored.window_end
        )
        if change is not None:
            log.warning("alarm_changed", state=change.state, since=change.since, score=change.score)
            self._sink.store(change.with_seq(stored.seq))
