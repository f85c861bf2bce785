"""The analysis against power signals whose true metrics are known analytically."""

from __future__ import annotations

import numpy as np
import pytest

from modelgrid_bench.analysis import analyze
from modelgrid_contract.result import Flag
from tests import factory as f

RATES_S = [0.005, 0.010, 0.025, 0.1]


@pytest.mark.parametrize("interval_s", RATES_S)
def test_constant_power(interval_s: float) -> None:
    ev = f.evidence(f.constant(300.0), [(1.0, 11.0)], interval_s=interval_s, baseline=(0.0, 1.0))
    r = analyze(ev)
    run = r.runs[0]
    assert run.energy_j == pytest.approx(3000.0, rel=2e-3)
    assert run.avg_power_w == pytest.approx(300.0, rel=2e-3)
    assert run.power_cv_1s == pytest.approx(0.0, abs=1e-3)
    assert run.instant is not None
    assert run.instant.power_cv_instant == pytest.approx(0.0, abs=1e-12)
    assert run.instant.p5_power_w == run.instant.p95_power_w == pytest.approx(300.0)
    assert run.windows_1s == 10
    assert run.energy_discrepancy_pct == pytest.approx(0.0, abs=0.3)
    assert r.pooled is not None
    assert r.pooled.idle_power_w == pytest.approx(300.0, rel=5e-3)
    assert run.energy_above_idle_j == pytest.approx(0.0, abs=10.0)


@pytest.mark.parametrize("interval_s", RATES_S)
def test_slow_square_wave_has_the_same_cv_at_both_time_scales(interval_s: float) -> None:
    # 200 W / 400 W, 1 s each: every 1 s window is wholly high or low, so both CVs are 1/3.
    ev = f.evidence(f.square(200.0, 400.0, 2.0), [(1.0, 11.0)], interval_s=interval_s)
    run = analyze(ev).runs[0]
    # A knot is placed to within half a read interval of the counter's update, which blurs a
    # step by that much: exact at fast reads, a few per cent at 100 ms.
    tolerance = 0.02 if interval_s <= 0.025 else 0.1
    assert run.power_cv_1s == pytest.approx(1.0 / 3.0, rel=tolerance)
    assert run.instant is not None
    assert run.instant.avg_power_w == pytest.approx(300.0, rel=0.02)
    assert run.instant.power_cv_instant == pytest.approx(1.0 / 3.0, rel=0.03)
    assert run.instant.power_std_w == pytest.approx(100.0, rel=0.03)
    assert run.instant.peak_power_w == 400.0
    assert run.instant.min_power_w == 200.0
    assert run.energy_j == pytest.approx(3000.0, rel=5e-3)


@pytest.mark.parametrize("interval_s", [0.005, 0.010, 0.025])
def test_fast_square_wave_is_stable_at_one_second(interval_s: float) -> None:
    # 100 ms period: violently unstable sample to sample, perfectly steady per second. The tier
    # metric is the 1 s one; the instant CV is reported beside it with its own time scale.
    ev = f.evidence(f.square(200.0, 400.0, 0.1), [(0.0, 10.0)], interval_s=interval_s)
    run = analyze(ev).runs[0]
    assert run.power_cv_1s == pytest.approx(0.0, abs=0.01)
    assert run.instant is not None
    assert run.instant.power_cv_instant == pytest.approx(1.0 / 3.0, rel=0.05)


@pytest.mark.parametrize("interval_s", RATES_S)
def test_ramp(interval_s: float) -> None:
    ev = f.evidence(f.ramp(100.0, 500.0, 1.0, 11.0), [(1.0, 11.0)], interval_s=interval_s)
    run = analyze(ev).runs[0]
    assert run.instant is not None
    assert run.avg_power_w == pytest.approx(300.0, rel=5e-3 if interval_s <= 0.025 else 0.01)
    # Uniform on [100, 500]: std = 400 / sqrt(12).
    assert run.instant.power_std_w == pytest.approx(400.0 / np.sqrt(12.0), rel=0.02)
    assert run.instant.p5_power_w == pytest.approx(120.0, rel=0.02)
    assert run.instant.p50_power_w == pytest.approx(300.0, rel=0.01)
    assert run.instant.p95_power_w == pytest.approx(480.0, rel=0.01)
    # Window means 120, 160, ..., 480: population std 40 * sqrt((10^2 - 1) / 12).
    expected_cv = 40.0 * np.sqrt(99.0 / 12.0) / 300.0
    assert run.power_cv_1s == pytest.approx(expected_cv, rel=0.01)


