"""The corona source: line-locked discharge crackle, 2x-line-frequency buzz, and frying hiss.

Physics it imitates: discharges start when the conductor's field exceeds the inception level,
so pulses cluster near the positive and negative voltage crests (negative crest: many small
Trichel pulses; positive crest: fewer, larger streamers). Each pulse heats a tiny air volume
within microseconds, which radiates a sharp broadband click rich above a few kHz. The ion cloud
driven twice per cycle radiates a tonal buzz at 2 x line frequency and its harmonics, and the
dense overlap of pulses sounds like frying (broadband hiss). Activity drifts with humidity and
wind, so its intensity fluctuates over seconds and may switch off and on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daemon.constants import SAMPLE_RATE
from train.synth import signals

_BUZZ_HARMONICS = 8
_MAX_PULSES_PER_HALF_CYCLE = 200.0
"""Safety cap on the Poisson mean (the activity envelope is log-normal, so unbounded)."""
_CREST_PHASE_RAD = np.pi / 2


@dataclass(frozen=True)
class CoronaSpec:
    """The drawn parameters of one file's corona; levels are dBFS before microphone gain."""

    crackle_db: float
    """RMS level of the crackle over the whole file."""
    hiss_db: float
    """RMS level of the frying hiss."""
    buzz_db: float
    """RMS level of the 2f buzz and its harmonics."""
    pulses_per_half_cycle: float
    """Mean discharge pulses per voltage crest when the activity is at its mean."""
    jitter_rad: float
    """Standard deviation of a pulse's phase around its crest."""
    positive_amplitude: float
    """How much larger a positive-crest pulse is than a negative-crest one."""
    burst_depth_db: float
    """Spread of the slow intensity fluctuation."""
    burst_timescale_s: float
    """How fast the intensity fluctuates."""
    on_fraction: float
    """Fraction of time the discharge is active (1.0 = steady, below = intermittent)."""
    hiss_low_hz: float
    """Lower edge of the hiss band."""

    @classmethod
    def draw(cls, rng: np.random.Generator, *, corona_db: float) -> CoronaSpec:
        """Random corona character around an overall level corona_db (dBFS before gain)."""
        # Which component dominates varies between insulators; their mix sets the overall level.
        crackle_rel, hiss_rel, buzz_rel = rng.uniform(-8.0, 0.0, size=3)
        mix = 10 * np.log10(
            10 ** (crackle_rel / 10) + 10 ** (hiss_rel / 10) + 10 ** (buzz_rel / 10)
        )
        on_fraction = 1.0 if rng.random() < 0.6 else float(rng.uniform(0.3, 0.9))
        return cls(
            crackle_db=float(corona_db + crackle_rel - mix),
            hiss_db=float(corona_db + hiss_rel - mix),
            buzz_db=float(corona_db + buzz_rel - mix),
            pulses_per_half_cycle=float(np.exp(rng.uniform(np.log(0.3), np.log(12.0)))),
            jitter_rad=float(rng.uniform(0.12, 0.6)),
            positive_amplitude=float(rng.uniform(1.2, 3.0)),
            burst_depth_db=float(rng.uniform(2.0, 10.0)),
            burst_timescale_s=float(rng.uniform(0.3, 4.0)),
            on_fraction=on_fraction,
            hiss_low_hz=float(rng.uniform(2000.0, 6000.0)),
        )

    @property
    def intermittent(self) -> bool:
        """Whether the discharge switches off and on within the file."""
        return self.on_fraction < 1.0


def render(
    rng: np.random.Generator, n: int, *, spec: CoronaSpec, line_hz: float, phase_rad: float
) -> np.ndarray:
    """n samples of corona at its spec's levels; phase_rad is the line voltage's phase at t=0."""
    activity = signals.slow_envelope(
        rng, n, depth_db=spec.burst_depth_db, timescale_s=spec.burst_timescale_s
    )
    if spec.intermittent:
        activity *= signals.gate(
            rng, n, on_fraction=spec.on_fraction, mean_segment_s=4.0, min_on_fraction=0.25
        )
    crackle = _crackle(rng, n, spec=spec, line_hz=line_hz, phase_rad=phase_rad, activity=activity)
    hiss = _hiss(rng, n, spec=spec, line_hz=line_hz, phase_rad=phase_rad, activity=activity)
    buzz = _buzz(rng, n, line_hz=line_hz, phase_rad=phase_rad, activity=activity)
    return (
        signals.db(spec.crackle_db) * crackle
        + signals.db(spec.hiss_db) * hiss
        + signals.db(spec.buzz_db) * buzz
    )


