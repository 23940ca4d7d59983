"""One synthetic tower recording: draw a scene (ClipSpec), then render it to float32 samples.

A scene is ambient noise, a random subset of confounders (wind, rain, birds, traffic, people,
insects, normal hum) and, for label "anomalous", corona; then a microphone gain and an ADC noise
floor, clipped at full scale. All randomness comes from the Generator passed in, so one seed
gives one clip. Levels are dBFS before the microphone gain (`gain_db` then shifts everything).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from daemon.constants import SAMPLE_RATE
from daemon.errors import DataError
from train.synth import background, corona, signals

LABELS = ("normal", "anomalous")
LINE_FREQUENCIES_HZ = (50.0, 60.0)

PRESENCE: dict[str, float] = {
    "hum": 0.7,
    "wind": 0.45,
    "rain": 0.3,
    "birds": 0.4,
    "traffic": 0.35,
    "people": 0.2,
    "insects": 0.25,
}
"""Probability that a confounder is in a file, the same for both labels."""

LEVEL_RANGE_DB: dict[str, tuple[float, float]] = {
    "hum": (-68.0, -44.0),
    "wind": (-58.0, -22.0),
    "rain": (-58.0, -30.0),
    "birds": (-45.0, -18.0),
    "traffic": (-58.0, -28.0),
    "people": (-42.0, -18.0),
    "insects": (-62.0, -34.0),
}
"""Level ranges (dBFS before gain; RMS for steady sources, peak for birds and people)."""

AMBIENT_RANGE_DB = (-60.0, -46.0)
SELF_NOISE_REL_RANGE_DB = (-25.0, -8.0)
CORONA_RANGE_DB = (-58.0, -28.0)
"""Overall corona level: its low end is faint, below the ambient noise in total power."""
GAIN_RANGE_DB = (-30.0, 10.0)
ADC_FLOOR_DBFS = -96.0
FULL_SCALE = 1.0


@dataclass(frozen=True)
class ClipSpec:
    """Everything drawn about one clip before rendering it (also its manifest row)."""

    label: str
    n_samples: int
    line_hz: float
    phase_rad: float
    gain_db: float
    ambient_db: float
    self_noise_rel_db: float
    levels_db: dict[str, float] = field(default_factory=dict)
    """Present confounders and their levels, in PRESENCE order."""
    corona_db: float | None = None
    corona: corona.CoronaSpec | None = None

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.n_samples / SAMPLE_RATE

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        *,
        label: str,
        duration_s: float,
        line_hz: float | None = None,
    ) -> ClipSpec:
        """A random scene of the given label and length; line_hz None picks 50 or 60 Hz."""
        if label not in LABELS:
            raise DataError(f"synth: label {label!r} is not one of {', '.join(LABELS)}")
        n_samples = round(duration_s * SAMPLE_RATE)
        if n_samples < 1:
            raise DataError(f"synth: duration_s={duration_s} gives no samples")
        if line_hz is not None and not 0 < line_hz < SAMPLE_RATE / 4:
            raise DataError(f"synth: line_hz={line_hz} is not a usable line frequency")
        drawn_line_hz = float(rng.choice(LINE_FREQUENCIES_HZ))
        levels_db = {}
        for name, probability in PRESENCE.items():
            present = rng.random() < probability
            level = float(rng.uniform(*LEVEL_RANGE_DB[name]))
            if present:
                levels_db[name] = level
        corona_db = float(rng.uniform(*CORONA_RANGE_DB))
        corona_spec = corona.CoronaSpec.draw(rng, corona_db=corona_db)
        anomalous = label == "anomalous"
        return cls(
            label=label,
            n_samples=n_samples,
            line_hz=drawn_line_hz if line_hz is None else float(line_hz),
            phase_rad=float(rng.uniform(0, 2 * np.pi)),
            gain_db=float(rng.uniform(*GAIN_RANGE_DB)),
            ambient_db=float(rng.uniform(*AMBIENT_RANGE_DB)),
            self_noise_rel_db=float(rng.uniform(*SELF_NOISE_REL_RANGE_DB)),
            levels_db=levels_db,
            corona_db=corona_db if anomalous else None,
            corona=corona_spec if anomalous else None,
        )


def render(spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
    """The clip's samples (float32, mono, SAMPLE_RATE, within [-1, 1])."""
    n = signals.fast_length(spec.n_samples)
    # One child stream per source, spawned whether or not the source is present, so adding or
    # removing one source never changes the others.
    streams = dict(
        zip(("ambient", *PRESENCE, "corona", "adc"), rng.spawn(len(PRESENCE) + 3), strict=True)
    )
    mix = signals.db(spec.ambient_db) * background.ambient(
        streams["ambient"], n, self_noise_rel_db=spec.self_noise_rel_db
    )
    sources: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
        "hum": lambda r, m: background.hum(r, m, line_hz=spec.line_hz, phase_rad=spec.phase_rad),
        "wind": background.wind,
        "rain": background.rain,
        "birds": background.birds,
        "traffic": background.traffic,
        "people": background.people,
        "insects": background.insects,
    }
    for name, level_db in spec.levels_db.items():
        mix += signals.db(level_db) * sources[name](streams[name], n)
    if spec.corona is not None:
        mix += corona.render(
            streams["corona"], n, spec=spec.corona, line_hz=spec.line_hz, phase_rad=spec.phase_rad
        )
    out = mix[: spec.n_samples] * np.float32(signals.db(spec.gain_db))
    out += signals.db(ADC_FLOOR_DBFS) * streams["adc"].standard_normal(
        spec.n_samples, dtype=np.float32
    )
    return np.clip(out, -FULL_SCALE, FULL_SCALE).astype(np.float32)


def synthesize_clip(
    rng: np.random.Generator,
    *,
    label: str,
    duration_s: float,
    line_hz: float | None = None,
) -> np.ndarray:
    """One clip as float32 samples at SAMPLE_RATE, without writing anything.

    Args:
        rng: the only source of randomness (e.g. np.random.default_rng(seed)).
        label: "normal" or "anomalous" (with corona).
        duration_s: length in seconds (rounded to whole samples).
        line_hz: mains frequency; None draws 50 or 60 Hz.
    """
    spec = ClipSpec.draw(rng, label=label, duration_s=duration_s, line_hz=line_hz)
    return render(spec, rng)


def long_clip(
    seconds: float, seed: int, *, label: str | None = None, clip_s: float = 60.0
) -> np.ndarray:
    """seconds of audio (float32) made of consecutive clip_s scenes, for benchmarks.

    label None picks normal or anomalous at random for each scene. Scene k depends only on
    (seed, k), and the output is filled in place (one hour is 635 MB of float32).
    """
    total = round(seconds * SAMPLE_RATE)
    piece_n = max(1, round(clip_s * SAMPLE_RATE))
    out = np.empty(total, dtype=np.float32)
    for index, start in enumerate(range(0, total, piece_n)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        this_label = label if label is not None else LABELS[int(rng.integers(0, 2))]
        n = min(piece_n, total - start)
        out[start : start + n] = synthesize_clip(rng, label=this_label, duration_s=n / SAMPLE_RATE)
    return out
