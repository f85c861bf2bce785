"""The analysis's fast paths give exactly the values of the straightforward code they replaced.

Each optimised function (benchmarks/analyze_speed.py measures why) is compared bit for bit with a
reference implementation, the code as it was, on random inputs shaped like power traces: values
in whole milliwatts or watts (many ties), NaN reads, signed zeros, repeated and uneven times,
several GPUs. No timing is asserted: tests never depend on the machine's speed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from modelgrid_bench.analysis import (
    InstantPower,
    _measured_spans,
    _power_stats,
    instant_power,
    sampler_health,
)
from modelgrid_bench.records import Trace
from modelgrid_bench.stats import (
    FloatArray,
    coefficient_of_variation,
    cumulative_energy_j,
    merge_sorted,
    sample_weights_s,
    sort_weighted,
    stable_argsort,
    weighted_mean,
    weighted_moments,
    weighted_percentile,
    weighted_percentiles,
    weighted_variance,
)
from modelgrid_contract.result import PowerStats
from tests import factory as f

QS = (0, 5, 12.5, 50, 95, 100)


def same(a: object, b: object) -> bool:
    """Equal to the bit: floats by their bytes (so -0.0 differs from 0.0 and NaN equals NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        x, y = np.asarray(a), np.asarray(b)
        return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    if isinstance(a, float) and isinstance(b, float):
        return bool(np.float64(a).tobytes() == np.float64(b).tobytes())
    return a == b


def power_like(rng: np.random.Generator, n: int, kind: str) -> FloatArray:
    x = rng.normal(400.0, 30.0, n)
    if kind == "mW":
        x = np.round(x, 3)
    elif kind == "W":
        x = np.round(x)
    elif kind == "few":
        x = rng.choice(np.array([-0.0, 0.0, 1.5, 100.0]), n)
    elif kind == "nan":
        x[rng.integers(0, n, max(1, n // 50))] = np.nan
    return x


def samples(seed: int) -> Iterator[tuple[FloatArray, FloatArray]]:
    """(values, weights) pairs: several sizes and kinds, some weights zero."""
    rng = np.random.default_rng(seed)
    for n in (1, 2, 3, 7, 100, 5_000):
        for kind in ("float", "mW", "W", "few"):
            x = power_like(rng, n, kind)
            w = rng.uniform(0.004, 0.006, n)
            if n > 2:
                w[rng.integers(0, n, n // 4 + 1)] = 0.0
                w[0] = 0.005  # at least one positive weight
            yield x, w


# --------------------------------------------------------------------------- references


def old_weighted_percentile(x: FloatArray, w: FloatArray, q: float) -> float:
    order = np.argsort(x, kind="stable")
    xs, ws = x[order], w[order]
    keep = ws > 0
    xs, ws = xs[keep], ws[keep]
    if xs.size == 1:
        return float(xs[0])
    cdf = (np.cumsum(ws) - ws / 2.0) / np.sum(ws)
    return float(np.interp(q / 100.0, cdf, xs))


def old_power_stats(p: FloatArray, w: FloatArray) -> PowerStats | None:
    if p.size == 0 or float(np.sum(w)) <= 0:
        return None
    var = weighted_variance(p, w)
    return PowerStats(
        avg_power_w=weighted_mean(p, w),
        peak_power_w=float(np.max(p)),
        min_power_w=float(np.min(p)),
        power_std_w=float(np.sqrt(var)),
        power_variance_w2=var,
        power_range_w=float(np.max(p) - np.min(p)),
        p5_power_w=old_weighted_percentile(p, w, 5),
        p50_power_w=old_weighted_percentile(p, w, 50),
        p95_power_w=old_weighted_percentile(p, w, 95),
        power_cv_instant=coefficient_of_variation(p, w),
    )


def old_in_window(inst: InstantPower, a: float, b: float) -> tuple[FloatArray, FloatArray]:
    w = sample_weights_s(inst.t_s, (a, b))
    keep = w > 0
    return inst.power_w[keep], w[keep]


def old_instant_power(per_gpu: list[Trace]) -> InstantPower:
    first = per_gpu[0]
    grid = first.t_s[np.isfinite(first.power_w)]
    total = np.zeros_like(grid)
    for g in per_gpu:
        ok = np.isfinite(g.power_w)
        if np.any(ok):
            total = total + np.interp(grid, g.t_s[ok], g.power_w[ok])
    return InstantPower(grid, total, cumulative_energy_j(grid, total))


def old_touches(t: FloatArray, spans: list[tuple[float, float]]) -> np.ndarray:
    touches = np.zeros(t.size - 1, dtype=bool)
    for lo, hi in spans:
        touches |= (t[1:] > lo) & (t[:-1] < hi)
    return touches


def read_times(rng: np.random.Generator, n: int, *, repeats: bool = False) -> FloatArray:
    t = 0.0037 + np.cumsum(rng.uniform(0.004, 0.006, n))
    if repeats:
        t[rng.integers(1, n, n // 20 + 1)] = 0.0  # then copy the previous time there
        t = np.maximum.accumulate(t)
    return t


# --------------------------------------------------------------------------- sorting


@pytest.mark.timeout(60)
def test_stable_argsort_is_numpys_stable_argsort() -> None:
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 3, 10, 1000, 50_000):
        for kind in ("float", "mW", "W", "few", "nan"):
            x = power_like(rng, n, kind) if n else np.zeros(0)
            want = np.argsort(x, kind="stable")
            got = stable_argsort(x)
            assert np.array_equal(got, want), (n, kind)
    for x in (np.zeros(100), np.full(100, -0.0), np.array([0.0, -0.0] * 50), np.arange(99.0)):
        assert np.array_equal(stable_argsort(x), np.argsort(x, kind="stable"))


@pytest.mark.timeout(60)
def test_percentiles_from_one_sort_equal_one_sort_per_percentile() -> None:
    for x, w in samples(1):
        ranked = sort_weighted(x, w)
        order = np.argsort(x, kind="stable")
        keep = w[order] > 0
        assert same(ranked.x, x[order][keep])
        assert same(ranked.w, w[order][keep])
        got = weighted_percentiles(ranked, QS)
        want = [old_weighted_percentile(x, w, q) for q in QS]
        assert all(same(g, v) for g, v in zip(got, want, strict=True)), (x.size, got, want)
        assert all(same(weighted_percentile(x, w, q), v) for q, v in zip(QS, want, strict=True))


@pytest.mark.timeout(60)
def test_merging_sorted_runs_equals_sorting_the_pooled_sample() -> None:
    rng = np.random.default_rng(2)
    for kind in ("float", "mW", "W", "few"):
        parts = [power_like(rng, int(n), kind) for n in rng.integers(1, 3000, 4)]
        weights = [rng.uniform(0.0, 0.006, p.size) for p in parts]
        for w in weights:
            w[w < 0.001] = 0.0
            w[0] = 0.005
        merged = merge_sorted([sort_weighted(p, w) for p, w in zip(parts, weights, strict=True)])
        whole = sort_weighted(np.concatenate(parts), np.concatenate(weights))
        assert same(merged.x, whole.x), kind
        assert same(merged.w, whole.w), kind
        pooled_x, pooled_w = np.concatenate(parts), np.concatenate(weights)
        got = weighted_percentiles(merged, QS)
        want = [old_weighted_percentile(pooled_x, pooled_w, q) for q in QS]
        assert all(same(g, v) for g, v in zip(got, want, strict=True))


# --------------------------------------------------------------------------- statistics


@pytest.mark.timeout(60)
def test_moments_and_power_stats_equal_the_separate_functions() -> None:
    for x, w in samples(3):
        if np.isnan(x).any():
            continue
        m = weighted_moments(x, w)
        assert same(m.mean, weighted_mean(x, w))
        assert same(m.variance, weighted_variance(x, w))
        assert same(m.min, float(np.min(x)))
        assert same(m.max, float(np.max(x)))
        assert same(m.total_w, float(np.sum(w)))
        got = _power_stats(x, w, sort_weighted(x, w))
        want = old_power_stats(x, w)
        assert got is not None
        assert want is not None
        for name, v in want.model_dump().items():
            assert same(getattr(got, name), v), (name, x.size)
    z = np.zeros(3)
    assert _power_stats(z, z, sort_weighted(z, np.ones(3))) is None
    assert _power_stats(np.zeros(0), np.zeros(0), sort_weighted(np.zeros(0), np.zeros(0))) is None


# --------------------------------------------------------------------------- trace helpers


@pytest.mark.timeout(60)
def test_gpus_by_counting_equal_the_set_of_rows() -> None:
    rng = np.random.default_rng(4)
    arrays: list[np.ndarray] = [
        np.zeros(0, dtype=np.int64),
        np.zeros(1000, dtype=np.int64),
        rng.integers(0, 8, 10_000),
        rng.integers(3, 5, 10_000).astype(np.int32),
        np.array([7, 2, 7, 2, 5]),
        np.array([-3, 4, -3]),
        np.array([0, 1 << 20, 5]),  # too wide to count: np.unique
        np.array([0.0, 1.0, 1.0, 3.0]),
        np.array([2, 9, 2], dtype=np.uint64),
    ]
    for g in arrays:
        n = g.size
        z = np.zeros(n)
        tr = Trace(z, g, z, z, z, z, z)
        assert tr.gpus == sorted({int(x) for x in g}), g


@pytest.mark.timeout(60)
def test_for_gpu_gives_each_gpus_rows() -> None:
    rng = np.random.default_rng(5)
    for gpus in (1, 3):
        tr = f.make_trace(f.square(100.0, 300.0, 0.4), read_times(rng, 500), gpus=gpus)
        for g in tr.gpus:
            one = tr.for_gpu(g)
            m = tr.gpu == g
            for c in ("t_s", "gpu", "power_w", "power_avg_w", "energy_j"):
                assert same(getattr(one, c), getattr(tr, c)[m]), (gpus, c)


@pytest.mark.timeout(60)
def test_instant_power_and_its_windows_equal_the_full_computation() -> None:
    rng = np.random.default_rng(6)
    for gpus, nan, repeats in (
        (1, False, False),
        (1, True, False),
        (1, False, True),
        (3, True, True),
    ):
        per = []
        for g in range(gpus):
            t = read_times(rng, 2000, repeats=repeats)
            p = power_like(rng, t.size, "nan" if nan else "mW")
            z = np.full(t.size, np.nan)
            per.append(Trace(t, np.full(t.size, g), p, z, z, z, z))
        got, want = instant_power(per), old_instant_power(per)
        for c in ("t_s", "power_w", "cumulative_j"):
            assert same(getattr(got, c), getattr(want, c)), (gpus, nan, repeats, c)
        t = got.t_s
        lo, hi = float(t[0]), float(t[-1])
        windows = [(lo - 1.0, hi + 1.0), (lo, hi), (float(t[5]), float(t[900]))]
        windows += [(float(t[10]) + 1e-4, float(t[11]) - 1e-4), (hi + 1.0, hi + 2.0)]
        windows += [(lo - 2.0, lo - 1.0), (float(t[300]), float(t[300]))]
        windows += [tuple(sorted(rng.uniform(lo - 0.1, hi + 0.1, 2))) for _ in range(30)]
        for a, b in windows:
            gp, gw = got.in_window(a, b)
            wp, ww = old_in_window(want, a, b)
            assert same(gp, wp), (a, b)
            assert same(gw, ww), (a, b)
        spans = [tuple(sorted(rng.uniform(lo, hi, 2))) for _ in range(200)]
        assert got.integrals(spans) == [got.integral(a, b) for a, b in spans]


@pytest.mark.timeout(60)
def test_interp_at_its_own_knots_returns_the_values() -> None:
    # instant_power leans on this to skip interpolating the first GPU onto its own times.
    rng = np.random.default_rng(7)
    t = read_times(rng, 10_000)
    for p in (power_like(rng, t.size, "mW"), rng.choice([-1e308, 1e308, -0.0, 0.0], t.size)):
        assert same(np.interp(t, t, p), p)


@pytest.mark.timeout(60)
def test_sampler_health_by_bisection_equals_the_comparison_of_every_gap() -> None:
    ev = f.evidence(f.square(95.0, 105.0, 3.0), [(1.0, 13.0), (13.5, 25.5)], idle_w=60.0, gpus=2)
    t = ev.trace.for_gpu(0).t_s
    spans = _measured_spans(ev)
    rng = np.random.default_rng(8)
    spans += [tuple(sorted(rng.uniform(-1.0, 27.0, 2))) for _ in range(50)]
    spans += [(float(t[3]), float(t[3])), (float(t[3]), float(t[4])), (30.0, 40.0)]
    for lo, hi in spans:
        ev.timeline.runs[0].start_s, ev.timeline.runs[0].end_s = lo, hi
        gaps = np.diff(t)[old_touches(t, _measured_spans(ev))]
        h = sampler_health(ev)
        assert h.samples == t.size
        if gaps.size:
            assert same(h.achieved_interval_s, float(np.mean(gaps)))
            assert same(h.longest_gap_s, float(np.max(gaps)))
            assert h.gaps_over_2x == int(np.count_nonzero(gaps > 2 * ev.meta.sampler.interval_s))
