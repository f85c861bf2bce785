"""From evidence (trace, telemetry, timeline) to a `BenchmarkResult`. Pure: no I/O, no clocks.

The same function serves a live run and `python -m modelgrid_bench analyze DIR`, so a result can
always be re-derived from what was recorded. Definitions of every metric are in
docs/measurement.md; the choices that matter for a price are:

* energy comes from the NVML energy counter, interpolated between the reads where it changed;
  the trapezoid integral of instant power is the cross-check (flagged above 3 %);
* the tier metric is the CV of average power over consecutive 1 s windows of that counter, which
  does not depend on the sampling rate or on the driver's own averaging;
* instant-power statistics are time-weighted, because reads are unevenly spaced;
* prefill and decode energy are integrals of instant power over their real intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelgrid_bench.records import THROTTLE_REASONS_MASK, Evidence, RunRecord, Trace
from modelgrid_bench.stats import (
    CounterKnots,
    FloatArray,
    bootstrap_mean_cv_ci,
    coefficient_of_variation,
    counter_knots,
    cumulative_energy_j,
    phase_segments,
    sample_weights_s,
    spread,
    weighted_mean,
    weighted_percentile,
    weighted_variance,
    window_powers_w,
)
from modelgrid_contract.reasons import Reason
from modelgrid_contract.result import (
    TIER_METRIC,
    TIER_METRIC_TIME_SCALE_S,
    BenchmarkResult,
    Flag,
    PooledMetrics,
    PowerStats,
    Refusal,
    RunMetrics,
    SamplerHealth,
    Spread,
)

ENERGY_DISCREPANCY_LIMIT_PCT = 3.0
MIN_WINDOWS_FOR_TIER = 10
BASELINE_BUSY_UTIL_PCT = 10.0
THROTTLE_FLAG_FRACTION = 0.01
BOOTSTRAP_REPLICATES = 2000


@dataclass(frozen=True)
class EnergyModel:
    """Cumulative energy of all GPUs as a function of time, and how it was obtained."""

    knots: list[CounterKnots | None]
    integrals: list[tuple[FloatArray, FloatArray]]
    from_counter: bool
    counter_reset: bool

    def at(self, t: FloatArray | float) -> FloatArray:
        total = np.zeros(np.shape(t), dtype=np.float64)
        for k, (ti, ei) in zip(self.knots, self.integrals, strict=True):
            if self.from_counter and k is not None:
                total = total + k.at(t)
            else:
                total = total + np.interp(t, ti, ei)
        return total

    def between(self, start_s: float, end_s: float) -> float:
        e = self.at(np.array([start_s, end_s]))
        return float(e[1] - e[0])


@dataclass(frozen=True)
class InstantPower:
    """Total instant power of all GPUs on the first GPU's read times."""

    t_s: FloatArray
    power_w: FloatArray
    cumulative_j: FloatArray

    def integral(self, start_s: float, end_s: float) -> float:
        e = np.interp([start_s, end_s], self.t_s, self.cumulative_j)
        return float(e[1] - e[0])

    def in_window(self, start_s: float, end_s: float) -> tuple[FloatArray, FloatArray]:
        """Samples in the window and their durations, clipped to the window."""
        w = sample_weights_s(self.t_s, (start_s, end_s))
        keep = w > 0
        return self.power_w[keep], w[keep]


def _per_gpu(trace: Trace) -> list[Trace]:
    return [trace.for_gpu(g) for g in trace.gpus]


def energy_model(per_gpu: list[Trace]) -> EnergyModel:
    knots: list[CounterKnots | None] = []
    integrals: list[tuple[FloatArray, FloatArray]] = []
    counter_ok, reset = True, False
    for g in per_gpu:
        integrals.append((g.t_s, cumulative_energy_j(g.t_s, g.power_w)))
        k = (
            counter_knots(g.t_s, g.energy_j)
            if g.energy_j.size and np.all(np.isfinite(g.energy_j))
            else None
        )
        if k is not None and k.t_s.size >= 2:
            reset |= k.reset
            knots.append(k)
        else:
            counter_ok = False
            knots.append(None)
    return EnergyModel(knots, integrals, counter_ok and not reset, reset)


