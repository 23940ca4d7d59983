"""The one feature implementation: power row means of a centered Hann STFT, as librosa has them.

Pure numpy (no librosa, no scipy). Every STFT frame in the project is windowed and FFT'd in
`power_sum_of_frames`; `row_means` (whole signals) and `daemon.listen.windows` (streams) both call
it.
"""

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from daemon.constants import HOP_LENGTH, N_FFT
from daemon.errors import AudioError, ConfigError, ModelError

FRAMES_PER_CHUNK: Final = 128
"""Frames windowed and FFT'd per numpy call. 128 x 1024 float64 is 1 MiB, so a chunk and its
spectrum stay in cache (measured fastest of 32..4096) and memory stays bounded for any length."""

MIN_FRAMES_PER_WORKER: Final = 4 * FRAMES_PER_CHUNK
"""`row_means(workers=...)` gives each thread at least this many frames (6 s of audio), so
short signals don't pay for threads they can't use."""

LOG10_FLOOR: Final = 1e-10
"""Smallest power row mean that `log10_power_mean` takes the log of (log10 -> -10).

Digital silence has power exactly 0, whose log is -inf; a model input must stay finite. 1e-10 is
far below the quantization noise of 16-bit audio in one STFT bin (about 3e-8 for a Hann window
of 1024 samples), so it only ever touches digital silence and near-silent synthetic signals."""

FloatArray = npt.NDArray[np.floating]


def check_stft_parameters(n_fft: int, hop_length: int) -> None:
    """Raise `ConfigError` naming the key unless n_fft >= 2 and hop_length >= 1 are integers."""
    if isinstance(n_fft, bool) or not isinstance(n_fft, int | np.integer) or n_fft < 2:
        raise ConfigError(f"features.n_fft: expected an integer >= 2, got {n_fft!r}")
    if (
        isinstance(hop_length, bool)
        or not isinstance(hop_length, int | np.integer)
        or hop_length < 1
    ):
        raise ConfigError(f"features.hop_length: expected an integer >= 1, got {hop_length!r}")


@lru_cache(maxsize=8)
def hann_window(n_fft: int = N_FFT) -> npt.NDArray[np.float64]:
    """Periodic Hann window, bit for bit as ``scipy.signal.get_window("hann", n, fftbins=True)``.

    Parameters
    ----------
    n_fft : int >= 2
        Window length in samples (1024 = 23 ms at 44.1 kHz).

    Returns
    -------
    window : np.ndarray [shape=(n_fft,), dtype=float64], read-only
        ``0.5 + 0.5 * cos(phi)`` with ``phi`` spaced evenly over [-pi, pi): the same expression
        and evaluation order as scipy, so frames are windowed exactly as librosa does.
    """
    check_stft_parameters(n_fft, 1)
    phase = np.linspace(-np.pi, np.pi, n_fft + 1, dtype=np.float64)[:-1]
    window = 0.5 + 0.5 * np.cos(phase)
    window.flags.writeable = False
    return window


