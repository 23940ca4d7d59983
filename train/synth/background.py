"""Background sounds a tower microphone hears with or without corona (the confounders).

Each function returns n float32 samples at a nominal level (unit RMS over the file for steady
sources, unit peak for sparse ones) and draws only from the Generator it is given; the scene
sets their levels. Several imitate parts of corona on purpose: rain clicks (impulsive, broadband,
but not line-locked), crickets and birds (high-frequency), normal transformer hum (at the line
frequency's harmonics, but without crackle).
"""

from __future__ import annotations

import numpy as np

from daemon.constants import SAMPLE_RATE
from train.synth import signals

_HUM_HARMONICS = 6
_N_DROP_KERNELS = 3


def ambient(rng: np.random.Generator, n: int, *, self_noise_rel_db: float) -> np.ndarray:
    """Pinkish outdoor air noise plus the microphone self-noise (white, self_noise_rel_db below)."""
    pink = signals.product(signals.tilt(-3.0), signals.band(20.0, 16000.0, 2.0))
    white = signals.db(self_noise_rel_db) * 0.1  # pink is ~10x white at 1 kHz after unit RMS

    def response(f: np.ndarray) -> np.ndarray:
        return np.sqrt(pink(f) ** 2 + white**2)

    return signals.shaped_noise(rng, n, response)


def hum(rng: np.random.Generator, n: int, *, line_hz: float, phase_rad: float) -> np.ndarray:
    """Normal line/transformer hum: harmonics of the line frequency, steady, no crackle."""
    amplitudes = rng.uniform(0.0, 1.0, _HUM_HARMONICS) * 0.7 ** np.arange(_HUM_HARMONICS)
    amplitudes[rng.integers(0, 2)] = 1.0  # mains pickup (f) or transformer magnetostriction (2f)
    phases = rng.uniform(0, 2 * np.pi, _HUM_HARMONICS)
    return signals.unit_rms(signals.harmonics(n, line_hz, amplitudes, phases + phase_rad))


def wind(rng: np.random.Generator, n: int) -> np.ndarray:
    """Low-frequency turbulence on the microphone with slow gusts."""
    cutoff_hz = float(np.exp(rng.uniform(np.log(60.0), np.log(600.0))))
    response = signals.product(signals.tilt(-4.0), signals.band(10.0, cutoff_hz, 2.0))
    gusts = signals.slow_envelope(
        rng, n, depth_db=float(rng.uniform(4, 12)), timescale_s=float(rng.uniform(0.8, 5))
    )
    return signals.unit_rms(signals.shaped_noise(rng, n, response) * gusts)


def rain(rng: np.random.Generator, n: int) -> np.ndarray:
    """Drops hitting surfaces (random clicks and plinks, not line-locked) over a diffuse patter."""
    rate_hz = float(np.exp(rng.uniform(np.log(15.0), np.log(600.0))))
    count = int(rng.poisson(rate_hz * n / SAMPLE_RATE))
    positions = rng.integers(0, n, count)
    amplitudes = rng.lognormal(0.0, 0.8, count)
    which = rng.integers(0, _N_DROP_KERNELS, count)
    # One click shape and a few ringing tones (drops on leaves, metal, the microphone's cover).
    kernels = [signals.decaying_click(rng, float(rng.uniform(40e-6, 400e-6)), differentiate=False)]
    for _ in range(_N_DROP_KERNELS - 1):
        freq_hz, tau_s = float(rng.uniform(1000, 6000)), float(rng.uniform(1e-3, 6e-3))
        kernels.append(signals.damped_tone(freq_hz, tau_s))
    drops = signals.unit_rms(signals.impulse_response_sum(n, positions, amplitudes, which, kernels))
    patter_response = signals.product(signals.tilt(-2.0), signals.band(300.0, 14000.0, 1.0))
    patter = signals.shaped_noise(rng, n, patter_response)
    return signals.unit_rms(drops + float(rng.uniform(0.2, 1.0)) * patter)