def instant_power(per_gpu: list[Trace]) -> InstantPower:
    grid = per_gpu[0].t_s
    total = np.zeros_like(grid)
    for g in per_gpu:
        total = total + np.interp(grid, g.t_s, g.power_w)
    return InstantPower(grid, total, cumulative_energy_j(grid, total))


def _power_stats(p: FloatArray, w: FloatArray) -> PowerStats | None:
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
        p5_power_w=weighted_percentile(p, w, 5),
        p50_power_w=weighted_percentile(p, w, 50),
        p95_power_w=weighted_percentile(p, w, 95),
        power_cv_instant=coefficient_of_variation(p, w),
    )


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _throttled_s(ev: Evidence, start_s: float, end_s: float) -> float:
    tel = ev.telemetry
    t = tel.get("t_s")
    if t.size == 0:
        return 0.0
    gpu = tel.get("gpu")
    worst = 0.0
    for g in sorted({int(x) for x in gpu}):
        m = (gpu == g) & (t >= start_s) & (t <= end_s)
        if np.count_nonzero(m) < 2:
            continue
        tg = t[m]
        pv, tv = tel.get("power_violation_ns")[m], tel.get("thermal_violation_ns")[m]
        if np.all(np.isfinite(pv)) and np.all(np.isfinite(tv)):
            # Violation counters are exact cumulative nanoseconds; prefer them to the bitmask.
            seconds = (pv[-1] - pv[0] + tv[-1] - tv[0]) / 1e9
        else:
            reasons = tel.get("clocks_event_reasons")[m].astype(np.int64)
            held = (reasons[:-1] & THROTTLE_REASONS_MASK) != 0
            seconds = float(np.sum(np.diff(tg)[held]))
        worst = max(worst, min(float(seconds), end_s - start_s))
    return worst


def _telemetry_in(ev: Evidence, name: str, start_s: float, end_s: float) -> FloatArray:
    t = ev.telemetry.get("t_s")
    v = ev.telemetry.get(name)
    if t.size == 0:
        return np.zeros(0)
    m = (t >= start_s) & (t <= end_s) & np.isfinite(v)
    return v[m]


def _run_metrics(
    ev: Evidence,
    run: RunRecord,
    energy: EnergyModel,
    inst: InstantPower,
    idle_power_w: float | None,
) -> tuple[RunMetrics, FloatArray, tuple[FloatArray, FloatArray]]:
    a, b = run.start_s, run.end_s
    duration = b - a
    e_j = energy.between(a, b)
    e_int = inst.integral(a, b)
    discrepancy = (e_j - e_int) / e_j * 100.0 if e_j > 0 else None
    p, w = inst.in_window(a, b)
    stats = _power_stats(p, w)
    windows = window_powers_w(energy.at, a, b, TIER_METRIC_TIME_SCALE_S)
    cv_1s = coefficient_of_variation(windows) if windows.size >= 2 else None
    reqs = run.requests
    out_tokens = sum(r.output_tokens for r in reqs)
    in_tokens = sum(r.input_tokens for r in reqs)
    ttft = np.array([r.first_token_s - r.start_s for r in reqs], dtype=np.float64)
    pre, dec = phase_segments(
        [(r.start_s, r.first_token_s) for r in reqs], [(r.first_token_s, r.end_s) for r in reqs]
    )
    pre_t = sum(hi - lo for lo, hi in pre)
    dec_t = sum(hi - lo for lo, hi in dec)
    pre_j = sum(inst.integral(lo, hi) for lo, hi in pre) if pre else None
    dec_j = sum(inst.integral(lo, hi) for lo, hi in dec) if dec else None
    above_idle = e_j - idle_power_w * duration if idle_power_w is not None else None
    temps = _telemetry_in(ev, "temperature_c", a, b)
    clocks = _telemetry_in(ev, "sm_clock_mhz", a, b)
    metrics = RunMetrics(
        run=run.index,
        window_start_s=a,
        window_end_s=b,
        duration_s=duration,
        requests=len(reqs),
        input_tokens=in_tokens,
        output_tokens=out_tokens,
        energy_j=e_j,
        energy_integral_j=e_int,
        energy_discrepancy_pct=discrepancy,
        avg_power_w=e_j / duration if duration > 0 else 0.0,
        instant=stats,
        power_cv_1s=cv_1s,
        windows_1s=int(windows.size),
        joules_per_token=_ratio(e_j, out_tokens),
        tokens_per_joule=_ratio(out_tokens, e_j),
        wh_per_1k_queries=e_j / len(reqs) * 1000.0 / 3600.0 if reqs else None,
        tokens_per_s=out_tokens / duration if duration > 0 else 0.0,
        ttft_mean_s=float(np.mean(ttft)) if ttft.size else None,
        ttft_p50_s=float(np.percentile(ttft, 50)) if ttft.size else None,
        ttft_p95_s=float(np.percentile(ttft, 95)) if ttft.size else None,
        prefill_energy_j=pre_j,
        decode_energy_j=dec_j,
        prefill_time_s=pre_t,
        decode_time_s=dec_t,
        prefill_avg_power_w=_ratio(pre_j, pre_t) if pre_j is not None else None,
        decode_avg_power_w=_ratio(dec_j, dec_t) if dec_j is not None else None,
        energy_above_idle_j=above_idle,
        joules_per_token_above_idle=(
            _ratio(above_idle, out_tokens) if above_idle is not None else None
        ),
        throttled_s=_throttled_s(ev, a, b),
        max_temperature_c=float(np.max(temps)) if temps.size else None,
        mean_sm_clock_mhz=float(np.mean(clocks)) if clocks.size else None,
    )
    return metrics, windows, (p, w)


