"""A second, independent tower-audio simulator, for transfer benchmarks only.

The project's own simulator (``train/synth``) makes the data the shipped model is trained on;
this one makes audio *differently*, from the physics of AC corona, so a benchmark can ask
whether a model learned corona or learned that simulator. Nothing here is shared with it.

Run from the repo root: ``python -m bench.othersim OUT --normal N --anomalous M --seed S``
writes ``OUT/normal/*.wav``, ``OUT/anomalous/*.wav`` (44.1 kHz mono PCM_16) and
``OUT/manifest.csv`` (``file``, ``label`` and what was drawn for each file); ``--stats``
prints per-class level and 2f-modulation statistics. Same seed -> byte-identical files.

Model (all parameters drawn per clip; see ``render_clip`` for the metadata):

- **Grid**: 50 or 60 Hz with a slow random frequency drift of up to +-0.05 Hz (+-0.06 Hz at
  60 Hz); every grid-locked sound follows the same drifting voltage phase.
- **Corona pulses**: per half-cycle Poisson counts around each crest, with a lead angle
  (0-40 degrees before the crest) and a von Mises phase spread; positive crest: few large
  streamer pulses (lognormal sizes, an acoustic N-wave of sigma 15-80 us plus optional 3-9 kHz
  ringing); negative crest: many small Trichel pulses (damped 6-16 kHz oscillations, 25-120
  us). Pulse kernels are analytic spectra, applied by FFT convolution of sparse pulse trains.
- **Frying**: optional white noise whose envelope is a grid-phase wavetable of von Mises bumps
  at the crests, high-passed at 1.5-3 kHz (the merged sound of dense pulses).
- **Corona hum**: tones at 2k x line frequency (k = 1..3-10, amplitudes k^-a with jitter and
  an odd/even bias), phase-locked to the voltage, swelling with the discharge activity.
- **Activity**: lognormal slow variation (1-10 s), optional on/off intermittency (Markov
  gate), and, when it rains, a coupling to the rain intensity (wet insulators discharge more).
- **Propagation** (corona only, it is a point source 5-60 m away): air absorption
  ``h*(f/1 kHz)^1.7`` dB/m with h = 0.003-0.006 and often one ground/steel reflection (comb).
- **Background**: a time-frequency power bed synthesised in the STFT domain (2048-point
  frames, random phases, sqrt-Hann overlap-add): ambient floor, wind rumble whose corner
  frequency and level follow a gusty wind speed, foliage rustle, rain hiss, river rush,
  traffic with pass-bys, distant thunder rumbles. Plus time-domain layers: rain drops and
  river bubbles (a per-clip bank of Minnaert-like damped resonances 250 Hz-14 kHz and a
  broadband tap), bird syllables (up/down/arch/trill sweeps with a 2nd harmonic, in songs),
  insects (band-noise carrier 3-10 kHz amplitude-modulated at 20-400 Hz with slow rate drift;
  30 % of insects pulse *near* but never at 2x line frequency), aeolian tones (Strouhal
  0.2 U/D on 2-15 mm members, 100 Hz-2 kHz, following the gusts), a faint steady transformer
  hum at 2f and harmonics, and electrical mains pickup (odd harmonics of f).
- **Weather**: calm / breezy / windy / rain / storm; wind and rain come 10-22 dB above the
  ambient floor in bad weather.
- **Microphone**: analog-prototype response (2nd or 4th order low cut at 20-200 Hz, 2nd or
  4th order roll-off at 8-18 kHz, a 2-10 dB resonance at 2-12 kHz), gain -30..+10 dB,
  self-noise (white + 1/f) at -95..-78 dBFS, occasional soft saturation, hard clipping at
  full scale, 16-bit quantisation.
- **Confounders**: background, weather, grid and microphone are drawn from generators that
  never see the label, so both classes share every one of their distributions (a normal and
  an anomalous clip from the same generator state have the same background and microphone);
  corona is then added at an SNR of -15..+12 dB re the background's power above 2 kHz as
  recorded, and the mix is scaled back to the background's recorded level, so the recorded
  level distribution is the same too. Known residual difference: loud streamer cracks make
  a few more anomalous clips touch full scale (any clipped sample: ~12 % vs ~8 % of clips).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile as sf

SR: Final = 44100
CTRL_HZ: Final = 100  # control rate of every slow process (activity, wind, rain, grid drift)
CTRL_STEP: Final = SR // CTRL_HZ  # 441 samples
BED_N: Final = 2048  # STFT frame of the background bed
BED_HOP: Final = BED_N // 2
TABLE_N: Final = 4096  # wavetable points per voltage cycle
SNR_BAND_HZ: Final = 2000.0  # corona SNR is measured above this, where corona lives
PAD_S: Final = 0.2  # FFT zero padding so resonance tails do not wrap around
LABELS: Final = ("normal", "anomalous")
WEATHERS: Final = ("calm", "breezy", "windy", "rain", "storm")
WEATHER_P: Final = (0.35, 0.25, 0.15, 0.15, 0.10)

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]
IntArray = npt.NDArray[np.int64]
Meta = dict[str, str | float | int | bool]

MANIFEST_COLUMNS: Final = (
    "file",
    "label",
    "duration_s",
    "line_hz",
    "grid_drift_hz",
    "weather",
    "wind_ms",
    "rain",
    "thunder",
    "traffic",
    "river",
    "birds",
    "insects",
    "insect_rate_hz",
    "aeolian",
    "transformer_hum",
    "electrical_pickup",
    "bg_level_dbfs",
    "mic_gain_db",
    "mic_low_cut_hz",
    "mic_high_cut_hz",
    "mic_resonance_hz",
    "mic_saturation",
    "mic_hot_gain",
    "knocks",
    "snr_db",
    "corona_distance_m",
    "corona_trichel_per_half_cycle",
    "corona_streamer_per_half_cycle",
    "corona_lead_deg",
    "corona_frying",
    "corona_hum_db",
    "corona_intermittent",
    "level_dbfs",
    "clipped",
)


# --------------------------------------------------------------------------- small helpers


def _fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (pocketfft is fast on those)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            q = p35
            while q < n:
                q *= 2
            best = min(best, q)
            p35 *= 3
        p5 *= 5
    return best


def _db(x: float) -> float:
    return float(10.0 ** (x / 20.0))


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _smooth_noise(rng: np.random.Generator, m: int, corr_pts: float) -> FloatArray:
    """``m`` points of a zero-mean, unit-variance Gaussian process with correlation length
    ``corr_pts`` points (white noise through a Gaussian low-pass, done by FFT)."""
    length = _fast_len(m + int(4 * corr_pts) + 8)
    white = rng.standard_normal(length)
    freqs = np.fft.rfftfreq(length)
    spec = np.fft.rfft(white) * np.exp(-0.5 * (2 * np.pi * freqs * corr_pts) ** 2)
    x: FloatArray = np.fft.irfft(spec, length)[:m]
    x = x - x.mean()
    std = float(x.std())
    return x / std if std > 1e-12 else np.zeros(m)


def _markov_gate(
    rng: np.random.Generator, m: int, mean_on: float, mean_off: float, min_on: float
) -> FloatArray:
    """0/1 on/off gate of ``m`` control points with exponential durations (in points), on at
    least ``min_on`` of the time (a random stretch is switched on when chance fell short)."""
    gate = np.zeros(m)
    pos = 0
    state = bool(rng.random() < mean_on / (mean_on + mean_off))
    while pos < m:
        dur = max(1, int(rng.exponential(mean_on if state else mean_off)))
        if state:
            gate[pos : pos + dur] = 1.0
        pos += dur
        state = not state
    if gate.mean() < min_on:
        span = math.ceil(min_on * m)
        start = int(rng.integers(0, m - span + 1))
        gate[start : start + span] = 1.0
    # soften the edges over ~50 ms so the gate does not click
    kernel = np.hanning(7)
    return np.convolve(gate, kernel / kernel.sum(), mode="same")


def _ctrl_to_samples(x_ctrl: FloatArray, n: int) -> FloatArray:
    """Linear interpolation of a control-rate series (CTRL_HZ, starting at t=0) to ``n``
    samples."""
    need = n // CTRL_STEP + 2
    if x_ctrl.size < need:
        x_ctrl = np.concatenate([x_ctrl, np.full(need - x_ctrl.size, x_ctrl[-1])])
    frac = np.arange(CTRL_STEP) / CTRL_STEP
    base = x_ctrl[: need - 1]
    step = np.diff(x_ctrl[:need])
    out: FloatArray = (base[:, None] + step[:, None] * frac[None, :]).ravel()[:n]
    return out


def _power(spec: ComplexArray, nfft: int) -> float:
    """Mean square of irfft(spec, nfft) (Parseval, without the inverse transform)."""
    mag2 = spec.real**2 + spec.imag**2
    total = 2.0 * float(mag2.sum()) - float(mag2[0])
    if nfft % 2 == 0:
        total -= float(mag2[-1])
    return total / (nfft * nfft)


def _rms(x: FloatArray) -> float:
    return math.sqrt(float(np.square(x).sum()) / max(1, x.size))  # no BLAS threads


def _band(freqs: FloatArray, lo: float, hi: float, order: int) -> FloatArray:
    """Power response of a Butterworth-like band: high-pass at ``lo``, low-pass at ``hi``."""
    a = (np.maximum(freqs, 1e-3) / lo) ** (2 * order)
    return np.asarray(a / (1.0 + a) / (1.0 + (freqs / hi) ** (2 * order)), dtype=np.float64)


def _nwave(freqs: FloatArray, sigma: float) -> ComplexArray:
    """Spectrum of an acoustic N-wave: derivative of a Gaussian of width ``sigma`` (s)."""
    ws = 2 * np.pi * sigma * freqs
    out: ComplexArray = np.asarray(1j * (ws * np.exp(-0.5 * ws * ws)), dtype=np.complex128)
    return out


def _damped(freqs: FloatArray, f_ring: float, tau: float) -> ComplexArray:
    """Spectrum of exp(-t/tau) sin(2 pi f_ring t), t >= 0."""
    w = 2 * np.pi * freqs
    wr = 2 * np.pi * f_ring
    out: ComplexArray = np.asarray(wr / ((1.0 / tau + 1j * w) ** 2 + wr * wr), np.complex128)
    return out


def _unit_energy(spec: ComplexArray) -> ComplexArray:
    """Scale a kernel spectrum (on any uniform grid from 0 Hz) to unit time-domain energy."""
    mag2 = spec.real**2 + spec.imag**2
    energy = float(mag2.sum()) / max(1, spec.size)
    return spec / math.sqrt(energy) if energy > 0 else spec


def _on_grid(fn: Callable[[FloatArray], ComplexArray], nfft: int, step: int = 16) -> ComplexArray:
    """``fn`` (a response that is smooth over ``step`` bins) on the rfft bins of ``nfft``:
    evaluated on every ``step``-th bin and linearly interpolated in between."""
    nbins = nfft // 2 + 1
    coarse = fn(np.arange(-(-nbins // step) + 1, dtype=np.float64) * (step * SR / nfft))
    frac = np.arange(step) / step
    out: ComplexArray = (coarse[:-1, None] + np.diff(coarse)[:, None] * frac).ravel()[:nbins]
    return out


def _harmonic_table(coeffs: dict[int, complex]) -> FloatArray:
    """One cycle (TABLE_N points + the wrap point) of sum_k Re(c_k exp(j k theta))."""
    spec = np.zeros(TABLE_N // 2 + 1, dtype=np.complex128)
    for k, c in coeffs.items():
        spec[k] = c * TABLE_N / 2
    table = np.fft.irfft(spec, TABLE_N)
    return np.concatenate([table, table[:1]])


def _rfftfreq(nfft: int) -> FloatArray:
    """Bin frequencies (Hz) of an rfft of length ``nfft`` at 44.1 kHz."""
    return np.asarray(np.fft.rfftfreq(nfft, 1.0 / SR), dtype=np.float64)


def _place(idx: IntArray, amp: FloatArray, nfft: int) -> ComplexArray:
    """rfft of a sparse pulse train (amplitudes ``amp`` at sample indices ``idx``)."""
    train = np.bincount(idx, weights=amp, minlength=nfft)[:nfft]
    out: ComplexArray = np.fft.rfft(train)
    return out


def _poisson_times(rng: np.random.Generator, rate_ctrl: FloatArray, n: int) -> IntArray:
    """Sample indices of an inhomogeneous Poisson process with rate ``rate_ctrl`` (events/s at
    the control rate)."""
    counts = rng.poisson(np.maximum(rate_ctrl, 0.0) / CTRL_HZ)
    steps = np.repeat(np.arange(rate_ctrl.size), counts)
    idx = steps * CTRL_STEP + rng.integers(0, CTRL_STEP, size=steps.size)
    out: IntArray = idx[idx < n].astype(np.int64)
    return out


# --------------------------------------------------------------------------- the grid


class _Grid:
    """The line voltage's phase (rad, v = sin(phase)) with a slow frequency drift."""

    def __init__(self, rng: np.random.Generator, n: int, line_hz: float) -> None:
        self.line_hz = line_hz
        self.n = n
        m = n // CTRL_STEP + 3
        self.t_ctrl: FloatArray = np.arange(m) / CTRL_HZ
        dev = rng.uniform(0.01, 0.05) * line_hz / 50.0
        corr = rng.uniform(5.0, 30.0) * CTRL_HZ
        freq = line_hz + dev * np.tanh(0.8 * _smooth_noise(rng, m, corr))
        self.drift_hz = float(np.max(np.abs(freq - line_hz)))
        phase0 = rng.uniform(0, 2 * np.pi)
        steps = 2 * np.pi * 0.5 * (freq[1:] + freq[:-1]) / CTRL_HZ
        self.phase_ctrl: FloatArray = phase0 + np.concatenate([[0.0], np.cumsum(steps)])
        self._phase: FloatArray | None = None
        self._index: tuple[IntArray, FloatArray] | None = None

    def phase(self) -> FloatArray:
        """Voltage phase at every sample (computed once)."""
        if self._phase is None:
            self._phase = _ctrl_to_samples(self.phase_ctrl, self.n)
        return self._phase

    def read(self, table: FloatArray) -> FloatArray:
        """A wavetable of one voltage cycle (see ``_harmonic_table``) along the clip."""
        if self._index is None:
            pos = np.mod(self.phase(), 2 * np.pi) * (TABLE_N / (2 * np.pi))
            idx = np.minimum(pos.astype(np.int64), TABLE_N - 1)
            self._index = (idx, pos - idx)
        idx, frac = self._index
        step = np.diff(table)
        out: FloatArray = table.take(idx) + frac * step.take(idx)
        return out

    def time_of_phase(self, phase: FloatArray) -> FloatArray:
        """Times (s) at which the voltage reaches ``phase`` (phase is monotonic)."""
        # outside the clip: -1 s / +1e9 s, so callers drop those pulses instead of piling
        # them up on the first or last sample
        out: FloatArray = np.interp(phase, self.phase_ctrl, self.t_ctrl, left=-1.0, right=1e9)
        return out


