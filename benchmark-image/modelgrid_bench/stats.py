"""Statistical primitives for power traces. Pure numpy functions: no I/O, no clocks, no globals.

Conventions: times in seconds on one monotonic clock, power in watts, energy in joules. Signal
statistics (over samples of one trace) are time-weighted population statistics, because samples
are unevenly spaced and may have gaps; run-to-run statistics use the sample standard deviation
(ddof=1), as the per-run reports the program adopted do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


@dataclass(frozen=True)
class WeightedMoments:
    total_w: float
    mean: float
    variance: float
    min: float
    max: float


def weighted_moments(x: FloatArray, w: FloatArray) -> WeightedMoments:
    """Total weight, `weighted_mean`, `weighted_variance`, min and max, bit for bit, each
    computed once (the variance would compute the mean, and the mean the extremes, again)."""
    lo, hi = float(np.min(x)), float(np.max(x))
    total = np.sum(w)
    mean = float(np.clip(np.sum(x * w) / total, lo, hi))
    var = float(np.sum(w * (x - mean) ** 2) / total)
    return WeightedMoments(float(total), mean, var, lo, hi)


def stable_argsort(x: FloatArray) -> npt.NDArray[np.intp]:
    """Exactly the permutation of `np.argsort(x, kind="stable")`, two to three times faster.

    numpy's stable sort of floats is a timsort; its default sort is vectorised and much faster
    but leaves equal values in no particular order, and power reads (whole milliwatts) repeat a
    lot. So: sort with the fast one, number the distinct values in order, and sort again by
    (value number, index) packed into one int64. Those keys are all different, so any sort of
    them gives the one stable order. NaNs (each unequal to itself) would keep the fast sort's
    arbitrary order, so an array with a NaN takes numpy's stable sort.
    """
    n = x.size
    if n < 2 or n >= 1 << 31 or bool(np.isnan(x).any()):
        return np.argsort(x, kind="stable")
    order = np.argsort(x)
    xs = x[order]
    rank = np.empty(n, dtype=np.int64)
    rank[0] = 0
    np.cumsum(xs[1:] != xs[:-1], out=rank[1:])
    rank *= n
    key = rank + order
    key.sort()
    out: npt.NDArray[np.intp] = (key - rank).astype(np.intp, copy=False)
    return out


@dataclass(frozen=True)
class SortedSample:
    """A weighted sample in ascending order of value, equal values in input order (a stable
    sort), zero weights dropped: what weighted percentiles are read from."""

    x: FloatArray
    w: FloatArray


def sort_weighted(x: FloatArray, w: FloatArray) -> SortedSample:
    order = stable_argsort(x)
    xs, ws = x[order], w[order]
    keep = ws > 0
    return SortedSample(xs[keep], ws[keep])


def merge_sorted(parts: list[SortedSample]) -> SortedSample:
    """`sort_weighted` of the parts' concatenation, from the parts already sorted.

    A stable sort of sorted parts put end to end keeps each part's order and breaks ties by
    part, as the stable sort of the whole would; numpy's timsort finds the parts as runs and
    only merges them.
    """
    xs = np.concatenate([p.x for p in parts]) if parts else np.zeros(0)
    ws = np.concatenate([p.w for p in parts]) if parts else np.zeros(0)
    order = np.argsort(xs, kind="stable")
    return SortedSample(xs[order], ws[order])


def weighted_percentiles(s: SortedSample, qs: Sequence[float]) -> list[float]:
    """Percentiles qs (0..100) of a sorted weighted sample, midpoint rule ('hazen' for equal w).

    One sort serves every percentile of a sample, which is where the time goes.
    """
    if s.x.size == 1:
        return [float(s.x[0]) for _ in qs]
    cdf = (np.cumsum(s.w) - s.w / 2.0) / np.sum(s.w)
    at = np.interp(np.array([q / 100.0 for q in qs], dtype=np.float64), cdf, s.x)
    return [float(v) for v in at]


def weighted_percentile(x: FloatArray, w: FloatArray, q: float) -> float:
    """Percentile q (0..100) of a weighted sample, midpoint rule (equals 'hazen' for equal w)."""
    return weighted_percentiles(sort_weighted(x, w), [q])[0]


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
