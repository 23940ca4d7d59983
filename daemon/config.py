"""Settings: read the YAML once, validate once, hand frozen typed settings on.

Every field is a dataclass field with a type and, where it matters, a range in its metadata; one
generic walker checks them all, so a bad value always gets the same kind of message, naming the
key path: ``mqtt.port: expected an integer 1-65535, got 'abc'``. Unknown keys are rejected (a
typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import socket
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from daemon.constants import SAMPLE_RATE
from daemon.errors import ConfigError

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_PATH = REPO_ROOT / "models" / "corona-demo.tflite"
"""The shipped demo model, found beside the package in a source checkout or editable install."""

DEFAULT_PASSWORD_ENV = "CORONA_MQTT_PASSWORD"  # noqa: S105 - a variable name, not a password


def setting_range(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    """A field's metadata: the range `build` checks its value against."""
    return {"min": lo, "max": hi}


_range = setting_range


def default_state_dir(program: str = "corona-monitor") -> Path:
    """Where `program` keeps its state: systemd's StateDirectory= (exported as
    STATE_DIRECTORY) when run as a service, by hand the XDG location."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / program


@dataclass(frozen=True)
class AudioSettings:
    device: str | int | None = None
    """Input device by name (substring) or PortAudio index; null = the system default input."""
    sample_rate: int = field(default=SAMPLE_RATE, metadata=_range(SAMPLE_RATE, SAMPLE_RATE))
    """Hz. Fixed at 44100: the model's features are defined at this rate."""
    channels: int = field(default=1, metadata=_range(1, 32))
    """Channels to open; more than one is downmixed by mean."""
    block_s: float = field(default=0.1, metadata=_range(0.005, 2.0))
    """Seconds per PortAudio callback block."""
    ring_s: float = field(default=10.0, metadata=_range(1.0, 600.0))
    """Seconds of audio the capture ring buffer holds while the worker catches up."""


@dataclass(frozen=True)
class WindowSettings:
    length_s: float | None = field(default=None, metadata=_range(0.1, 3600.0))
    """Seconds of audio per verdict; null = the model's window_s (a different value is an error:
    a model scores the window length it was trained on)."""
    hop_s: float | None = field(default=None, metadata=_range(0.1, 3600.0))
    """Seconds between window starts; null = the window length (no overlap); smaller slides."""
    force_length: bool = False
    """Score length_s windows even though the model was trained on another length (tests and
    experiments only: verdicts on windows of another length are less reliable)."""


@dataclass(frozen=True)
class FeatureSettings:
    """What the model decides: each key null (the default) takes the model's metadata value;
    a value that differs from the model's is an error naming both (`daemon.analyse.featurespec`)."""

    n_fft: int | None = field(default=None, metadata=_range(16, 65536))
    hop_length: int | None = field(default=None, metadata=_range(1, 65536))
    window: Literal["hann"] | None = None
    center: bool | None = None
    line_hz: Literal[50, 60, "auto"] = "auto"
    """Grid frequency for the physics values: 50, 60, or auto (the stronger evidence, reported
    in every verdict). A model trained at a fixed frequency refuses the other one."""


@dataclass(frozen=True)
class ModelSettings:
    path: Path = DEFAULT_MODEL_PATH
    """The .tflite file; its metadata NAME.json must sit beside it."""
    threshold: float | None = field(default=None, metadata=_range(0.0, 1.0))
    """P(anomalous) at or above which a window is anomalous; null = the model's own threshold."""


AlarmSource = Literal["classifier", "baseline", "both", "either"]


@dataclass(frozen=True)
class AlarmSettings:
    k: int = field(default=3, metadata=_range(1, 1000))
    """Alarm when at least k ..."""
    n: int = field(default=5, metadata=_range(1, 1000))
    """... of the last n windows are anomalous; clear when none of the last n are."""
    use: AlarmSource = "both"
    """Which scores label a window anomalous: the model (classifier or normal-only), the
    on-site baseline, both (each must agree) or either. While the baseline is still learning,
    every rule uses the model alone. Default both, measured (bench/sites.py): on sites learned
    from an hour of their own sound, 0 false alarms in 90 normal windows against the model's
    11, the same 2 of 90 corona windows missed; where a site's sound changed after learning,
    exactly the model's verdicts."""


@dataclass(frozen=True)
class BaselineSettings:
    enabled: bool = True
    """Learn this tower's normal sound on site and report the distance from it in every verdict."""
    learn_h: float = field(default=168.0, metadata=_range(0.0001, 8760.0))
    """Hours of usable windows to learn from before the baseline is ready (a week: days, nights,
    weekdays and a weekend; `corona-monitor baseline import DIR` learns from files instead)."""
    path: Path | None = None
    """The baseline file; null = baseline.npz beside the outbox (the node's state directory)."""
    quantile: float = field(default=0.99, metadata=_range(0.5, 0.999999))
    """The baseline's threshold: this quantile of a gamma fitted to held-out normal distances
    (the per-window false-alarm rate it aims at is 1 - quantile)."""


