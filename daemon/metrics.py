"""Prometheus metrics of one health snapshot: the text format, and where it goes.

`families` turns a `daemon.health.HealthSnapshot` into metric families and `render` writes them in
the text exposition format 0.0.4, so a scrape shows exactly the numbers of the health message made
from the same snapshot. `MetricsExport` hands each rendering to `daemon.metrics_server` (GET
/metrics on its own thread) and replaces the textfile with it atomically.
"""

from __future__ import annotations

import math
import os
import tempfile
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import structlog

from daemon.analyse.baseline import BaselineState
from daemon.analyse.verdict import SensorState
from daemon.config import MetricsSettings
from daemon.health import HealthSnapshot
from daemon.listen.capture import CaptureState

if TYPE_CHECKING:
    # http.server (with http.client and email) costs about 20 ms to import: only when listening.
    from daemon.metrics_server import MetricsServer

log = structlog.get_logger(__name__)

CAPTURE_STATES: Final = tuple(s.value for s in CaptureState) + tuple(
    s for s in typing.get_args(SensorState) if s != "ok"
)
"""Every value health's `capture` can take (daemon.health.capture_state)."""
BASELINE_STATES: Final = typing.get_args(BaselineState)
TEXTFILE_MODE: Final = 0o644
"""node_exporter runs as another user: it must be able to read the file."""

Kind = Literal["counter", "gauge"]


@dataclass(frozen=True)
class Sample:
    value: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Family:
    """One metric: its name (counters end in _total), type, help text and samples."""

    name: str
    kind: Kind
    help: str
    samples: tuple[Sample, ...]


def _one(name: str, kind: Kind, text: str, value: float | None) -> Family:
    # A value not known yet (no window scored) is no sample rather than a made-up 0.
    samples = () if value is None else (Sample(value),)
    return Family(name, kind, text, samples)


def _states(name: str, text: str, states: Iterable[str], current: str) -> Family:
    # An enum as Prometheus likes it: one series per state, 1 for the current one.
    samples = tuple(Sample(float(s == current), (("state", s),)) for s in states)
    return Family(name, "gauge", text, samples)


def families(snap: HealthSnapshot) -> list[Family]:
    """The node's metrics, every number taken from this one snapshot."""
    last_window = snap.last_window_end
    info = (
        ("node", snap.node),
        ("model", snap.model.name),
        ("model_sha256", snap.model.sha256),
        ("model_kind", snap.model.kind),
    )
    return [
        Family(
            "corona_node_info", "gauge", "The node and its model: always 1.", (Sample(1, info),)
        ),
        _one(
            "corona_health_timestamp_seconds",
            "gauge",
            "When the snapshot behind these numbers was taken (Unix time; health `time`).",
            snap.taken_at.timestamp(),
        ),
        _one("corona_uptime_seconds", "gauge", "Seconds since the daemon started.", snap.uptime_s),
        _one(
            "corona_window_length_seconds", "gauge", "Seconds of audio per verdict.", snap.window_s
        ),
        Family(
            "corona_windows_total",
            "counter",
            "Windows scored since start, by final label (after alarm.use).",
            (
                Sample(snap.windows_normal, (("label", "normal"),)),
                Sample(snap.windows_anomalous, (("label", "anomalous"),)),
            ),
        ),
        _one(
            "corona_last_window_timestamp_seconds",
            "gauge",
            "End of the last scored window (Unix time); absent before the first.",
            None if last_window is None else last_window.timestamp(),
        ),
        _one(
            "corona_last_score",
            "gauge",
            "The last window's score; absent before the first.",
            snap.last_score,
        ),
        _one(
            "corona_alarm_active",
            "gauge",
            "1 while the k-of-n alarm is raised, else 0.",
            float(snap.alarm == "alarm"),
        ),
        _states(
            "corona_capture_state",
            "Capture state (health `capture`): 1 for the current one.",
            CAPTURE_STATES,
            snap.capture,
        ),
        _one(
            "corona_capture_frames_total",
            "counter",
            "Audio frames captured since start.",
            snap.frames_captured,
        ),
        _one(
            "corona_capture_overflows_total",
            "counter",
            "Input overflows since start (PortAudio and ring buffer).",
            snap.overflows,
        ),
        _one(
            "corona_capture_dropped_frames_total",
            "counter",
            "Frames the ring buffer overwrote before the worker read them.",
            snap.dropped_frames,
        ),
        _one(
            "corona_outbox_depth",
            "gauge",
            "Messages waiting for the broker's acknowledgement.",
            snap.outbox_depth,
        ),
        _one(
            "corona_outbox_dropped_total",
            "counter",
            "Messages dropped because the outbox was full (normal first, alarms never).",
            snap.outbox_dropped,
        ),
        _one(
            "corona_outbox_degraded",
            "gauge",
            "1 while the outbox runs in memory because the disk cannot be used.",
            int(snap.outbox == "degraded"),
        ),
        Family(
            "corona_messages_sent_total",
            "counter",
            "Messages the broker acknowledged: sent as made (live) or late from the backlog.",
            (
                Sample(snap.sent_live, (("delivery", "live"),)),
                Sample(snap.sent_replayed, (("delivery", "replayed"),)),
            ),
        ),
        _one(
            "corona_mqtt_connected",
            "gauge",
            "1 while connected to the broker, else 0.",
            float(snap.mqtt_connected),
        ),
        _one(
            "corona_mqtt_connect_failures_total",
            "counter",
            "Failed connection attempts to the broker since start.",
            snap.mqtt_connect_failures,
        ),
        _states(
            "corona_baseline_state",
            "The on-site baseline's state: 1 for the current one.",
            BASELINE_STATES,
            snap.baseline_state,
        ),
        _one(
            "corona_baseline_windows",
            "gauge",
            "Windows the on-site baseline has learned.",
            snap.baseline_windows,
        ),
        _one(
            "corona_baseline_learn_windows",
            "gauge",
            "Windows the baseline learns before it is ready.",
            snap.baseline_learn_windows,
        ),
        _one("corona_clips", "gauge", "Evidence clips in the clips folder.", snap.clips_count),
        _one(
            "corona_clips_bytes",
            "gauge",
            "Bytes of the evidence clips in the clips folder.",
            snap.clips_bytes,
        ),
        _one(
            "corona_clips_skipped_total",
            "counter",
            "Clips that could not be kept (disk full, free-disk floor, write error) since start.",
            snap.clips_skipped,
        ),
        _one(
            "corona_clips_deleted_total",
            "counter",
            "Clips deleted by retention (age, total size, free-disk floor) since start.",
            snap.clips_deleted,
        ),
    ]


