"""Physics of corona in one window: line-locked modulation, tonal hum and crackle, in dB.

Why these numbers: corona pulses fire near the voltage crest of every half-cycle, so the
high-frequency energy of a discharging conductor swells and fades at exactly twice the line
frequency (100 Hz on 50 Hz grids, 120 Hz on 60 Hz) and its harmonics; the space charge driven
back and forth radiates a tonal hum at the same frequencies; and each pulse is a sharp click, so
the high band is impulsive. Rain, wind, birds, rivers and traffic can be loud, hissy and
impulsive, but they are not phase-locked to the grid: the modulation at exactly 2f is what tells
corona from weather, whatever the microphone, gain or site.

Signals (all of one window's own samples x[j], j = 0..n-1, at 44.1 kHz):

- high band: the second difference ``d[j] = x[j] - 2 x[j-1] + x[j-2]``, a +12 dB/octave
  high-pass with gain ``(2 sin(pi f / fs))**2``: -74 dB at 100 Hz, -46 dB at 500 Hz,
  -11 dB at 2 kHz, 0 dB at 7.35 kHz. It removes hum and wind rumble and keeps the hiss and
  clicks of discharge, for three numpy operations per sample.
- high-band envelope: ``e[b] = sqrt(sum of d[j]**2 over block b)``, blocks of `ENVELOPE_BLOCK`
  (32) samples, i.e. the RMS amplitude of the high band at 1378.1 Hz (modulations up to
  689 Hz: 2f and its 2nd and 3rd harmonics for both grids). The amplitude (not energy) keeps
  one loud raindrop from outweighing a steady pulse train.
- low band: block sums of `ENVELOPE_BLOCK` (32) samples of x, i.e. x low-passed by a boxcar
  and sampled at 1378.1 Hz (hum up to 689 Hz; a boxcar attenuates what folds onto 2f, such
  as 1278 Hz onto 100 Hz, by about 22 dB).

Spectra: Welch averages of Hann-windowed segments (50 % overlap) of 1.486 s, so bins are
0.673 Hz apart: fine enough to see a tone at 2f exactly (the STFT's 43 Hz bins cannot) and wide
enough for the grid's drift (+-0.1 Hz). For harmonic h = 1, 2, 3 of 2f:
``peak_h`` = the largest bin within `PEAK_HALF_WIDTH_HZ` of ``2 h f``; ``floor_h`` = the median
bin from `FLOOR_NEAR_HZ` to `FLOOR_FAR_HZ` away on both sides (the local floor).

Values (`NAMES`, in this order):

- ``mod_db``: ``10 log10(sum_h peak_h / sum_h floor_h)`` of the envelope spectrum: how far the
  line-locked modulation of the high band stands above the modulation around it. About +4 dB
  for unmodulated noise (the largest of a few bins over the median), +10 to +40 dB for corona.
- ``mod_depth``: modulation index ``sqrt(sum_h 2 (peak_h - floor_h)) / mean(e)``, a ratio:
  the line-locked swing of the high-band amplitude as a fraction of its mean (0 = none,
  1 = fully on/off at every crest). Falls as unmodulated background adds to the mean.
- ``hum_db``: ``10 log10(sum_h peak_h / sum_h floor_h)`` of the low-band spectrum: the tonal
  hum at 2f and harmonics over the spectrum beside it (0 to +5 dB without a tone).
- ``sub_db``: the same ratio of the envelope spectrum at the fractions ``2f j / k`` (k = 3, 4,
  5; j = 1..k-1; 1/2 left out, it is f): 33.3, 66.7, 25, 75, 20, 40, 60, 80 Hz on a 50 Hz
  grid. Corona repeats with the line's own period, so its envelope has lines at multiples of
  f only; a periodic sound that merely has a harmonic on 2f (a cricket pulsing at 33.3 Hz: its
  3rd harmonic is 100 Hz) shows its fundamental here. About +4 dB without such a sound.
- ``crackle_db``: ``10 log10(mean(E**2) / mean(E)**2)`` with ``E[b] = e[b]**2`` the high-band
  energy of each 0.73 ms block: the crest of the high band's power. About 0.5 dB for white hiss
  at any level, about ``10 log10(1 / duty)`` for clicks that fill a fraction ``duty`` of the
  blocks (rain is impulsive too: this only means something together with ``mod_db``).
- ``line_hz``: the line frequency the values were measured at (50 or 60), fixed by
  configuration or, with ``auto``, whichever gives the larger ``mod_db + hum_db``.

A window too short for one spectrum segment reports the neutral values (0 dB, depth 0).
Streaming (`PhysicsAccumulator`) gives exactly the batch result (`measure`): samples are
consumed in whole blocks whose arithmetic does not depend on how the stream was cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from daemon.constants import SAMPLE_RATE

VERSION: Final = 1
"""Bump when any value's definition changes: models and feature caches carry it."""