def birds(rng: np.random.Generator, n: int) -> np.ndarray:
    """Phrases of chirps: short frequency sweeps between 2 and 8 kHz (unit peak)."""
    out = np.zeros(n, dtype=np.float32)
    n_phrases = int(rng.poisson(n / SAMPLE_RATE / rng.uniform(3.0, 15.0))) + 1
    for _ in range(n_phrases):
        pos = int(rng.integers(0, n))
        f_low, f_high = np.sort(rng.uniform(2000.0, 8000.0, 2))
        for _ in range(int(rng.integers(2, 12))):
            chirp_n = int(rng.uniform(0.03, 0.25) * SAMPLE_RATE)
            if pos + chirp_n >= n:
                break
            start, stop = (f_low, f_high) if rng.random() < 0.5 else (f_high, f_low)
            freq = np.linspace(start, stop, chirp_n) * (
                1 + 0.03 * np.sin(np.linspace(0, 9, chirp_n))
            )
            phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
            shape = np.sin(np.linspace(0, np.pi, chirp_n)) ** 2
            chirp = shape * (np.sin(phase) + 0.2 * np.sin(2 * phase))
            out[pos : pos + chirp_n] += float(rng.uniform(0.3, 1.0)) * chirp.astype(np.float32)
            pos += chirp_n + int(rng.uniform(0.02, 0.15) * SAMPLE_RATE)
    return out


def traffic(rng: np.random.Generator, n: int) -> np.ndarray:
    """A distant road: a steady low rumble plus vehicles passing every few tens of seconds."""
    rumble = signals.shaped_noise(
        rng, n, signals.product(signals.tilt(-6.0), signals.band(20.0, 300.0, 2.0))
    )
    # Vehicle passes as a control-rate envelope (smooth over seconds), then stretched to audio.
    t_s = np.arange(signals.n_control(n)) * (signals.CONTROL_STEP / SAMPLE_RATE)
    passing = np.zeros(t_s.size)
    for _ in range(int(rng.poisson(n / SAMPLE_RATE / 20.0)) + 1):
        centre_s, width_s = rng.uniform(0, n / SAMPLE_RATE), rng.uniform(1.5, 6.0)
        passing += float(rng.uniform(0.5, 3.0)) / (1.0 + ((t_s - centre_s) / width_s) ** 2)
    passing = signals.control_to_audio(passing, n)
    pass_noise = signals.shaped_noise(
        rng, n, signals.product(signals.tilt(-4.0), signals.band(40.0, 3000.0, 1.5))
    )
    return signals.unit_rms(0.5 * rumble + pass_noise * passing)


def people(rng: np.random.Generator, n: int) -> np.ndarray:
    """Speech-like utterances: voiced syllables (glottal pulses through vowel formants)."""
    out = np.zeros(n, dtype=np.float32)
    for _ in range(int(rng.poisson(n / SAMPLE_RATE / 12.0)) + 1):
        pos = int(rng.integers(0, n))
        f0_hz = float(rng.uniform(90.0, 250.0))
        for _ in range(int(rng.integers(3, 15))):
            syl_n = int(rng.uniform(0.08, 0.3) * SAMPLE_RATE)
            if pos + syl_n >= n:
                break
            f0 = f0_hz * (1 + 0.1 * np.linspace(rng.uniform(-1, 1), rng.uniform(-1, 1), syl_n))
            pulses = np.diff(np.floor(np.cumsum(f0) / SAMPLE_RATE), prepend=0.0)
            f = signals.freqs_hz(syl_n)
            formants = np.zeros_like(f)
            for centre_hz, width_hz in (
                (rng.uniform(300, 850), 90.0),
                (rng.uniform(900, 2400), 120.0),
                (rng.uniform(2400, 3200), 160.0),
            ):
                formants += 1.0 / (1.0 + ((f - centre_hz) / width_hz) ** 2)
            spectrum = np.fft.rfft(pulses) * formants * signals.tilt(-6.0, 200.0)(f)
            voiced = np.fft.irfft(spectrum, syl_n) * np.sin(np.linspace(0, np.pi, syl_n))
            out[pos : pos + syl_n] += voiced.astype(np.float32)
            pos += syl_n + int(rng.uniform(0.03, 0.2) * SAMPLE_RATE)
    peak = float(np.max(np.abs(out)))
    return out / peak if peak > 0 else out


def insects(rng: np.random.Generator, n: int) -> np.ndarray:
    """A cricket: a 3-8 kHz carrier pulsed tens of times a second, in chirps (unit RMS)."""
    sine = np.sin(2 * np.pi * signals.period_grid())
    carrier = signals.periodic(n, float(rng.uniform(3000.0, 8000.0)), sine)
    # |sin|^8 has two sharp pulses per period, so it runs at half the pulse rate.
    pulse = signals.periodic(n, float(rng.uniform(15.0, 60.0)) / 2, np.abs(sine) ** 8)
    chirps = signals.gate(rng, n, on_fraction=float(rng.uniform(0.3, 0.8)), mean_segment_s=0.4)
    return signals.unit_rms(carrier * pulse * chirps)
