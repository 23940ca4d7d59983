"""Real outdoor recordings (rain, wind, storm, water, birds, ...) from scripts/fetch-recordings.

They serve as backgrounds and confounders for training and, the `holdout` rows, as a test on sounds
the model never trained on: whole packages are held out, so no holdout row shares a recording with
a train row. `storm_hour` joins the bad-weather rows into one continuous stretch of storm.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from daemon.constants import SAMPLE_RATE
from daemon.errors import DataError
from daemon.listen.audio import load

__all__ = [
    "CATEGORIES",
    "DEFAULT_DIR",
    "SPLITS",
    "WEATHER",
    "Recording",
    "Segment",
    "load_manifest",
    "storm_hour",
    "storm_plan",
]

DEFAULT_DIR: Final = Path(__file__).resolve().parent.parent / "data" / "recordings"
"""Where scripts/fetch-recordings puts the WAVs and manifest.csv by default (git-ignored)."""

MANIFEST_NAME: Final = "manifest.csv"

CATEGORIES: Final = frozenset(
    {
        "rain",
        "wind",
        "storm",
        "thunder",
        "water",
        "birds",
        "insects",
        "fire",
        "traffic",
        "night",
        "other_outdoor",
    }
)
"""Every category a manifest row may carry."""

WEATHER: Final = frozenset({"rain", "wind", "storm", "thunder"})
"""The categories storm_hour draws from."""

SPLITS: Final = frozenset({"train", "holdout"})

REQUIRED_COLUMNS: Final = ("file", "package", "category", "licence", "duration_s", "split")

CROSSFADE_S: Final = 0.5
"""Length of the equal-power crossfade between two pieces of storm_hour."""

MIN_PIECE_S: Final = 4.0
MAX_PIECE_S: Final = 30.0
"""Each piece of storm_hour plays this long (or the rest of its recording, if shorter)."""

OFFSET_TRIES: Final = 8
QUIET_BLOCK_S: Final = 0.1
QUIET_DBFS: Final = -60.0
"""storm_hour avoids pieces with 0.1 s blocks quieter than this (after levelling to TARGET_DBFS)."""

TARGET_DBFS: Final = -26.0
"""storm_hour scales every recording to this RMS level, so pieces join without jumps in loudness."""


@dataclass(frozen=True)
class Recording:
    """One row of the manifest: a 44.1 kHz mono 16-bit WAV of a real outdoor sound."""

    path: Path
    """Absolute (or DEST-joined) path of the WAV."""
    package: str
    category: str
    licence: str
    duration_s: float
    split: str
    source_rate_hz: int | None = None
    """The sample rate the package stored it at (a rate below 44.1 kHz means no energy above
    half of it); None when the manifest has no such column."""


@dataclass(frozen=True)
class Segment:
    """One piece of a storm: samples [start, start + length) of a recording."""

    recording: Recording
    start: int
    length: int


def load_manifest(dest: Path = DEFAULT_DIR) -> list[Recording]:
    """The recordings listed in DEST/manifest.csv, in file order.

    Raises DataError naming the file (and row) when the manifest is missing, lacks a column, or a
    row has an unknown category or split, a bad duration, or names a WAV that is not there.
    """
    manifest = dest / MANIFEST_NAME
    if not manifest.is_file():
        raise DataError(f"{manifest}: no recordings manifest (run scripts/fetch-recordings)")
    try:
        with manifest.open(newline="") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise DataError(f"{manifest}: missing column(s) {', '.join(missing)}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{manifest}: unreadable ({exc})") from exc
    recordings = [_row(manifest, line, row) for line, row in enumerate(rows, start=2)]
    if not recordings:
        raise DataError(f"{manifest}: no rows")
    return recordings


def _row(manifest: Path, line: int, row: dict[str, str | None]) -> Recording:
    """One manifest row as a Recording; DataError names the file and line when it is bad."""
    where = f"{manifest}, line {line}"
    values = {c: (row.get(c) or "").strip() for c in (*REQUIRED_COLUMNS, "source_rate_hz")}
    for column in REQUIRED_COLUMNS:
        if not values[column]:
            raise DataError(f"{where}: empty {column}")
    if values["category"] not in CATEGORIES:
        raise DataError(f"{where}: unknown category {values['category']!r}")
    if values["split"] not in SPLITS:
        raise DataError(f"{where}: split must be train or holdout, not {values['split']!r}")
    try:
        duration = float(values["duration_s"])
    except ValueError:
        duration = math.nan
    if not math.isfinite(duration) or duration <= 0:
        raise DataError(
            f"{where}: duration_s must be a positive number, not {values['duration_s']!r}"
        )
    rate: int | None = None
    if values["source_rate_hz"]:
        try:
            rate = int(values["source_rate_hz"])
        except ValueError:
            raise DataError(
                f"{where}: source_rate_hz must be an integer, not {values['source_rate_hz']!r}"
            ) from None
    path = manifest.parent / values["file"]
    if not path.is_file():
        raise DataError(f"{where}: {values['file']} is not there (rerun scripts/fetch-recordings)")
    return Recording(
        path=path,
        package=values["package"],
        category=values["category"],
        licence=values["licence"],
        duration_s=duration,
        split=values["split"],
        source_rate_hz=rate,
    )


def storm_plan(
    recordings: list[Recording],
    seconds: float = 3600.0,
    seed: int = 0,
    quiet: Mapping[Path, npt.NDArray[np.bool_]] | None = None,
) -> list[Segment]:
    """The pieces storm_hour joins: weather recordings only, random picks and start offsets.

    Consecutive pieces overlap by the crossfade, so their lengths add up to `seconds` plus one
    crossfade per join. A recording is used again (looped, from another random offset) as often
    as needed when the pool is shorter than the request; two consecutive pieces come from
    different recordings whenever the pool has more than one. With `quiet` (per recording, a flag
    per QUIET_BLOCK_S block that is nearly silent) each piece takes, of OFFSET_TRIES random start
    offsets, the one with the fewest quiet blocks: game loops such as a lone thunderbolt followed
    by silence then add no gaps to the storm.
    """
    fade = round(CROSSFADE_S * SAMPLE_RATE)
    pool = [
        r for r in recordings if r.category in WEATHER and r.duration_s * SAMPLE_RATE > 4 * fade
    ]
    if not pool:
        raise DataError("storm_hour: no rain, wind, storm or thunder recording (of 2 s or more)")
    total = round(seconds * SAMPLE_RATE)
    if total <= 0:
        raise DataError(f"storm_hour: seconds must be positive, not {seconds}")
    rng = np.random.default_rng(seed)
    plan: list[Segment] = []
    covered = 0
    previous = -1
    while covered < total:
        choices = [i for i in range(len(pool)) if i != previous] or [0]
        index = int(rng.choice(choices))
        previous = index
        rec = pool[index]
        n = math.floor(rec.duration_s * SAMPLE_RATE)
        want = round(rng.uniform(MIN_PIECE_S, MAX_PIECE_S) * SAMPLE_RATE)
        length = min(want, n)
        starts = rng.integers(0, n - length + 1, size=OFFSET_TRIES if quiet else 1)
        start = int(starts[0])
        if quiet is not None and rec.path in quiet:
            flags = quiet[rec.path]
            block = round(QUIET_BLOCK_S * SAMPLE_RATE)
            counts = [int(flags[s // block : (s + length) // block].sum()) for s in starts]
            start = int(starts[int(np.argmin(counts))])
        plan.append(Segment(rec, start, length))
        covered += length - (fade if len(plan) > 1 else 0)
    return plan


def storm_hour(
    recordings: list[Recording], seconds: float = 3600.0, seed: int = 0
) -> npt.NDArray[np.float32]:
    """One continuous stretch of real bad weather, float32 mono at 44.1 kHz, `seconds` long.

    Only the rain, wind, storm and thunder recordings of the list are used (pass the holdout ones
    to test on weather the model never heard). Pieces of 4-30 s from random recordings at random
    offsets (preferring offsets without near-silence, see storm_plan) are joined with 0.5 s
    equal-power (cos/sin) crossfades, so there is no click or gap;
    each recording is first scaled to -26 dBFS RMS (peak kept below full scale) so the joins do
    not jump in loudness. When the pool is shorter than the request the recordings are looped:
    the same recording plays again from another offset. Same list, seconds and seed give the
    same samples. Raises DataError when no weather recording is in the list, AudioError when a
    WAV cannot be read.
    """
    cache: dict[Path, npt.NDArray[np.float64]] = {}
    quiet: dict[Path, npt.NDArray[np.bool_]] = {}
    block = round(QUIET_BLOCK_S * SAMPLE_RATE)
    for rec in recordings:
        if rec.category in WEATHER and rec.path not in cache:
            samples = _levelled(rec)
            cache[rec.path] = samples
            blocks = samples[: len(samples) // block * block].reshape(-1, block)
            level = np.sqrt(np.mean(blocks**2, axis=1))
            quiet[rec.path] = level < 10 ** (QUIET_DBFS / 20)
    plan = storm_plan(recordings, seconds, seed, quiet=quiet)
    total = round(seconds * SAMPLE_RATE)
    fade = round(CROSSFADE_S * SAMPLE_RATE)
    ramp = (np.arange(fade, dtype=np.float64) + 0.5) / fade
    fade_in = np.sin(ramp * np.pi / 2)
    fade_out = np.cos(ramp * np.pi / 2)
    out = np.zeros(total + 2 * fade, dtype=np.float64)
    cursor = 0
    for number, seg in enumerate(plan):
        samples = cache[seg.recording.path]
        length = min(seg.length, len(samples))  # the WAV may be a sample shorter than its row
        start = max(0, min(seg.start, len(samples) - length))
        piece = samples[start : start + length].copy()
        if number > 0:
            piece[:fade] *= fade_in
            cursor -= fade
        if number < len(plan) - 1:
            piece[-fade:] *= fade_out
        end = min(cursor + len(piece), len(out))
        out[cursor:end] += piece[: end - cursor]
        cursor += len(piece)
    return out[:total].astype(np.float32)


def _levelled(recording: Recording) -> npt.NDArray[np.float64]:
    """A recording's samples scaled to TARGET_DBFS RMS, the peak kept below full scale."""
    samples, _ = load(recording.path)
    data = samples.astype(np.float64)
    rms = float(np.sqrt(np.mean(data**2))) if len(data) else 0.0
    if rms <= 0.0:
        return data
    gain = 10 ** (TARGET_DBFS / 20) / rms
    peak = float(np.max(np.abs(data)))
    gain = min(gain, 0.99 / peak)
    return data * gain
