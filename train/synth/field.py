"""What varies in the field and not in the simulator: real backgrounds and the microphone.

`corona-train synth --backgrounds DIR` puts real outdoor recordings (the `train` rows of
`scripts/fetch-recordings`' manifest: rain, wind, storms, water, birds, fire ...) under every
clip, often louder than the corona: wet weather makes a healthy line 10-20 dB louder, and a
detector that learned loudness or timbre must fail here in training, not on a tower. Every clip
also gets a random microphone response (low cut, tilt, a resonance, a high roll-off), so the
spectrum part of a model cannot learn one microphone. Both classes get the same distributions.

All randomness comes from the Generator passed in (one per clip, derived from the clip's seed),
so a data set stays byte-identical for the same seed and recordings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from daemon.constants import SAMPLE_RATE

BACKGROUND_PROBABILITY = 0.8
"""Share of clips that get a real recording underneath."""

BACKGROUND_REL_DB = (-20.0, 20.0)
"""Level of the recording relative to the simulated clip's RMS (corona included)."""

CROSSFADE_S = 0.5


@dataclass(frozen=True)
class Background:
    """One real recording to draw from (float32 mono at 44.1 kHz)."""

    name: str
    samples: npt.NDArray[np.float32]


@dataclass(frozen=True)
class FieldDraw:
    """What was done to one clip (for the manifest)."""

    background: str
    background_rel_db: float
    mic: str


def _looped(samples: npt.NDArray[np.float32], n: int, start: int) -> npt.NDArray[np.float32]:
    """n samples of the recording from `start`, looped with an equal-power crossfade."""
    if samples.shape[0] >= n + start:
        return samples[start : start + n]
    fade = min(round(CROSSFADE_S * SAMPLE_RATE), samples.shape[0] // 4)
    if samples.shape[0] - start < 2 * fade:
        start = 0  # too close to the end to crossfade from: start from the beginning
    out = np.empty(0, np.float32)
    piece = samples[start:]
    while out.shape[0] < n:
        if out.shape[0] and fade:
            t = np.linspace(0.0, np.pi / 2, fade, dtype=np.float32)
            out[-fade:] = out[-fade:] * np.cos(t) + piece[:fade] * np.sin(t)
            piece = piece[fade:]
        out = np.concatenate([out, piece])
        piece = samples
    return out[:n]


def mic_response(rng: np.random.Generator, n: int) -> tuple[npt.NDArray[np.float64], str]:
    """A random microphone magnitude response on rfft bins of n samples, and its description."""
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    octaves = np.log2(np.maximum(freqs, 20.0) / 1000.0)
    low_cut_hz = float(np.exp(rng.uniform(np.log(20.0), np.log(300.0))))
    high_cut_hz = float(rng.uniform(7000.0, 20000.0))
    tilt_db = float(rng.uniform(-2.0, 2.0))  # per octave around 1 kHz
    peak_hz = float(np.exp(rng.uniform(np.log(1500.0), np.log(12000.0))))
    peak_db = float(rng.uniform(-6.0, 8.0))
    db = tilt_db * octaves + peak_db * np.exp(-0.5 * (np.log2(freqs.clip(1) / peak_hz) / 0.4) ** 2)
    gain = 10 ** (db / 20)
    gain /= np.sqrt(1 + (low_cut_hz / np.maximum(freqs, 1e-3)) ** 4)  # 2nd-order low cut
    gain /= np.sqrt(1 + (freqs / high_cut_hz) ** 8)  # 4th-order roll-off
    text = (
        f"lowcut {low_cut_hz:.0f} Hz, tilt {tilt_db:+.1f} dB/oct,"
        f" peak {peak_db:+.1f} dB at {peak_hz:.0f} Hz, rolloff {high_cut_hz:.0f} Hz"
    )
    return gain, text


def apply(
    samples: npt.NDArray[np.float32],
    rng: np.random.Generator,
    backgrounds: Sequence[Background],
) -> tuple[npt.NDArray[np.float32], FieldDraw]:
    """The clip with a real background (sometimes) and a random microphone, clipped at 1.0."""
    n = samples.shape[0]
    mixed = samples.astype(np.float64)
    name, rel_db = "", 0.0
    if backgrounds and rng.random() < BACKGROUND_PROBABILITY:
        chosen = backgrounds[int(rng.integers(len(backgrounds)))]
        start = int(rng.integers(0, max(1, chosen.samples.shape[0] - 1)))
        piece = _looped(chosen.samples, n, start).astype(np.float64)
        rel_db = float(rng.uniform(*BACKGROUND_REL_DB))
        clip_rms = float(np.sqrt(np.mean(mixed**2))) or 1e-5
        piece_rms = float(np.sqrt(np.mean(piece**2))) or 1.0
        mixed += piece * (clip_rms / piece_rms) * 10 ** (rel_db / 20)
        name = chosen.name
    gain, mic = mic_response(rng, n)
    shaped = np.fft.irfft(np.fft.rfft(mixed) * gain, n)
    return np.clip(shaped, -1.0, 1.0).astype(np.float32), FieldDraw(name, rel_db, mic)
