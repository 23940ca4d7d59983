"""The on-site baseline: each node learns what its own tower sounds like, then measures distance.

For `baseline.learn_h` hours of usable windows (sensor `ok`, and not labelled anomalous by the
shipped classifier, so a tower that already has corona does not learn it as normal) the node
adds each window's novelty vector (`daemon.analyse.novelty.NAMES`) to streamed Gaussian statistics
in
the state directory. Then the baseline is *ready*: it fits the one-sided Gaussian of
`daemon.analyse.novelty`, and every later verdict carries its distance and score beside the
classifier's.

The threshold needs distances of normal windows the statistics were not computed from, without
keeping every window: windows go alternately, in blocks of a twelfth of the learning period,
to two halves (A and B), each with its own statistics and a thinned sample of its vectors.
When learning ends, B's sample is measured against A's statistics and A's against B's, and the
threshold is the gamma quantile of those held-out distances (`novelty.Threshold`); the model
itself is fitted on both halves together. Blocks rather than single windows keep the two
halves apart in time, so weather that lasts an hour is not "held out" from itself.

The file is rewritten atomically (temporary file, fsync, rename) after every learned window:
a SIGKILL or power cut loses at most the window being added. It records the feature
fingerprint (`fingerprint`); a file from another model's features, or an unreadable one, is
moved aside (never deleted) and learning starts again, with a warning naming both.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import structlog

from daemon.analyse import novelty
from daemon.analyse import physics as phys
from daemon.analyse.featurespec import FeatureSpec
from daemon.errors import CoronaError
from daemon.private_dirs import make_private_dir

log = structlog.get_logger(__name__)

FORMAT: Final = "corona-baseline/1"
SAMPLE_CAP: Final = 512
"""Vectors kept per half for the held-out threshold; above it every other one is dropped and
the stride doubles (deterministic thinning, so the file stays a few tens of KiB)."""
BLOCKS: Final = 12
"""The learning period is cut into this many blocks, alternating between the two halves."""
_FILE_MODE: Final = 0o640

BaselineState = Literal["learning", "ready", "off"]


class BaselineError(CoronaError):
    """The baseline file cannot be used (its message names the file and the reason)."""


class BaselineBusyError(BaselineError):
    """Another process (the running daemon) holds the baseline."""


def fingerprint(spec: FeatureSpec, line_hz: phys.LineSetting) -> dict[str, Any]:
    """What a novelty vector depends on; a baseline learned under another one is not comparable."""
    return {
        "format": FORMAT,
        "names": list(novelty.NAMES),
        "physics_version": phys.VERSION,
        "line_hz": line_hz,
        "sample_rate": spec.sample_rate,
        "n_fft": spec.n_fft,
        "hop_length": spec.hop_length,
        "window": spec.window,
        "center": spec.center,
        "window_s": spec.window_s,
    }


def novelty_vector(measurement: phys.Measurement, line_hz: phys.LineSetting) -> np.ndarray:
    """The novelty vector of one window's physics measurement."""
    return np.asarray(measurement.select(line_hz).values(novelty.NAMES), dtype=np.float64)


@dataclass(frozen=True)
class Reading:
    """What the baseline says about one window (the verdict's `baseline` object)."""

    state: BaselineState
    distance: float | None
    score: float | None
    windows: int
    """Windows learned so far."""
    learn_windows: int

    def payload(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "distance": None if self.distance is None else round(self.distance, 4),
            "score": None if self.score is None else round(self.score, 6),
            "windows": self.windows,
            "learn_windows": self.learn_windows,
        }


OFF: Final = Reading("off", None, None, 0, 0)