def sampler_health(ev: Evidence) -> SamplerHealth:
    """Achieved interval and gaps over the measured runs (model loading may stall the sampler
    harmlessly; a stall while the load runs is what matters)."""
    interval = ev.meta.sampler.interval_s
    per = _per_gpu(ev.trace)
    t = per[0].t_s if per else np.zeros(0)
    gaps = np.diff(t) if t.size > 1 else np.zeros(0)
    if gaps.size and ev.timeline.runs:
        touches = np.zeros(gaps.size, dtype=bool)
        for run in ev.timeline.runs:
            touches |= (t[1:] > run.start_s) & (t[:-1] < run.end_s)
        gaps = gaps[touches]
    achieved = float(np.mean(gaps)) if gaps.size else float("inf")
    longest = float(np.max(gaps)) if gaps.size else float("inf")
    return SamplerHealth(
        requested_interval_s=interval,
        achieved_interval_s=achieved,
        achieved_rate_hz=1.0 / achieved if gaps.size and achieved > 0 else 0.0,
        longest_gap_s=longest,
        gaps_over_2x=int(np.count_nonzero(gaps > 2 * interval)),
        samples=int(t.size),
        read_errors=ev.meta.sampler_read_errors,
        healthy=bool(
            gaps.size > 0 and achieved <= 1.5 * interval and longest <= max(5 * interval, 0.2)
        ),
    )


def _contention(ev: Evidence) -> tuple[bool, bool, str]:
    """(other processes seen, GPU busy before start, explanation)."""
    tel = ev.telemetry
    t, procs, util = tel.get("t_s"), tel.get("process_count"), tel.get("gpu_util_pct")
    spans = [(r.start_s, r.end_s) for r in ev.timeline.runs]
    base = ev.timeline.baseline
    if base is not None:
        spans.append((base.start_s, base.end_s))
    in_spans = np.zeros(t.size, dtype=bool)
    for lo, hi in spans:
        in_spans |= (t >= lo) & (t <= hi)
    allowed = ev.meta.allowed_gpu_processes
    crowded = in_spans & (procs > allowed)
    busy = False
    reason = ""
    if np.any(crowded):
        worst = int(np.max(procs[crowded]))
        reason = (
            f"{worst} compute processes on a GPU where {allowed} was expected "
            f"(first at t={float(t[crowded][0]):.2f} s)"
        )
    if base is not None:
        in_base = (t >= base.start_s) & (t <= base.end_s) & np.isfinite(util)
        if np.any(in_base):
            mean_util = float(np.mean(util[in_base]))
            if mean_util > BASELINE_BUSY_UTIL_PCT:
                busy = True
                reason = reason or (
                    f"GPU utilisation averaged {mean_util:.0f} % during the idle baseline "
                    f"(limit {BASELINE_BUSY_UTIL_PCT:.0f} %): another workload is running"
                )
    return bool(np.any(crowded)), busy, reason


