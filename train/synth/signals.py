"""Signal primitives for the synthesizer: shaped noise, slow envelopes, impulse trains, tones.

Everything is float32, vectorised, and draws only from the Generator it is given, so a caller
that passes the same Generator state gets the same samples. Lengths should be FFT-friendly
(`fast_length`); the scene crops to the requested length at the end.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from daemon.constants import SAMPLE_RATE

FloatArray = np.ndarray
Response = Callable[[np.ndarray], np.ndarray]
"""Magnitude response: frequencies in Hz -> linear gain, same shape."""

_ENVELOPE_RATE_HZ = 50.0
"""Control rate of slow envelopes; fine enough for gusts and bursts of a few hundred ms."""

CONTROL_STEP = round(SAMPLE_RATE / _ENVELOPE_RATE_HZ)
"""Audio samples per control-rate value (882)."""

_PERIOD_TABLE_BITS = 14
_PERIOD_TABLE_SIZE = 1 << _PERIOD_TABLE_BITS
"""Entries in one period of a tabulated periodic waveform (hum, buzz, crest modulation)."""
_PHASE_BITS = 32
_PHASE_ONE = 1 << _PHASE_BITS
"""One full cycle in the oscillator's fixed-point phase."""
_NOISE_FRAME = 8192
"""Frame of random-phase noise synthesis: 186 ms, spectral detail down to about 11 Hz."""
_OLA_FFT_SIZE = 8192
"""FFT size of block-wise convolution (cache-friendly)."""


def fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n, so FFTs of arbitrary clip lengths stay fast."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def freqs_hz(n: int) -> FloatArray:
    """Frequencies of the rfft bins of an n-sample signal at SAMPLE_RATE."""
    return np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE).astype(np.float32)