ENVELOPE_BLOCK: Final = 32
"""Samples of the high band per envelope value (1378.1 Hz at 44.1 kHz)."""

SEGMENT: Final = 2048
"""Envelope or low-band values per Welch segment (1.486 s, bins 0.673 Hz apart)."""

HARMONICS: Final = (1, 2, 3)
"""Harmonics of twice the line frequency that are measured (100/200/300 or 120/240/360 Hz)."""

SUBHARMONIC_FRACTIONS: Final = (1 / 3, 2 / 3, 1 / 4, 3 / 4, 1 / 5, 2 / 5, 3 / 5, 4 / 5)
"""Fractions of 2f where a periodic non-corona sound with a harmonic on 2f has its lines."""

PEAK_HALF_WIDTH_HZ: Final = 1.0
"""A peak is searched this far either side of its nominal frequency (grid drift, bin edges)."""

FLOOR_NEAR_HZ: Final = 3.0
FLOOR_FAR_HZ: Final = 15.0
"""The local floor is the median of the bins this far (near..far) either side of a peak."""

LINE_FREQUENCIES: Final = (50, 60)
LineSetting = Literal[50, 60, "auto"]

LINE_VALUES: Final = ("mod_db", "mod_depth", "hum_db", "sub_db")
"""The values measured at each line frequency (`LineEvidence`)."""

NAMES: Final = (*LINE_VALUES, "crackle_db")
"""The model-facing physics values, in vector order (``line_hz`` is reported beside them)."""

RATIO_LIMIT_DB: Final = 60.0
"""Ratios are clipped to +-60 dB: a pure synthetic tone over a zero floor stays finite."""

WELCH_SEGMENTS_PER_CALL: Final = 8
"""Welch segments transformed per numpy call (bounds the temporaries)."""

_MIN_SEGMENT: Final = 64
"""Shortest Welch segment used for short windows (a tail or a short file)."""


@dataclass(frozen=True)
class LineEvidence:
    """The line-dependent values measured at one line frequency."""

    line_hz: int
    mod_db: float
    mod_depth: float
    hum_db: float
    sub_db: float


@dataclass(frozen=True)
class Physics:
    """The physics values of one window (see the module docstring for each formula)."""

    line_hz: int
    mod_db: float
    mod_depth: float
    hum_db: float
    sub_db: float
    crackle_db: float

    def values(self, names: tuple[str, ...] = NAMES) -> tuple[float, ...]:
        """The named model-facing values (a subset of `NAMES`), in the order given."""
        return tuple(float(getattr(self, name)) for name in names)

    def as_dict(self) -> dict[str, float | int]:
        """The verdict's ``physics`` object (rounded for people; the model sees full values)."""
        rounded: dict[str, float | int] = {"line_hz": self.line_hz}
        for name in NAMES:
            rounded[name] = round(getattr(self, name), 4 if name == "mod_depth" else 2)
        return rounded