# --------------------------------------------------------------------------- corona


def _vonmises_table(crests: Sequence[tuple[float, float, float]]) -> FloatArray:
    """Wavetable of sum_i w_i exp(kappa_i (cos(theta - c_i) - 1)) for (c_i, kappa_i, w_i)."""
    theta = np.arange(TABLE_N + 1) * (2 * np.pi / TABLE_N)
    table = np.zeros(TABLE_N + 1)
    for centre, kappa, weight in crests:
        table += weight * np.exp(kappa * (np.cos(theta - centre) - 1.0))
    return table


@dataclass(frozen=True)
class _Path:
    """Sound path from the discharge to the microphone."""

    distance: float  # m
    absorption: float  # dB/m at 1 kHz (scales as f^1.7)
    reflection: float  # strength of one ground/steel reflection (0 = none)
    delay: float  # its extra delay (s)

    def response(self, freqs: FloatArray) -> ComplexArray:
        absorb_db = self.absorption * (freqs / 1000.0) ** 1.7 * self.distance
        out: ComplexArray = 10.0 ** (-absorb_db / 20.0) * (
            1.0 + self.reflection * np.exp(-2j * np.pi * freqs * self.delay)
        )
        return out


@dataclass(frozen=True)
class _Polarity:
    """Pulses of one half-cycle: where (crest, lead, spread), how many, how big, what shape."""

    crest: float  # rad: pi/2 positive crest, 3 pi/2 negative crest
    lead: float  # rad before the crest
    kappa: float  # von Mises concentration
    rate: float  # mean pulses per half-cycle at mean activity
    size: float  # median amplitude
    size_sigma: float  # lognormal spread of amplitudes