def shaped_noise(rng: np.random.Generator, n: int, response: Response) -> FloatArray:
    """Gaussian noise with the given magnitude response (to ~11 Hz resolution), unit RMS.

    Random-phase overlap-add: each frame is the inverse FFT of a random spectrum shaped by the
    response, windowed by a periodic sqrt-Hann and overlapped by half, which keeps the variance
    constant. One small inverse FFT per half frame is cheaper than filtering white noise.
    """
    size, hop = _NOISE_FRAME, _NOISE_FRAME // 2
    n_frames = -(-n // hop) + 1
    magnitude = response(freqs_hz(size)).astype(np.float32)
    # Uniform draws are 3x cheaper than normal ones; thousands of them summed by the inverse
    # FFT make each output sample Gaussian anyway (central limit theorem).
    parts = rng.random((n_frames, size + 2), dtype=np.float32)
    parts -= np.float32(0.5)
    spectra = parts.view(np.complex64)
    spectra *= magnitude
    frames = np.fft.irfft(spectra, size, axis=1)
    frames *= np.sqrt(np.hanning(size + 1)[:-1]).astype(np.float32)
    out = frames[:, :hop].copy()
    out[1:] += frames[:-1, hop:]
    return unit_rms(out.ravel()[hop : hop + n])


def convolve_sum(xs: list[np.ndarray], kernels: list[np.ndarray]) -> FloatArray:
    """sum_k convolve(xs[k], kernels[k]) cut to len(xs[0]), by block-wise FFT (overlap-add).

    Blocks of a few thousand samples keep the FFTs in cache: several times faster than one
    FFT over a whole clip, and the cost grows linearly with the clip's length.
    """
    n = xs[0].size
    longest = max(k.size for k in kernels)
    nfft = _OLA_FFT_SIZE
    while nfft < 4 * longest:
        nfft *= 2
    block = nfft - longest + 1
    n_blocks = -(-n // block)
    total = np.zeros((n_blocks, nfft // 2 + 1), dtype=np.complex64)
    for x, kernel in zip(xs, kernels, strict=True):
        padded = np.zeros(n_blocks * block, dtype=np.float32)
        padded[:n] = x
        blocks = np.fft.rfft(padded.reshape(n_blocks, block), nfft, axis=1)
        total += blocks * np.fft.rfft(kernel.astype(np.float32), nfft)
    y = np.fft.irfft(total, nfft, axis=1)
    out = np.zeros((n_blocks + 1) * block, dtype=np.float32)
    out[: n_blocks * block] += y[:, :block].ravel()
    tails = np.zeros((n_blocks, block), dtype=np.float32)
    tails[:, : nfft - block] = y[:, block:]
    out[block:] += tails.ravel()
    return out[:n]


def unit_rms(x: FloatArray) -> FloatArray:
    """x scaled to RMS 1 (unchanged when silent)."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return (x / rms).astype(np.float32) if rms > 0 else x.astype(np.float32)


def band(low_hz: float, high_hz: float, order: float = 2.0) -> Response:
    """Smooth band-pass magnitude (Butterworth-like skirts of `order`); 0 or inf disables a side."""

    def response(f: np.ndarray) -> np.ndarray:
        g = np.ones_like(f)
        if low_hz > 0:
            g /= np.sqrt(1.0 + (low_hz / np.maximum(f, 1e-3)) ** (2 * order))
        if np.isfinite(high_hz):
            g /= np.sqrt(1.0 + (f / high_hz) ** (2 * order))
        return g

    return response


def tilt(slope_db_per_octave: float, ref_hz: float = 1000.0) -> Response:
    """Spectral tilt: 0 white, -3 pink, -6 brown (per octave, relative to ref_hz)."""

    def response(f: np.ndarray) -> np.ndarray:
        gains: np.ndarray = (np.maximum(f, 10.0) / ref_hz) ** (slope_db_per_octave / 6.0206)
        return gains

    return response


def product(*responses: Response) -> Response:
    """The cascade of several magnitude responses."""

    def response(f: np.ndarray) -> np.ndarray:
        g = np.ones_like(f)
        for r in responses:
            g = g * r(f)
        return g

    return response


def slow_envelope(
    rng: np.random.Generator, n: int, *, depth_db: float, timescale_s: float
) -> FloatArray:
    """A positive, log-normally fluctuating gain (mean about 1) that changes over timescale_s."""
    n_ctrl = n_control(n)
    z = rng.standard_normal(n_ctrl)
    # One-pole smoothing at the control rate, started in its stationary state and scaled by its
    # theoretical (not the sample) spread, so a short clip is a calm stretch of the same process.
    a = float(np.exp(-1.0 / max(timescale_s * _ENVELOPE_RATE_HZ, 1.0)))
    stationary_std = np.sqrt((1.0 - a) / (1.0 + a))
    smooth = np.empty_like(z)
    acc = z[0] * stationary_std
    for i, v in enumerate(z):  # control rate: a few thousand steps at most
        acc = a * acc + (1.0 - a) * v
        smooth[i] = acc
    smooth /= stationary_std
    gain_db = depth_db * smooth
    return control_to_audio(10.0 ** (gain_db / 20.0), n)


def gate(
    rng: np.random.Generator,
    n: int,
    *,
    on_fraction: float,
    mean_segment_s: float,
    min_on_fraction: float = 0.0,
) -> FloatArray:
    """An on/off gain (0 or 1, 20 ms ramps): alternating exponential segments, on_fraction on.

    When the draw leaves it on for less than min_on_fraction of the time, one random stretch of
    that length is switched on (a labelled source must not vanish from a short clip).
    """
    n_ctrl = n_control(n)
    values = np.zeros(n_ctrl)
    pos = 0
    on = bool(rng.random() < on_fraction)
    while pos < n_ctrl:
        frac = on_fraction if on else 1.0 - on_fraction
        length = max(1, int(rng.exponential(2.0 * mean_segment_s * frac) * _ENVELOPE_RATE_HZ))
        values[pos : pos + length] = 1.0 if on else 0.0
        pos += length
        on = not on
    if values.mean() < min_on_fraction:
        length = int(np.ceil(min_on_fraction * n_ctrl))
        start = int(rng.integers(0, n_ctrl - length + 1))
        values[start : start + length] = 1.0
    return control_to_audio(values, n)


def n_control(n: int) -> int:
    """Control-rate values needed to cover n audio samples (both ends included)."""
    return -(-n // CONTROL_STEP) + 1


def control_to_audio(values: np.ndarray, n: int) -> FloatArray:
    """Linear interpolation of a control-rate sequence to n audio samples."""
    step = CONTROL_STEP
    v = values[: n_control(n)].astype(np.float32)
    frac = np.arange(step, dtype=np.float32) / step
    ramps = v[:-1, None] + (v[1:] - v[:-1])[:, None] * frac[None, :]
    return ramps.ravel()[:n]


def impulse_response_sum(
    n: int,
    positions: np.ndarray,
    amplitudes: np.ndarray,
    which: np.ndarray,
    kernels: list[np.ndarray],
) -> FloatArray:
    """Sum over events of amplitude * kernels[which] placed at the (integer) positions."""
    if positions.size == 0:
        return np.zeros(n, dtype=np.float32)
    trains = [
        np.bincount(positions[which == k], weights=amplitudes[which == k], minlength=n)[:n]
        for k in range(len(kernels))
    ]
    return convolve_sum([t.astype(np.float32) for t in trains], kernels)


def decaying_click(rng: np.random.Generator, tau_s: float, *, differentiate: bool) -> FloatArray:
    """A noise burst with exponential decay tau_s (peak 1); differentiated for a brighter click."""
    length = max(4, int(6 * tau_s * SAMPLE_RATE) + 2)
    t = np.arange(length) / SAMPLE_RATE
    burst = rng.standard_normal(length) * np.exp(-t / tau_s)
    burst[0] = abs(burst[0]) + 1.0  # a sharp onset, as a discharge's pressure step has
    if differentiate:
        burst = np.diff(burst, prepend=0.0)
    shaped: np.ndarray = (burst / np.max(np.abs(burst))).astype(np.float32)
    return shaped


def damped_tone(freq_hz: float, tau_s: float) -> FloatArray:
    """A decaying sinusoid (a droplet's ringing, a resonance)."""
    length = max(4, int(5 * tau_s * SAMPLE_RATE))
    t = np.arange(length) / SAMPLE_RATE
    return (np.sin(2 * np.pi * freq_hz * t) * np.exp(-t / tau_s)).astype(np.float32)


def harmonics(
    n: int, fundamental_hz: float, amplitudes: np.ndarray, phases: np.ndarray
) -> FloatArray:
    """Sum of sinusoids at k * fundamental_hz (k = 1..len(amplitudes))."""
    x = period_grid()
    table = np.zeros(_PERIOD_TABLE_SIZE)
    for k, (amp, ph) in enumerate(zip(amplitudes, phases, strict=True), start=1):
        table += amp * np.sin(2 * np.pi * k * x + ph)
    return periodic(n, fundamental_hz, table)


def periodic(n: int, frequency_hz: float, table: np.ndarray, phase_rad: float = 0.0) -> FloatArray:
    """A waveform repeating `table` (one period) frequency_hz times a second.

    A 32-bit phase accumulator indexes the table (a numerically controlled oscillator): integer
    arithmetic stays exact over hours, and a lookup costs the same however many harmonics the
    table holds.
    """
    step = round(frequency_hz / SAMPLE_RATE * _PHASE_ONE)
    start = round((phase_rad / (2 * np.pi)) % 1.0 * _PHASE_ONE)
    phase = (np.arange(n, dtype=np.int64) * step + start) & (_PHASE_ONE - 1)
    index = phase >> (_PHASE_BITS - _PERIOD_TABLE_BITS)
    samples: np.ndarray = np.asarray(table, dtype=np.float32)[index]
    return samples


def period_grid() -> np.ndarray:
    """Phases (in cycles, 0 <= x < 1) of the entries of a `periodic` table."""
    return np.arange(_PERIOD_TABLE_SIZE) / _PERIOD_TABLE_SIZE


def db(x: float) -> float:
    """dB to linear amplitude."""
    return float(10.0 ** (x / 20.0))