def test_gaussian_noise_of_known_sigma() -> None:
    rng = np.random.default_rng(7)
    hold_s = 0.005
    levels = 300.0 + rng.normal(0.0, 20.0, size=int(61.0 / hold_s) + 2)

    def noisy(t: np.ndarray) -> np.ndarray:
        return levels[(np.asarray(t) / hold_s).astype(int)]

    ev = f.evidence(noisy, [(0.0, 60.0)], interval_s=0.005)
    run = analyze(ev).runs[0]
    assert run.instant is not None
    assert run.instant.power_std_w == pytest.approx(20.0, rel=0.05)
    assert run.instant.power_cv_instant == pytest.approx(20.0 / 300.0, rel=0.05)
    # Averaging 200 independent levels per second leaves sigma / sqrt(200) / mean.
    assert run.power_cv_1s is not None
    assert run.power_cv_1s < 3 * (20.0 / np.sqrt(200.0)) / 300.0


@pytest.mark.parametrize("interval_s", [0.010, 0.025, 0.050])
def test_energy_counter_that_updates_every_100ms(interval_s: float) -> None:
    power = f.square(250.0, 450.0, 1.3, duty=0.4)
    ev = f.evidence(power, [(0.37, 8.91)], interval_s=interval_s, counter_update_s=0.1)
    run = analyze(ev).runs[0]
    truth = f.true_energy(power, 0.37, 8.91)
    # Between updates the counter is flat; the knots interpolate it to within a fraction of one
    # update's energy at each end of the window.
    assert run.energy_j == pytest.approx(truth, abs=0.2 * 450.0 * 0.1)
    assert abs(run.energy_j - truth) / truth < 0.01


def test_energy_counter_beats_the_instant_integral_when_sampling_is_coarse() -> None:
    # A 30 ms burst every 400 ms, read every 100 ms in phase with it: the integral of instant
    # samples aliases, the counter does not. The discrepancy is reported and flagged above 3 %.
    power = f.square(200.0, 900.0, 0.4, duty=0.075)
    t = np.arange(0.0, 12.5, 0.1)
    ev = f.evidence(power, [(0.0, 12.0)], t_s=t, interval_s=0.1, counter_update_s=0.1)
    r = analyze(ev)
    truth = f.true_energy(power, 0.0, 12.0)
    run = r.runs[0]
    assert run.energy_j == pytest.approx(truth, rel=0.01)
    assert run.energy_integral_j is not None
    assert abs(run.energy_integral_j - truth) / truth > 0.03
    assert Flag.ENERGY_DISCREPANCY in r.flags


def test_uneven_spacing_is_time_weighted() -> None:
    # Dense reads while power is high, sparse while it is low: a plain sample mean is biased
    # towards the high level; the time-weighted mean is not.
    high = np.arange(0.0, 10.0, 2.0)[:, None] + np.arange(0.0, 1.0, 0.005)[None, :]
    low = np.arange(1.0, 10.0, 2.0)[:, None] + np.arange(0.0, 1.0, 0.05)[None, :]
    t = np.sort(np.concatenate([high.ravel(), low.ravel(), [10.0, 10.2, 10.4]]))
    ev = f.evidence(f.square(200.0, 400.0, 2.0), [(0.0, 10.0)], t_s=t, interval_s=0.025)
    run = analyze(ev).runs[0]
    assert run.instant is not None
    naive = float(np.mean(f.square(200.0, 400.0, 2.0)(t[t <= 10.0])))
    assert naive > 370.0
    assert run.instant.avg_power_w == pytest.approx(300.0, rel=0.01)
    assert run.instant.power_cv_instant == pytest.approx(1.0 / 3.0, rel=0.03)


def test_gaps_are_reported_and_energy_survives_them() -> None:
    t = np.arange(0.0, 12.0, 0.025)
    t = t[(t < 4.0) | (t > 4.6)]
    ev = f.evidence(f.constant(320.0), [(1.0, 11.0)], t_s=t, interval_s=0.025)
    r = analyze(ev)
    assert r.sampler_health.longest_gap_s == pytest.approx(0.625, abs=0.03)
    assert r.sampler_health.gaps_over_2x == 1
    assert not r.sampler_health.healthy
    assert Flag.SAMPLER_DEGRADED in r.flags
    assert r.runs[0].energy_j == pytest.approx(3200.0, rel=0.005)


def test_sampler_health_of_a_clean_trace() -> None:
    r = analyze(f.evidence(f.constant(100.0), [(0.0, 5.0)], interval_s=0.025))
    h = r.sampler_health
    assert h.healthy
    assert h.achieved_interval_s == pytest.approx(0.025, rel=1e-6)
    assert h.achieved_rate_hz == pytest.approx(40.0, rel=1e-6)
    assert Flag.SAMPLER_DEGRADED not in r.flags