def _spread_model(values: list[float | None]) -> Spread | None:
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    s = spread(arr)
    if s is None:
        return None
    return Spread(n=s.n, mean=s.mean, std=s.std, min=s.min, max=s.max, range=s.range, cv=s.cv)


def analyze(ev: Evidence) -> BenchmarkResult:
    """Derive every metric, flag and refusal from the evidence alone."""
    meta = ev.meta
    per = _per_gpu(ev.trace)
    flags: list[Flag] = []
    notes = list(meta.notes) + list(meta.power_source.notes)
    if meta.power_source.simulated or meta.backend.simulated:
        flags.append(Flag.SIMULATED)
    health = sampler_health(ev)
    if not health.healthy:
        flags.append(Flag.SAMPLER_DEGRADED)
    if not meta.power_source.instant_power_field:
        flags.append(Flag.NO_INSTANT_POWER)

    runs: list[RunMetrics] = []
    windows: list[FloatArray] = []
    pooled_p: list[FloatArray] = []
    pooled_w: list[FloatArray] = []
    idle_power_w: float | None = None
    per_gpu_avg: list[float] = []
    if per:
        energy = energy_model(per)
        if energy.counter_reset:
            flags.append(Flag.ENERGY_COUNTER_RESET)
        if not energy.from_counter:
            flags.append(Flag.ENERGY_FALLBACK)
            notes.append("energy is the integral of instant power: no usable energy counter")
        inst = instant_power(per)
        base = ev.timeline.baseline
        if base is not None and base.end_s > base.start_s:
            idle_power_w = energy.between(base.start_s, base.end_s) / (base.end_s - base.start_s)
        for run in ev.timeline.runs:
            m, win, (p, w) = _run_metrics(ev, run, energy, inst, idle_power_w)
            runs.append(m)
            windows.append(win)
            pooled_p.append(p)
            pooled_w.append(w)
        total_t = sum(r.duration_s for r in runs)
        for i, _ in enumerate(per):
            single = EnergyModel(
                [energy.knots[i]], [energy.integrals[i]], energy.from_counter, False
            )
            e = sum(single.between(r.window_start_s, r.window_end_s) for r in runs)
            per_gpu_avg.append(e / total_t if total_t > 0 else 0.0)

    pooled = _pooled(ev, runs, windows, pooled_p, pooled_w, idle_power_w)
    if pooled is not None:
        if any(
            r.energy_discrepancy_pct is not None
            and abs(r.energy_discrepancy_pct) > ENERGY_DISCREPANCY_LIMIT_PCT
            for r in runs
        ):
            flags.append(Flag.ENERGY_DISCREPANCY)
        if pooled.throttled_s > THROTTLE_FLAG_FRACTION * pooled.duration_s:
            flags.append(Flag.THROTTLED)
    if any(r.windows_1s < MIN_WINDOWS_FOR_TIER for r in runs):
        flags.append(Flag.SHORT_WINDOW)
    expected = meta.expected_output_tokens_per_request
    if expected is not None and any(
        q.output_tokens != expected for r in ev.timeline.runs for q in r.requests
    ):
        flags.append(Flag.TOKEN_MISMATCH)

    procs = ev.telemetry.get("process_count")
    if procs.size == 0 or np.any(procs < 0):
        notes.append(
            "contention check incomplete: the source could not list the compute processes on "
            "every GPU"
        )
    crowded, busy, why = _contention(ev)
    refusal: Refusal | None = None
    if crowded:
        flags.append(Flag.CONTENTION)
        refusal = Refusal(reason=Reason.CONTENTION.value, message=why)
    if busy:
        flags.append(Flag.GPU_NOT_IDLE)
        refusal = refusal or Refusal(reason=Reason.GPU_NOT_IDLE.value, message=why)

    run_to_run: dict[str, Spread] = {}
    if runs:
        columns: tuple[tuple[str, list[float | None]], ...] = (
            ("avg_power_w", [r.avg_power_w for r in runs]),
            ("power_cv", [r.power_cv_1s for r in runs]),
            ("joules_per_token", [r.joules_per_token for r in runs]),
            ("tokens_per_s", [r.tokens_per_s for r in runs]),
            ("peak_power_w", [r.instant.peak_power_w if r.instant else None for r in runs]),
        )
        for key, values in columns:
            s = _spread_model(values)
            if s is not None:
                run_to_run[key] = s

    return BenchmarkResult(
        workload=meta.workload,
        workload_digest=meta.workload.digest(),
        backend=meta.backend,
        power_source=meta.power_source,
        sampler=meta.sampler,
        environment=meta.environment,
        tier_metric=TIER_METRIC,
        cv_time_scale_s=TIER_METRIC_TIME_SCALE_S,
        runs=runs,
        pooled=pooled,
        run_to_run=run_to_run,
        sampler_health=health,
        per_gpu_avg_power_w=per_gpu_avg,
        flags=flags,
        refusal=refusal,
        notes=notes,
    )


