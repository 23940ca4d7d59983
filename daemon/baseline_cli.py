"""`corona-monitor baseline status|reset|import DIR`: the field technician's handle on the
on-site baseline (`daemon.analyse.baseline`).

status: learning or ready, how far along, and whether the file fits the configured model.
reset:  forget what was learned; the daemon learns again from its next window.
import: learn from a folder of this tower's recordings instead of waiting `baseline.learn_h`;
        the windows go through the daemon's own Windower, sensor check and model, and the same
        rule as live learning applies (usable windows the model calls normal).
reset and import take the baseline's lock: they refuse while the daemon runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daemon import config
from daemon.analyse import novelty, verdict
from daemon.analyse.baseline import (
    BaselineError,
    exclusive,
    novelty_vector,
)
from daemon.analyse.featurespec import FeatureSpec
from daemon.analyse.model import Model
from daemon.constants import SAMPLE_RATE
from daemon.errors import AudioError, ConfigError
from daemon.listen import audio
from daemon.listen.windows import Windower
from daemon.pipeline import BaselineTerms, baseline_terms, runtime_spec, start_up

Say = Callable[[str], None]
IMPORT_BLOCK_S = 10.0


@dataclass(frozen=True)
class _Context:
    settings: config.Settings
    model: Model
    spec: FeatureSpec
    baseline: BaselineTerms


def _context(config_path: Path | None) -> _Context:
    settings, model = start_up(config_path, log_level="warning")
    if not settings.baseline.enabled:
        raise ConfigError("baseline.enabled is false in the config: there is no baseline to use")
    return _Context(
        settings=settings,
        model=model,
        spec=runtime_spec(settings, model),
        baseline=baseline_terms(settings, model),
    )


def run_status(config_path: Path | None, *, as_json: bool, say: Say) -> int:
    """Print the baseline's state; exit 1 when its file cannot be used with this model."""
    context = _context(config_path)
    path = context.settings.baseline_path
    if not path.exists():
        doc: dict[str, Any] = {
            "state": "learning",
            "path": str(path),
            "windows": 0,
            "learn_windows": context.baseline.learn_windows,
            "note": "no baseline file yet: the daemon starts learning at its first window",
        }
    else:
        try:
            doc = context.baseline.load().status()
        except BaselineError as exc:
            if as_json:
                say(json.dumps({"state": "unusable", "path": str(path), "error": str(exc)}))
            else:
                say(f"state: unusable\n{exc}")
                say("the daemon moves such a file aside and learns again; or run `baseline reset`")
            return 1
    if as_json:
        say(json.dumps(doc, sort_keys=True))
        return 0
    window_s = context.spec.window_s
    learned_h = doc["windows"] * window_s / 3600
    target_h = doc["learn_windows"] * window_s / 3600
    say(f"state: {doc['state']}")
    say(f"file: {path}")
    say(
        f"learned: {doc['windows']} of {doc['learn_windows']} windows"
        f" ({learned_h:.2f} h of {target_h:.2f} h)"
    )
    if doc.get("note"):
        say(doc["note"])
    if doc["state"] == "ready":
        say(f"threshold: d2 {doc['threshold_distance']:.3f} ({doc['threshold_rule']})")
    return 0


def run_reset(config_path: Path | None, *, say: Say) -> int:
    """Delete the baseline (under its lock); the daemon learns again from its next window."""
    context = _context(config_path)
    path = context.settings.baseline_path
    with exclusive(path):
        if not path.exists():
            say(f"no baseline at {path}: nothing to reset")
            return 0
        path.unlink()
    say(f"removed {path}; the daemon learns this tower's normal again from its next window")
    return 0


@dataclass
class ImportCounts:
    files: int = 0
    windows: int = 0
    learned: int = 0
    not_ok: int = 0
    anomalous: int = 0
    failed: int = 0


def run_import(
    folder: Path, config_path: Path | None, *, replace: bool, all_windows: bool, say: Say
) -> int:
    """Learn the baseline from every WAV under `folder`, then make it ready."""
    context = _context(config_path)
    path = context.settings.baseline_path
    if not folder.is_dir():
        raise ConfigError(f"baseline import: {folder} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())
    if not files:
        raise ConfigError(f"baseline import: no .wav file under {folder}")
    with exclusive(path):
        if path.exists() and not replace:
            raise BaselineError(
                f"baseline {path} exists: pass --replace to learn it again from {folder}"
            )
        counts = ImportCounts()
        vectors = []
        for file in files:
            try:
                vectors += _learnable(file, context, counts, all_windows=all_windows)
            except AudioError as exc:
                counts.failed += 1
                say(f"skipped {file}: {exc}")
            counts.files += 1
        baseline = context.baseline.new()
        baseline.learn_all(np.asarray(vectors, dtype=np.float64).reshape(-1, len(novelty.NAMES)))
    say(
        f"read {counts.files - counts.failed} of {counts.files} files: {counts.windows} windows,"
        f" learned {len(vectors)} ({counts.not_ok} not usable, {counts.anomalous} called"
        " anomalous by the model and left out)"
    )
    if baseline.state == "ready" and baseline.fitted is not None:
        say(
            f"baseline ready at {path}: threshold d2 {baseline.fitted.threshold.distance:.3f}"
            " (restart the daemon to use it)"
        )
        return 0
    say(f"baseline still learning at {path}: too few usable windows for a threshold")
    return 1


def _learnable(
    file: Path, context: _Context, counts: ImportCounts, *, all_windows: bool
) -> list[np.ndarray]:
    spec = context.spec
    windower = Windower(
        sample_rate=SAMPLE_RATE,
        length_s=spec.window_s,
        hop_s=context.settings.window.hop_s,
        n_fft=spec.n_fft,
        hop_length=spec.hop_length,
    )
    threshold = context.settings.model.threshold
    if threshold is None:
        threshold = context.model.threshold
    kept = []
    windows = []
    for block in audio.stream(file, block_frames=round(IMPORT_BLOCK_S * SAMPLE_RATE)):
        windows += windower.push(block)
    tail = windower.flush()
    if tail is not None:
        windows.append(tail)
    for window in windows:
        counts.windows += 1
        if verdict.sensor_state(window) != "ok":
            counts.not_ok += 1
            continue
        score = context.model.score_one(spec.vector(window.features, window.physics))
        if score >= threshold and not all_windows:
            counts.anomalous += 1
            continue
        kept.append(novelty_vector(window.physics, context.baseline.line_hz))
    return kept