@dataclass
class _Half:
    stats: novelty.GaussianAccumulator
    sample: npt.NDArray[np.float64]
    stride: int
    seen: int
    """Windows this half received (the thinning counts them)."""

    @classmethod
    def empty(cls, dim: int) -> _Half:
        return cls(novelty.GaussianAccumulator.empty(dim), np.zeros((0, dim)), 1, 0)

    def add(self, vector: np.ndarray) -> None:
        self.stats.add(vector)
        if self.seen % self.stride == 0:
            self.sample = np.vstack([self.sample, vector[np.newaxis, :]])
            if len(self.sample) > SAMPLE_CAP:
                self.sample = self.sample[::2]
                self.stride *= 2
        self.seen += 1


@dataclass(frozen=True)
class Fitted:
    model: novelty.NormalModel
    threshold: novelty.Threshold


class Baseline:
    """One node's baseline: learning, then ready. Not thread-safe (the pipeline's thread)."""

    def __init__(
        self,
        path: Path,
        *,
        fingerprint: Mapping[str, Any],
        learn_windows: int,
        quantile: float,
    ) -> None:
        self.path = path
        self.fingerprint = dict(fingerprint)
        self.learn_windows = max(1, learn_windows)
        self.quantile = quantile
        dim = len(novelty.NAMES)
        self._halves = (_Half.empty(dim), _Half.empty(dim))
        self.windows = 0
        self.learned_since: str | None = None
        self.fitted: Fitted | None = None
        self.readonly = False
        """Score only, never learn or write (a replay while the daemon holds the file)."""

    # --- state --------------------------------------------------------------------------------
    @property
    def state(self) -> BaselineState:
        return "ready" if self.fitted is not None else "learning"

    @property
    def block_windows(self) -> int:
        return max(1, self.learn_windows // BLOCKS)

    def observe(self, vector: np.ndarray, *, learn: bool) -> Reading:
        """Score one novelty vector; while learning, add it first when `learn` (usable window)."""
        if self.fitted is None:
            if learn and not self.readonly and np.all(np.isfinite(vector)):
                self._learn(vector)
                self._save_or_warn()
            if self.fitted is None:
                return Reading("learning", None, None, self.windows, self.learn_windows)
        d2 = float(self.fitted.model.distance(vector))
        score = float(self.fitted.threshold.score(d2))
        return Reading("ready", d2, score, self.windows, self.learn_windows)

    def learn_all(self, vectors: npt.ArrayLike) -> None:
        """Learn from these vectors alone (import): they are the whole commissioning period,
        whatever learn_h says, so its blocks (and the halves) are cut from their count."""
        rows = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        rows = rows[np.all(np.isfinite(rows), axis=1)]
        self.reset()
        self.learn_windows = max(1, len(rows))
        for vector in rows:
            self._add(vector)
        self._try_fit(force=True)  # ready if there is enough to fit, whatever learn_h asked
        self.save()

    def _learn(self, vector: np.ndarray) -> None:
        self._add(vector)
        if self.windows >= self.learn_windows:
            self._try_fit()

    def _add(self, vector: np.ndarray) -> None:
        if self.learned_since is None:
            self.learned_since = datetime.now(UTC).isoformat(timespec="seconds")
        half = (self.windows // self.block_windows) % 2
        self._halves[half].add(vector)
        self.windows += 1

    def _try_fit(self, *, force: bool = False) -> None:
        need = novelty.min_windows(len(novelty.NAMES))
        a, b = self._halves
        if a.stats.count < need or b.stats.count < need:
            if force or self.windows == self.learn_windows:
                log.warning(
                    "baseline_needs_more",
                    windows=self.windows,
                    halves=[a.stats.count, b.stats.count],
                    need_per_half=need,
                )
            return
        self.fitted = fit_halves(a, b, self.quantile)
        log.info(
            "baseline_ready",
            windows=self.windows,
            threshold_d2=round(self.fitted.threshold.distance, 3),
            shrinkage=round(self.fitted.model.shrinkage, 3),
            path=str(self.path),
        )

    def retarget(self, *, learn_windows: int, quantile: float) -> None:
        """New learning terms (a reload) with the same features: as `load` would apply them,
        in memory (a learning baseline takes the new target, a ready one keeps its own)."""
        if self.fitted is not None:
            return
        self.learn_windows = max(1, learn_windows)
        self.quantile = quantile
        if self.windows >= self.learn_windows:
            self._try_fit()  # the target was lowered below what is learned: finish now

    def reset(self) -> None:
        dim = len(novelty.NAMES)
        self._halves = (_Half.empty(dim), _Half.empty(dim))
        self.windows = 0
        self.learned_since = None
        self.fitted = None

    def status(self) -> dict[str, Any]:
        """Everything `corona-monitor baseline status` shows."""
        doc: dict[str, Any] = {
            "state": self.state,
            "path": str(self.path),
            "windows": self.windows,
            "learn_windows": self.learn_windows,
            "learned_since": self.learned_since,
            "halves": [h.stats.count for h in self._halves],
            "features": self.fingerprint,
        }
        if self.fitted is not None:
            doc["threshold_distance"] = self.fitted.threshold.distance
            doc["threshold_rule"] = self.fitted.threshold.rule
            doc["shrinkage"] = self.fitted.model.shrinkage
            doc["mean"] = dict(zip(novelty.NAMES, map(float, self.fitted.model.mean), strict=True))
        return doc

    # --- file ---------------------------------------------------------------------------------
    def _save_or_warn(self) -> None:
        # A full or read-only state disk must not stop the tower listening: learning goes on in
        # memory and the next save tries again.
        try:
            self.save()
        except OSError as exc:
            log.warning("baseline_not_saved", path=str(self.path), error=exc.strerror or str(exc))

    def save(self) -> None:
        """Write the whole state atomically (see the module docstring)."""
        meta = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "windows": self.windows,
            "learn_windows": self.learn_windows,
            "quantile": self.quantile,
            "learned_since": self.learned_since,
            "ready": self.fitted is not None,
            "strides": [h.stride for h in self._halves],
            "seen": [h.seen for h in self._halves],
        }
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
        for name, half in zip("ab", self._halves, strict=True):
            arrays[f"{name}_count"] = np.array(half.stats.count, dtype=np.int64)
            arrays[f"{name}_mean"] = half.stats.mean
            arrays[f"{name}_scatter"] = half.stats.scatter
            arrays[f"{name}_sample"] = half.sample
        _atomic_npz(self.path, arrays)

    @classmethod
    def load(
        cls, path: Path, *, fingerprint: Mapping[str, Any], learn_windows: int, quantile: float
    ) -> Baseline:
        """The baseline in `path`; BaselineError when it is unreadable or from other features.

        The stored learning target wins over `learn_windows` once ready (a finished baseline
        stays finished); while learning, the configured target applies (learn_h may change)."""
        baseline = cls(
            path, fingerprint=fingerprint, learn_windows=learn_windows, quantile=quantile
        )
        arrays = _read_npz(path)
        try:
            meta = json.loads(str(arrays["meta"]))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise BaselineError(f"baseline {path}: not a {FORMAT} file")
            stored = meta["fingerprint"]
            if stored != baseline.fingerprint:
                changes = _differences(stored, fingerprint)
                raise BaselineError(f"baseline {path} was learned for other features ({changes})")
            halves = []
            for index, name in enumerate("ab"):
                stats = novelty.GaussianAccumulator(
                    int(arrays[f"{name}_count"]),
                    np.asarray(arrays[f"{name}_mean"], np.float64),
                    np.asarray(arrays[f"{name}_scatter"], np.float64),
                )
                sample = np.asarray(arrays[f"{name}_sample"], np.float64)
                dim = len(novelty.NAMES)
                if stats.mean.shape != (dim,) or stats.scatter.shape != (dim, dim):
                    raise BaselineError(f"baseline {path}: {name} statistics have the wrong shape")
                if sample.ndim != 2 or sample.shape[1] != dim:
                    raise BaselineError(f"baseline {path}: {name} sample has the wrong shape")
                halves.append(
                    _Half(stats, sample, int(meta["strides"][index]), int(meta["seen"][index]))
                )
            baseline._halves = (halves[0], halves[1])
            baseline.windows = int(meta["windows"])
            baseline.learned_since = meta.get("learned_since")
            if meta.get("ready"):
                baseline.learn_windows = int(meta["learn_windows"])
                baseline.fitted = fit_halves(halves[0], halves[1], float(meta["quantile"]))
                baseline.quantile = float(meta["quantile"])
        except BaselineError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, json.JSONDecodeError) as exc:
            raise BaselineError(f"baseline {path}: damaged ({type(exc).__name__}: {exc})") from None
        if baseline.fitted is None and baseline.windows >= baseline.learn_windows:
            baseline._try_fit()  # learn_h was lowered since: finish now
        return baseline

    @classmethod
    def open(
        cls, path: Path, *, fingerprint: Mapping[str, Any], learn_windows: int, quantile: float
    ) -> Baseline:
        """The daemon's start-up: load `path`, or start learning when it is missing; a damaged
        or foreign file is moved aside (`.rejected-TIME`) with a warning, never deleted."""
        kwargs: dict[str, Any] = {
            "fingerprint": fingerprint,
            "learn_windows": learn_windows,
            "quantile": quantile,
        }
        if not path.exists():
            log.info("baseline_learning", path=str(path), learn_windows=learn_windows, since="now")
            return cls(path, **kwargs)
        try:
            baseline = cls.load(path, **kwargs)
        except BaselineError as exc:
            aside = path.with_name(
                f"{path.name}.rejected-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
            )
            with contextlib.suppress(OSError):
                path.replace(aside)
            log.warning("baseline_restarted", reason=str(exc), moved_to=str(aside))
            return cls(path, **kwargs)
        log.info(
            "baseline_loaded",
            path=str(path),
            state=baseline.state,
            windows=baseline.windows,
            learn_windows=baseline.learn_windows,
        )
        return baseline