def _activity(rng: np.random.Generator, m: int, wet_ctrl: FloatArray | None) -> tuple[
    FloatArray, bool
]:  # fmt: skip
    """Discharge activity at the control rate (mean 1): slow lognormal swell, optional on/off
    intermittency, more when wet."""
    act = np.exp(rng.uniform(0.2, 0.9) * _smooth_noise(rng, m, rng.uniform(1.0, 10.0) * CTRL_HZ))
    if wet_ctrl is not None:
        act *= 1.0 + rng.uniform(0.0, 1.5) * wet_ctrl[:m] / max(float(wet_ctrl.mean()), 1e-9)
    intermittent = bool(rng.random() < 0.4)
    if intermittent:
        on_s, off_s = rng.uniform(2.0, 15.0), rng.uniform(1.0, 10.0)
        act *= _markov_gate(rng, m, on_s * CTRL_HZ, off_s * CTRL_HZ, min_on=0.3)
    return act / max(float(act.mean()), 1e-9), intermittent


def _pulse_kernels(
    rng: np.random.Generator, path: _Path, nfft: int
) -> tuple[ComplexArray, ComplexArray]:
    """Pulse shapes (unit energy) after propagation: streamer = N-wave (+ ringing), Trichel
    = short damped oscillation."""
    sigma_s = _loguniform(rng, 15e-6, 80e-6)
    ring_mix = rng.uniform(0.0, 0.6)
    ring_f = rng.uniform(3000.0, 9000.0)
    ring_tau = rng.uniform(0.1e-3, 0.6e-3)
    trich_f = rng.uniform(6000.0, 16000.0)
    trich_tau = rng.uniform(25e-6, 120e-6)

    def streamer(f: FloatArray) -> ComplexArray:
        ring = _unit_energy(_damped(f, ring_f, ring_tau))
        return _unit_energy(_unit_energy(_nwave(f, sigma_s)) + ring_mix * ring) * path.response(f)

    def trichel(f: FloatArray) -> ComplexArray:
        return _unit_energy(_damped(f, trich_f, trich_tau)) * path.response(f)

    return _on_grid(streamer, nfft), _on_grid(trichel, nfft)


def _pulse_train(
    rng: np.random.Generator, grid: _Grid, act: FloatArray, pol: _Polarity
) -> tuple[IntArray, FloatArray]:
    """Sample indices and amplitudes of one polarity's pulses (Poisson per half-cycle at the
    crest's activity, von Mises phases around crest - lead)."""
    cycles = np.arange(
        math.floor(float(grid.phase_ctrl[0]) / (2 * np.pi)) - 1,
        math.ceil(float(grid.phase_ctrl[-1]) / (2 * np.pi)) + 1,
    )
    crest_phase = np.asarray(2 * np.pi * cycles + pol.crest - pol.lead, dtype=np.float64)
    a = np.interp(grid.time_of_phase(crest_phase), grid.t_ctrl, act)
    counts = rng.poisson(pol.rate * a)
    phase = np.repeat(crest_phase, counts) + rng.vonmises(0.0, pol.kappa, size=int(counts.sum()))
    idx = np.rint(grid.time_of_phase(phase) * SR).astype(np.int64)
    idx = idx[(idx >= 0) & (idx < grid.n)]
    amp = pol.size * rng.lognormal(0.0, pol.size_sigma, size=idx.size)
    return idx, amp


