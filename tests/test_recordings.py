"""train.recordings on a tiny manifest of synthetic WAVs: no network, no fetched data."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from daemon.constants import SAMPLE_RATE
from daemon.errors import DataError
from train.recordings import CROSSFADE_S, WEATHER, Recording, load_manifest, storm_hour, storm_plan

COLUMNS = (
    "file",
    "package",
    "package_version",
    "source_path",
    "category",
    "licence",
    "duration_s",
    "sha256",
    "split",
    "source_rate_hz",
)
BIRD_HZ = 15_000.0
"""The 'birds' recording is a loud tone here; storm_hour must never play it."""


def smooth_noise(seconds: float, seed: int) -> np.ndarray:
    """Low-passed noise at about -26 dBFS: sample-to-sample steps are small, so a cut would show."""
    rng = np.random.default_rng(seed)
    n = round(seconds * SAMPLE_RATE)
    white = rng.standard_normal(n + 400)
    kernel = np.hanning(200)
    x = np.convolve(white, kernel / kernel.sum(), mode="valid")[:n]
    x += 0.3 * np.sin(2 * np.pi * (40 + 10 * seed) * np.arange(n) / SAMPLE_RATE) * x.std() * 3
    levelled: np.ndarray = (x / np.sqrt(np.mean(x**2)) * 10 ** (-26 / 20)).astype(np.float32)
    return levelled


def write_set(dest: Path, rows: list[dict[str, str]] | None = None) -> Path:
    """Three weather WAVs, one bird WAV and a manifest in dest; returns dest."""
    specs = [
        ("a/rain.wav", "rain", "train", 3.0),
        ("a/wind.wav", "wind", "train", 2.5),
        ("b/storm.wav", "storm", "holdout", 4.0),
        ("b/birds.wav", "birds", "holdout", 3.0),
    ]
    written = []
    for i, (name, category, split, seconds) in enumerate(specs):
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if category == "birds":
            t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
            samples = (0.5 * np.sin(2 * np.pi * BIRD_HZ * t)).astype(np.float32)
        else:
            samples = smooth_noise(seconds, seed=i)
        sf.write(path, samples, SAMPLE_RATE, subtype="PCM_16")
        written.append(
            {
                "file": name,
                "package": name.split("/")[0] + "-data",
                "package_version": "1.0",
                "source_path": f"usr/share/{name}",
                "category": category,
                "licence": "CC0-1.0",
                "duration_s": f"{seconds:.3f}",
                "sha256": "0" * 64,
                "split": split,
                "source_rate_hz": "44100",
            }
        )
    with (dest / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows if rows is not None else written)
    return dest


def test_load_manifest_reads_every_row(tmp_path: Path) -> None:
    recordings = load_manifest(write_set(tmp_path))
    assert [r.category for r in recordings] == ["rain", "wind", "storm", "birds"]
    first = recordings[0]
    assert first == Recording(
        path=tmp_path / "a/rain.wav",
        package="a-data",
        category="rain",
        licence="CC0-1.0",
        duration_s=3.0,
        split="train",
        source_rate_hz=44100,
    )
    assert {r.split for r in recordings} == {"train", "holdout"}


def test_missing_manifest_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"manifest\.csv: no recordings manifest"):
        load_manifest(tmp_path)


def test_missing_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("file,package,category\nx.wav,p,rain\n")
    with pytest.raises(DataError, match=r"missing column\(s\) licence, duration_s, split"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("category", "music", r"line 3: unknown category 'music'"),
        ("split", "test", r"line 3: split must be train or holdout, not 'test'"),
        ("duration_s", "long", r"line 3: duration_s must be a positive number, not 'long'"),
        ("duration_s", "-1", r"line 3: duration_s must be a positive number"),
        ("licence", "", r"line 3: empty licence"),
        ("file", "a/gone.wav", r"line 3: a/gone.wav is not there"),
        ("source_rate_hz", "fast", r"line 3: source_rate_hz must be an integer"),
    ],
)
def test_bad_row_is_named(tmp_path: Path, column: str, value: str, message: str) -> None:
    write_set(tmp_path)
    with (tmp_path / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[1][column] = value
    write_set(tmp_path, rows)
    with pytest.raises(DataError, match=message) as info:
        load_manifest(tmp_path)
    assert str(tmp_path / "manifest.csv") in str(info.value)


def test_storm_hour_length_and_weather_only(tmp_path: Path) -> None:
    recordings = load_manifest(write_set(tmp_path))
    seconds = 60.0  # far longer than the 9.5 s pool: the recordings loop
    storm = storm_hour(recordings, seconds=seconds, seed=3)
    assert storm.dtype == np.float32
    assert storm.shape == (round(seconds * SAMPLE_RATE),)
    plan = storm_plan(recordings, seconds=seconds, seed=3)
    assert {s.recording.category for s in plan} <= WEATHER
    assert len(plan) > 3
    assert all(a.recording != b.recording for a, b in itertools.pairwise(plan))
    spectrum = np.abs(np.fft.rfft(storm))
    freqs = np.fft.rfftfreq(len(storm), 1 / SAMPLE_RATE)
    near_bird = spectrum[np.abs(freqs - BIRD_HZ) < 50].max()
    assert near_bird < 1e-3 * spectrum.max()  # the bird tone is absent
    # no gap: every 0.1 s stretch has sound
    blocks = storm[: len(storm) // 4410 * 4410].reshape(-1, 4410)
    assert np.sqrt(np.mean(blocks**2, axis=1)).min() > 10 ** (-50 / 20)
    assert np.array_equal(storm, storm_hour(recordings, seconds=seconds, seed=3))


def test_storm_hour_has_no_clicks_at_joins(tmp_path: Path) -> None:
    recordings = load_manifest(write_set(tmp_path))
    weather = [r for r in recordings if r.category in WEATHER]
    storm = storm_hour(weather, seconds=40.0, seed=5)
    inside = 0.0
    for rec in weather:
        samples, _ = sf.read(rec.path, dtype="float32")
        level = 10 ** (-26 / 20) / np.sqrt(np.mean(samples.astype(np.float64) ** 2))
        inside = max(inside, float(np.abs(np.diff(samples)).max() * level))
    jumps = np.abs(np.diff(storm))
    # Equal-power joins of two smooth signals step at most about sqrt(2) times their own steps.
    assert jumps.max() <= 1.5 * inside
    # The joins are where pieces overlap: their steps are no bigger than elsewhere in the storm.
    plan = storm_plan(weather, seconds=40.0, seed=5)
    fade = round(CROSSFADE_S * SAMPLE_RATE)
    edges = np.cumsum([s.length - fade for s in plan[:-1]])
    near = np.concatenate([jumps[max(0, e - fade) : e + fade] for e in edges])
    assert near.max() <= 1.5 * np.quantile(jumps, 0.9999)


def test_storm_hour_without_weather_is_an_error(tmp_path: Path) -> None:
    recordings = load_manifest(write_set(tmp_path))
    with pytest.raises(DataError, match="no rain, wind, storm or thunder"):
        storm_hour([r for r in recordings if r.category == "birds"], seconds=10.0)
