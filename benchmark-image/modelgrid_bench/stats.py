"""Statistical primitives for power traces. Pure numpy functions: no I/O, no clocks, no globals.

Conventions: times in seconds on one monotonic clock, power in watts, energy in joules. Signal
statistics (over samples of one trace) are time-weighted population statistics, because samples
are unevenly spaced and may have gaps; run-to-run statistics use the sample standard deviation
(ddof=1), as the per-run reports the program adopted do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def sample_weights_s(t_s: FloatArray, window: tuple[float, float] | None = None) -> FloatArray:
    """Duration each sample stands for: half the span to each neighbour (its Voronoi cell).

    With a window, the cells are clipped to it, so the weights sum to the covered part of it.
    """
    n = t_s.size
    if n == 0:
        return np.zeros(0)
    if n == 1:
        return np.ones(1)
    mid = (t_s[1:] + t_s[:-1]) / 2.0
    lo = np.concatenate(([t_s[0]], mid))
    hi = np.concatenate((mid, [t_s[-1]]))
    if window is not None:
        lo = np.clip(lo, window[0], window[1])
        hi = np.clip(hi, window[0], window[1])
    out: FloatArray = np.maximum(hi - lo, 0.0)
    return out


def weighted_mean(x: FloatArray, w: FloatArray) -> float:
    # Clipped so rounding can never put a mean outside the values it averages.
    return float(np.clip(np.sum(x * w) / np.sum(w), np.min(x), np.max(x)))


def weighted_variance(x: FloatArray, w: FloatArray) -> float:
    """Population (time-weighted) variance."""
    mean = weighted_mean(x, w)
    return float(np.sum(w * (x - mean) ** 2) / np.sum(w))


def weighted_percentile(x: FloatArray, w: FloatArray, q: float) -> float:
    """Percentile q (0..100) of a weighted sample, midpoint rule (equals 'hazen' for equal w)."""
    order = np.argsort(x, kind="stable")
    xs, ws = x[order], w[order]
    keep = ws > 0
    xs, ws = xs[keep], ws[keep]
    if xs.size == 1:
        return float(xs[0])
    cdf = (np.cumsum(ws) - ws / 2.0) / np.sum(ws)
    return float(np.interp(q / 100.0, cdf, xs))


def coefficient_of_variation(x: FloatArray, w: FloatArray | None = None) -> float | None:
    """std / mean (population). None when undefined (fewer than 2 values or a zero mean)."""
    if x.size < 2:
        return None
    weights = np.ones_like(x) if w is None else w
    mean = weighted_mean(x, weights)
    if mean <= 0:
        return None
    return float(np.sqrt(weighted_variance(x, weights)) / mean)


def trapezoid_j(t_s: FloatArray, power_w: FloatArray, start_s: float, end_s: float) -> float:
    """Integral of a piecewise-linear power signal over [start_s, end_s], in joules."""
    if t_s.size == 0 or end_s <= start_s:
        return 0.0
    cum = cumulative_energy_j(t_s, power_w)
    return float(np.interp(end_s, t_s, cum) - np.interp(start_s, t_s, cum))


def cumulative_energy_j(t_s: FloatArray, power_w: FloatArray) -> FloatArray:
    """Running trapezoid integral of power, zero at the first sample (J)."""
    if t_s.size == 0:
        return np.zeros(0)
    steps = np.diff(t_s) * (power_w[1:] + power_w[:-1]) / 2.0
    return np.concatenate(([0.0], np.cumsum(steps)))


@dataclass(frozen=True)
class CounterKnots:
    """Where a stepwise energy counter was seen to change: (time, value) knots to interpolate.

    The counter only updates every so often (about every 100 ms on recent drivers), so most reads
    repeat the last value. A new value is first seen at read i; it was written after read i-1
    and before read i. When the reads are closer than one update period U, the knot is placed at
    their midpoint. After a longer gap (a sampler stall) the value cannot be older than one
    update, so it was written in [t_i - U, t_i] and the knot goes at t_i - U/2: never at the
    gap's midpoint, which would put the energy of the whole gap into its first half. The very
    first read is not a knot: when its value was last updated is unknown. Outside the knots,
    energy is extended linearly with the power of the nearest segment.

    `gaps` are the read intervals longer than U (start, end): the counter updated inside them
    unseen, so energy there is interpolated, not observed.
    """

    t_s: FloatArray
    energy_j: FloatArray
    reset: bool
    median_update_s: float | None
    gaps: list[tuple[float, float]] = field(default_factory=list)

    def at(self, t_s: FloatArray | float) -> FloatArray:
        t = np.asarray(t_s, dtype=np.float64)
        if self.t_s.size == 0:
            return np.full(t.shape, np.nan)
        if self.t_s.size == 1:
            return np.full(t.shape, self.energy_j[0])
        e = np.interp(t, self.t_s, self.energy_j)
        head = (self.energy_j[1] - self.energy_j[0]) / (self.t_s[1] - self.t_s[0])
        tail = (self.energy_j[-1] - self.energy_j[-2]) / (self.t_s[-1] - self.t_s[-2])
        e = np.where(t < self.t_s[0], self.energy_j[0] + head * (t - self.t_s[0]), e)
        return np.where(t > self.t_s[-1], self.energy_j[-1] + tail * (t - self.t_s[-1]), e)

    def covers(self, start_s: float, end_s: float) -> bool:
        return bool(self.t_s.size >= 2 and self.t_s[0] <= start_s and self.t_s[-1] >= end_s)


#: Knot intervals (at least this many) needed to measure the counter's update period.
MIN_UPDATES_FOR_PERIOD = 3


def update_period_s(t_s: FloatArray, counter_j: FloatArray) -> float | None:
    """The counter's update period U: the median spacing of reads that saw a new value, over
    the stretches where reads came at most U apart (a stall would lengthen the spacing).

    The median of consecutive change-read spacings is robust to a few stalls; it is refined once
    by dropping spacings longer than twice the first estimate.
    """
    if t_s.size < 2:
        return None
    changed = np.flatnonzero(np.diff(counter_j) != 0) + 1
    if changed.size < MIN_UPDATES_FOR_PERIOD + 1:
        return None
    spacing = np.diff(t_s[changed])
    first = float(np.median(spacing))
    kept = spacing[spacing <= 2.0 * first]
    return float(np.median(kept)) if kept.size else first


def counter_knots(
    t_s: FloatArray,
    counter_j: FloatArray,
    update_s: float | None = None,
    interval_s: float = 0.0,
) -> CounterKnots:
    """Knots of a monotone energy counter read at times t_s. A decrease marks a reset.

    Reads whose value is NaN (not provided) are left out, so they never switch the counter off;
    `update_s` is the counter's update period U (measured from the reads when not given) and
    `interval_s` the sampler's requested interval. A read gap longer than U + interval_s / 2 is
    a stall: the counter may have updated unseen inside it. Its span, widened by U on each side
    (the knot intervals that border it are interpolated from the displaced knot after it), is
    reported in `gaps`.
    """
    finite = np.isfinite(counter_j)
    if not np.all(finite):
        t_s, counter_j = t_s[finite], counter_j[finite]
    if t_s.size == 0:
        return CounterKnots(np.zeros(0), np.zeros(0), False, None)
    steps = np.diff(counter_j)
    changed = np.flatnonzero(steps != 0) + 1
    reset = bool(np.any(steps < 0))
    period = update_s if update_s is not None else update_period_s(t_s, counter_j)
    if changed.size == 0:
        # Never updated while we watched: a flat counter (zero energy) seen from t0 on.
        return CounterKnots(t_s[:1].copy(), counter_j[:1].copy(), reset, period)
    before, seen = t_s[changed - 1], t_s[changed]
    knot_t = (before + seen) / 2.0
    gaps: list[tuple[float, float]] = []
    if period is not None:
        late = (seen - before) > period
        knot_t = np.where(late, seen - period / 2.0, knot_t)
        idx = np.flatnonzero(np.diff(t_s) > period + interval_s / 2.0)
        gaps = [(float(t_s[i]) - period, float(t_s[i + 1]) + period) for i in idx]
    knot_e = counter_j[changed]
    return CounterKnots(knot_t, knot_e, reset, period, gaps)


def window_powers_w(
    energy_at: Callable[[FloatArray], FloatArray], start_s: float, end_s: float, window_s: float
) -> FloatArray:
    """Average power of each whole `window_s` window in [start_s, end_s] (W).

    `energy_at` maps times to cumulative energy (J). A trailing partial window is dropped, so
    every value has the same time scale.
    """
    n = int(np.floor((end_s - start_s) / window_s + 1e-9))
    if n < 1:
        return np.zeros(0)
    edges: FloatArray = start_s + window_s * np.arange(n + 1, dtype=np.float64)
    return np.asarray(np.diff(energy_at(edges)) / window_s, dtype=np.float64)


@dataclass(frozen=True)
class SpreadStats:
    n: int
    mean: float
    std: float
    min: float
    max: float
    range: float
    cv: float | None


def spread(values: FloatArray) -> SpreadStats | None:
    """Run-to-run statistics: mean, sample std (ddof=1), min, max, range and CV = std / mean."""
    x = values[np.isfinite(values)]
    if x.size == 0:
        return None
    mean = float(np.mean(x))
    std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    cv = std / abs(mean) if x.size > 1 and mean != 0 else None
    lo, hi = float(np.min(x)), float(np.max(x))
    return SpreadStats(int(x.size), mean, std, lo, hi, hi - lo, cv)


def stationary_bootstrap_indices(
    n: int, replicates: int, mean_block: float, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Index matrix (replicates x n) of Politis & Romano's stationary bootstrap.

    Blocks start at uniform positions and have geometric lengths with mean `mean_block`; the
    series is wrapped circularly. Resampling whole blocks keeps the short-range dependence of
    autocorrelated power samples that an i.i.d. bootstrap would destroy.
    """
    if n < 1:
        raise ValueError("cannot bootstrap an empty series")
    p = 1.0 / max(mean_block, 1.0)
    starts = rng.integers(0, n, size=(replicates, n))
    jumps = rng.random(size=(replicates, n)) < p
    idx = np.empty((replicates, n), dtype=np.int64)
    idx[:, 0] = starts[:, 0]
    for j in range(1, n):
        idx[:, j] = np.where(jumps[:, j], starts[:, j], (idx[:, j - 1] + 1) % n)
    return idx