def _corona_parts(
    rng: np.random.Generator,
    grid: _Grid,
    nfft: int,
    wet_ctrl: FloatArray | None,
) -> tuple[ComplexArray, FloatArray, Meta]:
    """Corona as (crackle spectrum for irfft(., nfft), hum in the time domain, metadata).

    The crackle spectrum holds pulses + frying after propagation; crackle and hum together
    have an arbitrary overall scale (the caller sets the level)."""
    n = grid.n
    path = _Path(
        distance=rng.uniform(5.0, 60.0),
        absorption=rng.uniform(0.003, 0.006),
        reflection=rng.uniform(0.2, 0.7) if rng.random() < 0.7 else 0.0,
        delay=rng.uniform(0.3e-3, 6e-3),
    )
    act, intermittent = _activity(rng, grid.t_ctrl.size, wet_ctrl)

    mode = int(rng.choice(3, p=[0.7, 0.15, 0.15]))  # both / Trichel only / streamers only
    streamer = _Polarity(
        crest=np.pi / 2,
        lead=math.radians(rng.uniform(0.0, 40.0)),
        kappa=rng.uniform(4.0, 25.0),
        rate={0: _loguniform(rng, 0.05, 3.0), 1: 0.0, 2: _loguniform(rng, 0.5, 6.0)}[mode],
        size=1.0,
        size_sigma=rng.uniform(0.4, 0.7),
    )
    trichel = _Polarity(
        crest=3 * np.pi / 2,
        lead=math.radians(rng.uniform(0.0, 40.0)),
        kappa=rng.uniform(2.0, 12.0),
        rate=_loguniform(rng, 3.0, 120.0) if mode != 2 else 0.0,
        size=rng.uniform(0.1, 0.5),
        size_sigma=rng.uniform(0.2, 0.4),
    )
    kernel_pos, kernel_neg = _pulse_kernels(rng, path, nfft)
    crackle = np.zeros(nfft // 2 + 1, dtype=np.complex128)
    n_pulses = 0
    p_pulses = 0.0  # mean square of the pulses at the source (kernels have unit energy)
    for pol, kernel in ((streamer, kernel_pos), (trichel, kernel_neg)):
        if pol.rate > 0:
            idx, amp = _pulse_train(rng, grid, act, pol)
            crackle += _place(idx, amp, nfft) * kernel
            n_pulses += idx.size
            p_pulses += float(np.square(amp).sum())

    # frying: noise with a crest-locked envelope, high-passed
    frying = bool(rng.random() < 0.6)
    fry_db = rng.uniform(-12.0, 3.0)
    if frying:
        table = _vonmises_table(
            [
                (streamer.crest - streamer.lead, streamer.kappa * 0.5, rng.uniform(0.2, 1.0)),
                (trichel.crest - trichel.lead, trichel.kappa * 0.5, rng.uniform(0.5, 1.0)),
            ]
        )
        env = grid.read(table) * _ctrl_to_samples(act, n)
        noise = np.zeros(nfft)
        noise[:n] = rng.standard_normal(n) * env
        corner = rng.uniform(1500.0, 3000.0)

        def fry_shape(f: FloatArray) -> ComplexArray:
            band = np.sqrt(_band(f, corner, 16000.0, 2))
            return _unit_energy(band.astype(np.complex128)) * path.response(f)

        # power at the source: the pulses' sum of squares vs the envelope's (unit-variance
        # noise through a unit-energy shape); both per unit time
        p_env = float(np.square(env).sum())
        if p_env > 0:
            gain = math.sqrt(p_pulses * _db(fry_db) ** 2 / p_env) if p_pulses > 0 else 1.0
            crackle += np.fft.rfft(noise) * (_on_grid(fry_shape, nfft) * gain)
    p_crackle = _power(crackle, nfft)

    # hum at 2k f0, phase-locked, swelling with activity (the space charge responds slowly)
    hum_on = bool(rng.random() < 0.85)
    hum_db = rng.uniform(-25.0, 0.0)
    alpha = rng.uniform(0.3, 1.8)
    odd_bias = rng.uniform(-6.0, 6.0)
    coeffs: dict[int, complex] = {}
    for k in range(1, int(rng.integers(3, 11)) + 1):
        mag = k**-alpha * rng.lognormal(0.0, 0.5) * _db(odd_bias if k % 2 else 0.0)
        h_k = complex(path.response(np.array([2.0 * k * grid.line_hz]))[0])
        coeffs[2 * k] = mag * complex(np.exp(1j * rng.uniform(0, 2 * np.pi))) * h_k
    hum = np.zeros(n)
    if hum_on:
        hum_env = np.sqrt(np.convolve(act, np.ones(50) / 50, mode="same"))
        hum = grid.read(_harmonic_table(coeffs)) * _ctrl_to_samples(hum_env, n)
        p_hum = _rms(hum) ** 2
        if p_hum > 0 and p_crackle > 0:
            hum *= math.sqrt(p_crackle * _db(hum_db) ** 2 / p_hum)

    meta: Meta = {
        "corona_distance_m": round(path.distance, 2),
        "corona_trichel_per_half_cycle": round(trichel.rate, 3),
        "corona_streamer_per_half_cycle": round(streamer.rate, 3),
        "corona_lead_deg": round(math.degrees(trichel.lead), 1),
        "corona_pulses": n_pulses,
        "corona_frying": frying,
        "corona_hum_db": round(hum_db, 2) if hum_on else "",
        "corona_intermittent": intermittent,
    }
    return crackle, hum, meta


def corona(
    rng: np.random.Generator, n: int, *, line_hz: float, level_dbfs: float
) -> npt.NDArray[np.float32]:
    """The corona component alone: ``n`` samples at 44.1 kHz, RMS ``level_dbfs`` dBFS.

    Pulses, frying and hum locked to a drifting ``line_hz`` grid, after propagation from the
    discharge to the microphone (no microphone response, no noise, not clipped: streamer
    cracks give it a crest factor of 20-35 dB): meant to be mixed into real recordings.
    Deterministic for a given generator state."""
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    grid = _Grid(rng, n, float(line_hz))
    nfft = _fast_len(n + int(PAD_S * SR))
    crackle, hum, _ = _corona_parts(rng, grid, nfft, None)
    x = np.fft.irfft(crackle, nfft)[:n] + hum
    rms = _rms(x)
    if rms > 0:
        x *= _db(level_dbfs) / rms
    return x.astype(np.float32)


# --------------------------------------------------------------------------- background


def _bed(
    rng: np.random.Generator,
    n: int,
    components: list[tuple[FloatArray, FloatArray, float]],
) -> FloatArray:
    """Gaussian noise with a time-varying power spectrum, by STFT-domain synthesis.

    ``components``: (shape over the bed bins (rows: frames, or one row), weight per frame,
    power). Each shape is normalised to unit sum per frame, so the variance the component
    contributes is ``power * weight``."""
    n_frames = n // BED_HOP + 2
    bins = BED_N // 2 + 1
    power = np.zeros((n_frames, bins), dtype=np.float32)
    for shape, weight, level in components:
        norm = (shape / np.maximum(shape.sum(axis=-1, keepdims=True), 1e-30)).astype(np.float32)
        power += (level * weight[:, None]).astype(np.float32) * norm
    power[:, 0] = 0.0
    amp = np.sqrt(power) * np.float32(BED_N / 2.0)  # var of each output sample = sum(power)
    spec = np.empty((n_frames, bins), dtype=np.complex64)
    spec.real = amp * rng.standard_normal((n_frames, bins), dtype=np.float32)
    spec.imag = amp * rng.standard_normal((n_frames, bins), dtype=np.float32)
    window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(BED_N) / BED_N)).astype(np.float32)
    frames = np.fft.irfft(spec, BED_N, axis=1) * window
    out = np.zeros((n_frames + 1, BED_HOP), dtype=np.float64)
    out[:n_frames] += frames[:, :BED_HOP]
    out[1:] += frames[:, BED_HOP:]
    result: FloatArray = out.ravel()[BED_HOP : BED_HOP + n]
    return result


def _events_envelope(
    rng: np.random.Generator, t: FloatArray, count: int, width: tuple[float, float]
) -> FloatArray:
    """Sum of ``count`` Lorentzian bumps (random centres over ``t``, widths in s), peak 1."""
    env = np.zeros(t.size)
    span = float(t[-1]) if t.size else 0.0
    for _ in range(count):
        c = rng.uniform(-0.1 * span, 1.1 * span)
        w = rng.uniform(*width)
        env += rng.uniform(0.3, 1.0) / (1.0 + ((t - c) / w) ** 2)
    peak = float(env.max()) if env.size else 0.0
    return env / peak if peak > 0 else env


def _thunder_envelope(rng: np.random.Generator, t: FloatArray, events: int) -> FloatArray:
    env = np.zeros(t.size)
    span = float(t[-1]) if t.size else 0.0
    for _ in range(events):
        t0 = rng.uniform(0.0, max(span, 1e-3))
        for _ in range(int(rng.integers(2, 6))):
            t0 += rng.uniform(0.2, 1.5)
            rise = rng.uniform(0.1, 0.5)
            decay = rng.uniform(0.5, 3.0)
            d = np.maximum(t - t0, 0.0)
            env += rng.lognormal(0.0, 0.5) * (1 - np.exp(-d / rise)) * np.exp(-d / decay)
    peak = float(env.max()) if env.size else 0.0
    return env / peak if peak > 0 else env


def _birds(rng: np.random.Generator, n: int) -> FloatArray:
    """Songs of 1-3 birds: syllables with frequency sweeps and a 2nd harmonic."""
    out = np.zeros(n)
    dur = n / SR
    for _ in range(1 + int(rng.poisson(0.8))):
        f_base = rng.uniform(1800.0, 7000.0)
        sweep = rng.uniform(300.0, 2500.0) * rng.choice([-1.0, 1.0])
        kind = int(rng.integers(0, 4))  # up/down, arch, trill, flat whistle
        syl_dur = rng.uniform(0.03, 0.25)
        gap = rng.uniform(0.03, 0.15)
        h2 = rng.uniform(0.0, 0.3)
        interval = rng.uniform(2.0, 12.0)
        t_song = rng.uniform(0.0, interval)
        while t_song < dur:
            song_amp = rng.lognormal(0.0, 0.4)
            t_syl = t_song
            for _ in range(int(rng.integers(3, 16))):
                length = int(syl_dur * rng.uniform(0.8, 1.2) * SR)
                start = int(t_syl * SR)
                if start + length >= n or length < 16:
                    break
                u = np.arange(length) / length
                if kind == 0:
                    freq = f_base + sweep * u
                elif kind == 1:
                    freq = f_base + sweep * 4 * u * (1 - u)
                elif kind == 2:
                    freq = f_base + 0.3 * sweep * np.sin(2 * np.pi * 4 * u)
                else:
                    freq = f_base + 0.05 * sweep * u
                ph = 2 * np.pi * np.cumsum(np.clip(freq, 500.0, 20000.0)) / SR
                env = np.sin(np.pi * u) ** 2
                out[start : start + length] += (
                    song_amp * env * (np.sin(ph) + h2 * np.sin(2 * ph + 0.5))
                )
                t_syl += length / SR + gap * rng.uniform(0.7, 1.3)
            t_song = t_syl + interval * rng.uniform(0.5, 1.5)
    return out


