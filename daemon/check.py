"""`corona-monitor check-config`: what would run, and every problem that would stop it.

Prints the resolved settings (secrets masked), the model, the audio inputs and whether the
broker answers; exit status 1 when anything is wrong, so a technician can run it before
starting the service.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, Final, TextIO

import paho.mqtt.client as mqtt

from daemon import config
from daemon.analyse.baseline import BaselineError
from daemon.analyse.model import Model
from daemon.deliver.publish import STATUS_ONLINE, connect_and_wait, make_client, topics
from daemon.errors import CoronaError
from daemon.listen import alsa_env
from daemon.listen.capture import list_input_devices, resolve_input_device
from daemon.pipeline import baseline_terms, load_model, runtime_spec

BROKER_TIMEOUT_S: Final = 5.0


def run_check(config_path: Path | None, out: TextIO = sys.stdout) -> int:
    """Check everything, print a report; 0 when the daemon could start as configured."""
    settings = config.load(config_path)  # a bad config is one clear line, from the CLI
    problems: list[str] = []
    out.write(f"config: {config_path or 'built-in defaults'}\n")
    out.write(json.dumps(config.as_dict(settings), indent=2, default=str) + "\n")

    try:
        model = load_model(settings)
        spec = runtime_spec(settings, model)
        # `is None`, not `or`: a configured threshold of 0.0 is a setting, not an absence.
        configured = settings.model.threshold
        threshold = model.threshold if configured is None else configured
        out.write(
            f"model: {model.name} ({settings.model.path}), sha256 {model.sha256[:12]},"
            f" threshold {threshold}\n"
        )
        physics = spec.physics
        out.write(
            f"features: {spec.window_s:g} s windows, n_fft {spec.n_fft}, hop {spec.hop_length},"
            f" {spec.transform}"
            + (
                f", physics v{physics.version} ({', '.join(physics.names)}) at line_hz"
                f" {physics.line_hz}\n"
                if physics
                else ", no physics block (row means only)\n"
            )
        )
        out.write(_baseline_line(settings, model) + "\n")
    except CoronaError as err:
        problems.append(f"model: {err}")

    try:
        devices = list_input_devices()
        out.write(f"ALSA config: {alsa_env.describe()}\n")
        out.write("audio inputs:\n")
        for dev in devices:
            mark = "*" if dev["default"] else " "
            out.write(f"  {mark} [{dev['index']}] {dev['name']} ({dev['hostapi']})\n")
        if not devices:
            out.write("  (none)\n")
        index, name = resolve_input_device(settings.audio.device)
        out.write(f"audio device: [{index}] {name}\n")
    except CoronaError as err:
        problems.append(str(err))  # CaptureError names audio.device itself

    warnings: list[str] = []
    _check_mqtt(settings, out, problems, warnings)

    for line, problem in _outputs(settings):
        out.write(line + "\n")
        if problem is not None:
            problems.append(problem)

    for warning in warnings:
        sys.stderr.write(f"warning: {warning}\n")
    for problem in problems:
        sys.stderr.write(f"problem: {problem}\n")
    out.write("ok\n" if not problems else f"{len(problems)} problem(s)\n")
    return 0 if not problems else 1


def _check_mqtt(
    settings: config.Settings, out: TextIO, problems: list[str], warnings: list[str]
) -> None:
    """Whether the broker answers, and the node's retained status (a twin node's `online`)."""
    if not settings.mqtt.enabled:
        out.write("mqtt: disabled (mqtt.host is null)\n")
        return
    verdict, status = probe_broker(settings)
    out.write(f"mqtt: {settings.mqtt.host}:{settings.mqtt.port} {verdict or 'answers'}\n")
    if verdict:
        problems.append(f"mqtt: {settings.mqtt.host}:{settings.mqtt.port} {verdict}")
        return
    topic = topics(settings.mqtt.prefix, settings.node_id).status
    out.write(f"mqtt: {topic} is {status or 'not set'} (retained)\n")
    if status == STATUS_ONLINE:
        warnings.append(_online_warning(topic, settings.node_id))


def _baseline_line(settings: config.Settings, model: Model) -> str:
    """The on-site baseline as the daemon would find it (never a problem: the daemon moves a
    file it cannot use aside and learns again, and says so)."""
    if not settings.baseline.enabled:
        return "baseline: off (baseline.enabled is false)"
    path = settings.baseline_path
    if not path.exists():
        return f"baseline: none yet at {path}; learning starts at the first window"
    try:
        found = baseline_terms(settings, model).load()
    except BaselineError as err:
        return f"{err}; the daemon will move it aside and learn again"
    return f"baseline: {found.state}, {found.windows} of {found.learn_windows} windows ({path})"


def _outputs(settings: config.Settings) -> list[tuple[str, str | None]]:
    """A report line for metrics and Home Assistant each, with the problem when the configured
    output could never appear (the daemon itself only logs it and goes on monitoring)."""
    metrics = settings.metrics
    address = metrics.address
    where = [f"GET http://{_url_host(address[0])}:{address[1]}/metrics"] if address else []
    problem = None
    if metrics.textfile is not None:
        where.append(f"textfile {metrics.textfile}")
        folder = metrics.textfile.parent
        if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
            problem = f"metrics.textfile: the folder {folder} does not exist or is not writable"
    lines = [(f"metrics: {', '.join(where) or 'off'}", problem)]
    ha = settings.homeassistant
    if not ha.enabled:
        lines.append(("homeassistant: off", None))
    elif not settings.mqtt.enabled:
        lines.append(
            (
                "homeassistant: enabled, but MQTT is disabled",
                "homeassistant.enabled: needs mqtt.host",
            )
        )
    else:
        lines.append((f"homeassistant: discovery configs under {ha.discovery_prefix}/", None))
    return lines


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _online_warning(topic: str, node_id: str) -> str:
    """A warning, not a problem: the `online` may be this machine's own running daemon (check-config
    is run on live nodes too), or a stale one a restarted broker kept without its Will."""
    return (
        f"mqtt: {topic} is already {STATUS_ONLINE!r}: unless the daemon on this machine is"
        f" running, another node is connected with node_id {node_id!r}. Two nodes with one"
        " node_id take the broker session from each other; give each its own node_id (the"
        " default is the host name, which a cloned SD card shares)"
    )


def probe_broker(settings: config.Settings) -> tuple[str | None, str | None]:
    """(None when the broker accepts a connection with our credentials, else what went wrong;
    the node's retained status, None when there is none).

    The probe's client id is `{node}-check`, never the node's own: connecting as the node would
    close the session of a daemon already running under that id."""
    try:
        client = make_client(settings.mqtt, f"{settings.node_id}-check")
    except CoronaError as err:
        return str(err), None
    status_topic = topics(settings.mqtt.prefix, settings.node_id).status
    found: dict[str, str] = {}
    answered = threading.Event()

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == status_topic and message.retain:
            found["status"] = message.payload.decode("utf-8", errors="replace")

    # The broker sends a subscription's retained messages right after its SUBACK; unsubscribing
    # then makes the UNSUBACK a barrier: it arrives after them, so "none" is known, not guessed.
    client.on_message = on_message
    client.on_subscribe = lambda c, *_a: c.unsubscribe(status_topic)
    client.on_unsubscribe = lambda *_a: answered.set()
    problem = connect_and_wait(
        client,
        settings.mqtt.host or "",
        settings.mqtt.port,
        timeout_s=BROKER_TIMEOUT_S,
        keepalive=10,
        on_accepted=lambda c: c.subscribe(status_topic, qos=1),
    )
    if problem is not None:
        return problem, None
    answered.wait(BROKER_TIMEOUT_S)
    client.disconnect()
    client.loop_stop()
    return None, found.get("status")