@dataclass(frozen=True)
class TlsSettings:
    ca: Path | None = None
    """CA certificate file; setting it (or cert) turns TLS on."""
    cert: Path | None = None
    """Client certificate (optional, with key). Without ca, TLS is on and the broker is verified
    against the system's CAs: a client certificate never goes over plain TCP."""
    key: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.ca is not None or self.cert is not None


@dataclass(frozen=True)
class MqttSettings:
    host: str | None = None
    """Broker host name; null disables MQTT (replay then only prints)."""
    port: int = field(default=1883, metadata=_range(1, 65535))
    prefix: str = "corona/v1"
    qos: int = field(default=1, metadata=_range(0, 2))
    keepalive_s: int = field(default=60, metadata=_range(5, 3600))
    username: str | None = None
    password_file: Path | None = None
    """File holding the password (first line); preferred over the environment variable."""
    password_env: str = DEFAULT_PASSWORD_ENV
    """Environment variable read for the password when password_file is not set."""
    tls: TlsSettings = field(default_factory=TlsSettings)
    allow_insecure: bool = False
    """Allow a password over a plain (non-TLS) connection."""
    health_interval_s: float = field(default=60.0, metadata=_range(1.0, 86400.0))
    reconnect_max_s: float = field(default=60.0, metadata=_range(1.0, 3600.0))

    @property
    def enabled(self) -> bool:
        return self.host is not None

    def password(self) -> str | None:
        """The password from password_file or the environment; never stored in the YAML."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").splitlines()[0].strip()
            except (OSError, IndexError, UnicodeDecodeError) as err:
                raise ConfigError(
                    f"mqtt.password_file: cannot read a password from {self.password_file}: {err}"
                ) from err
        return os.environ.get(self.password_env) or None


@dataclass(frozen=True)
class OutboxSettings:
    path: Path = field(default_factory=lambda: default_state_dir() / "outbox.sqlite")
    max_rows: int = field(default=100_000, metadata=_range(1, 100_000_000))
    min_free_mb: float = field(default=50.0, metadata=_range(0.0, 1_000_000.0))
    """Below this much free disk the outbox goes on in memory (health: outbox degraded) and
    writes its rows back to the file once there is room again."""


@dataclass(frozen=True)
class ClipSettings:
    """Evidence clips (daemon.evidence): the audio of kept windows as FLAC in the state folder."""

    enabled: bool = True
    """Keep the audio of every anomalous window (and the normal sample below). On by default:
    it is what lets the control room hear an alarm and retrain on the field, and the bounds
    below keep it from ever filling the card."""
    normal_every_n: int = field(default=120, metadata=_range(0, 1_000_000))
    """Also keep every n-th normal window (the first after start, then every n-th; 0 = none):
    120 is one an hour at 30 s windows, what a retraining set needs of the tower's own normal."""
    max_total_mb: float = field(default=1000.0, metadata=_range(0.01, 1_000_000.0))
    """All clips together stay under this many MiB (a 30 s clip is 1-2.6 MiB)."""
    max_age_days: float = field(default=30.0, metadata=_range(0.0001, 36500.0))
    """Clips older than this (since they were kept) are deleted."""
    min_free_mb: float = field(default=200.0, metadata=_range(0.0, 1_000_000.0))
    """Never leave less than this many MiB free on the clips' disk (above outbox.min_free_mb, so
    clips give way before verdicts do)."""
    path: Path | None = None
    """The clips folder; null = clips/ beside the outbox (the node's state directory)."""
    max_publish_kb: int = field(default=4096, metadata=_range(1, 262_144))
    """A clip asked for over MQTT is sent only up to this many KiB (else an error message)."""
    in_replay: bool = False
    """Keep clips in replay too (off: replayed files are already recordings)."""


LOOPBACK_HOST = "127.0.0.1"
"""Where the metrics endpoint listens when `metrics.listen` gives only a port."""