@dataclass(frozen=True)
class Measurement:
    """Everything measured about one window, for both line frequencies (select one later)."""

    by_line: tuple[LineEvidence, ...]
    """One entry per `LINE_FREQUENCIES`, same order."""
    crackle_db: float

    def select(self, line: LineSetting) -> Physics:
        """The values at a fixed line frequency, or at the stronger one for ``auto``."""
        if line == "auto":
            evidence = max(self.by_line, key=lambda e: e.mod_db + e.hum_db)
        else:
            evidence = next(e for e in self.by_line if e.line_hz == line)
        return Physics(
            line_hz=evidence.line_hz,
            **{name: getattr(evidence, name) for name in LINE_VALUES},
            crackle_db=self.crackle_db,
        )

    def to_array(self) -> npt.NDArray[np.float64]:
        """A flat float64 array (for caches): per line its `LINE_VALUES`, then crackle_db."""
        flat = [getattr(e, name) for e in self.by_line for name in LINE_VALUES]
        return np.array([*flat, self.crackle_db], dtype=np.float64)

    @classmethod
    def from_array(cls, array: npt.ArrayLike) -> Measurement:
        """Inverse of `to_array`."""
        values = [float(v) for v in np.asarray(array, dtype=np.float64).ravel()]
        if len(values) != MEASUREMENT_SIZE:
            raise ValueError(f"physics: expected {MEASUREMENT_SIZE} values, got {len(values)}")
        size = len(LINE_VALUES)
        by_line = tuple(
            LineEvidence(line, *values[size * i : size * (i + 1)])
            for i, line in enumerate(LINE_FREQUENCIES)
        )
        return cls(by_line=by_line, crackle_db=values[-1])


MEASUREMENT_SIZE: Final = len(LINE_VALUES) * len(LINE_FREQUENCIES) + 1
"""Length of `Measurement.to_array`."""


def check_line_setting(value: object, *, key: str = "features.line_hz") -> LineSetting:
    """``value`` as a line setting, or ValueError naming ``key``."""
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and value in LINE_FREQUENCIES:
        return 50 if value == 50 else 60
    raise ValueError(f"{key}: expected 50, 60 or auto, got {value!r}")


@lru_cache(maxsize=8)
def _hann(n: int) -> npt.NDArray[np.float64]:
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    window.flags.writeable = False
    return window