def test_prefill_and_decode_energy_over_their_real_intervals() -> None:
    # Five requests: 0.2 s prefill at 600 W, 1.0 s decode at 300 W, 0.3 s idle at 100 W.
    from modelgrid_bench.records import RequestRecord

    reqs, segments = [], []
    t0 = 1.0
    for _ in range(5):
        reqs.append(
            RequestRecord(
                start_s=t0,
                first_token_s=t0 + 0.2,
                end_s=t0 + 1.2,
                input_tokens=64,
                output_tokens=50,
            )
        )
        segments.append((t0, t0 + 0.2, t0 + 1.2))
        t0 += 1.5

    def power(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t)
        out = np.full(t.shape, 100.0)
        for a, ft, e in segments:
            out = np.where((t >= a) & (t < ft), 600.0, out)
            out = np.where((t >= ft) & (t < e), 300.0, out)
        return out

    ev = f.evidence(power, [(1.0, 8.2)], interval_s=0.005, run_requests=[reqs])
    run = analyze(ev).runs[0]
    assert run.prefill_time_s == pytest.approx(1.0, abs=1e-9)
    assert run.decode_time_s == pytest.approx(5.0, abs=1e-9)
    assert run.prefill_energy_j == pytest.approx(600.0, rel=0.02)
    assert run.decode_energy_j == pytest.approx(1500.0, rel=0.02)
    assert run.prefill_avg_power_w == pytest.approx(600.0, rel=0.02)
    assert run.decode_avg_power_w == pytest.approx(300.0, rel=0.02)
    assert run.ttft_p50_s == pytest.approx(0.2)
    assert run.output_tokens == 250
    assert run.joules_per_token == pytest.approx(run.energy_j / 250)


def test_overlapping_requests_count_prefill_first() -> None:
    from modelgrid_bench.stats import phase_segments

    pre, dec = phase_segments([(0.0, 1.0), (2.0, 2.5)], [(1.0, 4.0), (2.5, 3.0)])
    assert pre == [(0.0, 1.0), (2.0, 2.5)]
    assert dec == [(1.0, 2.0), (2.5, 4.0)]


def test_several_gpus_add_up() -> None:
    ev = f.evidence(f.constant(200.0), [(0.0, 10.0)], gpus=4)
    r = analyze(ev)
    assert r.runs[0].avg_power_w == pytest.approx(800.0, rel=5e-3)
    assert r.runs[0].instant is not None
    assert r.runs[0].instant.avg_power_w == pytest.approx(800.0, rel=1e-6)
    assert r.per_gpu_avg_power_w == pytest.approx([200.0] * 4, rel=5e-3)


def test_without_an_energy_counter_the_fallback_is_flagged() -> None:
    ev = f.evidence(f.constant(250.0), [(0.0, 10.0)], counter=False)
    r = analyze(ev)
    assert Flag.ENERGY_FALLBACK in r.flags
    assert r.runs[0].energy_j == pytest.approx(2500.0, rel=1e-3)


def test_counter_reset_falls_back_and_is_flagged() -> None:
    ev = f.evidence(f.constant(250.0), [(0.0, 10.0)])
    ev.trace.energy_j[200:] -= 1.0e6  # the driver reloaded mid-run
    r = analyze(ev)
    assert Flag.ENERGY_COUNTER_RESET in r.flags
    assert Flag.ENERGY_FALLBACK in r.flags
    assert r.runs[0].energy_j == pytest.approx(2500.0, rel=1e-3)


def test_short_runs_are_flagged_and_have_no_confidence_interval() -> None:
    r = analyze(f.evidence(f.constant(250.0), [(0.0, 3.0)]))
    assert Flag.SHORT_WINDOW in r.flags
    assert r.pooled is not None
    assert r.pooled.power_cv_ci95 is None


def test_contention_is_refused_with_a_reason() -> None:
    tel = f.telemetry(12.0, process_count=lambda t: 2 if t > 5 else 1)
    r = analyze(f.evidence(f.constant(250.0), [(0.0, 11.0)], tel=tel))
    assert Flag.CONTENTION in r.flags
    assert r.refusal is not None
    assert r.refusal.reason == "Contention"
    assert "2 compute processes" in r.refusal.message


def test_a_busy_gpu_before_start_is_refused() -> None:
    tel = f.telemetry(12.0, util_pct=lambda t: 85.0 if t < 1.0 else 0.0)
    r = analyze(f.evidence(f.constant(250.0), [(1.0, 11.0)], baseline=(0.0, 1.0), tel=tel))
    assert Flag.GPU_NOT_IDLE in r.flags
    assert r.refusal is not None
    assert r.refusal.reason == "GPUNotIdle"