@dataclass(frozen=True)
class MetricsSettings:
    listen: str | int | None = None
    """Serve Prometheus metrics on HTTP GET /metrics at PORT (loopback) or HOST:PORT (an IP
    address, [IPv6] in brackets, or localhost; 0.0.0.0 = every interface); null = no endpoint."""
    textfile: Path | None = None
    """Also write the metrics to this *.prom file (node_exporter's textfile collector), replaced
    atomically at every health snapshot; null = no file."""

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to bind, or None when no endpoint is configured."""
        return None if self.listen is None else parse_listen(self.listen)


@dataclass(frozen=True)
class HomeAssistantSettings:
    enabled: bool = False
    """Publish retained Home Assistant MQTT discovery configs (status, alarm, score, level) on
    every connect, so Home Assistant shows the node without YAML."""
    discovery_prefix: str = "homeassistant"
    """Home Assistant's discovery prefix (its MQTT integration's setting)."""


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"
    """auto: JSON lines when stderr is not a terminal (journald), readable text when it is."""


@dataclass(frozen=True)
class Settings:
    node_id: str = field(default_factory=socket.gethostname)
    audio: AudioSettings = field(default_factory=AudioSettings)
    window: WindowSettings = field(default_factory=WindowSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    alarm: AlarmSettings = field(default_factory=AlarmSettings)
    baseline: BaselineSettings = field(default_factory=BaselineSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    outbox: OutboxSettings = field(default_factory=OutboxSettings)
    clips: ClipSettings = field(default_factory=ClipSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    homeassistant: HomeAssistantSettings = field(default_factory=HomeAssistantSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    @property
    def baseline_path(self) -> Path:
        """Where the on-site baseline lives (`baseline.path`, else beside the outbox)."""
        return self.baseline.path or self.outbox.path.parent / "baseline.npz"

    @property
    def clips_path(self) -> Path:
        """Where evidence clips live (`clips.path`, else clips/ beside the outbox)."""
        return self.clips.path or self.outbox.path.parent / "clips"


@dataclass(frozen=True)
class ConfigSource:
    """The identity of the config a process runs on (health reports it, a reload replaces it)."""

    path: Path | None
    sha256: str | None
    """Of the bytes that were parsed; None when running on the defaults (no file)."""
    loaded_at: str
    """When they were read (ISO-8601 UTC)."""

    def payload(self) -> dict[str, Any]:
        return {
            "path": None if self.path is None else str(self.path),
            "sha256": self.sha256,
            "loaded_at": self.loaded_at,
        }


def read(path: Path | None) -> tuple[Settings, ConfigSource]:
    """`load`, and the identity of exactly the bytes it parsed (read once: no race with an
    editor saving the file in between)."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if path is None:
        return load(None), ConfigSource(None, None, now)
    try:
        content = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file: {err}") from err
    return parse(content, path), ConfigSource(path, hashlib.sha256(content).hexdigest(), now)


def load(path: Path | str | None) -> Settings:
    """Settings from a YAML file (relative paths in it resolve against its folder), or defaults."""
    if path is None:
        return _check_cross_fields(build(Settings, {}, "", base_dir=Path.cwd()))
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file: {err}") from err
    return parse(content, path)


def parse(content: bytes, path: Path) -> Settings:
    """Settings from the bytes of the YAML file at `path` (read once by the caller, so a reload
    can hash exactly the bytes it validated); ConfigError naming the file and key."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: cannot read the config file: {err}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        # PyYAML names a string it parsed "<unicode string>": say which file it was.
        where = _one_line(str(err)).replace('"<unicode string>"', str(path))
        raise ConfigError(f"{path}: not valid YAML: {where}") from err
    except ValueError as err:  # a scalar YAML resolves but cannot build, e.g. 2001-13-45
        raise ConfigError(f"{path}: not valid YAML: {_one_line(str(err))}") from err
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of keys at the top, got {_kind(data)}")
    try:
        return _check_cross_fields(build(Settings, data, "", base_dir=path.parent.resolve()))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _check_cross_fields(settings: Settings) -> Settings:
    if settings.alarm.k > settings.alarm.n:
        raise ConfigError(
            f"alarm.k: must be at most alarm.n ({settings.alarm.n}), got {settings.alarm.k}"
        )
    window = settings.window
    if window.hop_s is not None and window.length_s is not None and window.hop_s > window.length_s:
        raise ConfigError(
            f"window.hop_s: must be at most window.length_s ({window.length_s}), got {window.hop_s}"
        )
    # The node id is an MQTT topic level: wildcards or separators in it would corrupt the topics.
    if not settings.node_id or any(c in settings.node_id for c in "/+#"):
        raise ConfigError(
            f"node_id: must be non-empty without '/', '+' or '#', got {settings.node_id!r}"
        )
    tls = settings.mqtt.tls
    if (tls.cert is None) != (tls.key is None):
        raise ConfigError("mqtt.tls: cert and key go together; set both or neither")
    _ = settings.metrics.address  # raises ConfigError naming metrics.listen
    textfile = settings.metrics.textfile
    if textfile is not None and textfile.suffix != ".prom":
        # node_exporter's textfile collector reads *.prom only: another name would be ignored.
        raise ConfigError(f"metrics.textfile: must end in .prom, got {str(textfile)!r}")
    prefix = settings.homeassistant.discovery_prefix
    if any(c in prefix for c in "+#") or prefix.strip("/") != prefix:
        raise ConfigError(
            "homeassistant.discovery_prefix: a topic without '+', '#' or a leading or trailing"
            f" '/', got {prefix!r}"
        )
    return settings


def parse_listen(value: str | int) -> tuple[str, int]:
    """(host, port) of `metrics.listen`: PORT, HOST:PORT or [IPv6]:PORT; ConfigError otherwise.

    A bare port means loopback: an endpoint reachable from the tower's network must be asked
    for by naming the address."""
    text = str(value).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = LOOPBACK_HOST, text
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    port = int(port_text) if port_text.isascii() and port_text.isdigit() else 0
    if not 1 <= port <= 65535:
        raise ConfigError(
            f"metrics.listen: expected PORT or HOST:PORT with a port 1-65535, got {_show(value)}"
        )
    if host != "localhost":
        try:
            address = ipaddress.ip_address(host)
            if address.version == 6 and not bracketed:  # ::1:80 could be ::1 port 80 or ::0.1:80
                raise ValueError(host)
            host = str(address)
        except ValueError:
            raise ConfigError(
                "metrics.listen: the host must be an IP address (0.0.0.0 for every interface,"
                f" [::1] for IPv6) or localhost, got {_show(value)}"
            ) from None
    return host, port


def build(cls: type[T], data: Mapping[str, Any], path: str, *, base_dir: Path) -> T:
    """A frozen settings dataclass from a mapping, checking keys, types and ranges."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'top level'}: expected a mapping, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields), key=str)  # YAML keys may be 1, null, true ...
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"{where}{unknown[0]}: unknown key (known here: {', '.join(sorted(fields))})"
        )
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{path}.{name}" if path else name
        values[name] = _convert(hints[name], value, key, fields[name].metadata, base_dir)
    return cls(**values)