def _knocks(rng: np.random.Generator, n: int, count: int) -> FloatArray:
    """Mechanical knocks on the tower or the microphone mount (cable slap, a bird landing):
    a few loud low-frequency thumps with a broadband click, which may clip."""
    out = np.zeros(n)
    length = min(n, int(0.4 * SR))
    t = np.arange(length) / SR
    for _ in range(max(1, count)):
        f_low = rng.uniform(20.0, 150.0)
        tau = rng.uniform(0.02, 0.12)
        thump = np.exp(-t / tau) * np.sin(2 * np.pi * f_low * t)
        click = np.exp(-t / rng.uniform(0.5e-3, 3e-3)) * rng.standard_normal(length)
        start = int(rng.integers(0, n - length + 1))
        size = rng.lognormal(0.0, 0.5) * rng.choice([-1.0, 1.0])
        out[start : start + length] += size * (thump + rng.uniform(0.1, 0.6) * click)
    return out


def _insect_rate(rng: np.random.Generator, two_f: float) -> float:
    """An AM pulse rate 20-400 Hz; 30 % near (4-15 % off) but never at 2x line frequency,
    and no small multiple of it within 4 % of 2f otherwise."""
    if rng.random() < 0.3:
        return float(two_f * (1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.15)))
    rate = 20.0
    for _ in range(100):
        rate = _loguniform(rng, 20.0, 400.0)
        if all(abs(mult * rate - two_f) > 0.04 * two_f for mult in range(1, 7)):
            break
    return rate


def _insects(rng: np.random.Generator, n: int, nfft: int, two_f: float) -> tuple[FloatArray, float]:
    """A band-noise carrier (3-10 kHz) pulsed at a drifting rate, in choruses."""
    freqs = np.fft.rfftfreq(nfft, 1.0 / SR)
    fc = rng.uniform(3000.0, 10000.0)
    bw = rng.uniform(300.0, 3000.0)
    spec = (rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)) * np.exp(
        -0.5 * ((freqs - fc) / (bw / 2)) ** 2
    )
    carrier = np.fft.irfft(spec, nfft)[:n]
    rate0 = _insect_rate(rng, two_f)
    m = n // CTRL_STEP + 3
    rate = rate0 * (1.0 + rng.uniform(0.003, 0.015) * np.tanh(_smooth_noise(rng, m, 8 * CTRL_HZ)))
    theta = 2 * np.pi * np.cumsum(_ctrl_to_samples(rate, n)) / SR + rng.uniform(0, 2 * np.pi)
    sharp = rng.uniform(1.0, 8.0)
    am = (0.5 + 0.5 * np.cos(theta)) ** sharp
    if rng.random() < 0.5:  # phrases (crickets) rather than a steady chorus (cicadas)
        am *= _ctrl_to_samples(
            _markov_gate(
                rng, m, rng.uniform(0.2, 3.0) * CTRL_HZ, rng.uniform(0.2, 2.0) * CTRL_HZ, 0.2
            ),
            n,
        )
    return carrier * am, rate0


def _aeolian(
    rng: np.random.Generator, n: int, wind_s: FloatArray, wind_mean: float
) -> tuple[FloatArray, int]:
    """Strouhal tones f = 0.2 U / D of 1-3 members, drifting with the gusts, 100 Hz-2 kHz."""
    out = np.zeros(n)
    strands = int(rng.integers(1, 4))
    m = n // CTRL_STEP + 3
    for _ in range(strands):
        diameter = rng.uniform(0.002, 0.015)
        freq = np.clip(0.2 * wind_s / diameter, 0.0, 2500.0)
        fade = _band(freq, 100.0, 2000.0, 3)
        lock = 1.0 / (1.0 + np.exp(-3.0 * _smooth_noise(rng, m, rng.uniform(0.5, 4) * CTRL_HZ)))
        amp = fade * (wind_s / max(wind_mean, 0.1)) ** 2 * _ctrl_to_samples(lock, n)
        ph = 2 * np.pi * np.cumsum(freq) / SR + rng.uniform(0, 2 * np.pi)
        h2 = _db(rng.uniform(-20.0, -8.0))
        h3 = _db(rng.uniform(-30.0, -15.0))
        out += amp * (np.sin(ph) + h2 * np.sin(2 * ph) + h3 * np.sin(3 * ph))
    return out, strands


WIND_MS: Final = {
    "calm": (0.3, 2.0),
    "breezy": (3.0, 6.0),
    "windy": (7.0, 14.0),
    "rain": (1.0, 6.0),
    "storm": (8.0, 18.0),
}
WIND_DB: Final = {  # wind noise re the ambient floor
    "calm": (-8.0, 3.0),
    "breezy": (3.0, 12.0),
    "windy": (12.0, 22.0),
    "rain": (0.0, 12.0),
    "storm": (12.0, 22.0),
}
RAIN_DB: Final = {"rain": (8.0, 18.0), "storm": (12.0, 22.0)}  # else drizzle -5..+5
DROPS_PER_S: Final = {"rain": (500.0, 3000.0), "storm": (1500.0, 5000.0)}  # else 150..600
BUBBLE_BANK: Final = 5  # damped resonances 250 Hz..14 kHz, then one broadband tap
RAIN_KERNEL_P: Final = (0.0, 0.1, 0.2, 0.2, 0.0, 0.5)
RIVER_KERNEL_P: Final = (0.35, 0.4, 0.25, 0.0, 0.0, 0.0)


class _Scene:
    """What a background is built from: bed components, drop/bubble events, metadata."""

    def __init__(self, rng: np.random.Generator, grid: _Grid) -> None:
        self.rng = rng
        self.grid = grid
        self.n = grid.n
        self.m = grid.t_ctrl.size
        self.n_frames = self.n // BED_HOP + 2
        self.t_frames: FloatArray = np.arange(self.n_frames) * BED_HOP / SR
        self.fb = _rfftfreq(BED_N)
        self.comps: list[tuple[FloatArray, FloatArray, float]] = []
        self.events: list[tuple[IntArray, FloatArray, IntArray, float]] = []
        self.meta: Meta = {}

    def frames(self, x_ctrl: FloatArray) -> FloatArray:
        """A control-rate series at the bed's frame times."""
        out: FloatArray = np.interp(self.t_frames, np.arange(x_ctrl.size) / CTRL_HZ, x_ctrl)
        return out

    def bed(self, shape: FloatArray, weight: FloatArray | None, level_db: float) -> None:
        w = np.ones(self.n_frames) if weight is None else weight
        self.comps.append((shape, w, _db(level_db) ** 2))

    def drops(self, rate_ctrl: FloatArray, p: Sequence[float], sigma: float, db: float) -> None:
        idx = _poisson_times(self.rng, rate_ctrl, self.n)
        which = self.rng.choice(len(p), size=idx.size, p=p).astype(np.int64)
        amp = self.rng.lognormal(0.0, sigma, size=idx.size)
        self.events.append((idx, amp, which, _db(db) ** 2))


