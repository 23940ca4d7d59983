"""What SIGHUP does before anything switches: re-read the config and the model, validate them
exactly as start-up does, and say what would change.

`prepare` is the whole decision. It reads the config file once (the bytes it hashes are the
bytes it parsed), refuses a change to a key that only a restart can apply, then loads the model
through `daemon.pipeline.load_model`: its metadata against the new config's features, its sha256,
and the trial load in a child process (`daemon.analyse.model_trial`). Any refusal is one
`ReloadRefusedError`/`ConfigError`/`ModelError` line; the service then keeps what runs. `Validation`
runs `prepare` on a thread of its own, so the worker loop never waits for a trial; `load` then
makes the interpreter in the worker, which switches at a window boundary (`daemon.service`).

Live (applied by a reload): `model.*`, `window.*`, `features.*` (checked against the model),
`alarm.*`, `baseline.learn_h`/`quantile`, `logging.*`, `mqtt.health_interval_s`.
Restart only (`RESTART_ONLY`): what an open device, socket, file or connection was built from.
"""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from daemon import config
from daemon.analyse.model import Model
from daemon.config import ConfigSource, Settings
from daemon.errors import CoronaError, one_line
from daemon.pipeline import check_model, load_model, windower_for

RESTART_ONLY: Final = (
    "node_id",
    "audio",
    "mqtt",
    "outbox",
    "baseline.enabled",
    "baseline.path",
    "metrics",
    "homeassistant",
    "clips",
)
"""Key prefixes a reload refuses to change. Each is held by something opened once: the audio
stream (audio.*), the broker session, its Last Will and retained announcements (node_id, mqtt.*,
homeassistant.*), the outbox's SQLite file and the seq it numbers (outbox.*), the baseline's
lock (baseline.enabled/path), the metrics socket and textfile (metrics.*), the clips folder and
its retention (clips.*). Reopening any of them
in a running process risks a gap or a duplicate in exactly what a reload must keep; a restart
(`systemctl restart corona-monitor`) does it safely, and takes a few seconds."""
LIVE_EXCEPTIONS: Final = ("mqtt.health_interval_s",)
"""Keys under a RESTART_ONLY prefix that a reload does apply (the service reads them per loop)."""
RESTART_HINT: Final = "systemctl restart corona-monitor"


class ReloadRefusedError(CoronaError):
    """A reload that would change a key only a restart can apply; the message names the keys."""


@dataclass(frozen=True)
class Candidate:
    """A validated config whose model passed every check (its interpreter is made by `load`)."""

    settings: Settings
    source: ConfigSource
    changed: tuple[str, ...]
    """Dotted config keys whose value differs from the running config."""


def flatten(settings: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to values (`mqtt.tls.ca` -> path): secrets are never read (no password)."""
    out: dict[str, Any] = {}
    for key, value in config.as_dict(settings, mask_secrets=False).items():
        _flatten_into(out, f"{prefix}{key}", value)
    return out


def _flatten_into(out: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for sub, item in value.items():
            _flatten_into(out, f"{key}.{sub}", item)
    else:
        out[key] = value


def changed_keys(running: Settings, new: Settings) -> tuple[str, ...]:
    """Dotted keys whose values differ, sorted."""
    old, fresh = flatten(running), flatten(new)
    return tuple(sorted(k for k in old.keys() | fresh.keys() if old.get(k) != fresh.get(k)))


def needs_restart(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The keys among `keys` that a reload cannot apply."""
    return tuple(
        key
        for key in keys
        if key not in LIVE_EXCEPTIONS
        and any(key == p or key.startswith(p + ".") for p in RESTART_ONLY)
    )


def prepare(path: Path | None, running: Settings) -> Candidate:
    """Validate the config at `path` and its model as start-up would; a CoronaError (one line
    naming the file, key or model) when the reload must be refused."""
    settings, source = config.read(path)
    changed = changed_keys(running, settings)
    restart = needs_restart(changed)
    if restart:
        where = f"{path}: " if path is not None else ""
        need = "it needs" if len(restart) == 1 else "they need"
        raise ReloadRefusedError(
            f"{where}{', '.join(restart)} changed: {need} `{RESTART_HINT}`; nothing was reloaded"
        )
    spec = check_model(settings)  # config vs metadata, sha256, trial load in a child
    windower_for(settings, spec)  # window.hop_s against the model's window (a ConfigError)
    return Candidate(settings=settings, source=source, changed=changed)


def load(candidate: Candidate) -> Model:
    """The candidate's model, in the thread that will score with it (the worker): the checks
    `prepare` made run again, the trial's verdict from its cache (`daemon.analyse.model_trial`),
    so this costs a read, a hash and an interpreter, about a millisecond for a small model. A
    file replaced since `prepare` is checked (and trial-loaded) afresh: still never unchecked."""
    return load_model(candidate.settings)


class Validation:
    """`prepare` on a thread of its own; `done` is set once `candidate` or `error` is."""

    def __init__(self, path: Path | None, running: Settings) -> None:
        self.candidate: Candidate | None = None
        self.error: str | None = None
        self.done = threading.Event()
        # The caller's context: structlog's bound node id (a context variable) goes with it.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run, path, running), name="reload", daemon=True
        )
        self._thread.start()

    def _run(self, path: Path | None, running: Settings) -> None:
        try:
            self.candidate = prepare(path, running)
        except CoronaError as err:
            self.error = str(err)
        except Exception as exc:  # noqa: BLE001 - a bug here must refuse the reload, not kill it
            self.error = one_line(f"reload failed: {type(exc).__name__}: {exc}")
        finally:
            self.done.set()