def render(metrics: Iterable[Family]) -> str:
    """The text exposition format 0.0.4: HELP and TYPE, then the samples, of each family."""
    lines: list[str] = []
    for family in metrics:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for sample in family.samples:
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sample.labels)
            selector = f"{{{labels}}}" if labels else ""
            lines.append(f"{family.name}{selector} {_number(sample.value)}")
    return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))  # counters read as integers, as they are
    return repr(float(value))


def write_textfile(path: Path, text: str) -> None:
    """Replace path with text atomically: a reader sees the old file or the new, never part.

    The temporary file sits in the same folder (os.replace cannot cross file systems) and does not
    end in .prom, so node_exporter never reads it. No fsync: after a power cut the file is
    rewritten within one health interval anyway, and the SD card is spared the flushes."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), TEXTFILE_MODE)  # mkstemp makes it 0600
            out.write(text)
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class MetricsExport:
    """Where the node's metrics go: the HTTP endpoint and/or the textfile (both off by default).

    Neither may stop the monitoring: a port in use or an unwritable folder is logged (the
    textfile once until it works again) and the daemon goes on."""

    def __init__(self, settings: MetricsSettings) -> None:
        self._settings = settings
        self._server: MetricsServer | None = None
        self._textfile_error: str | None = None

    @property
    def enabled(self) -> bool:
        return self._settings.address is not None or self._settings.textfile is not None

    def start(self) -> None:
        """Bind the endpoint, if configured; a failure is one error line, not an exit."""
        address = self._settings.address
        if address is None:
            return
        from daemon.metrics_server import METRICS_PATH, MetricsServer

        host, port = address
        try:
            self._server = MetricsServer(host, port)
        except OSError as err:
            log.error(
                "metrics_listen_failed",
                listen=f"{host}:{port}",
                error=str(err),
                hint="metrics.listen: is the port in use? monitoring goes on without it",
            )
            return
        self._server.start()
        log.info("metrics_listening", host=host, port=port, path=METRICS_PATH)

    def publish(self, snapshot: HealthSnapshot) -> None:
        """Render the snapshot once; serve it and write it to the textfile."""
        if not self.enabled:
            return
        text = render(families(snapshot))
        if self._server is not None:
            self._server.body = text.encode("utf-8")
        if self._settings.textfile is not None:
            self._write(self._settings.textfile, text)

    def _write(self, path: Path, text: str) -> None:
        try:
            write_textfile(path, text)
        except OSError as err:
            # By cause, not message: the message names the random temporary file each time.
            cause = err.strerror or type(err).__name__
            if self._textfile_error != cause:  # an SD card needs no line per snapshot
                log.error("metrics_textfile_failed", path=str(path), error=str(err))
            self._textfile_error = cause
            return
        if self._textfile_error is not None:
            log.info("metrics_textfile_written", path=str(path), after_error=self._textfile_error)
            self._textfile_error = None

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
