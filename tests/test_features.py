"""daemon.analyse.features against librosa: parity over lengths and signals, transforms, bounded
memory."""

import tracemalloc
import warnings

import librosa
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.analyse.features import (
    LOG10_FLOOR,
    TRANSFORMS,
    apply_transform,
    frame_count,
    frame_power_sum,
    hann_window,
    power_sum_of_frames,
    row_means,
)
from daemon.constants import HOP_LENGTH, N_BINS, N_FFT, SAMPLE_RATE
from daemon.errors import AudioError, ConfigError, ModelError

RTOL = 1e-5
LENGTHS = [1, N_FFT - 1, N_FFT, N_FFT + 1, 30 * SAMPLE_RATE, round(61.3 * SAMPLE_RATE)]
SIGNALS = ["noise", "tone", "silence", "square"]


def librosa_row_means(
    samples: npt.NDArray[np.floating], n_fft: int = N_FFT, hop_length: int = HOP_LENGTH
) -> npt.NDArray[np.float64]:
    """The reference: librosa's STFT, then |X|^2 and the mean over frames in float64.

    librosa's STFT values are the reference. The mean is taken in float64 because numpy's
    float32 mean over the frames of librosa's Fortran-ordered matrix sums naively and drifts
    (by about 1e-4 relative over 1 h of audio), which would test numpy, not the features.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns that n_fft exceeds very short inputs
        stft = librosa.stft(
            samples,
            n_fft=n_fft,
            hop_length=hop_length,
            window="hann",
            center=True,
            pad_mode="constant",
        )
    means: np.ndarray = np.mean(np.abs(stft).astype(np.float64) ** 2, axis=1)
    return means


def make_signal(kind: str, n_samples: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Test signals: white noise, a 1 kHz tone, digital silence, a full-scale 440 Hz square."""
    time_s = np.arange(n_samples) / SAMPLE_RATE
    if kind == "noise":
        signal = 0.3 * np.random.default_rng(seed).standard_normal(n_samples)
    elif kind == "tone":
        signal = 0.5 * np.sin(2 * np.pi * 1000.0 * time_s + 0.3)
    elif kind == "silence":
        signal = np.zeros(n_samples)
    else:
        signal = np.where(np.sin(2 * np.pi * 440.0 * time_s + 0.1) >= 0, 1.0, -1.0)
    return signal.astype(np.float32)


class TestRowMeansParity:
    @pytest.mark.parametrize("n_samples", LENGTHS)
    @pytest.mark.parametrize("kind", SIGNALS)
    def test_equals_librosa(self, kind: str, n_samples: int) -> None:
        """Row means equal librosa's to rtol 1e-5 in every bin, for every length and signal.

        No atol: silence gives exact zeros in both, and 0 == 0 passes with atol=0, so a
        nonzero value where librosa has zero would fail as it should.
        """
        samples = make_signal(kind, n_samples)
        ours = row_means(samples)
        assert ours.dtype == np.float32
        assert ours.shape == (N_BINS,)
        np.testing.assert_allclose(ours, librosa_row_means(samples), rtol=RTOL, atol=0)

    def test_silence_is_exactly_zero(self) -> None:
        """Digital silence gives exact zeros, not tiny values."""
        assert not np.any(row_means(np.zeros(5000, dtype=np.float32)))

    @pytest.mark.parametrize(
        ("n_fft", "hop_length"), [(512, 128), (1024, 1024), (1023, 300), (2048, 512), (8, 3)]
    )
    @pytest.mark.parametrize("n_samples", [1, 7, 700, 5000])
    def test_other_frame_settings_equal_librosa(
        self, n_fft: int, hop_length: int, n_samples: int
    ) -> None:
        """Odd frame lengths and hops other than n_fft / 2 frame exactly as librosa does."""
        samples = make_signal("noise", n_samples, seed=n_samples)
        np.testing.assert_allclose(
            row_means(samples, n_fft, hop_length),
            librosa_row_means(samples, n_fft, hop_length),
            rtol=RTOL,
        )

    def test_float64_input_equals_librosa(self) -> None:
        """float64 samples are accepted and framed like librosa frames them."""
        samples = make_signal("noise", 9000).astype(np.float64)
        np.testing.assert_allclose(row_means(samples), librosa_row_means(samples), rtol=RTOL)

    def test_threads_give_the_same_result(self) -> None:
        """Sharing the frames among threads changes nothing beyond float64 rounding."""
        samples = make_signal("noise", 10 * SAMPLE_RATE)
        np.testing.assert_allclose(row_means(samples, workers=3), row_means(samples), rtol=1e-12)

    @settings(max_examples=40, deadline=None)
    @given(
        n_samples=st.integers(min_value=1, max_value=6000),
        amplitude=st.floats(min_value=1e-6, max_value=1e3),
        seed=st.integers(min_value=0, max_value=2**32 - 1),
    )
    def test_any_length_and_amplitude_equals_librosa(
        self, n_samples: int, amplitude: float, seed: int
    ) -> None:
        """Any length and amplitude of noise with a random DC offset matches librosa."""
        rng = np.random.default_rng(seed)
        samples = (amplitude * (rng.standard_normal(n_samples) + rng.uniform(-1, 1))).astype(
            np.float32
        )
        np.testing.assert_allclose(row_means(samples), librosa_row_means(samples), rtol=RTOL)