def _pooled(
    ev: Evidence,
    runs: list[RunMetrics],
    windows: list[FloatArray],
    pooled_p: list[FloatArray],
    pooled_w: list[FloatArray],
    idle_power_w: float | None,
) -> PooledMetrics | None:
    if not runs:
        return None
    duration = sum(r.duration_s for r in runs)
    energy = sum(r.energy_j for r in runs)
    tokens = sum(r.output_tokens for r in runs)
    requests = sum(r.requests for r in runs)
    p = np.concatenate(pooled_p) if pooled_p else np.zeros(0)
    w = np.concatenate(pooled_w) if pooled_w else np.zeros(0)
    stats = _power_stats(p, w)
    cvs = [r.power_cv_1s for r in runs]
    power_cv = (
        float(np.mean([c for c in cvs if c is not None]))
        if all(c is not None for c in cvs)
        else None
    )
    ci = (
        bootstrap_mean_cv_ci(windows, seed=ev.meta.workload.seed, replicates=BOOTSTRAP_REPLICATES)
        if power_cv is not None
        else None
    )
    inst_cvs = [r.instant.power_cv_instant if r.instant else None for r in runs]
    inst_cv = (
        float(np.mean([c for c in inst_cvs if c is not None]))
        if all(c is not None for c in inst_cvs)
        else None
    )
    integrals = [r.energy_integral_j for r in runs]
    e_int = (
        sum(x for x in integrals if x is not None)
        if all(x is not None for x in integrals)
        else None
    )
    ttft = np.array(
        [q.first_token_s - q.start_s for r in ev.timeline.runs for q in r.requests],
        dtype=np.float64,
    )
    pre = [r.prefill_energy_j for r in runs]
    dec = [r.decode_energy_j for r in runs]
    above = energy - idle_power_w * duration if idle_power_w is not None else None
    return PooledMetrics(
        runs=len(runs),
        duration_s=duration,
        energy_j=energy,
        output_tokens=tokens,
        requests=requests,
        avg_power_w=energy / duration if duration > 0 else 0.0,
        peak_power_w=stats.peak_power_w if stats else None,
        min_power_w=stats.min_power_w if stats else None,
        power_std_w=stats.power_std_w if stats else None,
        p5_power_w=stats.p5_power_w if stats else None,
        p50_power_w=stats.p50_power_w if stats else None,
        p95_power_w=stats.p95_power_w if stats else None,
        power_cv=power_cv,
        power_cv_ci95=ci,
        power_cv_instant=inst_cv,
        joules_per_token=_ratio(energy, tokens),
        tokens_per_joule=_ratio(tokens, energy),
        wh_per_1k_queries=energy / requests * 1000.0 / 3600.0 if requests else None,
        tokens_per_query=tokens / requests if requests else 0.0,
        tokens_per_s=tokens / duration if duration > 0 else 0.0,
        ttft_p50_s=float(np.percentile(ttft, 50)) if ttft.size else None,
        prefill_energy_j=sum(x for x in pre if x is not None)
        if any(x is not None for x in pre)
        else None,
        decode_energy_j=sum(x for x in dec if x is not None)
        if any(x is not None for x in dec)
        else None,
        energy_discrepancy_pct=(energy - e_int) / energy * 100.0
        if e_int is not None and energy > 0
        else None,
        idle_power_w=idle_power_w,
        joules_per_token_above_idle=_ratio(above, tokens) if above is not None else None,
        throttled_s=sum(r.throttled_s for r in runs),
    )
