"""Write a labelled synthetic data set: OUT/normal/*.wav, OUT/anomalous/*.wav, OUT/manifest.csv.

Each file's randomness comes from SeedSequence(seed, spawn_key=(label index, file index)), so a
file depends only on (seed, label, index, duration range, line_hz): the same call gives
byte-identical files, and asking for more files adds files without changing the others.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import structlog

from daemon.constants import SAMPLE_RATE
from daemon.errors import DataError
from train.synth import field
from train.synth.scene import LABELS, PRESENCE, ClipSpec, render

log = structlog.get_logger(__name__)

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = (
    "file",
    "label",
    "seed",
    "index",
    "duration_s",
    "line_hz",
    "gain_db",
    "ambient_db",
    "corona_db",
    "corona_intermittent",
    "confounders",
    "level_dbfs",
    "peak_dbfs",
    "clipped_fraction",
    "background",
    "background_rel_db",
    "mic",
)
"""`file` and `label` are the data-set contract; the rest describe how each file was made."""

_PCM16_FULL_SCALE = 32767
_SILENCE_DBFS = -200.0


def synthesize(
    out_dir: Path,
    *,
    normal: int,
    anomalous: int,
    seed: int,
    duration_s: tuple[float, float] = (30.0, 60.0),
    line_hz: float | None = None,
    backgrounds: Sequence[field.Background] = (),
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write `normal` + `anomalous` WAVs (44.1 kHz mono PCM_16) and the manifest; return its path.

    Args:
        out_dir: created if missing; it must not hold WAVs in normal/ or anomalous/ that this
            run would not write (they would silently join the data set).
        normal, anomalous: file counts per label (>= 0, not both 0).
        seed: the data set's seed (a non-negative int).
        duration_s: each file's length is drawn uniformly from this range (seconds).
        line_hz: mains frequency for every file; None draws 50 or 60 Hz per file.
        backgrounds: real recordings; when given, every clip goes through
            `train.synth.field.apply` (a real background under most clips, a random
            microphone response on all), drawn from its own stream so the scene is unchanged.
        progress: called as progress(files_done, files_total) after each file.

    Raises:
        DataError: bad counts, seed or durations, or stale WAVs in out_dir.
    """
    out_dir = Path(out_dir)
    counts = {"normal": normal, "anomalous": anomalous}
    _validate(out_dir, counts=counts, seed=seed, duration_s=duration_s)
    rows: list[dict[str, str]] = []
    total = normal + anomalous
    for label_index, label in enumerate(LABELS):
        (out_dir / label).mkdir(parents=True, exist_ok=True)
        for index in range(counts[label]):
            rel = _relative_path(label, index, counts[label])
            ss = np.random.SeedSequence(seed, spawn_key=(label_index, index))
            rng = np.random.default_rng(ss)
            length_s = float(rng.uniform(*duration_s))
            spec = ClipSpec.draw(rng, label=label, duration_s=length_s, line_hz=line_hz)
            samples = render(spec, rng)
            draw = None
            if backgrounds:
                field_rng = np.random.default_rng(
                    np.random.SeedSequence(seed, spawn_key=(label_index, index, 1))
                )
                samples, draw = field.apply(samples, field_rng, backgrounds)
            pcm = _to_pcm16(samples)
            sf.write(out_dir / rel, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
            row = _manifest_row(rel, spec, pcm, seed=seed, index=index)
            if draw is not None:
                row["background"] = draw.background
                rel_db = f"{draw.background_rel_db:.2f}"
                row["background_rel_db"] = rel_db if draw.background else ""
                row["mic"] = draw.mic
            rows.append(row)
            if progress is not None:
                progress(len(rows), total)
    manifest = out_dir / MANIFEST_NAME
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    log.info("synth_done", out_dir=str(out_dir), normal=normal, anomalous=anomalous, seed=seed)
    return manifest


def _validate(
    out_dir: Path, *, counts: dict[str, int], seed: int, duration_s: tuple[float, float]
) -> None:
    """Raise DataError naming the bad argument."""
    for label, count in counts.items():
        if not isinstance(count, int) or count < 0:
            raise DataError(f"synth: {label} count must be a non-negative integer, got {count!r}")
    if sum(counts.values()) == 0:
        raise DataError("synth: asked for 0 files (normal and anomalous are both 0)")
    if not isinstance(seed, int) or seed < 0:
        raise DataError(f"synth: seed must be a non-negative integer, got {seed!r}")
    low_s, high_s = duration_s
    if not 0 < low_s <= high_s:
        raise DataError(f"synth: duration_s must satisfy 0 < low <= high, got {duration_s!r}")
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"synth: {out_dir} exists and is not a directory")
    for label, count in counts.items():
        wanted = {_relative_path(label, i, count) for i in range(count)}
        stale = sorted(
            str(p.relative_to(out_dir))
            for p in (out_dir / label).glob("*.wav")
            if str(p.relative_to(out_dir)) not in wanted
        )
        if stale:
            raise DataError(
                f"synth: {out_dir / label} already holds {len(stale)} WAV file(s) this run would "
                f"not write (e.g. {stale[0]}); use an empty output directory"
            )


def _relative_path(label: str, index: int, count: int) -> str:
    """`label/label_0007.wav`, zero-padded to at least 4 digits so names sort."""
    width = max(4, len(str(max(count - 1, 0))))
    return f"{label}/{label}_{index:0{width}d}.wav"


def _to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Round to 16-bit integers ourselves, so the bytes never depend on libsndfile's dithering."""
    scaled = np.clip(np.round(samples * _PCM16_FULL_SCALE), -_PCM16_FULL_SCALE, _PCM16_FULL_SCALE)
    return scaled.astype(np.int16)


def _dbfs(value: float) -> float:
    """Amplitude relative to full scale in dB (SILENCE_DBFS for zero)."""
    return 20 * float(np.log10(value)) if value > 0 else _SILENCE_DBFS


def _manifest_row(
    rel: str, spec: ClipSpec, pcm: np.ndarray, *, seed: int, index: int
) -> dict[str, str]:
    """One manifest line; floats rounded so the CSV is readable and stable."""
    samples = pcm.astype(np.float64) / _PCM16_FULL_SCALE
    rms = float(np.sqrt(np.mean(samples**2)))
    peak = float(np.max(np.abs(samples)))
    clipped = float(np.mean(np.abs(pcm) >= _PCM16_FULL_SCALE))
    confounders = [name for name in PRESENCE if name in spec.levels_db]
    return {
        "file": rel,
        "label": spec.label,
        "seed": str(seed),
        "index": str(index),
        "duration_s": f"{spec.duration_s:.3f}",
        "line_hz": f"{spec.line_hz:g}",
        "gain_db": f"{spec.gain_db:.2f}",
        "ambient_db": f"{spec.ambient_db:.2f}",
        "corona_db": "" if spec.corona_db is None else f"{spec.corona_db:.2f}",
        "corona_intermittent": "" if spec.corona is None else str(spec.corona.intermittent).lower(),
        "confounders": ";".join(confounders),
        "level_dbfs": f"{_dbfs(rms):.2f}",
        "peak_dbfs": f"{_dbfs(peak):.2f}",
        "clipped_fraction": f"{clipped:.6f}",
        "background": "",
        "background_rel_db": "",
        "mic": "",
    }