class TestFraming:
    def test_hann_window_is_librosas(self) -> None:
        """The window is librosa's periodic Hann, bit for bit."""
        expected = librosa.filters.get_window("hann", N_FFT, fftbins=True)
        np.testing.assert_array_equal(hann_window(N_FFT), expected)

    @pytest.mark.parametrize("n_samples", [1, 511, 512, 513, 1023, 1024, 1025, 44100])
    def test_frame_count_is_librosas(self, n_samples: int) -> None:
        """frame_count gives librosa's number of centered frames (1 + n // hop)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stft = librosa.stft(
                np.zeros(n_samples, dtype=np.float32), n_fft=N_FFT, hop_length=HOP_LENGTH
            )
        assert frame_count(n_samples) == stft.shape[1] == 1 + n_samples // HOP_LENGTH

    def test_frame_ranges_add_up_to_the_whole(self) -> None:
        """Power sums over consecutive frame ranges of partial segments add up to the total."""
        samples = make_signal("noise", 20000)
        total = frame_power_sum(samples)
        n_frames = frame_count(samples.shape[0])
        parts = np.zeros(N_BINS)
        for first in range(0, n_frames, 7):
            stop = min(first + 7, n_frames)
            lo = max(0, first * HOP_LENGTH - N_FFT // 2)
            hi = min(samples.shape[0], (stop - 1) * HOP_LENGTH + N_FFT // 2)
            parts += frame_power_sum(
                samples[lo:hi],
                segment_start=lo,
                n_samples=samples.shape[0],
                first_frame=first,
                stop_frame=stop,
            )
        np.testing.assert_allclose(parts, total, rtol=1e-12)

    def test_power_sum_of_no_frames_is_zero(self) -> None:
        """An empty batch of frames contributes zeros."""
        result = power_sum_of_frames(np.zeros((0, N_FFT), dtype=np.float32))
        np.testing.assert_array_equal(result, np.zeros(N_BINS))

    def test_missing_segment_samples_are_an_error(self) -> None:
        """Asking for frames whose samples the segment lacks raises AudioError."""
        with pytest.raises(AudioError, match="needed"):
            frame_power_sum(np.zeros(100, dtype=np.float32), segment_start=5000, n_samples=10000)

    def test_frame_range_outside_the_signal_is_an_error(self) -> None:
        """A frame range past the signal's frame count raises AudioError."""
        with pytest.raises(AudioError, match="outside"):
            frame_power_sum(np.zeros(1000, dtype=np.float32), first_frame=0, stop_frame=99)

    def test_memory_stays_bounded(self) -> None:
        """61.3 s of audio never allocates more than a few MB (its spectrogram would be 43 MB)."""
        samples = make_signal("noise", round(61.3 * SAMPLE_RATE))
        row_means(samples)  # warm caches (window, FFT plans) outside the measurement
        tracemalloc.start()
        try:
            row_means(samples)
            _, peak_bytes = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak_bytes < 4 * 2**20