def _wind(scene: _Scene, weather: str) -> tuple[FloatArray, float]:
    """Gusty wind: rumble at the microphone (corner ~8 Hz per m/s, power ~U^4) and foliage
    rustle (power ~U^2.5). Returns the wind speed at the control rate and its mean."""
    rng = scene.rng
    wind_mean = rng.uniform(*WIND_MS[weather])
    gust = rng.uniform(0.15, 0.5)
    corr = rng.uniform(0.5, 4.0) * CTRL_HZ
    wind_ctrl = wind_mean * np.exp(gust * _smooth_noise(rng, scene.m, corr) - gust**2 / 2)
    level = rng.uniform(*WIND_DB[weather])
    wf = scene.frames(wind_ctrl)
    # rumble shapes for 48 corner frequencies 4..400 Hz, picked per frame
    corners = np.geomspace(4.0, 400.0, 48)
    gamma = rng.uniform(2.0, 3.5)
    fb = scene.fb
    shapes = 1.0 / (1.0 + (fb[None, :] / corners[:, None]) ** gamma) * _band(fb, 5.0, 2e4, 1)
    pick = np.clip(np.searchsorted(corners, np.maximum(8.0 * wf, 4.0)), 0, corners.size - 1)
    w_rumble = (wf / wind_mean) ** 4
    scene.bed(shapes[pick], w_rumble / w_rumble.mean(), level)
    rustle = _band(fb, rng.uniform(200.0, 600.0), rng.uniform(3000.0, 8000.0), 1)
    w_rustle = (wf / wind_mean) ** 2.5
    scene.bed(rustle, w_rustle / w_rustle.mean(), level + rng.uniform(-15.0, -6.0))
    scene.meta["wind_ms"] = round(wind_mean, 2)
    return wind_ctrl, wind_mean


def _rain(scene: _Scene, weather: str) -> FloatArray | None:
    """Rain: an intensity process driving a hiss in the bed and drop impacts (bubbles + taps).
    Returns the intensity (mean 1) at the control rate, or None when dry."""
    rng = scene.rng
    raining = weather in ("rain", "storm") or rng.random() < 0.08
    scene.meta["rain"] = raining
    if not raining:
        return None
    rain_db = rng.uniform(*RAIN_DB.get(weather, (-5.0, 5.0)))
    sig = rng.uniform(0.3, 0.8)
    wet = np.exp(sig * _smooth_noise(rng, scene.m, rng.uniform(3.0, 20.0) * CTRL_HZ))
    wet /= wet.mean()
    hiss = _band(scene.fb, rng.uniform(400.0, 1500.0), rng.uniform(6000.0, 14000.0), 1)
    scene.bed(hiss, scene.frames(wet), rain_db)
    rate = rng.uniform(*DROPS_PER_S.get(weather, (150.0, 600.0)))
    scene.drops(rate * wet, RAIN_KERNEL_P, rng.uniform(0.7, 1.0), rain_db + rng.uniform(-6, 4))
    return wet


def _water_traffic_thunder(scene: _Scene, weather: str) -> None:
    rng = scene.rng
    fb = scene.fb
    river = bool(rng.random() < 0.2)
    river_db = rng.uniform(-3.0, 12.0)
    if river:  # rush in the bed + low bubbles
        rush = _band(fb, rng.uniform(80.0, 300.0), rng.uniform(1500.0, 4000.0), 1)
        slow = np.exp(0.1 * _smooth_noise(rng, scene.n_frames, 40.0))
        scene.bed(rush, slow / slow.mean(), river_db)
        rate = np.full(scene.m, rng.uniform(200.0, 3000.0))
        scene.drops(rate, RIVER_KERNEL_P, 0.6, river_db + rng.uniform(-6.0, 0.0))
    traffic = bool(rng.random() < 0.35)
    if traffic:  # engine rumble + tyre noise, with pass-bys
        shape = _band(fb, 30.0, 250.0, 2) + 0.5 * _band(fb, 600.0, 2500.0, 1)
        passes = int(rng.poisson(max(1.0, scene.n / SR / 60 * rng.uniform(2.0, 20.0))))
        env = rng.uniform(0.1, 0.4) + _events_envelope(rng, scene.t_frames, passes, (2.0, 10.0))
        scene.bed(shape, env, rng.uniform(-8.0, 8.0))
    thunder = bool(rng.random() < {"storm": 0.8, "rain": 0.2}.get(weather, 0.03))
    if thunder:
        events = 1 + int(rng.poisson(scene.n / SR / rng.uniform(8.0, 30.0)))
        env = _thunder_envelope(rng, scene.t_frames, events)
        scene.bed(_band(fb, 15.0, rng.uniform(80.0, 200.0), 2), env, rng.uniform(5.0, 20.0))
    scene.meta.update({"river": river, "traffic": traffic, "thunder": thunder})


