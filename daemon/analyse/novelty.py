"""Normal-only scoring in numpy: how far a window lies from a Gaussian of normal windows.

One implementation for both places that learn "normal" without examples of failure: the
normal-only models `corona-train fit --normal-only` exports (fitted here in closed form, then
written as fixed TFLite layers) and the on-site baseline each node learns
(`daemon.analyse.baseline`).

The distance, for a novelty vector x (`NAMES` of the physics block):

    u  = (x - mean) / std                       per value
    u+ = max(u, 0)                              one-sided: see below
    d2 = | W u+ |^2,   W = R^(-1/2)             R: the shrunk correlation matrix of u

R is shrunk towards the identity by the Oracle Approximating Shrinkage of Chen, Wiesel, Eldar
and Hero (2010), which needs only the sample covariance and the count, so it works on streamed
statistics: a node never has to keep its windows. The distance is **one-sided** because corona
only ever adds energy (line-locked modulation, hum, crackle): a window quieter, or less
modulated, than the tower's normal is not a sign of failure, and counting it as one is what
made the two-sided distance flag other sites' calm audio (measured: file ROC-AUC 0.883
two-sided vs 0.974 one-sided on the independent simulator, for a Gaussian fitted on the normal
windows of this project's synth with real backgrounds).

The threshold on d2 is a quantile of a gamma distribution fitted by moments to the squared
distances of normal windows the statistics were *not* computed from (held-out files or hours),
with the Wilson-Hilferty approximation of its quantile (numpy and the standard library only).
A window's score is ``sigmoid((d2 - threshold) / spread)``: 0.5 exactly at the threshold,
monotone in d2, so it ranks windows as d2 does and fits the [0, 1] score of every verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

import numpy as np
import numpy.typing as npt

NAMES: Final = ("mod_db", "hum_db", "crackle_db")
"""The physics values a novelty vector holds, all in dB. Left out, measured (file ROC-AUC on
the independent simulator's test set, Gaussian fitted on the normal files of its 198-file set):
`sub_db`, because lines below 2f mark a non-corona source (a cricket) and a normal-only model
cannot tell "unusual because it is not corona" from "unusual because it is corona" (0.954 with
it, 0.986 without); `mod_depth`, a ratio whose normal spread (0.04) is under two int8 steps of
an input that also holds dB values in bels, so int8 export was refused (window ROC-AUC 0.887
against Keras' 0.913); without it 0.984 and int8 equal to Keras within 0.003."""

DEFAULT_QUANTILE: Final = 0.99
"""Per-window false-alarm rate 1 %: with the default 3-of-5 alarm rule and independent windows,
about one false alarm per 100,000 windows (35 days at 30 s). Weather makes windows dependent,
which is why the rate is measured on the storm hour in bench/robustness.py, not assumed."""

MIN_STD: Final = 1e-6
"""A value that never varied in the normal windows gets this spread, so a change in it still
counts (hugely) instead of dividing by zero."""


@dataclass
class GaussianAccumulator:
    """Count, mean and scatter matrix of streamed vectors (Chan et al.'s pairwise update).

    Exact for any split into batches: add(a); add(b) equals add(concat(a, b)), so a node can
    add one window at a time and save the three arrays after each."""

    count: int
    mean: npt.NDArray[np.float64]
    scatter: npt.NDArray[np.float64]
    """Sum over vectors of (x - mean)(x - mean)^T."""

    @classmethod
    def empty(cls, dim: int) -> GaussianAccumulator:
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def add(self, vectors: npt.ArrayLike) -> None:
        """Add one vector (dim,) or a batch (N, dim)."""
        batch = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        if batch.shape[1] != self.dim:
            raise ValueError(f"novelty: vectors have {batch.shape[1]} values, expected {self.dim}")
        if len(batch) == 0:
            return
        mean = batch.mean(axis=0)
        centred = batch - mean
        self.merge(GaussianAccumulator(len(batch), mean, centred.T @ centred))

    def merge(self, other: GaussianAccumulator) -> None:
        """Add another accumulator's vectors to this one."""
        if other.count == 0:
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.scatter = (
            self.scatter + other.scatter + np.outer(delta, delta) * self.count * other.count / total
        )
        self.mean = self.mean + delta * other.count / total
        self.count = total

    def merged(self, other: GaussianAccumulator) -> GaussianAccumulator:
        """A new accumulator holding both."""
        both = GaussianAccumulator(self.count, self.mean.copy(), self.scatter.copy())
        both.merge(other)
        return both


@dataclass(frozen=True)
class NormalModel:
    """A fitted one-sided Gaussian: `distance` gives d2 of the module docstring."""

    mean: npt.NDArray[np.float64]
    std: npt.NDArray[np.float64]
    whitening: npt.NDArray[np.float64]
    """W = R^(-1/2), symmetric."""
    shrinkage: float
    """OAS's rho: 0 = the sample correlation, 1 = the identity."""
    count: int

    @classmethod
    def fit(cls, stats: GaussianAccumulator) -> NormalModel:
        """Fit from streamed statistics; ValueError when they hold too few vectors."""
        n, p = stats.count, stats.dim
        if n < min_windows(p):
            raise ValueError(
                f"novelty: {n} normal windows are too few for {p} values (need {min_windows(p)})"
            )
        covariance = stats.scatter / n
        std = np.sqrt(np.maximum(np.diag(covariance), 0.0))
        std = np.maximum(std, MIN_STD)
        correlation = covariance / np.outer(std, std)
        rho = oas_shrinkage(correlation, n)
        shrunk = (1 - rho) * correlation + rho * np.eye(p)  # trace(correlation)/p is 1
        eigenvalues, vectors = np.linalg.eigh(shrunk)
        eigenvalues = np.maximum(eigenvalues, 1e-9)
        whitening = (vectors * eigenvalues**-0.5) @ vectors.T
        return cls(stats.mean.copy(), std, whitening, float(rho), n)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def standardized(self, vectors: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """u+ of the module docstring: standardized, deviations below the mean set to 0."""
        x = np.asarray(vectors, dtype=np.float64)
        return np.maximum((x - self.mean) / self.std, 0.0)

    def distance(self, vectors: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Squared one-sided Mahalanobis distance of (dim,) or (N, dim) vectors."""
        whitened = self.standardized(vectors) @ self.whitening
        d2: npt.NDArray[np.float64] = np.sum(whitened * whitened, axis=-1)
        return d2


def min_windows(dim: int) -> int:
    """Normal windows needed before a covariance of `dim` values means anything (2 per value
    and 4 more: OAS copes with few, but a threshold from fewer is noise)."""
    return 2 * dim + 4


def oas_shrinkage(sample: npt.NDArray[np.float64], n: int) -> float:
    """OAS shrinkage intensity rho for a p x p sample covariance of n vectors (Chen et al. 2010,
    eq. 23). sklearn.covariance.oas drops the 2/p terms, harmless for large p; with the 4
    values of a novelty vector they matter, so the paper's form is kept."""
    p = sample.shape[0]
    trace = float(np.trace(sample))
    trace_sq = float(np.sum(sample * sample))
    numerator = (1 - 2 / p) * trace_sq + trace * trace
    denominator = (n + 1 - 2 / p) * (trace_sq - trace * trace / p)
    if denominator <= 0:
        return 1.0
    return float(min(1.0, numerator / denominator))


@dataclass(frozen=True)
class Threshold:
    """Where on d2 a window turns anomalous, and how the score maps d2 to [0, 1]."""

    distance: float
    """d2 at which score = 0.5."""
    spread: float
    """d2 units per logit unit of the score."""
    quantile: float
    rule: str
    """How `distance` was chosen, for metadata and status output."""

    @classmethod
    def from_normal(cls, held_out_d2: npt.ArrayLike, quantile: float) -> Threshold:
        """The gamma `quantile` of held-out normal squared distances (fitted by moments)."""
        d2 = np.asarray(held_out_d2, dtype=np.float64)
        d2 = d2[np.isfinite(d2)]
        if len(d2) < 2:
            raise ValueError("novelty: a threshold needs at least 2 held-out normal windows")
        mean = float(np.mean(d2))
        variance = float(np.var(d2, ddof=1))
        # One-sided distances are often exactly 0 (a window below the mean everywhere): the
        # moments stay meaningful, but a degenerate spread falls back to the mean's scale.
        variance = max(variance, (0.1 * mean) ** 2, 1e-6)
        # Wilson-Hilferty is poor for shape < 1 (many zero distances): never go below the
        # empirical quantile of the same windows.
        fitted = gamma_quantile(mean, variance, quantile)
        distance = max(fitted, float(np.quantile(d2, quantile)), 1e-6)
        spread = max(math.sqrt(variance), 1e-6)
        return cls(
            distance=distance,
            spread=spread,
            quantile=quantile,
            rule=f"gamma (moments) quantile {quantile} of {len(d2)} held-out normal windows' d2",
        )

    def score(self, d2: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """sigmoid((d2 - distance) / spread), computed without overflow."""
        logits = (np.asarray(d2, dtype=np.float64) - self.distance) / self.spread
        scores: npt.NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * np.clip(logits, -60, 60)))
        return scores


def gamma_quantile(mean: float, variance: float, quantile: float) -> float:
    """Quantile of the gamma distribution with this mean and variance, by Wilson and Hilferty's
    cube-root normal approximation (within about 1 % of the exact value for shape >= 1)."""
    if not 0 < quantile < 1:
        raise ValueError(f"novelty: quantile must be between 0 and 1, got {quantile}")
    shape = mean * mean / variance
    scale = variance / mean
    z = NormalDist().inv_cdf(quantile)
    cube = 1 - 1 / (9 * shape) + z * math.sqrt(1 / (9 * shape))
    return float(shape * scale * max(cube, 0.0) ** 3)
