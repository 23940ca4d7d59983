"""Window features of every file: daemon.listen.audio.load + daemon.listen.windows.windows_of on a
process pool.

Results are cached on disk, keyed by the file's content hash (sha256 of its bytes), the feature
and window settings, and the source of the daemon modules that compute them, so a second run on
the same data decodes no audio. This module never imports TensorFlow (workers stay light).
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final, TextIO

import numpy as np
import structlog

from daemon.analyse import features, physics
from daemon.analyse.featurespec import FeatureSpec
from daemon.constants import HOP_LENGTH, N_BINS, N_FFT, SAMPLE_RATE, WINDOW_S
from daemon.errors import AudioError
from daemon.listen import audio, windows
from train.data import LabelledFile

log = structlog.get_logger(__name__)

CACHE_FORMAT: Final = 2
"""Bump when the cache file layout changes; old entries are then simply not found."""

DEFAULT_CACHE_DIR: Final = Path("~/.cache/corona-monitor/features")
"""Where features are cached unless --cache says otherwise."""

_HASH_CHUNK_BYTES: Final = 1 << 20
_PROGRESS_INTERVAL_S: Final = 0.2
"""Redraw the progress line at most this often (a terminal does not need more)."""


@dataclass(frozen=True)
class WindowSettings:
    """How files are cut into windows and turned into features (the daemon's settings)."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    hop_length: int = HOP_LENGTH
    window_s: float = WINDOW_S
    """Length of one scored window in seconds."""
    hop_s: float = WINDOW_S
    """Start-to-start distance of windows in seconds (the daemon uses window_s)."""

    def key_text(self) -> str:
        """A stable text of these settings for cache keys."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def of(cls, spec: FeatureSpec) -> WindowSettings:
        """The windows a model with this FeatureSpec scores (back to back, as the daemon)."""
        return cls(
            sample_rate=spec.sample_rate,
            n_fft=spec.n_fft,
            hop_length=spec.hop_length,
            window_s=spec.window_s,
            hop_s=spec.window_s,
        )


@dataclass(frozen=True)
class FileFeatures:
    """The windows of one file: raw power row means (before any transform) and their levels."""

    file: LabelledFile
    features: np.ndarray
    """float32 (n_windows, 513)."""
    level_dbfs: np.ndarray
    """float32 (n_windows,)."""
    clipped: np.ndarray
    """float32 (n_windows,): fraction of samples at full scale."""
    physics: np.ndarray
    """float64 (n_windows, physics.MEASUREMENT_SIZE): `Measurement.to_array` of each window."""
    sha256: str

    @property
    def n_windows(self) -> int:
        """Number of windows cut from the file."""
        return int(self.features.shape[0])


@dataclass(frozen=True)
class Failure:
    """A file that could not be featurized and why."""

    name: str
    reason: str


@dataclass
class FeatureStats:
    """What one featurize call did."""

    files: int = 0
    cache_hits: int = 0
    audio_reads: int = 0
    """Files whose audio was decoded or tried (cache misses), failures included."""
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class FeatureSet:
    """Featurized files in input order, unreadable ones left out (listed in stats.failures)."""

    files: tuple[FileFeatures, ...]
    settings: WindowSettings
    stats: FeatureStats

    def stacked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features (N, 513), labels (N,), file index (N,)) over all windows of all files."""
        if not self.files:
            return np.zeros((0, N_BINS), np.float32), np.zeros(0, int), np.zeros(0, int)
        x = np.concatenate([f.features for f in self.files]).astype(np.float32)
        y = np.concatenate([np.full(f.n_windows, f.file.label) for f in self.files])
        group = np.concatenate([np.full(f.n_windows, i) for i, f in enumerate(self.files)])
        return x, y.astype(int), group.astype(int)

    def vectors(self, spec: FeatureSpec) -> np.ndarray:
        """Raw feature vectors (N, spec.width) of all windows, as the daemon scores them."""
        means, _, _ = self.stacked()
        if not self.files:
            return np.zeros((0, spec.width), np.float32)
        measurements = np.concatenate([f.physics for f in self.files])
        return spec.vectors(means, measurements)


def _source_fingerprint() -> str:
    """sha256 of the daemon modules that make features: changing them invalidates the cache."""
    digest = hashlib.sha256()
    for module in (audio, features, physics, windows):
        source = Path(module.__file__ or "")
        digest.update(source.read_bytes() if source.is_file() else module.__name__.encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(content_sha256: str, settings: WindowSettings, fingerprint: str) -> str:
    """The cache entry name for one file's content under these settings."""
    text = f"{CACHE_FORMAT}\n{content_sha256}\n{settings.key_text()}\n{fingerprint}"
    return hashlib.sha256(text.encode()).hexdigest()


def _cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:2] / f"{key}.npz"


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path) as data:
            return {name: data[name] for name in ("features", "level_dbfs", "clipped", "physics")}
    except (OSError, ValueError, KeyError):
        return None  # missing or damaged entry: recompute it


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename so a concurrent or interrupted run never sees half a file.
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        features=arrays["features"],
        level_dbfs=arrays["level_dbfs"],
        clipped=arrays["clipped"],
        physics=arrays["physics"],
    )
    tmp.replace(path)


