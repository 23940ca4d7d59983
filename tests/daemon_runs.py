"""Helpers for tests that run corona-monitor as a real process: configs, WAVs, output parsing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

from daemon.constants import SAMPLE_RATE

MONITOR = [sys.executable, "-m", "daemon.cli"]


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
