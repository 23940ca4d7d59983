"""daemon.listen.windows: streamed windows equal batch features for any block size; level, clips,
tails."""

import tracemalloc

import numpy as np
import numpy.typing as npt
import pytest

import daemon.listen.windows
from daemon.analyse.features import row_means
from daemon.constants import HOP_LENGTH, N_BINS, N_FFT, SAMPLE_RATE
from daemon.errors import AudioError, ConfigError
from daemon.listen.windows import (
    CLIP_LEVEL,
    LEVEL_FLOOR_DBFS,
    MIN_FRAMES_PER_BATCH,
    Window,
    Windower,
    windows_of,
)

LENGTH_S = 0.5  # small windows keep the tests fast; 22050 samples, 44 frames each
LENGTH = round(LENGTH_S * SAMPLE_RATE)


def make_stream(n_samples: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Noise with a tone and a few full-scale clipped stretches."""
    rng = np.random.default_rng(seed)
    time_s = np.arange(n_samples) / SAMPLE_RATE
    signal = 0.2 * rng.standard_normal(n_samples) + 0.3 * np.sin(2 * np.pi * 700.0 * time_s)
    signal[::997] = 1.0
    signal[5::1499] = -1.0
    return np.clip(signal, -1.0, 1.0).astype(np.float32)


def stream_in_blocks(
    windower: Windower, samples: npt.NDArray[np.float32], block_samples: int
) -> list[Window]:
    windows: list[Window] = []
    for first in range(0, samples.shape[0], block_samples):
        windows.extend(windower.push(samples[first : first + block_samples]))
    tail = windower.flush()
    return [*windows, tail] if tail is not None else windows


def assert_matches_batch(windows: list[Window], samples: npt.NDArray[np.float32]) -> None:
    """Each window's features, level and clip fraction equal direct numpy on its samples."""
    for window in windows:
        own = samples[window.start_sample : window.end_sample]
        assert own.shape[0] == window.n_samples
        assert window.features.dtype == np.float32
        assert window.features.shape == (N_BINS,)
        np.testing.assert_allclose(window.features, row_means(own), rtol=1e-5)
        rms = np.sqrt(np.mean(own.astype(np.float64) ** 2))
        assert window.level_dbfs == pytest.approx(20 * np.log10(rms), abs=1e-4)
        assert window.clipped == np.count_nonzero(np.abs(own) >= CLIP_LEVEL) / own.shape[0]


@pytest.fixture(params=[MIN_FRAMES_PER_BATCH, 1], ids=["default_batch", "every_frame"])
def frames_per_batch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run with the shipped batching and with frames computed one by one as they arrive."""
    value: int = request.param
    monkeypatch.setattr(daemon.listen.windows, "MIN_FRAMES_PER_BATCH", value)
    return value


class TestStreamingEqualsBatch:
    @pytest.mark.parametrize("block_samples", [511, 512, 4096, 3001, 100_000, 10**7])
    def test_block_size_does_not_matter(self, block_samples: int, frames_per_batch: int) -> None:
        """Back-to-back windows equal row_means of their samples whatever the block size."""
        samples = make_stream(round(2.8 * SAMPLE_RATE))
        windows = stream_in_blocks(Windower(length_s=LENGTH_S), samples, block_samples)
        assert [w.start_sample for w in windows] == [k * LENGTH for k in range(6)]
        assert [w.index for w in windows] == list(range(6))
        assert_matches_batch(windows, samples)

    def test_one_sample_blocks(self, frames_per_batch: int) -> None:
        """Blocks of a single sample give the same windows as one big block."""
        samples = make_stream(round(1.3 * SAMPLE_RATE), seed=1)
        windows = stream_in_blocks(Windower(length_s=LENGTH_S), samples, 1)
        assert len(windows) == 3
        assert_matches_batch(windows, samples)

    @pytest.mark.parametrize("hop_s", [0.2, 0.25, 0.1234])
    @pytest.mark.parametrize("block_samples", [777, 8192])
    def test_overlapping_windows(
        self, hop_s: float, block_samples: int, frames_per_batch: int
    ) -> None:
        """Sliding windows each keep their own frame grid and equal row_means of their samples."""
        samples = make_stream(round(1.7 * SAMPLE_RATE), seed=2)
        windower = Windower(length_s=LENGTH_S, hop_s=hop_s)
        windows = stream_in_blocks(windower, samples, block_samples)
        hop = round(hop_s * SAMPLE_RATE)
        assert [w.start_sample for w in windows] == [k * hop for k in range(len(windows))]
        full = [w for w in windows if w.n_samples == LENGTH]
        assert len(full) == (samples.shape[0] - LENGTH) // hop + 1
        assert_matches_batch(windows, samples)

    def test_hop_longer_than_window_skips_audio(self) -> None:
        """With hop_s > length_s, windows start every hop and the gaps are not used."""
        samples = make_stream(round(2.0 * SAMPLE_RATE), seed=3)
        windows = stream_in_blocks(Windower(length_s=0.3, hop_s=0.7), samples, 4096)
        assert [(w.start_sample, w.n_samples) for w in windows] == [
            (0, 13230),
            (30870, 13230),
            (61740, 13230),
        ]
        assert_matches_batch(windows, samples)

    def test_default_thirty_second_window(self) -> None:
        """The shipped configuration (30 s, hop 512, n_fft 1024) equals row_means on 30 s."""
        samples = make_stream(31 * SAMPLE_RATE, seed=4)
        windows = stream_in_blocks(Windower(), samples, 4410)
        assert len(windows) == 1
        assert windows[0].n_samples == 30 * SAMPLE_RATE
        assert_matches_batch(windows, samples)

    def test_other_frame_settings(self) -> None:
        """Non-default n_fft and hop_length stream exactly like row_means with them."""
        samples = make_stream(round(1.1 * SAMPLE_RATE), seed=5)
        windower = Windower(length_s=LENGTH_S, n_fft=2048, hop_length=300)
        windows = stream_in_blocks(windower, samples, 1000)
        for window in windows:
            own = samples[window.start_sample : window.end_sample]
            np.testing.assert_allclose(window.features, row_means(own, 2048, 300), rtol=1e-5)

    def test_windows_of_equals_streaming(self) -> None:
        """windows_of (train/'s entry point) gives exactly the streamed windows."""
        samples = make_stream(round(1.8 * SAMPLE_RATE), seed=6)
        streamed = stream_in_blocks(Windower(length_s=LENGTH_S, hop_s=0.3), samples, 1024)
        whole = windows_of(samples, length_s=LENGTH_S, hop_s=0.3)
        assert len(whole) == len(streamed)
        for a, b in zip(whole, streamed, strict=True):
            assert (a.index, a.start_sample, a.n_samples) == (b.index, b.start_sample, b.n_samples)
            np.testing.assert_allclose(a.features, b.features, rtol=1e-6)


class TestIncremental:
    def test_completion_computes_only_a_few_frames(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The push that completes a 30 s window computes at most a batch of frames, not 2585."""
        frames_per_push: list[int] = []
        real = daemon.listen.windows.frame_power_sum  # type: ignore[attr-defined]  # re-exported for this patch

        def counting(*args: object, **kwargs: int) -> npt.NDArray[np.float64]:
            frames_per_push[-1] += kwargs["stop_frame"] - kwargs["first_frame"]
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(daemon.listen.windows, "frame_power_sum", counting)
        windower = Windower()
        block = make_stream(SAMPLE_RATE // 10)  # 0.1 s blocks, as from a sound card
        completed_at = []
        for push in range(301):
            frames_per_push.append(0)
            if windower.push(block):
                completed_at.append(push)
        assert completed_at == [299]
        block_frames = block.shape[0] // HOP_LENGTH + 1
        assert frames_per_push[299] <= MIN_FRAMES_PER_BATCH + block_frames + N_FFT // HOP_LENGTH
        assert sum(frames_per_push[:300]) == 1 + 30 * SAMPLE_RATE // HOP_LENGTH

    def test_memory_is_bounded(self) -> None:
        """Streaming 31 s keeps far less than the 5 MB of audio one 30 s window holds.

        What remains is one FFT batch (64 frames: about 1 MB of float64 frames and spectrum).
        """
        samples = make_stream(31 * SAMPLE_RATE, seed=7)
        windower = Windower()
        windower.push(samples[:4096])
        tracemalloc.start()
        try:
            for first in range(4096, samples.shape[0], 4096):
                windower.push(samples[first : first + 4096])
            _, peak_bytes = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak_bytes < 2 * 2**20

    def test_mono_column_blocks_are_accepted(self) -> None:
        """sounddevice's (frames, 1) blocks are taken as mono."""
        samples = make_stream(LENGTH + 10, seed=8)
        windows = Windower(length_s=LENGTH_S).push(samples[:, np.newaxis])
        assert len(windows) == 1
        assert_matches_batch(windows, samples)

    def test_caller_may_reuse_its_block(self) -> None:
        """push copies what it keeps, so overwriting a block afterwards changes nothing."""
        samples = make_stream(2 * LENGTH, seed=9)
        windower = Windower(length_s=LENGTH_S)
        block = np.empty(3000, dtype=np.float32)
        windows: list[Window] = []
        for first in range(0, samples.shape[0], 3000):
            part = samples[first : first + 3000]
            block[: part.shape[0]] = part
            windows.extend(windower.push(block[: part.shape[0]]))
            block[:] = np.nan
        assert len(windows) == 2
        assert_matches_batch(windows, samples)


class TestLevelAndClipping:
    def test_digital_silence_reports_the_floor(self) -> None:
        """Silence gives zero features, the finite level floor and no clipping."""
        (window,) = windows_of(np.zeros(LENGTH, dtype=np.float32), length_s=LENGTH_S)
        assert window.level_dbfs == LEVEL_FLOOR_DBFS
        assert window.clipped == 0.0
        assert not np.any(window.features)

    def test_full_scale_square_is_zero_dbfs_and_clipped(self) -> None:
        """A full-scale square wave is 0 dBFS with every sample clipped."""
        samples = np.where(np.arange(LENGTH) % 100 < 50, 1.0, -1.0).astype(np.float32)
        (window,) = windows_of(samples, length_s=LENGTH_S)
        assert window.level_dbfs == pytest.approx(0.0, abs=1e-6)
        assert window.clipped == 1.0

    def test_full_scale_sine_is_minus_three_dbfs(self) -> None:
        """A full-scale sine reads -3.01 dBFS, the usual convention."""
        samples = np.sin(2 * np.pi * 1000.0 * np.arange(LENGTH) / SAMPLE_RATE).astype(np.float32)
        (window,) = windows_of(samples, length_s=LENGTH_S)
        assert window.level_dbfs == pytest.approx(-3.0103, abs=1e-3)

    def test_clip_counting_at_the_threshold(self) -> None:
        """Samples at CLIP_LEVEL count as clipped, samples just below do not."""
        samples = np.zeros(1000, dtype=np.float32)
        samples[:10] = CLIP_LEVEL
        samples[10:20] = -CLIP_LEVEL
        samples[20:30] = np.nextafter(np.float32(CLIP_LEVEL), np.float32(0))
        (window,) = windows_of(samples, length_s=LENGTH_S)
        assert window.clipped == 20 / 1000

    def test_very_quiet_audio_is_clamped_to_the_floor(self) -> None:
        """A level below the floor reports the floor, never less."""
        (window,) = windows_of(np.full(1000, 1e-8, dtype=np.float32), length_s=LENGTH_S)
        assert window.level_dbfs == LEVEL_FLOOR_DBFS


class TestTailPolicy:
    def test_short_stream_gives_one_window_over_everything(self) -> None:
        """A stream shorter than one window gives one window over all of it, however short."""
        for n_samples in (1, 100, N_FFT, LENGTH // 3):
            samples = make_stream(n_samples, seed=n_samples)
            (window,) = windows_of(samples, length_s=LENGTH_S)
            assert (window.index, window.start_sample, window.n_samples) == (0, 0, n_samples)
            assert_matches_batch([window], samples)

    def test_tail_of_at_least_half_a_window_is_kept(self) -> None:
        """After full windows, a tail of half a window or more becomes a window."""
        samples = make_stream(2 * LENGTH + LENGTH // 2)
        windows = windows_of(samples, length_s=LENGTH_S)
        assert [(w.start_sample, w.n_samples) for w in windows] == [
            (0, LENGTH),
            (LENGTH, LENGTH),
            (2 * LENGTH, LENGTH // 2),
        ]
        assert_matches_batch(windows, samples)

    def test_tail_shorter_than_half_a_window_is_dropped(self) -> None:
        """After full windows, a tail under half a window is dropped."""
        samples = make_stream(2 * LENGTH + LENGTH // 2 - 1)
        windows = windows_of(samples, length_s=LENGTH_S)
        assert [w.n_samples for w in windows] == [LENGTH, LENGTH]

    def test_stream_ending_on_a_window_boundary_has_no_tail(self) -> None:
        """When the stream ends exactly where a window ends, flush returns None."""
        windower = Windower(length_s=LENGTH_S)
        assert len(windower.push(make_stream(2 * LENGTH))) == 2
        assert windower.flush() is None

    def test_empty_stream_has_no_window(self) -> None:
        """Flushing a stream that received nothing returns None."""
        windower = Windower(length_s=LENGTH_S)
        assert windower.push(np.zeros(0, dtype=np.float32)) == []
        assert windower.flush() is None

    def test_overlapping_tail_is_the_earliest_unfinished_window(self) -> None:
        """With overlap, the tail runs from the earliest unfinished window's start to the end."""
        hop = round(0.2 * SAMPLE_RATE)
        samples = make_stream(LENGTH + hop + hop // 2)
        windows = windows_of(samples, length_s=LENGTH_S, hop_s=0.2)
        assert [(w.start_sample, w.n_samples) for w in windows] == [
            (0, LENGTH),
            (hop, LENGTH),
            (2 * hop, samples.shape[0] - 2 * hop),
        ]
        assert_matches_batch(windows, samples)

    def test_flush_starts_a_new_stream(self) -> None:
        """After flush the windower starts over: indices and offsets from 0 again."""
        windower = Windower(length_s=LENGTH_S)
        windower.push(make_stream(LENGTH + 5))
        windower.flush()
        assert windower.received_samples == 0
        samples = make_stream(LENGTH, seed=11)
        (window,) = windower.push(samples)
        assert (window.index, window.start_sample) == (0, 0)
        assert_matches_batch([window], samples)


class TestErrors:
    @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
    def test_non_finite_block_is_rejected_whole(self, bad: float) -> None:
        """A block with NaN or Inf raises AudioError and leaves the stream as it was."""
        samples = make_stream(2 * LENGTH, seed=12)
        windower = Windower(length_s=LENGTH_S)
        windows = windower.push(samples[:30000])
        poisoned = samples[30000:40000].copy()
        poisoned[123] = bad
        with pytest.raises(AudioError, match="NaN"):
            windower.push(poisoned)
        windows += windower.push(samples[30000:])
        assert [w.start_sample for w in windows] == [0, LENGTH]
        assert_matches_batch(windows, samples)

    @pytest.mark.parametrize(
        ("block", "message"),
        [
            (np.zeros((100, 2), dtype=np.float32), "mono"),
            (np.zeros(100, dtype=np.int16), "floating"),
        ],
    )
    def test_unusable_blocks(self, block: npt.NDArray[np.generic], message: str) -> None:
        """Multichannel or integer blocks raise AudioError saying why."""
        with pytest.raises(AudioError, match=message):
            Windower(length_s=LENGTH_S).push(block)

    @pytest.mark.parametrize(
        ("kwargs", "key"),
        [
            ({"length_s": 0.0}, "window.length_s"),
            ({"length_s": float("nan")}, "window.length_s"),
            ({"hop_s": -1.0}, "window.hop_s"),
            ({"n_fft": 1}, "features.n_fft"),
            ({"hop_length": 0}, "features.hop_length"),
            ({"sample_rate": 0}, "audio.sample_rate"),
        ],
    )
    def test_bad_settings_raise_config_error(self, kwargs: dict[str, float], key: str) -> None:
        """Out-of-range settings raise ConfigError naming the key."""
        with pytest.raises(ConfigError, match=key):
            Windower(**kwargs)  # type: ignore[arg-type]


class TestBoundary:
    """`samples_to_boundary`: where a reload may switch without cutting a window."""

    def test_back_to_back_windows(self) -> None:
        windower = Windower(sample_rate=SAMPLE_RATE, length_s=1.0)
        assert windower.samples_to_boundary == 0  # nothing started yet
        windower.push(np.zeros(1000, dtype=np.float32))
        assert windower.samples_to_boundary == SAMPLE_RATE - 1000
        done = windower.push(np.zeros(SAMPLE_RATE - 1000, dtype=np.float32))
        assert len(done) == 1
        assert windower.samples_to_boundary == 0  # exactly at the boundary: the next not begun

    def test_overlapping_windows_name_the_oldest(self) -> None:
        windower = Windower(sample_rate=SAMPLE_RATE, length_s=1.0, hop_s=0.5)
        windower.push(np.zeros(SAMPLE_RATE * 3 // 4, dtype=np.float32))
        # Windows at 0 and 0.5 s have started: the one at 0 ends first.
        assert windower.samples_to_boundary == SAMPLE_RATE - SAMPLE_RATE * 3 // 4