def _compute(path: Path, settings: WindowSettings) -> dict[str, np.ndarray]:
    """Decode one file and cut it into feature windows (runs in a worker process)."""
    samples, _ = audio.load(path)
    cut = windows.windows_of(
        samples,
        sample_rate=settings.sample_rate,
        length_s=settings.window_s,
        hop_s=settings.hop_s,
        n_fft=settings.n_fft,
        hop_length=settings.hop_length,
    )
    if not cut:
        raise AudioError(f"{path}: no audio samples")
    return {
        "features": np.stack([np.asarray(w.features, np.float32) for w in cut]),
        "level_dbfs": np.asarray([w.level_dbfs for w in cut], np.float32),
        "clipped": np.asarray([w.clipped for w in cut], np.float32),
        "physics": np.stack([w.physics.to_array() for w in cut]),
    }


def _job(path: Path, settings: WindowSettings, cache_file: Path | None) -> dict[str, np.ndarray]:
    arrays = _compute(path, settings)
    if cache_file is not None:
        _write_cache(cache_file, arrays)
    return arrays


class Progress:
    """A one-line progress counter on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, label: str = "features", stream: TextIO | None = None) -> None:
        self.total, self.label, self.done = total, label, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() and total > 0
        self._last_draw = 0.0

    def advance(self) -> None:
        """Count one finished item and redraw when due."""
        self.done += 1
        now = time.monotonic()
        if self.enabled and (
            now - self._last_draw >= _PROGRESS_INTERVAL_S or self.done == self.total
        ):
            self._last_draw = now
            width = 30
            filled = width * self.done // self.total
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        """End the progress line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def default_workers() -> int:
    """All cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def featurize(
    files: Sequence[LabelledFile],
    *,
    settings: WindowSettings | None = None,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    workers: int | None = None,
    strict: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> FeatureSet:
    """Features of every window of every file, from the cache where possible.

    Unreadable files are recorded in `stats.failures` and left out; with `strict` the first
    one raises its AudioError instead. `cache_dir=None` disables the cache. Workers are
    spawned (never forked), so this is safe to call after TensorFlow has started threads.
    """
    settings = settings or WindowSettings()
    started = time.monotonic()
    stats = FeatureStats(files=len(files))
    fingerprint = _source_fingerprint()
    cache_root = cache_dir.expanduser() if cache_dir is not None else None
    results: dict[int, tuple[dict[str, np.ndarray], str]] = {}
    pending: list[tuple[int, Path | None, str]] = []
    for index, item in enumerate(files):
        try:
            digest = file_sha256(item.path)
        except OSError as exc:
            _fail(stats, item, f"cannot read: {exc.strerror or exc}", strict)
            continue
        cache_file = None
        if cache_root is not None:
            cache_file = _cache_path(cache_root, cache_key(digest, settings, fingerprint))
            cached = _read_cache(cache_file)
            if cached is not None:
                stats.cache_hits += 1
                results[index] = (cached, digest)
                continue
        pending.append((index, cache_file, digest))

    collector = _Collector(files, results, stats, strict, on_progress, Progress(len(pending)))
    n_workers = min(workers or default_workers(), len(pending))
    try:
        if n_workers <= 1:
            for index, cache_file, digest in pending:
                job = functools.partial(_job, files[index].path, settings, cache_file)
                collector.take(index, digest, job)
        elif pending:
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(n_workers, mp_context=context) as pool:
                futures = {
                    pool.submit(_job, files[index].path, settings, cache_file): (index, digest)
                    for index, cache_file, digest in pending
                }
                try:
                    for future in concurrent.futures.as_completed(futures):
                        collector.take(*futures[future], future.result)
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        collector.progress.close()

    done = tuple(
        FileFeatures(
            file=files[index],
            features=arrays["features"].astype(np.float32),
            level_dbfs=arrays["level_dbfs"],
            clipped=arrays["clipped"],
            physics=np.asarray(arrays["physics"], np.float64),
            sha256=digest,
        )
        for index, (arrays, digest) in sorted(results.items())
    )
    stats.seconds = time.monotonic() - started
    log.info(
        "features_done",
        files=stats.files,
        cache_hits=stats.cache_hits,
        audio_reads=stats.audio_reads,
        failures=len(stats.failures),
        seconds=round(stats.seconds, 2),
    )
    return FeatureSet(files=done, settings=settings, stats=stats)


def _fail(stats: FeatureStats, item: LabelledFile, reason: str, strict: bool) -> None:
    if strict:
        raise AudioError(f"{item.name}: {reason}")
    stats.failures.append(Failure(name=item.name, reason=reason))
    log.warning("file_skipped", file=item.name, reason=reason)


@dataclass
class _Collector:
    """Gathers job results in input order and records (or, when strict, raises) failures."""

    files: Sequence[LabelledFile]
    results: dict[int, tuple[dict[str, np.ndarray], str]]
    stats: FeatureStats
    strict: bool
    on_progress: Callable[[int, int], None] | None
    progress: Progress

    def take(self, index: int, digest: str, get: Callable[[], dict[str, np.ndarray]]) -> None:
        """Store one job's result (`get` runs or fetches it) or its failure."""
        item = self.files[index]
        self.stats.audio_reads += 1
        try:
            self.results[index] = (get(), digest)
        except AudioError as exc:
            _fail(self.stats, item, _reason(exc, item), self.strict)
        except OSError as exc:
            _fail(self.stats, item, f"cannot read: {exc.strerror or exc}", self.strict)
        finally:
            self.progress.advance()
            if self.on_progress is not None:
                self.on_progress(self.progress.done, self.progress.total)


def _reason(exc: Exception, item: LabelledFile) -> str:
    """The error text without a leading copy of the file path (the name is shown beside it)."""
    text = str(exc)
    for prefix in (f"{item.path}: ", f"{item.path}:"):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text