def welch_power(signal: npt.NDArray[np.float64], segment: int) -> npt.NDArray[np.float64]:
    """One-sided power spectrum (Welch, Hann, 50 % overlap, each segment's mean removed).

    Scaled so that a sinusoid of amplitude A centred on a bin reads A**2 / 2 there.
    ``segment`` must not exceed ``len(signal)``.
    """
    frames = sliding_window_view(signal, segment)[:: segment // 2]
    window = _hann(segment)
    power = np.zeros(segment // 2 + 1, dtype=np.float64)
    # A few segments per FFT call: the temporaries stay near 0.2 MB instead of 2 MB for a
    # 30 s window's 39 segments, at the same speed.
    for first in range(0, frames.shape[0], WELCH_SEGMENTS_PER_CALL):
        chunk = frames[first : first + WELCH_SEGMENTS_PER_CALL]
        centred = chunk - chunk.mean(axis=1, keepdims=True)
        centred *= window
        spectrum = np.fft.rfft(centred, axis=1)
        power += np.einsum("ij,ij->j", spectrum.real, spectrum.real)
        power += np.einsum("ij,ij->j", spectrum.imag, spectrum.imag)
    power *= 2.0 / (frames.shape[0] * float(window.sum()) ** 2)
    return power


def _segment_for(n_values: int, preferred: int) -> int | None:
    """The Welch segment for ``n_values`` values: preferred, or the largest power of 2 that fits."""
    if n_values >= preferred:
        return preferred
    if n_values < _MIN_SEGMENT:
        return None
    return 1 << (n_values.bit_length() - 1)


def _ratio_db(peak: float, floor: float) -> float:
    if peak <= 0.0 and floor <= 0.0:
        return 0.0
    ratio = 10.0 * np.log10(max(peak, 1e-300) / max(floor, 1e-300))
    return float(np.clip(ratio, -RATIO_LIMIT_DB, RATIO_LIMIT_DB))


def _harmonics(line_hz: int) -> tuple[float, ...]:
    return tuple(2.0 * line_hz * harmonic for harmonic in HARMONICS)


def _subharmonics(line_hz: int) -> tuple[float, ...]:
    return tuple(2.0 * line_hz * fraction for fraction in SUBHARMONIC_FRACTIONS)


@lru_cache(maxsize=64)
def _bands(
    n_bins: int, bin_hz: float, targets: tuple[float, ...]
) -> tuple[tuple[slice, npt.NDArray[np.intp]], ...]:
    """Per target frequency inside the spectrum: (peak bins, floor bins of both sides)."""
    bands = []
    for target in targets:
        peak = slice(
            max(0, int(np.ceil((target - PEAK_HALF_WIDTH_HZ) / bin_hz))),
            int(np.floor((target + PEAK_HALF_WIDTH_HZ) / bin_hz)) + 1,
        )
        lower = slice(
            max(0, int(np.ceil((target - FLOOR_FAR_HZ) / bin_hz))),
            int(np.floor((target - FLOOR_NEAR_HZ) / bin_hz)) + 1,
        )
        upper = slice(
            int(np.ceil((target + FLOOR_NEAR_HZ) / bin_hz)),
            int(np.floor((target + FLOOR_FAR_HZ) / bin_hz)) + 1,
        )
        if upper.stop > n_bins or peak.stop <= peak.start or lower.stop <= lower.start:
            continue  # beyond this spectrum's range (a very short window)
        floor = np.r_[lower, upper].astype(np.intp)
        floor.flags.writeable = False
        bands.append((peak, floor))
    return tuple(bands)


def _peaks_and_floors(
    power: npt.NDArray[np.float64], bin_hz: float, targets: tuple[float, ...]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per target frequency: the peak bin and the local floor (median of the sides)."""
    peaks, floors = [], []
    for peak, floor in _bands(power.shape[0], bin_hz, targets):
        peaks.append(float(power[peak].max()))
        floors.append(float(np.median(power[floor])))
    return np.array(peaks), np.array(floors)


def _line_evidence(
    envelope_power: npt.NDArray[np.float64] | None,
    envelope_mean: float,
    hum_power: npt.NDArray[np.float64] | None,
    bin_hz: float,
    line_hz: int,
) -> LineEvidence:
    mod_db = mod_depth = hum_db = sub_db = 0.0
    if envelope_power is not None:
        peaks, floors = _peaks_and_floors(envelope_power, bin_hz, _harmonics(line_hz))
        if peaks.size:
            mod_db = _ratio_db(float(peaks.sum()), float(floors.sum()))
            if envelope_mean > 0.0:
                swing = float(np.sum(2.0 * np.maximum(peaks - floors, 0.0)))
                mod_depth = float(np.sqrt(swing) / envelope_mean)
        peaks, floors = _peaks_and_floors(envelope_power, bin_hz, _subharmonics(line_hz))
        if peaks.size:
            sub_db = _ratio_db(float(peaks.sum()), float(floors.sum()))
    if hum_power is not None:
        peaks, floors = _peaks_and_floors(hum_power, bin_hz, _harmonics(line_hz))
        if peaks.size:
            hum_db = _ratio_db(float(peaks.sum()), float(floors.sum()))
    return LineEvidence(line_hz, mod_db=mod_db, mod_depth=mod_depth, hum_db=hum_db, sub_db=sub_db)


def _crackle_db(energy: npt.NDArray[np.float64]) -> float:
    mean = float(energy.mean()) if energy.size else 0.0
    if mean <= 0.0:
        return 0.0
    crest = float(np.mean(energy * energy)) / (mean * mean)
    return float(np.clip(10.0 * np.log10(crest), -RATIO_LIMIT_DB, RATIO_LIMIT_DB))


class PhysicsAccumulator:
    """Consumes one window's samples in any pieces; `finish` gives its `Measurement`.

    Keeps two numbers per 32 samples (high-band energy, low-band sum): 11 KB for 30 s at
    44.1 kHz, plus fewer than 34 carried-over samples. Every block is computed by the same
    numpy expression on the same 32 (or 34) samples however the stream was cut, so the result
    equals `measure` on the whole window exactly.
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, expected_samples: int = 0) -> None:
        """``expected_samples``: the window's length if known (sizes the buffers once)."""
        self.sample_rate = sample_rate
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_start = 0  # window offset of _pending[0]
        self._low_blocks = 0
        self._high_blocks = 0
        # One value per block, in preallocated series (no per-push arrays to keep).
        self._energy = _Series(expected_samples // ENVELOPE_BLOCK + 1)
        self._low = _Series(expected_samples // ENVELOPE_BLOCK + 1)

    def push(self, samples: npt.NDArray[np.float32]) -> None:
        """Add the next samples of the window (float32, 1-D)."""
        if samples.shape[0] == 0:
            return
        start = self._pending_start + self._pending.shape[0]  # window offset of samples[0]
        if self._pending.shape[0]:
            # Blocks that began in the carried-over samples end within the next block + 2:
            # only those go through a (small) joined copy; the rest read `samples` in place.
            head = np.concatenate([self._pending, samples[: ENVELOPE_BLOCK + 2]])
            self._consume(head, self._pending_start)
        self._consume(samples, start)
        keep_from = min(self._low_blocks, self._high_blocks) * ENVELOPE_BLOCK
        if keep_from >= start:
            self._pending = samples[keep_from - start :].copy()
        else:  # samples too short to finish the carried-over blocks
            self._pending = np.concatenate(
                [self._pending[keep_from - self._pending_start :], samples]
            )
        self._pending_start = keep_from

    def _consume(self, buffer: npt.NDArray[np.float32], start: int) -> None:
        """Every next whole block that lies in ``buffer`` (window offset ``start``)."""
        block = ENVELOPE_BLOCK
        # Low band: whole blocks of x.
        first = self._low_blocks * block - start
        count = (buffer.shape[0] - first) // block if first >= 0 else 0
        if count > 0:
            rows = buffer[first : first + count * block].reshape(count, block)
            self._low.append(np.einsum("ij->i", rows))
            self._low_blocks += count

        # High band: d[i] = x[i+2] - 2 x[i+1] + x[i], blocks of `block` consecutive d's.
        first = self._high_blocks * block - start  # x index of the block's first d
        count = (buffer.shape[0] - first - 2) // block if first >= 0 else 0
        if count > 0:
            stop = first + count * block
            d = np.subtract(buffer[first + 2 : stop + 2], buffer[first + 1 : stop + 1])
            d -= buffer[first + 1 : stop + 1]
            d += buffer[first:stop]
            rows = d.reshape(count, block)
            self._energy.append(np.einsum("ij,ij->i", rows, rows))
            self._high_blocks += count

    def finish(self) -> Measurement:
        """The window's measurement (the accumulator must not be pushed to afterwards)."""
        energy = self._energy.values()
        low = self._low.values()
        envelope = np.sqrt(energy)
        rate = self.sample_rate / ENVELOPE_BLOCK
        env_segment = _segment_for(envelope.shape[0], SEGMENT)
        low_segment = _segment_for(low.shape[0], SEGMENT)
        envelope_power = None if env_segment is None else welch_power(envelope, env_segment)
        hum_power = None if low_segment is None else welch_power(low, low_segment)
        # Both series have the same rate; the low band may be one block longer, never a segment.
        segment = env_segment or low_segment
        envelope_mean = float(envelope.mean()) if envelope.size else 0.0
        by_line = tuple(
            _line_evidence(
                envelope_power,
                envelope_mean,
                hum_power if low_segment == segment else None,
                rate / segment if segment else 0.0,
                line,
            )
            for line in LINE_FREQUENCIES
        )
        return Measurement(by_line=by_line, crackle_db=_crackle_db(energy))


class _Series:
    """A float32 series appended to in pieces, in one buffer that doubles when full."""

    def __init__(self, capacity: int) -> None:
        self._data = np.empty(max(capacity, 64), dtype=np.float32)
        self._length = 0

    def append(self, values: npt.NDArray[np.float32]) -> None:
        needed = self._length + values.shape[0]
        if needed > self._data.shape[0]:
            grown = np.empty(max(needed, 2 * self._data.shape[0]), dtype=np.float32)
            grown[: self._length] = self._data[: self._length]
            self._data = grown
        self._data[self._length : needed] = values
        self._length = needed

    def values(self) -> npt.NDArray[np.float64]:
        """The series so far, as float64."""
        return self._data[: self._length].astype(np.float64)


def measure(samples: npt.ArrayLike, sample_rate: int = SAMPLE_RATE) -> Measurement:
    """The physics `Measurement` of one whole window of mono float samples."""
    array = np.asarray(samples, dtype=np.float32).ravel()
    accumulator = PhysicsAccumulator(sample_rate, expected_samples=array.shape[0])
    accumulator.push(array)
    return accumulator.finish()
