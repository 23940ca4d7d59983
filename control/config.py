"""control.yaml: the control room's settings, read and checked like the node's config.

The `mqtt` section is the node's own (`daemon.config.MqttSettings`: broker, TLS, password file),
so one set of broker credentials and rules serves both sides. The walker, its messages and its
refusal of unknown keys are daemon.config's.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from daemon.config import MqttSettings, build, default_state_dir, parse_listen
from daemon.config import setting_range as _range
from daemon.errors import ConfigError


def _default_database_url() -> str:
    return f"sqlite:///{default_state_dir('corona-control') / 'control.db'}"


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = field(default_factory=_default_database_url)
    """sqlite:///PATH (default: control.db in the state folder) or postgresql://USER@HOST/DB.
    A password belongs in password_file or ~/.pgpass, not in this file."""
    password_file: Path | None = None
    """File whose first line is the PostgreSQL password (added to the URL at connect)."""
    retention_days: float = field(default=400.0, metadata=_range(1.0, 36500.0))
    """Verdicts, health, statuses and alarm changes older than this are deleted (by arrival);
    the default keeps a year and a season to compare with."""


@dataclass(frozen=True)
class CollectorSettings:
    client_id: str = field(default_factory=lambda: f"corona-control-{socket.gethostname()}")
    """Fixed, so the broker keeps this collector's session (and its queued verdicts) while it is
    down. Two collectors need two ids."""
    share_group: str | None = None
    """Set to split the fleet between collectors: each subscribes to $share/GROUP/... (MQTT 5)."""
    session_expiry_s: int = field(default=7 * 86400, metadata=_range(60, 2**32 - 1))
    """How long the broker keeps the session (and queues verdicts) for a collector that is gone."""
    batch_max: int = field(default=500, metadata=_range(1, 100_000))
    """Messages stored in one transaction at most."""
    max_nodes: int = field(default=10_000, metadata=_range(1, 10_000_000))
    """Node ids stored at most: any client allowed to publish under the prefix can invent them."""


@dataclass(frozen=True)
class HttpSettings:
    listen: str = "127.0.0.1:8080"
    """HOST:PORT; loopback unless an address is named (0.0.0.0 for the control-room LAN)."""
    auth: Literal["login", "none"] = "login"
    """login: every page and API call needs a user. none: a read-only wall display, no
    acknowledgements; only when set explicitly."""
    hosts: tuple[str, ...] = ()
    """Host names the page may be opened by, besides IP addresses and localhost (with auth:
    none, any other Host is refused: a DNS-rebinding page cannot read the wall display)."""
    session_hours: float = field(default=12.0, metadata=_range(0.01, 24.0 * 90))
    secure_cookies: bool = False
    """Mark the session cookie Secure: set it when a TLS proxy serves the page."""


@dataclass(frozen=True)
class ControlSettings:
    mqtt: MqttSettings = field(default_factory=lambda: MqttSettings(host="localhost"))
    collector: CollectorSettings = field(default_factory=CollectorSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    stale_after_s: float | None = field(default=None, metadata=_range(1.0, 86400.0 * 30))
    """A live node is stale when its last verdict is older than this (default: two windows)."""

    def listen(self) -> tuple[str, int]:
        try:
            return parse_listen(self.http.listen)
        except ConfigError as err:
            raise ConfigError(str(err).replace("metrics.listen", "http.listen", 1)) from None

    def database_url(self) -> str:
        """database.url with the password from database.password_file, when one is set."""
        url = self.database.url
        if self.database.password_file is None or not url.startswith("postgres"):
            return url
        try:
            password = self.database.password_file.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"database.password_file: cannot read a password from"
                f" {self.database.password_file}: {err}"
            ) from err
        from urllib.parse import quote, urlsplit, urlunsplit

        parts = urlsplit(url)
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        netloc = f"{quote(user, safe='')}:{quote(password.strip(), safe='')}@{host}{port}"
        return urlunsplit(parts._replace(netloc=netloc))


def load(path: Path | None) -> ControlSettings:
    """Settings from control.yaml (relative paths resolve against its folder), or defaults."""
    if path is None:
        return build(ControlSettings, {}, "", base_dir=Path.cwd())
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config file: {err}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = " ".join(str(err).split()).replace('"<unicode string>"', str(path))
        raise ConfigError(f"{path}: not valid YAML: {where}") from err
    except (ValueError, RecursionError) as err:
        raise ConfigError(f"{path}: not valid YAML: {type(err).__name__}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top")
    try:
        settings = build(ControlSettings, data, "", base_dir=path.parent.resolve())
        settings.listen()
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return settings