def _crackle(
    rng: np.random.Generator,
    n: int,
    *,
    spec: CoronaSpec,
    line_hz: float,
    phase_rad: float,
    activity: np.ndarray,
) -> np.ndarray:
    """Clicks clustered near both voltage crests, count and size following the activity."""
    half_period_s = 0.5 / line_hz
    first_crest_s = ((_CREST_PHASE_RAD - phase_rad) % (2 * np.pi)) / (2 * np.pi * line_hz)
    crest_s = first_crest_s + half_period_s * np.arange(int(n / SAMPLE_RATE / half_period_s) + 1)
    crest_s = crest_s[crest_s * SAMPLE_RATE < n]
    positive = np.arange(crest_s.size) % 2 == 0
    level = activity[(crest_s * SAMPLE_RATE).astype(np.int64)]
    # Negative crests: more, smaller pulses (Trichel); positive: fewer, larger (streamers).
    rate = spec.pulses_per_half_cycle * level * np.where(positive, 0.5, 1.5)
    counts = rng.poisson(np.minimum(rate, _MAX_PULSES_PER_HALF_CYCLE))
    pulse_s = np.repeat(crest_s, counts)
    # Inception happens on the rising flank, so pulses lead the crest slightly.
    jitter_s = rng.normal(-0.25 * spec.jitter_rad, spec.jitter_rad, pulse_s.size)
    pulse_s = pulse_s + jitter_s / (2 * np.pi * line_hz)
    positions = np.clip((pulse_s * SAMPLE_RATE).astype(np.int64), 0, n - 1)
    amplitudes = rng.lognormal(0.0, 0.7, pulse_s.size) * np.sqrt(np.repeat(level, counts))
    amplitudes *= np.where(np.repeat(positive, counts), spec.positive_amplitude, 1.0)
    # Two click shapes per file (a short and a long decay), mixed per pulse at random: a
    # continuum of pulse shapes for the price of two convolutions.
    mix = rng.random(pulse_s.size)
    taus_s = np.exp(rng.uniform(np.log(20e-6), np.log(600e-6), 2))
    kernels = [signals.decaying_click(rng, float(t), differentiate=True) for t in taus_s]
    positions = np.concatenate([positions, positions])
    amplitudes = np.concatenate([amplitudes * mix, amplitudes * (1 - mix)])
    which = np.repeat([0, 1], pulse_s.size)
    return signals.unit_rms(signals.impulse_response_sum(n, positions, amplitudes, which, kernels))


def _crest_modulation(n: int, *, line_hz: float, phase_rad: float, depth: float) -> np.ndarray:
    """A gain peaking at both voltage crests (twice per cycle), between 1 - depth and 1."""
    x = signals.period_grid()
    table = 1.0 - depth + depth * np.abs(np.sin(2 * np.pi * x)) ** 4
    return signals.periodic(n, line_hz, table, phase_rad)


def _hiss(
    rng: np.random.Generator,
    n: int,
    *,
    spec: CoronaSpec,
    line_hz: float,
    phase_rad: float,
    activity: np.ndarray,
) -> np.ndarray:
    """High-passed noise, swelling at the crests and with the activity (the frying sound)."""
    noise = signals.shaped_noise(
        rng, n, signals.product(signals.band(spec.hiss_low_hz, 18000.0, 1.5), signals.tilt(-1.5))
    )
    depth = float(rng.uniform(0.2, 0.8))
    swell = _crest_modulation(n, line_hz=line_hz, phase_rad=phase_rad, depth=depth)
    return signals.unit_rms(noise * swell * activity)


def _buzz(
    rng: np.random.Generator, n: int, *, line_hz: float, phase_rad: float, activity: np.ndarray
) -> np.ndarray:
    """Tonal buzz at 2 x line frequency with a decaying, irregular harmonic series."""
    rolloff = rng.uniform(0.35, 0.8)
    amplitudes = rolloff ** np.arange(_BUZZ_HARMONICS) * rng.uniform(0.5, 1.5, _BUZZ_HARMONICS)
    phases = rng.uniform(0, 2 * np.pi, _BUZZ_HARMONICS)
    tone = signals.harmonics(n, 2 * line_hz, amplitudes, phases + 2 * phase_rad)
    # The ion cloud follows the discharge activity, but smoothly (it integrates many pulses).
    return signals.unit_rms(tone * np.sqrt(activity))
