"""Benchmark: daemon.analyse.features.row_means against librosa.stft + power + mean, same samples,
same run.

Run from the repo root: python -m bench.features [--repeats N]. Prints the machine and a table
per input length (30 s window, 1 h of audio): best-of-N seconds, speed ratio, and max relative
difference.
"""

import argparse
import os
import time
from collections.abc import Callable
from typing import Final

import librosa
import numpy as np
import numpy.typing as npt

from bench.machine import machine_lines
from daemon.analyse.features import row_means
from daemon.analyse.physics import measure
from daemon.constants import HOP_LENGTH, N_FFT, SAMPLE_RATE, WINDOW_S
from daemon.listen.windows import windows_of

HOUR_S: Final = 3600.0
SEED: Final = 20240601
ROWS_PER_REFERENCE_CHUNK: Final = 32  # float64 reference mean over 1 h without a 2.5 GB copy


def race(
    repeats: int, contenders: dict[str, Callable[[], npt.NDArray[np.floating]]]
) -> dict[str, tuple[float, npt.NDArray[np.floating]]]:
    """Best-of-``repeats`` wall time and result of each contender.

    Rounds interleave the contenders, so a busy neighbour on a shared machine slows all of
    them alike instead of whichever happened to run then.
    """
    results = {name: (float("inf"), function()) for name, function in contenders.items()}
    for _ in range(repeats):
        for name, function in contenders.items():
            start = time.perf_counter()
            result = function()
            elapsed_s = time.perf_counter() - start
            results[name] = (min(results[name][0], elapsed_s), result)
    return results


def librosa_stft(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.complex64]:
    stft: npt.NDArray[np.complex64] = librosa.stft(
        samples,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        window="hann",
        center=True,
        pad_mode="constant",
    )
    return stft


def librosa_row_means(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The notebook's way: the whole spectrogram, |X|^2, mean over frames."""
    means: npt.NDArray[np.float32] = np.mean(np.abs(librosa_stft(samples)) ** 2, axis=1)
    return means


def float64_reference(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """librosa's STFT values with the power mean taken in float64 (what the tests compare to)."""
    stft = librosa_stft(samples)
    return np.concatenate(
        [
            np.mean(
                np.abs(stft[row : row + ROWS_PER_REFERENCE_CHUNK]).astype(np.float64) ** 2, axis=1
            )
            for row in range(0, stft.shape[0], ROWS_PER_REFERENCE_CHUNK)
        ]
    )


def max_relative_difference(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a64 - b64) / np.abs(b64)))


def bench_case(label: str, duration_s: float, repeats: int) -> list[str]:
    rng = np.random.default_rng(SEED)
    n_samples = round(duration_s * SAMPLE_RATE)
    samples = (0.1 * rng.standard_normal(n_samples)).astype(np.float32)
    cores = os.cpu_count() or 1
    results = race(
        repeats,
        {
            "librosa": lambda: librosa_row_means(samples),
            "ours": lambda: row_means(samples),
            "threads": lambda: row_means(samples, workers=cores),
            "physics": lambda: measure(samples).to_array(),
            # What the daemon computes per window: both, streamed through the Windower.
            "vector": lambda: windows_of(samples, length_s=duration_s)[0].features,
        },
    )
    physics_s, vector_s = results["physics"][0], results["vector"][0]
    (theirs_s, theirs), (ours_s, ours) = results["librosa"], results["ours"]
    threads_s, threaded = results["threads"]
    reference = float64_reference(samples)
    diff_own = max_relative_difference(ours, theirs)
    diff_reference = max_relative_difference(ours, reference)
    diff_threads = max_relative_difference(ours, threaded)
    return [
        f"{label} ({n_samples} samples, {1 + n_samples // HOP_LENGTH} frames)",
        f"  librosa.stft + |X|^2 + mean        {theirs_s * 1e3:10.1f} ms   1.00x",
        f"  row_means (1 thread)               {ours_s * 1e3:10.1f} ms   {theirs_s / ours_s:4.2f}x",
        f"  row_means (workers={cores})              {threads_s * 1e3:10.1f} ms"
        f"   {theirs_s / threads_s:4.2f}x",
        f"  physics block alone (measure)      {physics_s * 1e3:10.1f} ms",
        f"  whole vector, Windower (row means + physics)"
        f" {vector_s * 1e3:6.1f} ms   {theirs_s / vector_s:4.2f}x",
        f"  max rel. diff. vs librosa's own float32 mean   {diff_own:.2e}",
        f"  max rel. diff. vs librosa STFT, float64 mean   {diff_reference:.2e}",
        f"  max rel. diff. 1 thread vs workers={cores}          {diff_threads:.2e}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="best of N for the 30 s window")
    parser.add_argument("--hour-repeats", type=int, default=2, help="best of N for 1 h")
    args = parser.parse_args()
    print("\n".join(machine_lines(("numpy", "librosa"))))
    print(f"best of {args.repeats} (30 s) / {args.hour_repeats} (1 h); white noise at 0.1 RMS\n")
    print("\n".join(bench_case(f"{WINDOW_S:.0f} s window", WINDOW_S, args.repeats)))
    print()
    print("\n".join(bench_case("1 h of audio", HOUR_S, args.hour_repeats)))


if __name__ == "__main__":
    main()
