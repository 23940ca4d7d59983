"""daemon.analyse.physics: each value measures what its docstring says, streamed equals batch
exactly."""

import numpy as np
import numpy.typing as npt
import pytest

from daemon.analyse.physics import (
    ENVELOPE_BLOCK,
    Measurement,
    PhysicsAccumulator,
    check_line_setting,
    measure,
)
from daemon.constants import SAMPLE_RATE
from daemon.listen.windows import Windower

SECONDS = 6.0
N = round(SECONDS * SAMPLE_RATE)
TIME_S = np.arange(N) / SAMPLE_RATE


def noise(seed: int = 0, level: float = 0.05) -> npt.NDArray[np.float32]:
    return (level * np.random.default_rng(seed).standard_normal(N)).astype(np.float32)


def crest_modulated(line_hz: float, depth: float = 0.8, seed: int = 1) -> npt.NDArray[np.float32]:
    """White noise whose amplitude swells at both voltage crests of every cycle (2f)."""
    swell = 1.0 - depth + depth * np.abs(np.sin(2 * np.pi * line_hz * TIME_S)) ** 4
    return (noise(seed) * swell).astype(np.float32)


def clicks(times_s: npt.NDArray[np.float64], seed: int = 2) -> npt.NDArray[np.float32]:
    """Short decaying broadband clicks at the given times over faint noise."""
    out = noise(seed, level=0.002).astype(np.float64)
    kernel = np.exp(-np.arange(20) / 4.0) * np.random.default_rng(seed).standard_normal(20)
    for t in times_s:
        start = int(t * SAMPLE_RATE)
        out[start : start + 20] += 0.3 * kernel[: max(0, min(20, N - start))]
    return out.astype(np.float32)


def test_unmodulated_noise_reads_neutral() -> None:
    physics = measure(noise()).select("auto")
    assert physics.mod_db < 8.0
    assert physics.mod_depth < 0.05
    assert physics.hum_db < 8.0
    assert 0.2 < physics.crackle_db < 1.0  # white hiss: about 0.5 dB, whatever its level


@pytest.mark.parametrize("line_hz", [50, 60])
def test_crest_modulated_hiss_is_line_locked_at_its_own_grid(line_hz: int) -> None:
    measurement = measure(crest_modulated(line_hz))
    physics = measurement.select("auto")
    assert physics.line_hz == line_hz
    assert physics.mod_db > 20.0
    assert physics.mod_depth > 0.3
    other = measurement.select(110 - line_hz)  # type: ignore[arg-type]
    assert other.mod_db < 8.0  # 100 Hz modulation says nothing at 120 Hz and vice versa


def test_off_grid_modulation_is_not_line_locked() -> None:
    """An insect buzzing at 107 Hz modulates the high band, but not at 2f of either grid."""
    physics = measure(crest_modulated(53.5)).select("auto")
    assert physics.mod_db < 8.0


def test_a_cricket_whose_harmonic_lands_on_2f_shows_its_own_period() -> None:
    """Pulses at 33.3 Hz put their 3rd harmonic on 100 Hz (mod_db high), but also lines at
    33.3 and 66.7 Hz where corona, periodic at the line's own period, has none (sub_db)."""
    pulses = np.abs(np.sin(np.pi * (100.0 / 3) * TIME_S)) ** 32  # sharp pulses at 33.3 Hz
    cricket = measure((noise(4) * pulses).astype(np.float32)).select(50)
    corona = measure(crest_modulated(50)).select(50)
    assert cricket.mod_db > 15.0
    assert cricket.sub_db > 15.0
    assert corona.mod_db > 20.0
    assert corona.sub_db < 8.0


def test_tonal_hum_at_twice_line_frequency() -> None:
    hum = 0.02 * np.sin(2 * np.pi * 120.0 * TIME_S) + 0.01 * np.sin(2 * np.pi * 240.0 * TIME_S)
    physics = measure((noise(level=0.01) + hum).astype(np.float32)).select("auto")
    assert physics.line_hz == 60
    assert physics.hum_db > 15.0
    assert physics.mod_db < 8.0  # a steady tone is removed by the high band


def test_crest_locked_clicks_versus_random_clicks() -> None:
    """Both are impulsive (crackle); only clicks at the voltage crests are line-locked."""
    crests = np.arange(0.0025, SECONDS - 0.01, 0.01)  # every half-cycle of 50 Hz
    rng = np.random.default_rng(3)
    random_times = np.sort(rng.uniform(0.0, SECONDS - 0.01, crests.size))
    locked = measure(clicks(crests)).select("auto")
    scattered = measure(clicks(random_times)).select("auto")
    assert locked.crackle_db > 10.0
    assert scattered.crackle_db > 10.0
    assert locked.mod_db > 20.0
    assert scattered.mod_db < 8.0


def test_values_do_not_depend_on_gain() -> None:
    signal = crest_modulated(50)
    loud = measure(signal).to_array()
    quiet = measure((signal * np.float32(0.001)).astype(np.float32)).to_array()
    np.testing.assert_allclose(quiet, loud, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("block", [1, 31, 33, 4410, 65536])
def test_streamed_equals_batch_exactly(block: int) -> None:
    signal = crest_modulated(60)[: round(1.7 * SAMPLE_RATE)]
    accumulator = PhysicsAccumulator()
    for first in range(0, signal.shape[0], block):
        accumulator.push(signal[first : first + block])
    assert np.array_equal(accumulator.finish().to_array(), measure(signal).to_array())


def test_windower_physics_equal_measure_on_each_window() -> None:
    signal = crest_modulated(50)
    windower = Windower(length_s=2.0, hop_s=1.5)
    rng = np.random.default_rng(5)
    windows = []
    first = 0
    while first < signal.shape[0]:
        size = int(rng.integers(1, 30000))
        windows.extend(windower.push(signal[first : first + size]))
        first += size
    tail = windower.flush()
    windows += [tail] if tail is not None else []
    assert len(windows) >= 3
    for window in windows:
        own = signal[window.start_sample : window.end_sample]
        assert np.array_equal(window.physics.to_array(), measure(own).to_array())


@pytest.mark.parametrize("n", [1, 2, 3, ENVELOPE_BLOCK + 2, 64 * ENVELOPE_BLOCK - 1])
def test_too_short_for_a_spectrum_reads_neutral(n: int) -> None:
    physics = measure(noise()[:n]).select(50)
    assert (physics.mod_db, physics.mod_depth, physics.hum_db) == (0.0, 0.0, 0.0)
    assert np.isfinite(physics.crackle_db)


def test_digital_silence_and_dc_read_neutral() -> None:
    for signal in (np.zeros(N, np.float32), np.full(N, 0.3, np.float32)):
        values = measure(signal).to_array()
        assert np.all(np.isfinite(values))
        physics = measure(signal).select("auto")
        assert physics.mod_db == 0.0
        assert physics.mod_depth == 0.0
        assert physics.crackle_db == 0.0


def test_measurement_round_trips_through_its_array() -> None:
    measurement = measure(crest_modulated(50))
    assert Measurement.from_array(measurement.to_array()) == measurement
    with pytest.raises(ValueError, match="expected 9 values"):
        Measurement.from_array([1.0, 2.0])


def test_line_setting_is_checked() -> None:
    assert check_line_setting(50) == 50
    assert check_line_setting("auto") == "auto"
    for bad in (55, "50", True, None):
        with pytest.raises(ValueError, match=r"features\.line_hz: expected 50, 60 or auto"):
            check_line_setting(bad)