def test_throttling_time_from_violation_counters() -> None:
    # 150 ms of power-cap violation accrues per second from t = 4 s.
    tel = f.telemetry(12.0, violation_ns=lambda t: max(0.0, t - 4.0) * 0.15e9)
    r = analyze(f.evidence(f.constant(250.0), [(1.0, 11.0)], tel=tel))
    assert r.runs[0].throttled_s == pytest.approx(0.15 * 7.0, rel=0.08)
    assert Flag.THROTTLED in r.flags


def test_throttling_time_from_clock_event_reasons_when_counters_are_missing() -> None:
    tel = f.telemetry(12.0, reasons=lambda t: 0x4 if 3.0 <= t < 5.0 else 0x1)
    r = analyze(f.evidence(f.constant(250.0), [(1.0, 11.0)], tel=tel))
    assert r.runs[0].throttled_s == pytest.approx(2.0, abs=0.01)


def test_token_mismatch_is_flagged() -> None:
    ev = f.evidence(f.constant(250.0), [(0.0, 10.0)], expected_tokens=11)
    assert Flag.TOKEN_MISMATCH in analyze(ev).flags
    ev = f.evidence(f.constant(250.0), [(0.0, 10.0)], expected_tokens=10)
    assert Flag.TOKEN_MISMATCH not in analyze(ev).flags


def test_pooled_and_run_to_run_figures() -> None:
    # Three runs at different constant levels: pooled energy adds up, run-to-run has spread.
    def power(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t)
        return np.where(t < 11.0, 200.0, np.where(t < 22.0, 220.0, 240.0))

    runs = [(0.5, 10.5), (11.5, 21.5), (22.5, 32.5)]
    r = analyze(f.evidence(power, runs, requests_per_run=20))
    assert r.pooled is not None
    assert r.pooled.energy_j == pytest.approx(2000 + 2200 + 2400, rel=2e-3)
    assert r.pooled.output_tokens == 600
    assert r.pooled.joules_per_token == pytest.approx(6600 / 600, rel=2e-3)
    assert r.pooled.tokens_per_joule == pytest.approx(600 / 6600, rel=2e-3)
    assert r.pooled.wh_per_1k_queries == pytest.approx(6600 / 60 * 1000 / 3600, rel=2e-3)
    assert r.pooled.tokens_per_query == 10.0
    spread = r.run_to_run["avg_power_w"]
    assert spread.n == 3
    assert spread.mean == pytest.approx(220.0, rel=2e-3)
    assert spread.std == pytest.approx(20.0, rel=0.02)
    assert spread.range == pytest.approx(40.0, rel=0.02)
    assert r.pooled.power_cv == pytest.approx(0.0, abs=1e-3)
    assert r.pooled.power_cv_ci95 is not None


def test_a_stall_outside_the_runs_does_not_degrade_the_sampler() -> None:
    t = np.arange(0.0, 12.0, 0.025)
    t = t[(t < 0.2) | (t > 0.9)]  # e.g. the model loading while the sampler waits
    r = analyze(f.evidence(f.constant(320.0), [(1.0, 11.0)], t_s=t, interval_s=0.025))
    assert r.sampler_health.healthy
    assert r.sampler_health.longest_gap_s < 0.03


def test_a_counter_that_never_moves_is_not_trusted() -> None:
    ev = f.evidence(f.constant(250.0), [(0.0, 10.0)])
    ev.trace.energy_j[:] = 123.0
    r = analyze(ev)
    assert Flag.ENERGY_FALLBACK in r.flags
    assert r.runs[0].energy_j == pytest.approx(2500.0, rel=1e-3)


def test_unknown_process_counts_refuse_and_fail_the_gate_of_an_in_pod_engine() -> None:
    # Load above idle and a busy GPU, but the engine's processes cannot be listed: the work-done
    # gate cannot prove the transformers engine ran on the measured GPU, so it refuses.
    tel = f.telemetry(12.0, process_count=lambda t: -1, util_pct=lambda t: 90.0 if t > 1 else 0)
    ev = f.evidence(f.step(80.0, 250.0, at_s=1.0), [(1.0, 11.0)], baseline=(0.0, 1.0), tel=tel)
    r = analyze(ev)
    assert any("contention check incomplete" in n for n in r.notes)
    # Nothing shows the GPU was not shared: refused for contention first, and the gate fails too.
    assert r.refusal is not None
    assert r.refusal.reason == "Contention"
    assert "contention could not be checked" in r.refusal.message
    assert r.work_done is not None
    assert not r.work_done.passed
    assert "could not be listed" in r.work_done.message
    assert r.work_done.joules_per_token_above_idle_min == pytest.approx(170.0 * 10 / 100, rel=0.02)