def frame_count(n_samples: int, *, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH) -> int:
    """Number of centered STFT frames of a signal of ``n_samples`` samples.

    With ``n_fft // 2`` zeros padded on each side this is
    ``1 + (n_samples + 2 * (n_fft // 2) - n_fft) // hop_length``, which is
    ``1 + n_samples // hop_length`` for an even ``n_fft`` (1 frame for 1 sample, 2585 for 30 s
    at 44.1 kHz), exactly librosa's frame count for ``center=True``.
    """
    if n_samples < 1:
        raise AudioError(f"features: a signal needs at least 1 sample, got {n_samples}")
    return 1 + (n_samples + 2 * (n_fft // 2) - n_fft) // hop_length


_SCRATCH = threading.local()


def _scratch(
    n_fft: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.complex128]]:
    """This thread's reusable chunk buffers (windowed frames, their spectra) for ``n_fft``.

    Reused rather than allocated per call: the streaming windower calls in small batches,
    and fresh megabyte buffers each time cost page faults that tripled its run time.
    """
    buffers: dict[int, tuple[npt.NDArray[np.float64], npt.NDArray[np.complex128]]]
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    if n_fft not in buffers:
        buffers[n_fft] = (
            np.empty((FRAMES_PER_CHUNK, n_fft), dtype=np.float64),
            np.empty((FRAMES_PER_CHUNK, n_fft // 2 + 1), dtype=np.complex128),
        )
    return buffers[n_fft]


def power_sum_of_frames(frames: FloatArray) -> npt.NDArray[np.float64]:
    """Sum over frames of ``|rfft(hann * frame)| ** 2``: the one place frames are windowed, FFT'd.

    Parameters
    ----------
    frames : np.ndarray [shape=(n_frames, n_fft), real floating dtype]
        Frames of raw samples (a strided view is fine: it is read in chunks of
        `FRAMES_PER_CHUNK` rows, never copied whole). ``n_frames`` may be 0.

    Returns
    -------
    power_sum : np.ndarray [shape=(n_fft // 2 + 1,), dtype=float64]
        Per frequency bin, the sum over frames of the squared magnitude of the Hann-windowed
        real FFT. Bin k is at ``k * sample_rate / n_fft`` Hz.

    Notes
    -----
    Windowing and the FFT run in float64, as librosa does (its float64 window promotes the
    float32 frames), so low-power bins keep full relative precision; a float32 FFT would lose
    them next to loud bins. Squares are summed in float64.
    """
    n_frames, n_fft = frames.shape
    window = hann_window(n_fft)
    n_bins = n_fft // 2 + 1
    # Summing re**2 and im**2 separately through a float64 view avoids np.abs (a sqrt) and a
    # complex temporary; the pairs are added once at the end.
    squares = np.zeros(2 * n_bins, dtype=np.float64)
    windowed, spectrum = _scratch(n_fft)
    for first in range(0, n_frames, FRAMES_PER_CHUNK):
        chunk = frames[first : first + FRAMES_PER_CHUNK]
        n_chunk = chunk.shape[0]
        np.multiply(chunk, window, out=windowed[:n_chunk])
        np.fft.rfft(windowed[:n_chunk], axis=-1, out=spectrum[:n_chunk])
        parts = spectrum[:n_chunk].view(np.float64)
        squares += np.einsum("ij,ij->j", parts, parts)
    result: npt.NDArray[np.float64] = squares.reshape(n_bins, 2).sum(axis=1)
    return result


def _frames(region: FloatArray, n_fft: int, hop_length: int) -> FloatArray:
    """Frames at 0, hop, 2*hop, ... of ``region`` as a strided view (no copy)."""
    return sliding_window_view(region, n_fft)[::hop_length]


def frame_power_sum(
    segment: FloatArray,
    *,
    segment_start: int = 0,
    n_samples: int | None = None,
    first_frame: int = 0,
    stop_frame: int | None = None,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
) -> npt.NDArray[np.float64]:
    """Power sum over some centered STFT frames of a signal of which ``segment`` is a part.

    The signal has ``n_samples`` samples and is framed as librosa does with ``center=True,
    pad_mode="constant"``: frame ``j`` covers signal samples ``[j * hop_length - n_fft // 2,
    j * hop_length - n_fft // 2 + n_fft)``, with zeros outside ``[0, n_samples)``. Only the
    frames touching either end are copied (into small zero-padded buffers); the rest are
    strided views of ``segment``. This lets a stream compute a window's frames as its samples
    arrive (`daemon.listen.windows`) with the same arithmetic as `row_means`.

    Parameters
    ----------
    segment : np.ndarray [shape=(m,), real floating dtype]
        Signal samples ``[segment_start, segment_start + m)``. Must cover every in-signal
        sample of the requested frames.
    segment_start : int >= 0
        Index in the signal of ``segment[0]``.
    n_samples : int >= 1 or None
        Length of the whole signal (where the right zero padding starts);
        None means ``segment_start + m``.
    first_frame, stop_frame : int
        Frames ``first_frame <= j < stop_frame`` are summed; ``stop_frame=None`` means
        ``frame_count(n_samples)``.
    n_fft : int >= 2
        Frame length in samples (1024 = 23 ms at 44.1 kHz).
    hop_length : int >= 1
        Samples between frame starts (512 = 11.6 ms at 44.1 kHz).

    Returns
    -------
    power_sum : np.ndarray [shape=(n_fft // 2 + 1,), dtype=float64]
        Sum of ``|X[:, j]| ** 2`` over the requested frames (zeros when there are none).

    Raises
    ------
    ConfigError
        ``n_fft`` or ``hop_length`` is out of range.
    AudioError
        The frame range or ``segment`` does not fit the signal.
    """
    check_stft_parameters(n_fft, hop_length)
    if segment.ndim != 1:
        raise AudioError(f"features: samples must be 1-D mono, got shape {segment.shape}")
    if n_samples is None:
        n_samples = segment_start + segment.shape[0]
    total = frame_count(n_samples, n_fft=n_fft, hop_length=hop_length)
    if stop_frame is None:
        stop_frame = total
    if not 0 <= first_frame <= stop_frame <= total:
        raise AudioError(
            f"features: frames [{first_frame}, {stop_frame}) are outside the {total} frames"
            f" of a {n_samples}-sample signal"
        )
    pad = n_fft // 2
    # Frames [interior_first, interior_stop) lie wholly inside the signal: no padding needed.
    interior_first = -(-pad // hop_length)
    interior_stop = max(interior_first, (n_samples + pad - n_fft) // hop_length + 1)

    def signal_range(first: int, stop: int) -> tuple[int, int]:
        return first * hop_length - pad, (stop - 1) * hop_length - pad + n_fft

    def take(lo: int, hi: int) -> FloatArray:
        """Signal samples [lo, hi) (inside the signal) as a view of segment."""
        if lo < segment_start or hi > segment_start + segment.shape[0]:
            raise AudioError(
                f"features: samples [{lo}, {hi}) are needed but only"
                f" [{segment_start}, {segment_start + segment.shape[0]}) were given"
            )
        return segment[lo - segment_start : hi - segment_start]

    def padded_power_sum(first: int, stop: int) -> npt.NDArray[np.float64]:
        lo, hi = signal_range(first, stop)
        region = np.zeros(hi - lo, dtype=segment.dtype)
        inside_lo, inside_hi = max(lo, 0), min(hi, n_samples)
        if inside_hi > inside_lo:
            region[inside_lo - lo : inside_hi - lo] = take(inside_lo, inside_hi)
        return power_sum_of_frames(_frames(region, n_fft, hop_length))

    total_sum = np.zeros(n_fft // 2 + 1, dtype=np.float64)
    for first, stop, padded in (
        (first_frame, min(stop_frame, interior_first), True),
        (max(first_frame, interior_first), min(stop_frame, interior_stop), False),
        (max(first_frame, interior_stop), stop_frame, True),
    ):
        if stop <= first:
            continue
        if padded:
            total_sum += padded_power_sum(first, stop)
        else:
            lo, hi = signal_range(first, stop)
            total_sum += power_sum_of_frames(_frames(take(lo, hi), n_fft, hop_length))
    return total_sum


def _as_samples(samples: npt.ArrayLike) -> FloatArray:
    array = np.asarray(samples)
    if array.ndim != 1:
        raise AudioError(f"features: samples must be 1-D mono, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise AudioError(f"features: samples must be floating point, got dtype {array.dtype}")
    if array.shape[0] == 0:
        raise AudioError("features: no samples (a signal needs at least 1 sample)")
    return array


def means_from_power_sum(
    power_sum: npt.NDArray[np.float64], n_frames: int
) -> npt.NDArray[np.float32]:
    """Row means (float32) from a float64 power sum over ``n_frames`` frames; rejects NaN/Inf."""
    means = (power_sum / n_frames).astype(np.float32)
    if not np.all(np.isfinite(means)):
        raise AudioError("features: samples contain NaN or Inf (or overflow float32 power)")
    return means


def row_means(
    samples: npt.ArrayLike,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    *,
    workers: int = 1,
) -> npt.NDArray[np.float32]:
    """Power row means of a centered Hann STFT: the project's feature vector of one window.

    Equal (rtol 1e-5) to ``np.mean(np.abs(librosa.stft(samples, n_fft=n_fft,
    hop_length=hop_length, window="hann", center=True, pad_mode="constant")) ** 2, axis=1)``
    for any length, computed in chunks so 1 h of audio never holds its whole spectrogram.

    Parameters
    ----------
    samples : np.ndarray [shape=(n,), n >= 1, float32 or float64]
        Mono samples, full scale +-1.0 (44.1 kHz in this project).
    n_fft : int >= 2
        Frame length in samples (default 1024 = 23 ms at 44.1 kHz; 513 frequency rows).
    hop_length : int >= 1
        Samples between frames (default 512 = 11.6 ms at 44.1 kHz).
    workers : int >= 1
        Threads to share the frames among (numpy's FFT releases the GIL). 1, the default,
        is right for the daemon; batch work on long signals (training) may use the cores.
        The result does not depend on it beyond float64 rounding.

    Returns
    -------
    means : np.ndarray [shape=(n_fft // 2 + 1,), dtype=float32]
        Mean over the ``frame_count(n)`` frames of ``|X[k, t]| ** 2`` for each bin k
        (``k * sample_rate / n_fft`` Hz). Units: squared full-scale amplitude. Digital silence
        gives exact zeros.

    Raises
    ------
    AudioError
        ``samples`` is not 1-D floating point, is empty, or contains NaN/Inf.
    ConfigError
        ``n_fft`` or ``hop_length`` is out of range.
    """
    array = _as_samples(samples)
    check_stft_parameters(n_fft, hop_length)
    n_frames = frame_count(array.shape[0], n_fft=n_fft, hop_length=hop_length)
    n_parts = max(1, min(int(workers), n_frames // MIN_FRAMES_PER_WORKER))
    if n_parts == 1:
        power_sum = frame_power_sum(array, n_fft=n_fft, hop_length=hop_length)
    else:
        bounds = [n_frames * part // n_parts for part in range(n_parts + 1)]

        def part_sum(part: int) -> npt.NDArray[np.float64]:
            return frame_power_sum(
                array,
                first_frame=bounds[part],
                stop_frame=bounds[part + 1],
                n_fft=n_fft,
                hop_length=hop_length,
            )

        with ThreadPoolExecutor(max_workers=n_parts) as pool:
            power_sum = np.sum(list(pool.map(part_sum, range(n_parts))), axis=0)
    return means_from_power_sum(power_sum, n_frames)


def _power_mean(features: FloatArray) -> npt.NDArray[np.float32]:
    return np.asarray(features, dtype=np.float32).copy()


def _log10_power_mean(features: FloatArray) -> npt.NDArray[np.float32]:
    floored = np.maximum(np.asarray(features, dtype=np.float64), LOG10_FLOOR)
    return np.log10(floored).astype(np.float32)


TRANSFORMS: Final[Mapping[str, Callable[[FloatArray], npt.NDArray[np.float32]]]] = MappingProxyType(
    {
        "power_mean": _power_mean,
        "log10_power_mean": _log10_power_mean,
    }
)
"""Named transforms applied to `row_means` output before the model; a model's metadata
(``features.transform``) names one. ``power_mean`` is the identity (the notebook's features);
``log10_power_mean`` is ``log10(max(x, LOG10_FLOOR))``."""


def apply_transform(name: str, features: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Apply the transform called ``name`` to one feature vector or a batch.

    Parameters
    ----------
    name : str
        A key of `TRANSFORMS`.
    features : np.ndarray [shape=(n_bins,) or (batch, n_bins)]
        Raw power row means as `row_means` returns them.

    Returns
    -------
    transformed : np.ndarray [same shape, dtype=float32]

    Raises
    ------
    ModelError
        ``name`` is not a known transform (the message lists the known ones).
    """
    transform = TRANSFORMS.get(name)
    if transform is None:
        known = ", ".join(sorted(TRANSFORMS))
        raise ModelError(f"features.transform: unknown transform {name!r} (known: {known})")
    array = np.asarray(features)
    if array.ndim not in (1, 2):
        raise ModelError(
            f"features.transform: expected one feature vector or a batch (1-D or 2-D),"
            f" got shape {array.shape}"
        )
    return transform(array)