class TestRowMeansErrors:
    @pytest.mark.parametrize(
        ("samples", "message"),
        [
            (np.zeros(0, dtype=np.float32), "no samples"),
            (np.zeros((100, 2), dtype=np.float32), "1-D"),
            (np.zeros(100, dtype=np.int16), "floating"),
        ],
    )
    def test_unusable_samples_raise_audio_error(
        self, samples: npt.NDArray[np.generic], message: str
    ) -> None:
        """Empty, multichannel or integer samples raise AudioError saying why."""
        with pytest.raises(AudioError, match=message):
            row_means(samples)

    @pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    def test_non_finite_samples_raise_audio_error(self, bad: float) -> None:
        """NaN or Inf anywhere in the samples raises AudioError instead of NaN features."""
        samples = np.zeros(3000, dtype=np.float32)
        samples[1234] = bad
        with pytest.raises(AudioError, match="NaN or Inf"):
            row_means(samples)

    @pytest.mark.parametrize(
        ("n_fft", "hop_length", "key"), [(1, 512, "n_fft"), (1024, 0, "hop_length")]
    )
    def test_bad_frame_settings_raise_config_error(
        self, n_fft: int, hop_length: int, key: str
    ) -> None:
        """An n_fft below 2 or a hop below 1 raises ConfigError naming the key."""
        with pytest.raises(ConfigError, match=key):
            row_means(np.zeros(100, dtype=np.float32), n_fft, hop_length)


class TestTransforms:
    def test_registry_names(self) -> None:
        """The registry offers exactly the documented transforms and cannot be changed."""
        assert set(TRANSFORMS) == {"power_mean", "log10_power_mean"}
        with pytest.raises(TypeError):
            TRANSFORMS["other"] = TRANSFORMS["power_mean"]  # type: ignore[index]

    def test_power_mean_is_the_identity(self) -> None:
        """power_mean returns the features unchanged as a float32 copy."""
        features = row_means(make_signal("noise", 5000))
        result = apply_transform("power_mean", features)
        np.testing.assert_array_equal(result, features)
        assert result.dtype == np.float32
        assert result is not features

    def test_log10_power_mean(self) -> None:
        """log10_power_mean is log10 of the features, floored at LOG10_FLOOR."""
        features = np.array([0.0, 1e-12, LOG10_FLOOR, 1.0, 1e4], dtype=np.float32)
        result = apply_transform("log10_power_mean", features)
        np.testing.assert_allclose(result, [-10.0, -10.0, -10.0, 0.0, 4.0], rtol=1e-6)
        assert result.dtype == np.float32

    def test_silence_stays_finite(self) -> None:
        """Digital silence becomes the floor, never -inf."""
        result = apply_transform("log10_power_mean", row_means(np.zeros(2000, dtype=np.float32)))
        assert np.all(result == np.float32(np.log10(LOG10_FLOOR)))

    @pytest.mark.parametrize("name", sorted(TRANSFORMS))
    def test_batch_equals_one_by_one(self, name: str) -> None:
        """A 2-D batch transforms row by row exactly as single vectors do."""
        batch = np.stack([row_means(make_signal("noise", 3000, seed=seed)) for seed in range(4)])
        result = apply_transform(name, batch)
        assert result.shape == batch.shape
        for row, features in zip(result, batch, strict=True):
            np.testing.assert_array_equal(row, apply_transform(name, features))

    def test_unknown_name_raises_model_error(self) -> None:
        """An unknown transform name raises ModelError listing the known ones."""
        with pytest.raises(ModelError, match="log10_power_mean, power_mean"):
            apply_transform("mel", np.zeros(N_BINS, dtype=np.float32))

    def test_three_dimensional_input_raises_model_error(self) -> None:
        """Only one vector or a 2-D batch is accepted."""
        with pytest.raises(ModelError, match="shape"):
            apply_transform("power_mean", np.zeros((2, 2, N_BINS), dtype=np.float32))
