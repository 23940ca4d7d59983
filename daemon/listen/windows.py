"""Cut a mono float32 sample stream into windows with their features, level and clipping.

One segmentation for live capture, replay and training: window k covers stream samples
[k * hop, k * hop + length). Its features are computed incrementally as blocks arrive and
equal `daemon.analyse.features.row_means` on the window's samples alone (own centered frame grid,
zero padding at both window edges); its physics `Measurement` equals
`daemon.analyse.physics.measure` on the same samples. `push` copies what it keeps, so callers may
reuse blocks.

Tail policy (`Windower.flush`, end of stream): the tail window is the earliest window that has
started but not completed; it runs from its start to the end of the stream. It is returned
when no window has completed yet (a file shorter than one window still gives one window over
all it has: for short clips this is exactly the notebook's per-file features), or when it
holds at least `TAIL_MIN_FRACTION` (half) of a window. A shorter tail is dropped: a few
seconds of audio give a noisier mean than the full windows the model was trained on, and
the next window would start with them anyway in a continuing stream.
"""

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from daemon.analyse.features import (
    check_stft_parameters,
    frame_count,
    frame_power_sum,
    means_from_power_sum,
)
from daemon.analyse.physics import Measurement, PhysicsAccumulator
from daemon.constants import HOP_LENGTH, N_FFT, SAMPLE_RATE, WINDOW_S
from daemon.errors import AudioError, ConfigError

CLIP_LEVEL: Final = 0.999
"""|sample| at or above which a sample counts as clipped (-0.009 dBFS). Below 32767/32768,
so a 16-bit converter pinned at either rail counts, and float files above 1.0 count too."""

LEVEL_FLOOR_DBFS: Final = -120.0
"""Level reported for digital silence or anything quieter (RMS level is otherwise -inf).
Finite so the verdict JSON stays valid; below 16-bit quantization noise (about -101 dBFS)."""

TAIL_MIN_FRACTION: Final = 0.5
"""A tail window holding at least this fraction of a full window is emitted by `flush`."""

MIN_FRAMES_PER_BATCH: Final = 64
"""STFT frames are computed once this many are ready (0.74 s at 44.1 kHz, hop 512): few numpy
calls per second, and at most this many frames (well under 1 ms) left for window completion."""

SLICE_SAMPLES: Final = 1 << 18
"""A block larger than this is consumed in slices of it, so the sample buffer stays small
(about 1 MiB) even when a whole file is pushed at once. Each slice costs a few numpy calls;
2**18 (6 s) instead of 2**16 cut the windower's overhead over `row_means` on 10 s replay
blocks from 30 % to 20 % (bench/replay.py)."""


@dataclass(frozen=True)
class Window:
    """One finished window of the stream and what the pipeline needs to know about it."""

    index: int
    """0 for the first window of the stream, then 1, 2, ..."""
    start_sample: int
    """Offset of the window's first sample from the start of the stream."""
    n_samples: int
    """Samples in the window: the full length, or fewer for a tail window from `flush`."""
    features: npt.NDArray[np.float32]
    """Shape (n_fft // 2 + 1,): raw power row means (`row_means`), before any transform."""
    level_dbfs: float
    """RMS level re full scale 1.0 (a full-scale sine is -3.0), at least `LEVEL_FLOOR_DBFS`."""
    clipped: float
    """Fraction of samples with |x| >= `CLIP_LEVEL`, 0.0 to 1.0."""
    ac_level_dbfs: float
    """RMS level of the samples minus their mean (the sound on top of any DC offset), at least
    `LEVEL_FLOOR_DBFS`: a stuck converter or an offset with no sound has a level but no AC."""
    physics: Measurement
    """Line-locked modulation, hum and crackle (`daemon.analyse.physics`), at both line
    frequencies."""

    @property
    def end_sample(self) -> int:
        """Offset just past the window's last sample."""
        return self.start_sample + self.n_samples


