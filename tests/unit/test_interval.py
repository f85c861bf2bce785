"""The tier metric's interval estimate (modelgrid_bench.interval): calibration and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelgrid_bench import interval
from modelgrid_bench.interval import (
    METHOD,
    MIN_WINDOWS_PER_RUN,
    PHI_GRID,
    CvEstimate,
    tier_metric_estimate,
)

FloatArray = np.ndarray


def ar1(rng: np.random.Generator, phi: float, runs: int, n: int) -> FloatArray:
    """Stationary Gaussian AR(1), unit marginal variance (runs x n); phi = 0 is white noise."""
    x = np.empty((runs, n))
    x[:, 0] = rng.standard_normal(runs)
    e = rng.standard_normal((runs, n)) * math.sqrt(1.0 - phi * phi)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


def dataset(seed: int, phi: float, n: int, cv: float = 0.05, runs: int = 3) -> list[FloatArray]:
    rng = np.random.default_rng(seed)
    return list(300.0 * (1.0 + cv * ar1(rng, phi, runs, n)))


def estimate(series: list[FloatArray], seed: int = 0, level: float = 0.95) -> CvEstimate:
    est = tier_metric_estimate(series, seed=seed, level=level)
    assert est is not None
    return est


@pytest.mark.timeout(60)
@pytest.mark.parametrize("phi", [0.0, 0.6])
def test_coverage_at_ten_windows_per_run_is_near_nominal(phi: float) -> None:
    # 120 seeded datasets of 3 runs x 10 windows, true CV 0.05. If the coverage were 95 %, the
    # share covered would fall below 95 % - 3.29 sd (sd = sqrt(.95 * .05 / 120) = 2.0 %) with
    # probability 0.05 %; the old percentile bootstrap covered 59 % (white) and 19 % (AR(1)).
    # (120, not more: each estimate runs five bootstraps, and the test must stay well inside
    # its timeout on a loaded machine.)
    datasets = 120
    covered = 0
    for i in range(datasets):
        est = estimate(dataset(10_000 + i, phi, 10), seed=i)
        covered += est.low <= 0.05 <= est.high
    sd = math.sqrt(0.95 * 0.05 / datasets)
    assert 0.95 - 3.29 * sd <= covered / datasets <= 0.995


@pytest.mark.timeout(60)
def test_upper_end_is_calibrated_under_its_own_null(monkeypatch: pytest.MonkeyPatch) -> None:
    # With AR(1) windows at 10 per run phi_hat is biased low, so the bootstrap at the fit
    # simulates series less persistent than those the upper end stands for and puts it too low.
    # Test inversion simulates at (c, phi_hat(c)) instead; phi_hat(c) grows with c, so the
    # upper end moves up, while for long runs (phi well determined) both nearly agree.
    assert METHOD.endswith("-test-inversion")
    inverted = [estimate(dataset(seed, 0.6, 10, cv=0.11), seed=seed) for seed in range(4)]
    long_inverted = estimate(dataset(9, 0.6, 300), seed=0)
    monkeypatch.setattr(interval, "INVERSION_STEPS", 0)
    at_fit = [estimate(dataset(seed, 0.6, 10, cv=0.11), seed=seed) for seed in range(4)]
    long_at_fit = estimate(dataset(9, 0.6, 300), seed=0)
    for a, b in zip(inverted, at_fit, strict=True):
        assert a.method == METHOD
        assert a.high > b.high
        assert a.cv == b.cv
    assert long_inverted.high == pytest.approx(long_at_fit.high, rel=0.01)
    assert long_inverted.low == pytest.approx(long_at_fit.low, rel=0.01)


@pytest.mark.timeout(60)
def test_likelihood_maximum_at_the_phi_grid_edge_is_not_extrapolated() -> None:
    # A log-likelihood still rising at phi = 0.97 must give the edge value, not the vertex of
    # a parabola beyond the grid (which made the profile likelihood jump above its maximum).
    rising = np.vstack([np.linspace(0.0, 5.0, PHI_GRID.size) ** 2, -((PHI_GRID - 0.3) ** 2)])
    best, phi = interval._parabola_max(rising)
    assert best[0] == pytest.approx(25.0)
    assert phi[0] == PHI_GRID[-1]
    assert best[1] == pytest.approx(0.0, abs=1e-12)
    assert phi[1] == pytest.approx(0.3, abs=1e-9)


@pytest.mark.timeout(60)
def test_constant_series_give_zero_with_a_degenerate_interval() -> None:
    est = estimate([np.full(20, 250.0), np.full(15, 310.0)])
    assert (est.cv, est.low, est.high) == (0.0, 0.0, 0.0)
    assert (est.windows, est.runs, est.level) == (35, 2, 0.95)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("phi", "cv"), [(0.0, 0.05), (0.6, 0.05), (0.0, 0.2)])
def test_long_runs_match_the_asymptotic_gaussian_interval(phi: float, cv: float) -> None:
    # For N Gaussian AR(1) windows the CV estimate has sd cv sqrt((1 + phi^2) / (2 N (1 - phi^2)))
    # (Bartlett), so the 95 % interval is about 2 x 1.96 of that wide, centred on the truth.
    series = dataset(7, phi, 2000, cv=cv)
    est = estimate(series, seed=3)
    sd = cv * math.sqrt((1 + phi * phi) / (2 * 6000 * (1 - phi * phi)))
    assert est.high - est.low == pytest.approx(2 * 1.96 * sd, rel=0.15)
    assert est.low <= cv <= est.high
    assert est.cv == pytest.approx(cv, abs=3 * sd)


@pytest.mark.timeout(60)
def test_same_seed_same_answer_and_other_seed_close() -> None:
    series = dataset(1, 0.3, 40)
    a, b, c = estimate(series, seed=5), estimate(series, seed=5), estimate(series, seed=6)
    assert a == b
    assert c.cv == pytest.approx(a.cv, rel=0.02)
    assert c.low == pytest.approx(a.low, rel=0.05)
    assert c.high == pytest.approx(a.high, rel=0.05)


@pytest.mark.timeout(60)
def test_none_below_the_minimum_windows_or_without_positive_mean() -> None:
    ok = dataset(2, 0.0, MIN_WINDOWS_PER_RUN)
    assert tier_metric_estimate(ok, seed=0) is not None
    short = [*ok[:2], ok[2][:-1]]
    assert tier_metric_estimate(short, seed=0) is None
    assert tier_metric_estimate([], seed=0) is None
    assert tier_metric_estimate([*ok[:2], ok[2] - 400.0], seed=0) is None
    assert tier_metric_estimate([*ok[:2], np.zeros(MIN_WINDOWS_PER_RUN)], seed=0) is None


@pytest.mark.timeout(60)
def test_invariant_to_the_power_scale() -> None:
    series = dataset(3, 0.6, 30)
    a = estimate(series, seed=1)
    b = estimate([s * 7.25 for s in series], seed=1)
    assert b.cv == pytest.approx(a.cv, rel=1e-6)
    assert b.low == pytest.approx(a.low, rel=1e-6)
    assert b.high == pytest.approx(a.high, rel=1e-6)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("phi", "n", "cv"), [(0.0, 10, 0.05), (0.6, 10, 0.11), (0.9, 50, 0.02)])
def test_interval_contains_the_point_estimate(phi: float, n: int, cv: float) -> None:
    for seed in range(5):
        est = estimate(dataset(seed, phi, n, cv=cv), seed=seed)
        assert 0.0 < est.low <= est.cv <= est.high


@pytest.mark.timeout(60)
def test_drift_between_run_means_does_not_count_as_variation() -> None:
    # The same relative fluctuations at 300, 450 and 200 W: only the within-run CV is pooled.
    series = dataset(4, 0.0, 20)
    drifted = [s * k for s, k in zip(series, (1.0, 1.5, 2 / 3), strict=True)]
    a, b = estimate(series, seed=2), estimate(drifted, seed=2)
    assert b.cv == pytest.approx(a.cv, rel=1e-6)
    assert (b.low, b.high) == pytest.approx((a.low, a.high), rel=1e-6)
    assert b.high < 0.1  # far below the CV of the pooled windows (about 0.3)


@pytest.mark.timeout(60)
def test_a_single_run_and_unequal_run_lengths_work() -> None:
    one = estimate(dataset(5, 0.0, 200, runs=1), seed=0)
    assert one.runs == 1
    assert one.windows == 200
    assert one.low <= 0.05 <= one.high
    rng = np.random.default_rng(6)
    mixed = [300.0 * (1.0 + 0.05 * ar1(rng, 0.0, 1, n)[0]) for n in (12, 40, 25)]
    est = estimate(mixed, seed=0)
    assert est.windows == 77
    assert est.low <= 0.05 <= est.high


@pytest.mark.timeout(60)
def test_a_higher_level_gives_a_wider_interval() -> None:
    series = dataset(8, 0.3, 30)
    narrow, wide = estimate(series, level=0.8), estimate(series, level=0.99)
    assert wide.low < narrow.low
    assert wide.high > narrow.high
    assert (narrow.level, wide.level) == (0.8, 0.99)
    with pytest.raises(ValueError, match="level"):
        tier_metric_estimate(series, seed=0, level=1.0)
