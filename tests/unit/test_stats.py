"""Statistical primitives and invariants of the analysis (hypothesis properties)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgrid_bench.analysis import analyze
from modelgrid_bench.stats import (
    counter_knots,
    spread,
    weighted_percentile,
)
from tests import factory as f


def test_run_to_run_spread_reproduces_the_adopted_report() -> None:
    # Seed 002, table 1 (Rust, Qwen 2.5 7B, baseline vs chimera): the efficiency statistics.
    s = spread(np.array([85.08, 85.18, 99.58, 98.79, 81.20]))
    assert s is not None
    assert s.mean == pytest.approx(89.97, abs=0.005)
    assert s.std == pytest.approx(8.57, abs=0.005)
    assert (s.min, s.max) == (81.20, 99.58)
    assert s.range == pytest.approx(18.38, abs=1e-9)
    assert s.cv is not None
    assert s.cv * 100 == pytest.approx(9.53, abs=0.005)


def test_spread_of_one_value_has_no_cv() -> None:
    s = spread(np.array([3.0, np.nan]))
    assert s is not None
    assert (s.n, s.std, s.cv) == (1, 0.0, None)
    assert spread(np.array([np.nan])) is None


def test_weighted_percentile_equals_hazen_for_equal_weights() -> None:
    x = np.random.default_rng(3).normal(size=101)
    for q in (5, 50, 95):
        assert weighted_percentile(x, np.ones_like(x), q) == pytest.approx(
            np.percentile(x, q, method="hazen")
        )


def test_counter_knots_skip_the_first_read_and_detect_resets() -> None:
    t = np.arange(0.0, 1.0, 0.025)
    counter = np.floor(t / 0.1) * 10.0 + 50.0
    k = counter_knots(t, counter)
    assert k.t_s[0] > t[0]  # the first value's update time is unknown
    assert k.median_update_s == pytest.approx(0.1, abs=1e-9)
    assert not k.reset
    counter[20:] -= 40.0
    assert counter_knots(t, counter).reset


# ------------------------------------------------------------------ properties of the analysis

levels = st.lists(st.floats(50.0, 700.0), min_size=2, max_size=12)


def _piecewise(values: list[float], step_s: float) -> f.PowerFn:
    arr = np.array(values)
    return lambda t: arr[(np.asarray(t) / step_s).astype(int) % arr.size]


@settings(max_examples=40)
@given(values=levels, scale=st.floats(0.1, 10.0), step_s=st.sampled_from([0.05, 0.3, 1.0]))
def test_scaling_power_scales_energy_and_leaves_cv_unchanged(
    values: list[float], scale: float, step_s: float
) -> None:
    base = _piecewise(values, step_s)
    scaled = _piecewise([v * scale for v in values], step_s)
    a = analyze(f.evidence(base, [(0.5, 6.5)], interval_s=0.025))
    b = analyze(f.evidence(scaled, [(0.5, 6.5)], interval_s=0.025))
    ra, rb = a.runs[0], b.runs[0]
    assert rb.energy_j == pytest.approx(scale * ra.energy_j, rel=1e-6)
    assert rb.joules_per_token == pytest.approx(scale * (ra.joules_per_token or 0), rel=1e-6)
    assert ra.power_cv_1s is not None
    assert rb.power_cv_1s == pytest.approx(ra.power_cv_1s, rel=1e-6, abs=1e-9)
    assert ra.instant is not None
    assert rb.instant is not None
    assert rb.instant.power_cv_instant == pytest.approx(
        ra.instant.power_cv_instant, rel=1e-6, abs=1e-9
    )
    assert rb.prefill_energy_j == pytest.approx(scale * (ra.prefill_energy_j or 0), rel=1e-6)


@settings(max_examples=40)
@given(
    values=levels,
    step_s=st.sampled_from([0.02, 0.2, 0.7]),
    interval_s=st.sampled_from([0.005, 0.025, 0.05]),
)
def test_ordering_invariants(values: list[float], step_s: float, interval_s: float) -> None:
    r = analyze(f.evidence(_piecewise(values, step_s), [(0.3, 5.3)], interval_s=interval_s))
    run = r.runs[0]
    assert run.instant is not None
    s = run.instant
    assert s.min_power_w <= s.p5_power_w <= s.p50_power_w <= s.p95_power_w <= s.peak_power_w
    assert s.min_power_w <= s.avg_power_w <= s.peak_power_w
    assert run.energy_j > 0
    assert run.power_cv_1s is not None
    assert run.power_cv_1s >= 0
    assert s.power_variance_w2 == pytest.approx(s.power_std_w**2)
    assert s.power_range_w == pytest.approx(s.peak_power_w - s.min_power_w)
    assert (run.prefill_energy_j or 0) + (run.decode_energy_j or 0) <= (
        run.energy_integral_j or 0
    ) * (1 + 1e-9)


@settings(max_examples=20)
@given(values=levels, shift_s=st.floats(0.0, 1000.0))
def test_moving_the_clock_origin_changes_nothing(values: list[float], shift_s: float) -> None:
    power = _piecewise(values, 0.25)
    a = analyze(f.evidence(power, [(0.5, 5.5)]))
    ev = f.evidence(power, [(0.5, 5.5)])
    ev.trace.t_s = ev.trace.t_s + shift_s
    ev.telemetry.columns["t_s"] = ev.telemetry.columns["t_s"] + shift_s
    ev.timeline = ev.timeline.model_copy(
        update={
            "runs": [
                r.model_copy(
                    update={
                        "start_s": r.start_s + shift_s,
                        "end_s": r.end_s + shift_s,
                        "requests": [
                            q.model_copy(
                                update={
                                    "start_s": q.start_s + shift_s,
                                    "first_token_s": q.first_token_s + shift_s,
                                    "end_s": q.end_s + shift_s,
                                }
                            )
                            for q in r.requests
                        ],
                    }
                )
                for r in ev.timeline.runs
            ]
        }
    )
    b = analyze(ev)
    assert b.runs[0].energy_j == pytest.approx(a.runs[0].energy_j, rel=1e-6)
    assert b.runs[0].power_cv_1s == pytest.approx(a.runs[0].power_cv_1s, rel=1e-5, abs=1e-9)