@dataclass
class _Progress:
    """Running sums of one window that has started but not completed."""

    index: int
    start: int
    next_frame: int
    power_sum: npt.NDArray[np.float64]
    physics: PhysicsAccumulator
    sum_squares: float = 0.0
    n_seen: int = 0
    mean: float = 0.0
    centred_squares: float = 0.0
    """Sum of squared deviations from the running mean (Chan et al.'s pairwise update): the AC
    energy, exact even under a large offset, where E[x^2] - E[x]^2 in float32 is not."""
    n_clipped: int = 0


class _SampleBuffer:
    """The recent part of the stream, addressed by absolute sample offset; grows rarely."""

    def __init__(self, capacity: int) -> None:
        self._data = np.empty(capacity, dtype=np.float32)
        self._offset = 0  # index in _data of the first kept sample
        self._length = 0
        self.start = 0  # stream offset of the first kept sample

    @property
    def end(self) -> int:
        return self.start + self._length

    def append(self, samples: npt.NDArray[np.float32]) -> None:
        needed = self._length + samples.shape[0]
        if self._offset + needed > self._data.shape[0]:
            kept = self._data[self._offset : self._offset + self._length]
            if needed > self._data.shape[0]:
                grown = np.empty(max(needed, 2 * self._data.shape[0]), dtype=np.float32)
                grown[: self._length] = kept
                self._data = grown
            else:
                self._data[: self._length] = kept  # overlapping move; numpy handles it
            self._offset = 0
        tail = self._offset + self._length
        self._data[tail : tail + samples.shape[0]] = samples
        self._length = needed

    def view(self, first: int) -> npt.NDArray[np.float32]:
        """Kept samples from stream offset ``first`` to the end (a view, valid until append)."""
        return self._data[self._offset + first - self.start : self._offset + self._length]

    def discard_before(self, first: int) -> None:
        first = min(max(first, self.start), self.end)
        self._offset += first - self.start
        self._length -= first - self.start
        self.start = first