def fit_halves(a: _Half, b: _Half, quantile: float) -> Fitted:
    """The model on both halves, the threshold from each half's sample against the other."""
    model = novelty.NormalModel.fit(a.stats.merged(b.stats))
    held_out = np.concatenate(
        [
            novelty.NormalModel.fit(a.stats).distance(b.sample),
            novelty.NormalModel.fit(b.stats).distance(a.sample),
        ]
    )
    return Fitted(model, novelty.Threshold.from_normal(held_out, quantile))


def learn_windows_for(learn_h: float, hop_s: float) -> int:
    """Windows in `learn_h` hours of windows `hop_s` apart."""
    return max(1, math.ceil(learn_h * 3600.0 / hop_s))


def lock(path: Path) -> int:
    """Take `path`.lock (flock, released when the process ends, even by SIGKILL) and return its
    descriptor; BaselineBusyError when another process (the running daemon) holds it."""
    make_private_dir(path.parent)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, _FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BaselineBusyError(
            f"baseline {path} is in use by another corona-monitor process"
            " (stop it first: systemctl stop corona-monitor)"
        ) from None
    return fd


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold the baseline's lock for as long as the block runs (`lock`)."""
    fd = lock(path)
    try:
        yield
    finally:
        os.close(fd)


def _differences(stored: object, current: Mapping[str, Any]) -> str:
    if not isinstance(stored, Mapping):
        return "no fingerprint"
    keys = sorted(set(stored) | set(current))
    changed = [
        f"{key} {stored.get(key)!r} there, {current.get(key)!r} now"
        for key in keys
        if stored.get(key) != current.get(key)
    ]
    return "; ".join(changed) or "unknown difference"


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise BaselineError(f"baseline {path} does not exist") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BaselineError(f"baseline {path}: cannot be read ({exc})") from None


def _atomic_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    make_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)
