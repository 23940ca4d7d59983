"""A scored window becomes a verdict: label, sensor check and the schema-1 JSON (README,
"MQTT"; daemon/schemas/verdict.schema.json).

Payloads are an API: fields are only ever added, never renamed (tests/test_schemas.py freezes
them). Times are ISO-8601 UTC with milliseconds.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import numpy as np

from daemon.analyse.baseline import OFF, Reading
from daemon.analyse.physics import LineSetting
from daemon.constants import SAMPLE_RATE
from daemon.evidence.names import Kind, clip_name
from daemon.listen.windows import Window

SCHEMA_VERSION: Final = 1

SILENT_BELOW_DBFS: Final = -90.0
"""A window quieter than this is digital silence (a dead or muted microphone), not a quiet tower:
a real microphone's self-noise sits around -70 dBFS even at minimum gain."""

FLAT_AC_FRACTION: Final = 1e-6
"""A window whose power outside the two lowest bins is below this fraction of the total is a flat
line (a DC offset or a stuck converter): no sound reached the microphone."""

FLAT_AC_BELOW_DBFS: Final = SILENT_BELOW_DBFS
"""A window with a level but less sound than this on top of its mean is a flat line: an offset
with nothing on it (a stuck converter, a dead capsule behind a biased input). Measured: pure DC
at 0.3 of full scale keeps 2.7e-5 of its spectral power above the two lowest bins, so the
fraction rule alone called it `ok` and the model scored it as corona."""

CLIPPING_FRACTION: Final = 0.05
"""More than this fraction of samples at full scale: the input is overdriven and the spectrum
is mostly the clipper's, not the tower's."""

SensorState = Literal["ok", "silent", "flat", "clipping"]
Source = Literal["live", "replay"]
Label = Literal["normal", "anomalous"]


@dataclass(frozen=True)
class ModelRef:
    name: str
    sha256: str
    kind: str = "classifier"
    """classifier (trained on both classes) or one-class (normal-only): `model_meta.KINDS`."""


def sensor_state(window: Window) -> SensorState:
    """Whether the window is usable evidence about the tower, or a sign of a sensor fault."""
    if window.level_dbfs < SILENT_BELOW_DBFS:
        return "silent"
    if window.ac_level_dbfs < FLAT_AC_BELOW_DBFS:
        return "flat"
    total = float(np.sum(window.features, dtype=np.float64))
    ac = float(np.sum(window.features[2:], dtype=np.float64))
    if total <= 0.0 or ac / total < FLAT_AC_FRACTION:
        return "flat"
    if window.clipped > CLIPPING_FRACTION:
        return "clipping"
    return "ok"


def iso_utc(moment: datetime) -> str:
    """2026-11-25T04:53:06.536Z: ISO-8601 UTC, millisecond resolution."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def window_times(
    window: Window, stream_start: datetime, sample_rate: int = SAMPLE_RATE
) -> tuple[datetime, datetime]:
    """Wall-clock start and end of a window from its sample position in the stream."""
    start = stream_start + timedelta(seconds=window.start_sample / sample_rate)
    return start, start + timedelta(seconds=window.n_samples / sample_rate)


@dataclass(frozen=True)
class Verdict:
    """One scored window, typed and frozen; `payload` is its schema-1 JSON object.

    The pipeline builds it without a seq; the outbox stamps the seq (`with_seq`) in the
    transaction that stores it, so a verdict is never published without one."""

    node: str
    window_start: str
    window_end: str
    label: Label
    label_by: str
    score: float
    threshold: float
    model: ModelRef
    level_dbfs: float
    clipped: float
    overflows: int
    source: Source
    sensor: SensorState
    physics: Mapping[str, Any]
    baseline: Reading
    clock_synced: bool | None = None
    """Whether the system clock was NTP-synchronized when the window ended (daemon.clock); None
    when unknown, and in replay, whose times are positions in a file, not the wall clock."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Replay's `file` and `offset_s`: fields only some verdicts carry."""
    seq: int = 0
    clip_kind: Kind | None = None
    """Why the window's audio is kept as a clip (anomalous, or a normal sample), None when it is
    not; the clip's name follows from node, seq and window start (`clip`)."""

    @property
    def clip(self) -> str | None:
        """The name of this window's clip (daemon.evidence.names), None without one or a seq."""
        if self.clip_kind is None or self.seq <= 0:
            return None
        return clip_name(self.node, self.seq, self.window_start, self.clip_kind)

    @property
    def anomalous(self) -> bool:
        return self.label == "anomalous"

    @property
    def usable(self) -> bool:
        """The window is evidence about the tower (sensor ok), not a sensor fault."""
        return self.sensor == "ok"

    def with_seq(self, seq: int) -> Verdict:
        return dataclasses.replace(self, seq=seq)

    def payload(self) -> dict[str, Any]:
        """The verdict JSON object (schema 1; fields are only ever added)."""
        doc: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "node": self.node,
            "seq": self.seq,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "label": self.label,
            "label_by": self.label_by,
            "score": self.score,
            "threshold": self.threshold,
            "model": {
                "name": self.model.name,
                "sha256": self.model.sha256,
                "kind": self.model.kind,
            },
            "level_dbfs": self.level_dbfs,
            "clipped": self.clipped,
            "overflows": self.overflows,
            "source": self.source,
            "replayed": False,
            "sensor": self.sensor,
            "physics": dict(self.physics),
            "baseline": self.baseline.payload(),
            "clock_synced": self.clock_synced,
            "clip": self.clip,
        }
        doc.update(self.extra)
        return doc

    def to_json(self) -> bytes:
        return json.dumps(self.payload(), separators=(",", ":")).encode("utf-8")


def build(
    *,
    node: str,
    window: Window,
    stream_start: datetime,
    score: float,
    threshold: float,
    model: ModelRef,
    overflows: int,
    source: Source,
    line_hz: LineSetting = "auto",
    label: Label | None = None,
    label_by: str = "classifier",
    baseline: Reading = OFF,
    extra: Mapping[str, Any] | None = None,
    sensor: SensorState | None = None,
    clock_synced: bool | None = None,
    clip_kind: Kind | None = None,
) -> Verdict:
    """The verdict of one scored window (no seq yet); ``physics`` at ``line_hz``.

    ``label`` defaults to the model's (score >= threshold); the pipeline passes the label of the
    configured rule (`alarm.use`) and ``label_by``, the rule that decided it, and the window's
    ``sensor`` state it already judged (else it is judged here). ``clock_synced``: the system
    clock's state as the window ended (live only)."""
    start, end = window_times(window, stream_start)
    if label is None:
        label = "anomalous" if score >= threshold else "normal"
    return Verdict(
        node=node,
        window_start=iso_utc(start),
        window_end=iso_utc(end),
        label=label,
        label_by=label_by,
        score=round(float(score), 6),
        threshold=float(threshold),
        model=model,
        level_dbfs=round(float(window.level_dbfs), 2),
        clipped=round(float(window.clipped), 6),
        overflows=int(overflows),
        source=source,
        sensor=sensor_state(window) if sensor is None else sensor,
        physics=window.physics.select(line_hz).as_dict(),
        baseline=baseline,
        clock_synced=clock_synced,
        extra=dict(extra or {}),
        clip_kind=clip_kind,
    )