def _convert(tp: Any, value: Any, key: str, meta: Mapping[str, Any], base_dir: Path) -> Any:
    if dataclasses.is_dataclass(tp):
        return build(tp, value if value is not None else {}, key, base_dir=base_dir)  # type: ignore[arg-type]
    # `X | None` of classes is a types.UnionType; with a Literal in it, a typing.Union.
    is_union = isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union
    options = typing.get_args(tp) if is_union else (tp,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{key}: a value is required, got null")
    errors: list[str] = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _convert_one(option, value, key, meta, base_dir)
        except _MismatchError as mismatch:
            errors.append(str(mismatch))
    expected = " or ".join(errors)
    if type(None) in options:
        expected += " or null"
    raise ConfigError(f"{key}: expected {expected}, got {_show(value)}")


class _MismatchError(Exception):
    """One alternative of a union did not fit; carries what it expected."""


def _convert_one(tp: Any, value: Any, key: str, meta: Mapping[str, Any], base_dir: Path) -> Any:
    lo, hi = meta.get("min"), meta.get("max")
    span = _span(lo, hi)
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise _MismatchError("one of " + ", ".join(repr(c) for c in choices))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _MismatchError("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool) and _within(value, lo, hi):
            return value
        raise _MismatchError(f"an integer{span}")
    if tp is float:
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if is_number and _within(value, lo, hi):
            return float(value)
        raise _MismatchError(f"a number{span}")
    if tp in (str, Path, tuple[str, ...]):
        return _convert_text(tp, value, base_dir)
    raise ConfigError(f"{key}: unsupported setting type {tp!r}")  # a bug in this module, not input


def _convert_text(tp: Any, value: Any, base_dir: Path) -> Any:
    """A string, a file path (relative to base_dir) or a list of strings (as a tuple)."""
    if tp is str:
        if isinstance(value, str) and value.strip():
            return value
        raise _MismatchError("a non-empty string")
    if tp is Path:
        if isinstance(value, str) and value.strip():
            candidate = Path(value).expanduser()
            return candidate if candidate.is_absolute() else base_dir / candidate
        raise _MismatchError("a file path")
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(value)
    raise _MismatchError("a list of non-empty strings")


def _within(value: float, lo: float | None, hi: float | None) -> bool:
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _span(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" {_num(lo)}" if lo == hi else f" {_num(lo)}-{_num(hi)}"
    if lo is not None:
        return f" >= {_num(lo)}"
    if hi is not None:
        return f" <= {_num(hi)}"
    return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(value: Any) -> str:
    if isinstance(value, Mapping | list):
        return _kind(value)
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


def as_dict(settings: Any, *, mask_secrets: bool = True) -> dict[str, Any]:
    """Settings as plain data for printing (check-config); secrets never appear."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = as_dict(value, mask_secrets=mask_secrets)
        elif isinstance(value, Path):
            out[f.name] = str(value)
        else:
            out[f.name] = value
    if isinstance(settings, MqttSettings) and mask_secrets:
        out["password"] = "***" if settings.password() else None
    return out
