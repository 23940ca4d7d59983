"""Helpers for tests that run corona-monitor as a real process: configs, WAVs, output parsing.

The one harness for a daemon process: `run_monitor` runs a command to its end, `MonitorProcess`
keeps one running (stdout JSON lines collected as they come, the JSON log kept in a file), and
`wait_until` is the one way a test waits for an event instead of sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import soundfile as sf
import yaml

from daemon.constants import SAMPLE_RATE

MONITOR = [sys.executable, "-m", "daemon.cli"]
CONTROL = [sys.executable, "-m", "control.cli"]
WAIT_S: Final = 30.0
"""Upper bound for one wait: runs take a few seconds, the CI machine is shared and may be busy."""
POLL_S: Final = 0.05


def write_config(folder: Path, model: Path, **sections: Any) -> Path:
    """A config.yaml for a test run: the given model, an outbox in folder, short windows."""
    doc: dict[str, Any] = {
        "node_id": "test-node",
        # Short windows keep the tests fast; the test models were exported with 30 s windows.
        "window": {"length_s": 1.0, "force_length": True},
        "model": {"path": str(model)},
        "outbox": {"path": str(folder / "outbox.sqlite"), "min_free_mb": 0},
        "logging": {"format": "json"},
    }
    for key, value in sections.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def mqtt_section(broker: Any, **extra: Any) -> dict[str, Any]:
    return {"host": broker.host, "port": broker.port, "health_interval_s": 1, **extra}


def noisy_clip(seconds: float, seed: int, amplitude: float = 0.1) -> np.ndarray:
    """Seeded noise with a 100 Hz buzz: something the model scores away from 0 and 1."""
    rng = np.random.default_rng(seed)
    n = round(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    buzz = 0.3 * np.sin(2 * np.pi * 100 * t)
    return (amplitude * (rng.standard_normal(n) * 0.5 + buzz)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray) -> Path:
    sf.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
    return path


def run_monitor(
    args: list[str], *, env: dict[str, str] | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*MONITOR, *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout_s,
        check=False,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_until(
    predicate: Callable[[], bool],
    what: str,
    *,
    timeout_s: float = WAIT_S,
    process: MonitorProcess | None = None,
) -> None:
    """Poll predicate until it holds; AssertionError naming what after timeout_s.

    With process, fail as soon as that process has exited (with the tail of its log) instead of
    waiting out the timeout for something it can no longer do.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if process is not None and process.process.poll() is not None and not predicate():
            raise AssertionError(
                f"{what}: the daemon exited ({process.process.returncode}); log:\n{process.log()}"
            )
        if time.monotonic() >= deadline:
            detail = f"; log:\n{process.log()}" if process is not None else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{detail}")
        time.sleep(POLL_S)


class MonitorProcess:
    """One `corona-monitor ARGS` process (`python -m daemon.cli`) left running, or another of
    ours given as command (`CONTROL`: corona-control).

    stderr, the JSON log, goes to log_path; stdout JSON lines (replay's verdicts) are collected
    on a thread into `lines` as they come, or discarded with collect_stdout=False.
    """

    def __init__(
        self,
        args: list[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        collect_stdout: bool = True,
        command: list[str] = MONITOR,
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.lines: list[dict[str, Any]] = []
        self.process = subprocess.Popen(
            [*command, *args],
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE if collect_stdout else subprocess.DEVNULL,
            stderr=self._log,
            text=True,
        )
        self._reader: threading.Thread | None = None
        if collect_stdout:
            assert self.process.stdout is not None
            self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
            self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.strip():
                self.lines.append(json.loads(line))

    def events(self) -> list[dict[str, Any]]:
        """Every JSON log line so far (a partly written last line is skipped)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                out.append(event)
        return out

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == name]

    def wait_event(self, name: str, timeout_s: float = WAIT_S) -> dict[str, Any]:
        """The first log event called name; AssertionError (with the log) after timeout_s."""
        wait_until(lambda: bool(self.events_named(name)), f"a {name!r} event",
                   timeout_s=timeout_s, process=self)  # fmt: skip
        return self.events_named(name)[0]

    def wait_lines(self, count: int) -> None:
        wait_until(lambda: len(self.lines) >= count, f"{count} lines on stdout", process=self)

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, float]:
        """Send signum; (exit status, seconds until the process was gone)."""
        started = time.monotonic()
        self.process.send_signal(signum)
        code = self.process.wait(timeout=WAIT_S)
        return code, time.monotonic() - started

    def finish(self, timeout_s: float = WAIT_S) -> int:
        """Wait for the process to end by itself (replay); its exit status."""
        try:
            return self.process.wait(timeout_s)
        finally:
            self.close()

    def close(self) -> None:
        """Kill the process if it still runs and release its files (safe to call twice)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._reader is not None:
            self._reader.join(WAIT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()
