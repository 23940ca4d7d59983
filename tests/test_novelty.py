"""daemon.analyse.novelty: streamed Gaussian statistics, OAS shrinkage, the one-sided distance and
the
gamma threshold, each checked against an independent reference (numpy batch, sklearn, scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.covariance import oas

from daemon.analyse import novelty


def _data(seed: int, n: int = 400, dim: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim))
    return rng.normal(size=(n, dim)) @ mixing + rng.normal(size=dim) * 5


class TestAccumulator:
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_any_batching_equals_one_batch(self, seed: int) -> None:
        """One window at a time, random batches, or all at once: the same mean and scatter."""
        x = _data(seed)
        rng = np.random.default_rng(seed + 10)
        one = novelty.GaussianAccumulator.empty(4)
        for row in x:
            one.add(row)
        pieces = novelty.GaussianAccumulator.empty(4)
        cuts = np.sort(rng.choice(np.arange(1, len(x)), 7, replace=False))
        for part in np.split(x, cuts):
            pieces.add(part)
        centred = x - x.mean(axis=0)
        for acc in (one, pieces):
            assert acc.count == len(x)
            np.testing.assert_allclose(acc.mean, x.mean(axis=0), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(acc.scatter, centred.T @ centred, rtol=1e-9)

    def test_merged_leaves_both_untouched(self) -> None:
        """merged() is a new accumulator: the halves stay as they were (the baseline needs them)."""
        x = _data(3)
        a, b = novelty.GaussianAccumulator.empty(4), novelty.GaussianAccumulator.empty(4)
        a.add(x[:150])
        b.add(x[150:])
        both = a.merged(b)
        assert (a.count, b.count, both.count) == (150, 250, 400)
        np.testing.assert_allclose(both.mean, x.mean(axis=0))

    def test_wrong_width_is_refused(self) -> None:
        acc = novelty.GaussianAccumulator.empty(4)
        with pytest.raises(ValueError, match="5 values, expected 4"):
            acc.add(np.zeros(5))


class TestShrinkage:
    @pytest.mark.parametrize(("seed", "n"), [(0, 20), (1, 60), (2, 400)])
    def test_oas_is_chen_et_al_eq_23(self, seed: int, n: int) -> None:
        """rho is eq. 23 of Chen, Wiesel, Eldar & Hero (2010), written out with matrix products."""
        x = _data(seed, n=n)
        centred = x - x.mean(axis=0)
        sample = centred.T @ centred / n
        p = sample.shape[0]
        tr_s2, tr2_s = np.trace(sample @ sample), np.trace(sample) ** 2
        expected = min(1.0, ((1 - 2 / p) * tr_s2 + tr2_s) / ((n + 1 - 2 / p) * (tr_s2 - tr2_s / p)))
        assert novelty.oas_shrinkage(sample, n) == pytest.approx(expected, rel=1e-12)

    def test_oas_agrees_with_sklearn_for_many_values(self) -> None:
        """sklearn drops eq. 23's 2/p terms ("they do not matter for large p"): with 200 values
        both agree within 2 %; with this module's 4 values the paper's form is kept."""
        rng = np.random.default_rng(3)
        x = rng.normal(size=(150, 200)) * rng.uniform(0.5, 2.0, size=200)
        centred = x - x.mean(axis=0)
        _, expected = oas(x)
        got = novelty.oas_shrinkage(centred.T @ centred / len(x), len(x))
        assert got == pytest.approx(expected, rel=0.02)

    def test_few_windows_shrink_more(self) -> None:
        """The fewer windows, the nearer the identity (rho grows as n falls)."""
        x = _data(5, n=2000)
        rhos = []
        for n in (12, 50, 2000):
            acc = novelty.GaussianAccumulator.empty(4)
            acc.add(x[:n])
            rhos.append(novelty.NormalModel.fit(acc).shrinkage)
        assert rhos[0] > rhos[1] > rhos[2]


class TestDistance:
    def test_two_sided_part_is_mahalanobis(self) -> None:
        """Above the mean in every value, d2 is the Mahalanobis distance under the shrunk
        correlation (checked against an explicit inverse)."""
        x = _data(7)
        acc = novelty.GaussianAccumulator.empty(4)
        acc.add(x)
        model = novelty.NormalModel.fit(acc)
        point = model.mean + np.array([1.0, 2.0, 0.5, 3.0]) * model.std
        u = (point - model.mean) / model.std
        cov = acc.scatter / acc.count
        corr = cov / np.outer(np.sqrt(np.diag(cov)), np.sqrt(np.diag(cov)))
        shrunk = (1 - model.shrinkage) * corr + model.shrinkage * np.eye(4)
        assert model.distance(point) == pytest.approx(u @ np.linalg.inv(shrunk) @ u, rel=1e-9)

    def test_below_normal_counts_as_normal(self) -> None:
        """One-sided: a window quieter than normal everywhere is at distance 0, a louder not."""
        x = _data(8)
        acc = novelty.GaussianAccumulator.empty(4)
        acc.add(x)
        model = novelty.NormalModel.fit(acc)
        assert model.distance(model.mean - 10 * model.std) == 0.0
        assert model.distance(model.mean + 3 * model.std) > 9.0

    def test_too_few_windows(self) -> None:
        acc = novelty.GaussianAccumulator.empty(4)
        acc.add(_data(9, n=novelty.min_windows(4) - 1))
        with pytest.raises(ValueError, match="too few"):
            novelty.NormalModel.fit(acc)

    def test_constant_value_does_not_divide_by_zero(self) -> None:
        """A value that never varied gets MIN_STD: a change in it is a huge distance, not NaN."""
        x = _data(10)
        x[:, 2] = 1.5
        acc = novelty.GaussianAccumulator.empty(4)
        acc.add(x)
        model = novelty.NormalModel.fit(acc)
        moved = model.mean.copy()
        moved[2] += 0.1
        assert np.isfinite(model.distance(moved))
        assert model.distance(moved) > 1e6


class TestThreshold:
    @pytest.mark.parametrize("shape", [0.7, 2.0, 5.0, 30.0])
    @pytest.mark.parametrize("quantile", [0.9, 0.99, 0.999])
    def test_gamma_quantile_near_scipy(self, shape: float, quantile: float) -> None:
        """Wilson-Hilferty is within 3 % of scipy's exact gamma quantile."""
        scale = 1.7
        mean, var = shape * scale, shape * scale * scale
        exact = stats.gamma.ppf(quantile, shape, scale=scale)
        assert novelty.gamma_quantile(mean, var, quantile) == pytest.approx(exact, rel=0.03)

    def test_false_alarm_rate_on_gaussian_data(self) -> None:
        """Fitted on one sample of normal windows, thresholded on held-out distances at 0.99:
        fresh normal windows exceed it about 1 % of the time (0.2 - 3 % over 20,000)."""
        rng = np.random.default_rng(11)
        mixing = rng.normal(size=(4, 4))
        fit_x, held_x, fresh_x = (rng.normal(size=(n, 4)) @ mixing for n in (2000, 2000, 20000))
        acc = novelty.GaussianAccumulator.empty(4)
        acc.add(fit_x)
        model = novelty.NormalModel.fit(acc)
        threshold = novelty.Threshold.from_normal(model.distance(held_x), 0.99)
        rate = float(np.mean(model.distance(fresh_x) >= threshold.distance))
        assert 0.002 < rate < 0.03

    def test_score_is_half_at_threshold_and_monotone(self) -> None:
        threshold = novelty.Threshold.from_normal(np.random.default_rng(12).gamma(3, 2, 500), 0.99)
        d2 = np.array([0.0, threshold.distance / 2, threshold.distance, threshold.distance * 3])
        scores = threshold.score(d2)
        assert scores[2] == pytest.approx(0.5)
        assert np.all(np.diff(scores) > 0)
        assert scores[0] >= 0.0
        assert scores[-1] <= 1.0
        assert threshold.score(np.array([1e300]))[0] == 1.0  # no overflow

    def test_needs_two_distances(self) -> None:
        with pytest.raises(ValueError, match="at least 2"):
            novelty.Threshold.from_normal(np.array([1.0]), 0.99)