def default_block_length(n: int) -> float:
    """Mean block length n^(1/3), the usual rate-optimal order for variance-type statistics."""
    return max(1.0, float(np.ceil(n ** (1.0 / 3.0))))


def bootstrap_mean_cv_ci(
    series: list[FloatArray],
    *,
    seed: int,
    replicates: int = 2000,
    level: float = 0.95,
    mean_block: float | None = None,
) -> tuple[float, float] | None:
    """Percentile CI of mean-over-runs CV, each run resampled by a stationary bootstrap.

    Runs are independent, so each is resampled on its own and the per-run CVs are averaged, as
    the point estimate is. None when any run has fewer than 4 values.
    """
    if not series or any(s.size < 4 for s in series):
        return None
    rng = np.random.default_rng(seed)
    total = np.zeros(replicates)
    for s in series:
        block = mean_block if mean_block is not None else default_block_length(s.size)
        idx = stationary_bootstrap_indices(s.size, replicates, block, rng)
        boot = s[idx]
        mean = boot.mean(axis=1)
        std = boot.std(axis=1)
        total += np.where(mean > 0, std / np.where(mean > 0, mean, 1.0), np.nan)
    cvs = total / len(series)
    cvs = cvs[np.isfinite(cvs)]
    if cvs.size == 0:
        return None
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(cvs, alpha)), float(np.quantile(cvs, 1.0 - alpha))


def phase_segments(
    prefill: list[tuple[float, float]], decode: list[tuple[float, float]]
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Split time into prefill-time and decode-time segments (a sweep over interval ends).

    An instant belongs to prefill when any request is in prefill (prefill is the compute-bound
    phase and dominates the GPU while it runs), otherwise to decode when any request decodes.
    """
    events: list[tuple[float, int, int]] = []
    for lo, hi in prefill:
        if hi > lo:
            events += [(lo, 0, 1), (hi, 0, -1)]
    for lo, hi in decode:
        if hi > lo:
            events += [(lo, 1, 1), (hi, 1, -1)]
    events.sort()
    active = [0, 0]
    pre: list[tuple[float, float]] = []
    dec: list[tuple[float, float]] = []
    last_t: float | None = None
    for t, kind, delta in events:
        if last_t is not None and t > last_t:
            target = pre if active[0] > 0 else dec if active[1] > 0 else None
            if target is not None:
                if target and target[-1][1] == last_t:
                    target[-1] = (target[-1][0], t)
                else:
                    target.append((last_t, t))
        active[kind] += delta
        last_t = t
    return pre, dec