def _drop_spectrum(scene: _Scene, nfft: int) -> ComplexArray:
    """All drop/bubble events through the clip's resonance bank (one pulse train per kernel,
    shared by rain and river; each event set scaled to its level by its sum of squares)."""
    rng = scene.rng
    bank_f = np.geomspace(250.0, 14000.0, BUBBLE_BANK) * rng.uniform(0.9, 1.1, BUBBLE_BANK)
    bank_q = rng.uniform(8.0, 25.0, size=BUBBLE_BANK)
    tap_sigma = rng.uniform(60e-6, 200e-6)
    total = np.zeros(nfft // 2 + 1, dtype=np.complex128)
    if not scene.events:
        return total
    idx = np.concatenate([e[0] for e in scene.events])
    which = np.concatenate([e[2] for e in scene.events])
    amp = np.concatenate(
        [
            e[1] * math.sqrt(e[3] * scene.n / max(float(np.square(e[1]).sum()), 1e-30))
            for e in scene.events
        ]
    )
    for k in range(BUBBLE_BANK + 1):
        sel = which == k
        if not sel.any():
            continue

        def kernel(f: FloatArray, k: int = k) -> ComplexArray:
            if k == BUBBLE_BANK:
                return _unit_energy(_nwave(f, tap_sigma))
            f_k = float(bank_f[k])
            return _unit_energy(_damped(f, f_k, float(bank_q[k]) / (np.pi * f_k)))

        total += _place(idx[sel], amp[sel], nfft) * _on_grid(kernel, nfft)
    return total


def _layers(scene: _Scene, weather: str, wind: tuple[FloatArray, float], nfft: int) -> list[
    tuple[FloatArray, float]
]:  # fmt: skip
    """Time-domain layers (signal, level dB re the ambient floor): birds, insects, aeolian
    tones, transformer hum."""
    rng = scene.rng
    n = scene.n
    out: list[tuple[FloatArray, float]] = []
    birds = bool(rng.random() < (0.15 if weather in ("rain", "storm") else 0.45))
    if birds:
        out.append((_birds(rng, n), rng.uniform(-12.0, 6.0)))
    insects = bool(rng.random() < (0.15 if scene.meta["rain"] else 0.35))
    rate = 0.0
    if insects:
        sound, rate = _insects(rng, n, nfft, 2 * scene.grid.line_hz)
        out.append((sound, rng.uniform(-15.0, 5.0)))
    aeolian = 0
    if rng.random() < {"windy": 0.5, "storm": 0.5, "breezy": 0.3}.get(weather, 0.05):
        sound, aeolian = _aeolian(rng, n, _ctrl_to_samples(wind[0], n), wind[1])
        out.append((sound, rng.uniform(-15.0, 0.0)))
    knocks = int(rng.poisson(rng.uniform(1.0, 8.0))) if rng.random() < 0.15 else 0
    if knocks:
        out.append((_knocks(rng, n, knocks), rng.uniform(0.0, 12.0)))
    transformer = bool(rng.random() < 0.3)
    if transformer:  # steady magnetostriction hum: 2f strongest, harmonics 6-20 dB down
        coeffs = {
            2 * k: _db(-rng.uniform(6.0, 20.0) * (k > 1)) * complex(np.exp(1j * rng.uniform(0, 7)))
            for k in range(1, int(rng.integers(2, 7)))
        }
        out.append((scene.grid.read(_harmonic_table(coeffs)), rng.uniform(-20.0, -3.0)))
    scene.meta.update(
        {
            "birds": birds,
            "insects": insects,
            "insect_rate_hz": round(rate, 2) if insects else "",
            "aeolian": aeolian,
            "knocks": knocks,
            "transformer_hum": transformer,
        }
    )
    return out


def _background(
    rng: np.random.Generator, grid: _Grid, nfft: int
) -> tuple[ComplexArray, FloatArray, FloatArray | None, Meta]:
    """The healthy tower's soundscape: (drop/bubble spectrum for irfft(., nfft), the rest in
    the time domain, rain intensity at the control rate or None, metadata). Both parts are in
    the same units (the ambient floor has variance 1); the caller scales them."""
    scene = _Scene(rng, grid)
    weather = str(rng.choice(WEATHERS, p=WEATHER_P))
    scene.meta["weather"] = weather
    beta = rng.uniform(0.8, 1.5)
    scene.bed((scene.fb + 50.0) ** -beta * _band(scene.fb, 20.0, 15000.0, 1), None, 0.0)
    wind = _wind(scene, weather)
    wet = _rain(scene, weather)
    _water_traffic_thunder(scene, weather)
    td = _bed(rng, grid.n, scene.comps)
    drops = _drop_spectrum(scene, nfft)
    for sound, db in _layers(scene, weather, wind, nfft):
        p = _rms(sound) ** 2
        if p > 0:
            td += sound * (_db(db) / math.sqrt(p))
    return drops, td, wet, scene.meta


# --------------------------------------------------------------------------- microphone


def _butter_sections(order: int) -> tuple[float, ...]:
    """Q of the 2nd-order sections of a Butterworth filter of ``order`` 2 or 4."""
    return (1 / math.sqrt(2),) if order == 2 else (0.5412, 1.3066)


class _Mic:
    """A random microphone: response, gain, self-noise, mains pickup, saturation."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.low = _loguniform(rng, 20.0, 200.0)
        self.high = rng.uniform(8000.0, 18000.0)
        self.res_f = _loguniform(rng, 2000.0, 12000.0)
        self.res_db = rng.uniform(2.0, 10.0)
        self.res_q = rng.uniform(1.0, 4.0)
        self.orders = (int(rng.choice([2, 4])), int(rng.choice([2, 4])))
        self.gain_db = rng.uniform(-30.0, 10.0)
        self.hot = bool(rng.random() < 0.06)  # gain set so high that loud peaks clip
        self.hot_level = rng.uniform(-14.0, -6.0)
        self.noise_dbfs = rng.uniform(-95.0, -78.0)
        self.knee = _loguniform(rng, 50.0, 500.0)
        self.noise_seed = int(rng.integers(0, 2**63 - 1))
        self.pickup = bool(rng.random() < 0.12)
        self.pickup_db = rng.uniform(-35.0, -15.0)
        self.pickup_coeffs = {
            k: _db(-rng.uniform(0.0, 15.0) * (k > 1)) * complex(np.exp(1j * rng.uniform(0, 7)))
            for k in (1, 3, 5, 7, 9)
        }
        self.saturation = bool(rng.random() < 0.08)
        self.drive = rng.uniform(0.8, 2.0)

    def response(self, freqs: FloatArray) -> ComplexArray:
        """Analog-prototype (causal phase): Butterworth low cut and roll-off, a resonance."""
        x = 1j * freqs / self.low
        y = 1j * freqs / self.high
        h: ComplexArray = np.ones(freqs.size, dtype=np.complex128)
        for q in _butter_sections(self.orders[0]):
            h *= x * x / (x * x + x / q + 1.0)
        for q in _butter_sections(self.orders[1]):
            h *= 1.0 / (y * y + y / q + 1.0)
        p = 1j * freqs / self.res_f
        a = 10.0 ** (self.res_db / 40.0)
        h *= (p * p + p * a / self.res_q + 1.0) / (p * p + p / (a * self.res_q) + 1.0)
        return h

    def record(self, spec: ComplexArray, nfft: int, grid: _Grid, bg_dbfs: float) -> FloatArray:
        """A spectrum already through ``response`` and the gain -> self-noise, mains pickup,
        saturation, 16-bit samples (as floats in [-1, 1))."""
        freqs = _rfftfreq(nfft)
        spec = spec.copy()
        rng = np.random.default_rng(self.noise_seed)
        noise = rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)
        noise *= np.sqrt(1.0 + self.knee / np.maximum(freqs, 1.0))
        noise[0] = 0.0
        spec += noise * (_db(self.noise_dbfs) / math.sqrt(_power(noise, nfft)))
        x = np.fft.irfft(spec, nfft)[: grid.n]
        if self.pickup:
            level = _db(bg_dbfs + self.gain_db + self.pickup_db)
            x += grid.read(_harmonic_table(self.pickup_coeffs)) * level
        if self.saturation:
            x = np.tanh(self.drive * x) / self.drive
        out: FloatArray = np.clip(np.rint(x * 32768.0), -32768, 32767) / 32768.0
        return out

    def meta(self) -> Meta:
        return {
            "mic_gain_db": round(self.gain_db, 2),
            "mic_low_cut_hz": round(self.low, 1),
            "mic_high_cut_hz": round(self.high, 1),
            "mic_resonance_hz": round(self.res_f, 1),
            "mic_saturation": self.saturation,
            "mic_hot_gain": self.hot,
            "electrical_pickup": self.pickup,
        }


# --------------------------------------------------------------------------- clips


def render_clip(
    rng: np.random.Generator,
    *,
    label: str,
    duration_s: float,
    line_hz: float | None = None,
    snr_db: float | None = None,
) -> tuple[npt.NDArray[np.float32], Meta]:
    """One clip: float32 mono at 44.1 kHz in [-1, 1] (16-bit values), and what was drawn.

    ``label`` is ``normal`` or ``anomalous``; ``line_hz`` None draws 50 or 60 Hz. ``snr_db``
    (anomalous only) is the corona's power re the background's above 2 kHz as recorded;
    None draws it from -15..+12 dB. Grid, background and microphone come
    from generators that never see the label: the same generator state gives the same
    background and microphone for both labels, so only the corona differs."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}, not {label!r}")
    if not (duration_s > 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s must be a positive number, not {duration_s}")
    n = max(1, round(duration_s * SR))
    seeds = rng.integers(0, 2**63 - 1, size=4)
    rng_grid, rng_bg, rng_mic, rng_corona = (np.random.default_rng(int(s)) for s in seeds)
    if line_hz is None:
        line_hz = float(rng_grid.choice([50.0, 60.0]))
    grid = _Grid(rng_grid, n, float(line_hz))
    nfft = _fast_len(n + int(PAD_S * SR))

    drops, td, wet, bg_meta = _background(rng_bg, grid, nfft)
    ambient_dbfs = rng_bg.uniform(-55.0, -42.0)  # the ambient floor's level at the capsule
    p_bg = _rms(td) ** 2 + _power(drops, nfft)
    bg_dbfs = ambient_dbfs + 10.0 * math.log10(max(p_bg, 1e-30))
    mic = _Mic(rng_mic)
    if mic.hot:  # the background (not the corona) sets it, so both labels get it equally
        mic.gain_db = mic.hot_level - bg_dbfs
    meta: Meta = {
        "label": label,
        "duration_s": round(n / SR, 4),
        "line_hz": float(line_hz),
        "grid_drift_hz": round(grid.drift_hz, 4),
        **bg_meta,
        "bg_level_dbfs": round(bg_dbfs, 2),
    }
    h_mic = _on_grid(lambda f: mic.response(f) * _db(mic.gain_db), nfft)
    spec = (np.fft.rfft(td, nfft) + drops) * (_db(ambient_dbfs) * h_mic)
    if label == "anomalous":
        # corona at ``snr`` re the background above 2 kHz as recorded (after the microphone's
        # response); then the mix is scaled back to the background's recorded broadband
        # level, so the recorded level has the same distribution in both classes
        crackle, hum, c_meta = _corona_parts(rng_corona, grid, nfft, wet)
        snr = float(rng_corona.uniform(-15.0, 12.0)) if snr_db is None else float(snr_db)
        c_spec = (crackle + np.fft.rfft(hum, nfft)) * h_mic
        hf = slice(math.ceil(SNR_BAND_HZ * nfft / SR), None)
        p_b, p_c = _power(spec, nfft), _power(c_spec, nfft)
        pb_hf, pc_hf = _power(spec[hf], nfft), _power(c_spec[hf], nfft)
        if pc_hf > 0 and pb_hf > 0 and p_b > 0:
            k2 = pb_hf * _db(snr) ** 2 / pc_hf
            spec += c_spec * math.sqrt(k2)
            spec *= math.sqrt(p_b / (p_b + k2 * p_c))
        meta.update(c_meta)
        meta["snr_db"] = round(snr, 2)
    out = mic.record(spec, nfft, grid, bg_dbfs).astype(np.float32)
    meta.update(mic.meta())
    meta["level_dbfs"] = round(level_dbfs(out), 2)
    meta["clipped"] = round(float(np.mean(np.abs(out) >= 0.999)), 6)
    return out, meta


def level_dbfs(x: npt.NDArray[np.floating]) -> float:
    """RMS re full scale in dB (a full-scale sine is -3.0), floored at -120."""
    rms = math.sqrt(float(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    return 20.0 * math.log10(rms) if rms > 1e-6 else -120.0


def envelope_2f_db(x: npt.NDArray[np.floating], line_hz: float, band_hz: float = 2000.0) -> float:
    """How strongly the energy above ``band_hz`` is modulated at 2x ``line_hz``, in dB.

    High-pass (FFT mask), square, average over 32-sample blocks, Hann-windowed spectrum of
    that envelope; the mean power within +-0.3 Hz of 2f (room for the grid's drift) over the
    mean power 1-8 Hz either side of it. About 0 dB without modulation."""
    x64 = np.asarray(x, dtype=np.float64)
    n = x64.size
    nfft = _fast_len(n)
    spec = np.fft.rfft(x64, nfft)
    spec[_rfftfreq(nfft) < band_hz] = 0.0
    hp = np.fft.irfft(spec, nfft)[:n]
    block = 32
    env = np.square(hp[: n // block * block]).reshape(-1, block).mean(axis=1)
    if env.size < 16:
        return 0.0
    env = (env - env.mean()) * np.hanning(env.size)
    env_spec = np.square(np.abs(np.fft.rfft(env)))
    offset = np.abs(np.fft.rfftfreq(env.size, block / SR) - 2.0 * line_hz)
    peak = env_spec[offset <= 0.3]
    side = env_spec[(offset >= 1.0) & (offset <= 8.0)]
    if peak.size == 0 or side.size == 0:
        return 0.0
    return 10.0 * math.log10(max(float(peak.mean()), 1e-300) / max(float(side.mean()), 1e-300))


# --------------------------------------------------------------------------- dataset


def write_dataset(
    out: Path,
    *,
    normal: int,
    anomalous: int,
    seed: int,
    duration_s: tuple[float, float] = (30.0, 60.0),
) -> Path:
    """Write ``out/normal/*.wav``, ``out/anomalous/*.wav`` (44.1 kHz mono PCM_16) and
    ``out/manifest.csv``; return the manifest's path. Each file has its own generator, seeded
    from (seed, label, index), so the same seed gives byte-identical files."""
    if normal < 0 or anomalous < 0:
        raise ValueError("normal and anomalous must be >= 0")
    lo, hi = (float(d) for d in duration_s)
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ValueError(f"duration_s must be (min, max) with 0 < min <= max, not {duration_s}")
    rows: list[Meta] = []
    for label, count in (("normal", normal), ("anomalous", anomalous)):
        (out / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, LABELS.index(label), i])
            dur = float(rng.uniform(lo, hi))
            audio, meta = render_clip(rng, label=label, duration_s=dur)
            rel = f"{label}/othersim_{label}_{i:04d}.wav"
            pcm = np.clip(np.rint(audio.astype(np.float64) * 32768.0), -32768, 32767)
            sf.write(out / rel, pcm.astype(np.int16), SR, subtype="PCM_16", format="WAV")
            rows.append({"file": rel, **meta})
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in MANIFEST_COLUMNS})
    return manifest


def _stats(out: Path, manifest: Path) -> None:
    """Per-class level and 2f-modulation statistics of a written dataset."""
    with manifest.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    print(f"{'file':<40} {'label':<10} {'level dBFS':>10} {'2f env dB':>10} {'snr dB':>7}")
    per: dict[str, list[tuple[float, float]]] = {label: [] for label in LABELS}
    for row in rows:
        audio, _ = sf.read(out / row["file"], dtype="float32")
        lvl = level_dbfs(audio)
        mod = envelope_2f_db(audio, float(row["line_hz"]))
        per[row["label"]].append((lvl, mod))
        print(f"{row['file']:<40} {row['label']:<10} {lvl:>10.1f} {mod:>10.1f} {row['snr_db']:>7}")
    print()
    print(f"{'class':<10} {'n':>4} {'level median [min, max]':>28} {'2f env dB median':>17}"
          f" {'> 6 dB':>7}")  # fmt: skip
    for label, vals in per.items():
        if not vals:
            continue
        lv = np.array([v[0] for v in vals])
        md = np.array([v[1] for v in vals])
        print(
            f"{label:<10} {lv.size:>4} {np.median(lv):>10.1f} [{lv.min():>6.1f}, {lv.max():>6.1f}]"
            f" {np.median(md):>17.1f} {np.mean(md > 6.0):>7.0%}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.othersim OUT --normal N --anomalous M --seed S``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.othersim",
        description="Write an independent synthetic tower-audio set (for transfer benchmarks).",
    )
    parser.add_argument("out", type=Path, help="output directory (new or empty)")
    parser.add_argument("--normal", type=int, required=True, help="number of normal files")
    parser.add_argument("--anomalous", type=int, required=True, help="number of corona files")
    parser.add_argument("--seed", type=int, required=True, help="seed (same seed, same bytes)")
    parser.add_argument(
        "--duration",
        type=float,
        nargs=2,
        default=(30.0, 60.0),
        metavar=("MIN_S", "MAX_S"),
        help="file length range in seconds (default 30 60)",
    )
    parser.add_argument("--stats", action="store_true", help="print per-class statistics")
    args = parser.parse_args(argv)
    if args.normal < 0 or args.anomalous < 0:
        parser.error("--normal and --anomalous must be >= 0")
    if args.normal + args.anomalous == 0:
        parser.error("nothing to write: --normal and --anomalous are both 0")
    lo, hi = args.duration
    if not (0 < lo <= hi <= 3600):
        parser.error(f"--duration: need 0 < MIN_S <= MAX_S <= 3600, got {lo:g} {hi:g}")
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        parser.error(f"{out}: exists and is not an empty directory")
    try:
        manifest = write_dataset(
            out, normal=args.normal, anomalous=args.anomalous, seed=args.seed, duration_s=(lo, hi)
        )
        if args.stats:
            _stats(out, manifest)
    except (OSError, sf.LibsndfileError) as exc:
        print(f"othersim: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.normal + args.anomalous} files and {manifest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