def _samples_of(block: npt.ArrayLike) -> npt.NDArray[np.float32]:
    array = np.asarray(block)
    if array.ndim == 2 and array.shape[1] == 1:  # sounddevice's (frames, 1) mono blocks
        array = array[:, 0]
    if array.ndim != 1:
        raise AudioError(f"windows: a block must be mono, shape (n,) or (n, 1), got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise AudioError(f"windows: a block must be floating point, got dtype {array.dtype}")
    return array.astype(np.float32, copy=False)


def _samples_from_seconds(key: str, seconds: float, sample_rate: int) -> int:
    if not np.isfinite(seconds) or round(seconds * sample_rate) < 1:
        raise ConfigError(f"{key}: expected a positive duration in seconds, got {seconds!r}")
    return round(seconds * sample_rate)


class Windower:
    """Turns pushed blocks into `Window`s; keeps only the samples still needed for frames.

    Parameters
    ----------
    sample_rate : int
        Hz (44100). Converts ``length_s`` and ``hop_s`` to samples.
    length_s : float
        Window length in seconds (30.0 = 1,323,000 samples at 44.1 kHz).
    hop_s : float or None
        Seconds between window starts; None means ``length_s`` (back-to-back windows).
        Smaller gives overlapping windows, each with its own frame grid; larger skips audio.
    n_fft, hop_length : int
        STFT frame length and hop in samples, as for `daemon.analyse.features.row_means`.
    """

    def __init__(
        self,
        *,
        sample_rate: int = SAMPLE_RATE,
        length_s: float = WINDOW_S,
        hop_s: float | None = None,
        n_fft: int = N_FFT,
        hop_length: int = HOP_LENGTH,
    ) -> None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
            raise ConfigError(
                f"audio.sample_rate: expected a positive integer, got {sample_rate!r}"
            )
        self.sample_rate = sample_rate
        self.length_samples = _samples_from_seconds("window.length_s", length_s, sample_rate)
        self.hop_samples = _samples_from_seconds(
            "window.hop_s", length_s if hop_s is None else hop_s, sample_rate
        )
        self.n_fft = n_fft
        self.hop_length = hop_length
        check_stft_parameters(n_fft, hop_length)
        self._full_frames = frame_count(self.length_samples, n_fft=n_fft, hop_length=hop_length)
        self._reset()

    def _reset(self) -> None:
        # Room for two batches of frames: live blocks (0.1 s) never grow it, so a live daemon
        # keeps 0.3 MB here; a replay's large slices grow it once.
        self._buffer = _SampleBuffer(
            2 * ((MIN_FRAMES_PER_BATCH + 2) * self.hop_length + self.n_fft)
        )
        self._received = 0
        self._next_index = 0
        self._active: list[_Progress] = []

    @property
    def received_samples(self) -> int:
        """Samples pushed since the start of the stream (or the last `flush`)."""
        return self._received

    @property
    def samples_to_boundary(self) -> int:
        """Samples still to push before the oldest started window completes; 0 when none has
        started (a stream can switch to other settings here without cutting a window)."""
        if not self._active:
            return 0
        return self._active[0].start + self.length_samples - self._received

    def push(self, block: npt.ArrayLike) -> list[Window]:
        """Add a block of mono float samples; return the windows it completed, oldest first.

        Raises `AudioError` (and consumes nothing) if the block is not mono floating point
        or contains NaN/Inf.
        """
        samples = _samples_of(block)
        slices: list[tuple[npt.NDArray[np.float32], float]] = []
        for first in range(0, samples.shape[0], SLICE_SAMPLES):
            part = samples[first : first + SLICE_SAMPLES]
            # float32 dot: BLAS accumulates in blocks, ample for a level in dB.
            sum_squares = float(np.dot(part, part))
            if not np.isfinite(sum_squares):
                raise AudioError(
                    "windows: block contains NaN, Inf or values too large to square in float32"
                    f" near sample {self._received + first}"
                )
            slices.append((part, sum_squares))
        finished: list[tuple[_Progress, int]] = []
        for part, sum_squares in slices:
            finished.extend(self._push_slice(part, sum_squares))
        return [self._window(progress, n_samples) for progress, n_samples in finished]

    def flush(self) -> Window | None:
        """End the stream: return the tail window per the module's tail policy, or None.

        The windower is then reset to an empty stream (indices restart at 0).
        """
        tail: Window | None = None
        if self._active:
            progress = self._active[0]
            n_samples = self._received - progress.start
            if progress.index == 0 or n_samples >= TAIL_MIN_FRACTION * self.length_samples:
                n_frames = frame_count(n_samples, n_fft=self.n_fft, hop_length=self.hop_length)
                self._advance(progress, n_frames, n_samples)
                tail = self._window(progress, n_samples)
        self._reset()
        return tail

    def _frames_ready(self, n_available: int) -> int:
        """Frames whose samples lie wholly within the first ``n_available`` window samples."""
        reach = n_available + self.n_fft // 2 - self.n_fft
        return reach // self.hop_length + 1 if reach >= 0 else 0

    def _advance(self, progress: _Progress, stop_frame: int, n_samples: int) -> None:
        """Add frames [progress.next_frame, stop_frame) of a window of n_samples samples."""
        if stop_frame <= progress.next_frame:
            return
        first = max(progress.start, self._buffer.start)
        progress.power_sum += frame_power_sum(
            self._buffer.view(first),
            segment_start=first - progress.start,
            n_samples=n_samples,
            first_frame=progress.next_frame,
            stop_frame=stop_frame,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
        )
        progress.next_frame = stop_frame

    def _push_slice(
        self, samples: npt.NDArray[np.float32], sum_squares: float
    ) -> list[tuple[_Progress, int]]:
        """Consume one slice; ``sum_squares`` is its own dot product (the NaN/Inf check's)."""
        slice_start = self._received
        self._buffer.append(samples)
        self._received += samples.shape[0]
        while self._next_index * self.hop_samples < self._received:
            start = self._next_index * self.hop_samples
            self._active.append(
                _Progress(
                    self._next_index,
                    start,
                    0,
                    np.zeros(self.n_fft // 2 + 1),
                    PhysicsAccumulator(self.sample_rate, self.length_samples),
                )
            )
            self._next_index += 1

        finished: list[tuple[_Progress, int]] = []
        for progress in self._active:
            window_end = progress.start + self.length_samples
            own = samples[max(progress.start - slice_start, 0) : max(window_end - slice_start, 0)]
            # A slice inside one window (the usual case) reuses the dot the check computed.
            own_squares = sum_squares if own.shape == samples.shape else float(np.dot(own, own))
            progress.sum_squares += own_squares
            _add_centred(progress, own)
            progress.physics.push(own)
            # Clipping is rare: max and min (no temporaries) rule it out before any counting.
            if own.size and (own.max() >= CLIP_LEVEL or own.min() <= -CLIP_LEVEL):
                # Two comparisons instead of np.abs: no float temporary per slice.
                progress.n_clipped += int(np.count_nonzero(own >= CLIP_LEVEL))
                progress.n_clipped += int(np.count_nonzero(own <= -CLIP_LEVEL))
            if self._received >= window_end:
                self._advance(progress, self._full_frames, self.length_samples)
                finished.append((progress, self.length_samples))
                continue
            ready = self._frames_ready(self._received - progress.start)
            if ready - progress.next_frame >= MIN_FRAMES_PER_BATCH:
                self._advance(progress, ready, self.length_samples)

        done = {id(progress) for progress, _ in finished}
        self._active = [progress for progress in self._active if id(progress) not in done]
        needed = min(
            (
                max(
                    progress.start,
                    progress.start + progress.next_frame * self.hop_length - self.n_fft // 2,
                )
                for progress in self._active
            ),
            default=self._received,
        )
        self._buffer.discard_before(needed)
        return finished

    def _window(self, progress: _Progress, n_samples: int) -> Window:
        n_frames = frame_count(n_samples, n_fft=self.n_fft, hop_length=self.hop_length)
        mean_square = progress.sum_squares / n_samples
        ac_square = progress.centred_squares / n_samples
        return Window(
            index=progress.index,
            start_sample=progress.start,
            n_samples=n_samples,
            features=means_from_power_sum(progress.power_sum, n_frames),
            level_dbfs=_dbfs(mean_square),
            clipped=progress.n_clipped / n_samples,
            ac_level_dbfs=_dbfs(ac_square),
            physics=progress.physics.finish(),
        )


def _add_centred(progress: _Progress, part: npt.NDArray[np.float32]) -> None:
    """Fold one slice into the window's running mean and centred sum of squares."""
    n_part = part.shape[0]
    if n_part == 0:
        return
    part_mean = float(np.sum(part, dtype=np.float64)) / n_part
    deviation = part - np.float32(part_mean)
    part_squares = float(np.dot(deviation, deviation))
    n_total = progress.n_seen + n_part
    delta = part_mean - progress.mean
    progress.centred_squares += part_squares + delta * delta * progress.n_seen * n_part / n_total
    progress.mean += delta * n_part / n_total
    progress.n_seen = n_total


def _dbfs(mean_square: float) -> float:
    """An RMS level re full scale 1.0 from a mean square, at least `LEVEL_FLOOR_DBFS`."""
    if mean_square <= 0.0:
        return LEVEL_FLOOR_DBFS
    return max(float(10.0 * np.log10(mean_square)), LEVEL_FLOOR_DBFS)


def windows_of(
    samples: npt.ArrayLike,
    *,
    sample_rate: int = SAMPLE_RATE,
    length_s: float = WINDOW_S,
    hop_s: float | None = None,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
) -> list[Window]:
    """All windows of a whole signal (a file): push it in one go, then flush the tail."""
    windower = Windower(
        sample_rate=sample_rate, length_s=length_s, hop_s=hop_s, n_fft=n_fft, hop_length=hop_length
    )
    windows = windower.push(samples)
    tail = windower.flush()
    if tail is not None:
        windows.append(tail)
    return windows
