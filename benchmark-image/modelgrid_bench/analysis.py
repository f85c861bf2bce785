"""From evidence (trace, telemetry, timeline) to a `BenchmarkResult`. Pure: no I/O, no clocks.

The same function serves a live run and `python -m modelgrid_bench analyze DIR`, so a result can
always be re-derived from what was recorded. Definitions of every metric are in
docs/measurement.md; the choices that matter for a price are:

* energy comes from the NVML energy counter, interpolated between the reads where it changed;
  the trapezoid integral of instant power is the cross-check (flagged above 3 %);
* the tier metric is the CV of average power over consecutive 1 s windows of that counter, which
  does not depend on the sampling rate or on the driver's own averaging;
* instant-power statistics are time-weighted, because reads are unevenly spaced;
* prefill and decode energy are integrals of instant power over their real intervals;
* 1 s windows that a sampler gap overlaps are left out of the tier metric and counted;
* a NaN (not provided) reading is skipped and counted, never allowed to switch a check off;
* the work-done gate refuses a measurement that does not prove the declared work ran on the
  measured GPUs (energy above idle per token, utilisation, the engine's processes). Energy
  above idle must show both in the counter and in instant power: the counter steps about
  every 100 ms and its knots sit within half a read of where it stepped, so a flat trace can
  read as a few J above or below idle, far more than the per-token floor; time-weighted
  instant power of a flat trace is flat however the reads fall.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from modelgrid_bench.interval import tier_metric_estimate
from modelgrid_bench.records import THROTTLE_REASONS_MASK, Evidence, RunRecord, Trace
from modelgrid_bench.stats import (
    CounterKnots,
    FloatArray,
    SortedSample,
    coefficient_of_variation,
    counter_knots,
    cumulative_energy_j,
    merge_sorted,
    phase_segments,
    sample_weights_s,
    sort_weighted,
    spread,
    weighted_mean,
    weighted_moments,
    weighted_percentiles,
    window_powers_w,
)
from modelgrid_bench.sweep import sweep_table
from modelgrid_contract.reasons import Reason
from modelgrid_contract.result import (
    ENERGY_DISCREPANCY_LIMIT_PCT,
    MAX_EXCLUDED_WINDOW_SHARE,
    MAX_MISSING_READING_SHARE,
    MIN_WINDOWS_FOR_TIER,
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
    Sweep,
    WorkDone,
)

BASELINE_BUSY_UTIL_PCT = 10.0
THROTTLE_FLAG_FRACTION = 0.01
#: Above this share of reads failing, the sampler is degraded.
MAX_READ_ERROR_SHARE = 0.01
#: With no energy counter, a read gap longer than this many intervals makes energy uncertain.
FALLBACK_GAP_INTERVALS = 4.0
#: Telemetry a check rests on must be reported in at least this share of its reads.
MIN_REPORTED_SHARE = 0.5

_Num = TypeVar("_Num", float, int)


@dataclass(frozen=True)
class EnergyModel:
    """Cumulative energy of all GPUs as a function of time, and how it was obtained."""

    knots: list[CounterKnots | None]
    integrals: list[tuple[FloatArray, FloatArray]]
    from_counter: bool
    counter_reset: bool
    #: read intervals in which energy was interpolated rather than observed (any GPU)
    gaps: list[tuple[float, float]]

    def at(self, t: FloatArray | float) -> FloatArray:
        total = np.zeros(np.shape(t), dtype=np.float64)
        for k, (ti, ei) in zip(self.knots, self.integrals, strict=True):
            if self.from_counter and k is not None:
                total = total + k.at(t)
            elif ti.size:
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
    #: t_s never decreases (always, from validated evidence), so windows can be sliced
    increasing: bool = False

    def integral(self, start_s: float, end_s: float) -> float:
        e = np.interp([start_s, end_s], self.t_s, self.cumulative_j)
        return float(e[1] - e[0])

    def integrals(self, spans: list[tuple[float, float]]) -> list[float]:
        """`integral` of each span, in one interpolation (a run has thousands of phases)."""
        e = np.interp(np.array(spans, dtype=np.float64).reshape(-1), self.t_s, self.cumulative_j)
        out: list[float] = (e[1::2] - e[0::2]).tolist()
        return out

    def in_window(self, start_s: float, end_s: float) -> tuple[FloatArray, FloatArray]:
        """Samples in the window and their durations, clipped to the window."""
        t = self.t_s
        lo, hi = 0, t.size
        if self.increasing:
            # Only the samples from the last one at or before the window's start to the first
            # one at or after its end can have a cell inside it, and the cells of those two,
            # clipped to the window, do not depend on the neighbours left out: the same weights
            # as over the whole trace, without a million zero weights per run.
            lo = max(int(np.searchsorted(t, start_s, side="right")) - 1, 0)
            hi = min(int(np.searchsorted(t, end_s, side="left")) + 1, t.size)
            if hi - lo < 2:
                lo, hi = 0, t.size  # a lone sample weighs 1 whatever the window: not sliced
        w = sample_weights_s(t[lo:hi], (start_s, end_s))
        keep = w > 0
        return self.power_w[lo:hi][keep], w[keep]


def _per_gpu(trace: Trace) -> list[Trace]:
    return [trace.for_gpu(g) for g in trace.gpus]


@dataclass(frozen=True)
class _Sample:
    """A run's instant-power samples and durations, and the same sorted for percentiles (sorted
    once per run; the pooled percentiles merge the runs' sorted samples instead of sorting)."""

    p: FloatArray
    w: FloatArray
    ranked: SortedSample


def _finite_reads(t: FloatArray, v: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The reads whose value is not NaN; the arrays themselves when all are (the usual case: a
    boolean gather copies a million reads for nothing)."""
    ok = np.isfinite(v)
    if bool(np.all(ok)):
        return t, v
    return t[ok], v[ok]


def energy_model(per_gpu: list[Trace], interval_s: float) -> EnergyModel:
    """Cumulative energy per GPU: the counter's knots where it is usable, else the integral.

    NaN reads are skipped (and counted elsewhere): one missing value never disables the counter
    or the instant-power cross-check for the rest of the session.
    """
    knots: list[CounterKnots | None] = []
    integrals: list[tuple[FloatArray, FloatArray]] = []
    counter_ok, reset = True, False
    gaps: list[tuple[float, float]] = []
    for g in per_gpu:
        t_ok, p_ok = _finite_reads(g.t_s, g.power_w)
        integrals.append((t_ok, cumulative_energy_j(t_ok, p_ok)))
        k = (
            counter_knots(g.t_s, g.energy_j, interval_s=interval_s)
            if np.any(np.isfinite(g.energy_j))
            else None
        )
        if k is not None and k.t_s.size >= 2:
            reset |= k.reset
            knots.append(k)
            gaps.extend(k.gaps)
        else:
            counter_ok = False
            knots.append(None)
    from_counter = counter_ok and not reset
    if not from_counter:
        gaps = []
        for ti, _ in integrals:
            d = np.diff(ti)
            idx = np.flatnonzero(d > max(FALLBACK_GAP_INTERVALS * interval_s, 0.1))
            gaps.extend((float(ti[i]), float(ti[i + 1])) for i in idx)
    return EnergyModel(knots, integrals, from_counter, reset, sorted(gaps))


def instant_power(
    per_gpu: list[Trace], integrals: list[tuple[FloatArray, FloatArray]] | None = None
) -> InstantPower:
    """Total instant power on the first GPU's read times, each GPU's NaN reads skipped.

    `integrals` are the energy model's running integrals per GPU: with one GPU the total is
    that GPU's power on its own reads, so its integral is reused rather than computed again.
    """
    first = per_gpu[0]
    grid, first_p = _finite_reads(first.t_s, first.power_w)
    step = np.diff(grid)
    if len(per_gpu) == 1 and integrals is not None and grid.size and bool(np.all(step > 0)):
        t_int, e_int = integrals[0]
        if t_int.size == grid.size and np.array_equal(t_int, grid):
            # 0.0 + p as the sum below would (it turns -0.0 into 0.0), bit for bit.
            return InstantPower(grid, 0.0 + first_p, e_int, True)
    total = np.zeros_like(grid)
    for g in per_gpu:
        if g is first:
            if grid.size and bool(np.all(step > 0)):
                # np.interp at its own knots returns their values exactly (it tests x == xp[j]
                # first), so the first GPU's needs no interpolation when no time repeats.
                total = total + first_p
            elif grid.size:
                total = total + np.interp(grid, grid, first_p)
            continue
        t_ok, p_ok = _finite_reads(g.t_s, g.power_w)
        if t_ok.size:
            total = total + np.interp(grid, t_ok, p_ok)
    increasing = bool(np.all(step >= 0))
    return InstantPower(grid, total, cumulative_energy_j(grid, total), increasing)


def _power_stats(p: FloatArray, w: FloatArray, ranked: SortedSample) -> PowerStats | None:
    """Time-weighted statistics of instant power; `ranked` is `sort_weighted(p, w)`."""
    if p.size == 0 or float(np.sum(w)) <= 0:
        return None
    # Each figure computed once (a million samples a run): the same values as weighted_mean,
    # weighted_variance and coefficient_of_variation(p, w), which recompute one another.
    m = weighted_moments(p, w)
    mean, var, peak, low = m.mean, m.variance, m.max, m.min
    p5, p50, p95 = weighted_percentiles(ranked, (5, 50, 95))
    return PowerStats(
        avg_power_w=mean,
        peak_power_w=peak,
        min_power_w=low,
        power_std_w=float(np.sqrt(var)),
        power_variance_w2=var,
        power_range_w=peak - low,
        p5_power_w=p5,
        p50_power_w=p50,
        p95_power_w=p95,
        power_cv_instant=None if p.size < 2 or mean <= 0 else float(np.sqrt(var) / mean),
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
    for g in sorted({int(x) for x in np.unique(gpu)}):
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
) -> tuple[RunMetrics, FloatArray, _Sample]:
    a, b = run.start_s, run.end_s
    duration = b - a
    e_j = energy.between(a, b)
    e_int = inst.integral(a, b)
    discrepancy = (e_j - e_int) / e_j * 100.0 if e_j > 0 else None
    p, w = inst.in_window(a, b)
    sample = _Sample(p, w, sort_weighted(p, w))
    stats = _power_stats(p, w, sample.ranked)
    all_windows = window_powers_w(energy.at, a, b, TIER_METRIC_TIME_SCALE_S)
    excluded = _windows_in_gaps(a, all_windows.size, energy.gaps)
    windows = all_windows[~excluded]
    cv_1s = coefficient_of_variation(windows) if windows.size >= 2 else None
    readings, missing = _reads_in(ev, a, b)
    reqs = run.requests
    out_tokens = sum(r.output_tokens for r in reqs)
    in_tokens = sum(r.input_tokens for r in reqs)
    ttft = np.array([r.first_token_s - r.start_s for r in reqs], dtype=np.float64)
    pre, dec = phase_segments(
        [(r.start_s, r.first_token_s) for r in reqs], [(r.first_token_s, r.end_s) for r in reqs]
    )
    pre_t = sum(hi - lo for lo, hi in pre)
    dec_t = sum(hi - lo for lo, hi in dec)
    pre_j = sum(inst.integrals(pre)) if pre else None
    dec_j = sum(inst.integrals(dec)) if dec else None
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
        windows_1s=int(all_windows.size),
        windows_excluded=int(np.count_nonzero(excluded)),
        readings=readings,
        missing_readings=missing,
        gpu_util_pct=_least_busy_util_pct(ev, a, b),
        engine_processes_min=_fewest_processes(ev, a, b),
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
    return metrics, windows, sample


def _windows_in_gaps(start_s: float, n: int, gaps: list[tuple[float, float]]) -> np.ndarray:
    """Which of the n whole windows from start_s a gap overlaps (their energy is interpolated
    across unseen counter updates, so their power is not a measurement)."""
    out = np.zeros(n, dtype=bool)
    if n == 0 or not gaps:
        return out
    lo = start_s + TIER_METRIC_TIME_SCALE_S * np.arange(n)
    hi = lo + TIER_METRIC_TIME_SCALE_S
    for g0, g1 in gaps:
        out |= (g0 < hi) & (g1 > lo)
    return out


def _reads_in(ev: Evidence, start_s: float, end_s: float) -> tuple[int, int]:
    """(reads, missing reads) in a run, all GPUs: a read misses when its instant power, or its
    energy counter where the source has one, is NaN."""
    tr = ev.trace
    if tr.t_s.size > 1 and bool(np.all(np.diff(tr.t_s) >= 0)):
        # Reads in time order (as the sampler writes them): the run is one slice, by bisection.
        lo = int(np.searchsorted(tr.t_s, start_s, side="left"))
        hi = int(np.searchsorted(tr.t_s, end_s, side="right"))
        window: slice | np.ndarray = slice(lo, hi)
        count = hi - lo
    else:
        window = (tr.t_s >= start_s) & (tr.t_s <= end_s)
        count = int(np.count_nonzero(window))
    bad = ~np.isfinite(tr.power_w[window])
    if ev.meta.power_source.energy_counter:
        bad |= ~np.isfinite(tr.energy_j[window])
    return count, int(np.count_nonzero(bad))


def _per_gpu_telemetry(ev: Evidence, name: str, start_s: float, end_s: float) -> list[FloatArray]:
    tel = ev.telemetry
    t, gpu, v = tel.get("t_s"), tel.get("gpu"), tel.get(name)
    if t.size == 0:
        return []
    m = (t >= start_s) & (t <= end_s)
    return [v[m & (gpu == g)] for g in _gpu_indices(ev)]


def _gpu_indices(ev: Evidence) -> list[int]:
    if ev.meta.environment.gpus:
        return [g.index for g in ev.meta.environment.gpus]
    return ev.trace.gpus


def _least_busy_util_pct(ev: Evidence, start_s: float, end_s: float) -> float | None:
    """Mean utilisation during a run of its least busy GPU; None when a GPU reported none.

    NVML reports utilisation over the period before each read, so the first read after the run
    (within one telemetry interval) still describes it: a run shorter than the telemetry
    interval is not left without a figure.
    """
    means = []
    tail = ev.meta.sampler.telemetry_interval_s
    inside = _per_gpu_telemetry(ev, "gpu_util_pct", start_s, end_s)
    after = _per_gpu_telemetry(ev, "gpu_util_pct", end_s, end_s + tail)
    for v, later in zip(inside, after, strict=True):
        ok = v[np.isfinite(v)]
        if v.size and ok.size < MIN_REPORTED_SHARE * v.size:
            return None  # mostly missing: a few reads cannot stand for the run
        if ok.size == 0:
            ok = later[np.isfinite(later)][:1]
        if ok.size == 0:
            return None
        means.append(float(np.mean(ok)))
    return min(means) if means else None


def _fewest_processes(ev: Evidence, start_s: float, end_s: float) -> int | None:
    """Fewest compute processes seen on any GPU during a run; None when one could not list."""
    fewest: int | None = None
    tail = ev.meta.sampler.telemetry_interval_s
    inside = _per_gpu_telemetry(ev, "process_count", start_s, end_s)
    after = _per_gpu_telemetry(ev, "process_count", end_s, end_s + tail)
    for v_in, later in zip(inside, after, strict=True):
        # A run shorter than the telemetry interval may hold no read: the next one stands in.
        v = v_in if v_in.size else later[:1]
        if v.size == 0 or not np.all(np.isfinite(v)) or np.any(v < 0):
            return None
        low = int(np.min(v))
        fewest = low if fewest is None else min(fewest, low)
    return fewest


def _measured_spans(ev: Evidence) -> list[tuple[float, float]]:
    """The idle baseline and every run: the parts of the session whose readings are used."""
    spans = [(r.start_s, r.end_s) for r in ev.timeline.runs]
    base = ev.timeline.baseline
    if base is not None:
        spans.append((base.start_s, base.end_s))
    return spans


def sampler_health(
    ev: Evidence, runs: list[RunMetrics] | None = None, per: list[Trace] | None = None
) -> SamplerHealth:
    """Achieved interval and gaps over the whole measurement: the idle baseline and every run
    (model loading may stall the sampler harmlessly; a stall while anything is measured counts).

    Healthy: the achieved interval is at most 1.5x the requested one, at most 1 % of reads
    failed, and no run lost more than `MAX_EXCLUDED_WINDOW_SHARE` of its 1 s windows to gaps.
    `per` is `ev.trace` split by GPU, when the caller has it already.
    """
    interval = ev.meta.sampler.interval_s
    if per is None:
        per = _per_gpu(ev.trace)
    t = per[0].t_s if per else np.zeros(0)
    gaps = np.diff(t) if t.size > 1 else np.zeros(0)
    spans = _measured_spans(ev)
    if gaps.size and spans:
        touches = np.zeros(gaps.size, dtype=bool)
        if bool(np.all(gaps >= 0)):
            # Times increase, so the read intervals a span touches are one slice: those with
            # t[i + 1] > lo and t[i] < hi, found by bisection instead of two full comparisons.
            for lo, hi in spans:
                first = max(int(np.searchsorted(t, lo, side="right")) - 1, 0)
                touches[first : int(np.searchsorted(t, hi, side="left"))] = True
        else:
            for lo, hi in spans:
                touches |= (t[1:] > lo) & (t[:-1] < hi)
        gaps = gaps[touches]
    achieved = float(np.mean(gaps)) if gaps.size else float("inf")
    longest = float(np.max(gaps)) if gaps.size else float("inf")
    errors = ev.meta.sampler_read_errors
    error_share = errors / max(int(t.size) + errors, 1)
    lost = any(
        r.windows_1s > 0 and r.windows_excluded / r.windows_1s > MAX_EXCLUDED_WINDOW_SHARE
        for r in runs or []
    )
    return SamplerHealth(
        requested_interval_s=interval,
        achieved_interval_s=achieved,
        achieved_rate_hz=1.0 / achieved if gaps.size and achieved > 0 else 0.0,
        longest_gap_s=longest,
        gaps_over_2x=int(np.count_nonzero(gaps > 2 * interval)),
        samples=int(t.size),
        read_errors=errors,
        healthy=bool(
            gaps.size > 0
            and achieved <= 1.5 * interval
            and error_share <= MAX_READ_ERROR_SHARE
            and not lost
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


@dataclass
class _Findings:
    """Flags, notes and the first refusal, collected by the ladder of checks below."""

    flags: list[Flag]
    notes: list[str]
    refusal: Refusal | None = None

    def flag(self, flag: Flag, note: str | None = None) -> None:
        if flag not in self.flags:
            self.flags.append(flag)
        if note:
            self.notes.append(note)

    def refuse(self, reason: Reason, message: str) -> None:
        if self.refusal is None:
            self.refusal = Refusal(reason=reason.value, message=message)


def _check_energy(found: _Findings, runs: list[RunMetrics]) -> None:
    """A run whose counter and instant-power integral disagree by more than 3 %."""
    bad = [
        r
        for r in runs
        if r.energy_discrepancy_pct is not None
        and abs(r.energy_discrepancy_pct) > ENERGY_DISCREPANCY_LIMIT_PCT
    ]
    if bad:
        worst = max(bad, key=lambda r: abs(r.energy_discrepancy_pct or 0.0))
        found.flag(
            Flag.ENERGY_DISCREPANCY,
            f"run {worst.run}: energy counter and instant-power integral differ by "
            f"{worst.energy_discrepancy_pct:+.2f} % (limit {ENERGY_DISCREPANCY_LIMIT_PCT:g} %)",
        )


def _check_windows(found: _Findings, runs: list[RunMetrics]) -> None:
    """Runs too short for the tier metric, or that lost windows to sampler gaps."""
    short = [r for r in runs if r.windows_1s - r.windows_excluded < MIN_WINDOWS_FOR_TIER]
    if short:
        r = short[0]
        found.flag(
            Flag.SHORT_WINDOW,
            f"run {r.run}: {r.windows_1s - r.windows_excluded} usable 1 s windows "
            f"(at least {MIN_WINDOWS_FOR_TIER} are needed to price)",
        )
    lost = [
        r
        for r in runs
        if r.windows_1s > 0 and r.windows_excluded / r.windows_1s > MAX_EXCLUDED_WINDOW_SHARE
    ]
    if lost:
        r = lost[0]
        found.flag(
            Flag.SAMPLER_DEGRADED,
            f"run {r.run}: sampler gaps overlapped {r.windows_excluded} of {r.windows_1s} 1 s "
            f"windows (more than {MAX_EXCLUDED_WINDOW_SHARE:.0%})",
        )


def _check_missing(found: _Findings, runs: list[RunMetrics]) -> None:
    """Runs in which too many reads were missing (NaN): counted, never ignored."""
    bad = [
        r
        for r in runs
        if r.readings and r.missing_readings / r.readings > MAX_MISSING_READING_SHARE
    ]
    if bad:
        r = bad[0]
        found.flag(
            Flag.MISSING_READINGS,
            f"run {r.run}: {r.missing_readings} of {r.readings} reads had no value "
            f"(more than {MAX_MISSING_READING_SHARE:.0%})",
        )


def _check_sampler(found: _Findings, health: SamplerHealth) -> None:
    """The sampler ran slower than asked or its reads failed."""
    if not health.healthy:
        found.flag(
            Flag.SAMPLER_DEGRADED,
            f"sampler: achieved {health.achieved_interval_s * 1000:.1f} ms for "
            f"{health.requested_interval_s * 1000:.0f} ms asked, {health.read_errors} read "
            f"errors, longest gap {health.longest_gap_s:.3f} s",
        )


def _check_tokens(found: _Findings, ev: Evidence) -> None:
    """Requests that produced a different number of tokens than the workload declares."""
    expected = ev.meta.expected_output_tokens_per_request
    if expected is not None and any(
        q.output_tokens != expected for r in ev.timeline.runs for q in r.requests
    ):
        found.flag(Flag.TOKEN_MISMATCH)


def _unlisted_process_reads(ev: Evidence) -> tuple[int, int]:
    """(reads whose process count is missing, reads) over the baseline and the runs."""
    t, procs = ev.telemetry.get("t_s"), ev.telemetry.get("process_count")
    inside = np.zeros(t.size, dtype=bool)
    for lo, hi in _measured_spans(ev):
        inside |= (t >= lo) & (t <= hi)
    p = procs[inside]
    return int(np.count_nonzero(~np.isfinite(p) | (p < 0))), int(p.size)


def _check_contention(found: _Findings, ev: Evidence) -> None:
    """Other processes on a GPU, or a GPU busy during the idle baseline: refused; and so is a
    measurement in which the processes on the GPUs could mostly not be listed, since nothing
    then shows that the GPUs were not shared."""
    missing, reads = _unlisted_process_reads(ev)
    if missing:
        found.notes.append(
            f"contention check incomplete: {missing} of {reads} telemetry reads could not list "
            "the compute processes"
        )
    if reads == 0 or missing > (1.0 - MIN_REPORTED_SHARE) * reads:
        found.refuse(
            Reason.CONTENTION,
            f"contention could not be checked: the compute processes were listed in "
            f"{reads - missing} of {reads} telemetry reads (at least "
            f"{MIN_REPORTED_SHARE:.0%} are needed)",
        )
    crowded, busy, why = _contention(ev)
    if crowded:
        found.flag(Flag.CONTENTION)
        found.refuse(Reason.CONTENTION, why)
    if busy:
        found.flag(Flag.GPU_NOT_IDLE)
        found.refuse(Reason.GPU_NOT_IDLE, why)


def _worst(values: list[_Num | None]) -> _Num | None:
    """The smallest value, or None when there is none or any is missing."""
    if not values or any(v is None for v in values):
        return None
    return min(v for v in values if v is not None)


@dataclass(frozen=True)
class IdleBaseline:
    """The idle baseline's average power, from the energy counter and from instant power (W)."""

    power_w: float
    instant_power_w: float | None


def idle_baseline(ev: Evidence, energy: EnergyModel, inst: InstantPower) -> IdleBaseline | None:
    """Average power over the idle baseline; None when none was measured."""
    base = ev.timeline.baseline
    if base is None or base.end_s <= base.start_s:
        return None
    p, w = inst.in_window(base.start_s, base.end_s)
    return IdleBaseline(
        power_w=energy.between(base.start_s, base.end_s) / (base.end_s - base.start_s),
        instant_power_w=weighted_mean(p, w) if p.size and float(np.sum(w)) > 0 else None,
    )


def instant_above_idle_j_per_token(run: RunMetrics, idle_instant_w: float | None) -> float | None:
    """A run's energy above idle per output token from time-weighted instant power alone (J):
    the run's average instant power less the baseline's, times its duration. None when either
    is missing or the run produced no tokens."""
    if idle_instant_w is None or run.instant is None or run.output_tokens <= 0:
        return None
    return (run.instant.avg_power_w - idle_instant_w) * run.duration_s / run.output_tokens


def _instant_problem(
    runs: list[RunMetrics], idle_instant_w: float | None, floor_j: float
) -> str | None:
    """The instant-power witness of energy above idle, when it fails: missing, or under the
    floor in the worst run."""
    per_token = [instant_above_idle_j_per_token(r, idle_instant_w) for r in runs]
    worst = _worst(per_token)
    if worst is None:
        return "instant power was not reported over the idle baseline and every run"
    if worst < floor_j:
        return (
            f"instant power above the idle baseline ({idle_instant_w:.1f} W) is {worst:.4g} J "
            f"per output token in the worst run (floor {floor_j:g}), whatever the energy "
            "counter's steps read"
        )
    return None


def work_done(ev: Evidence, runs: list[RunMetrics], idle: IdleBaseline | None) -> WorkDone:
    """The work-done gate: every run must show energy above the idle baseline per output token,
    GPU utilisation, and (where the engine runs in the benchmark pod) its processes on every
    measured GPU, each above its floor. The worst run decides; missing figures fail the gate.

    Energy above idle per token must clear its floor both from the energy counter and from
    time-weighted instant power: the counter's figure is only as good as where its ~100 ms
    steps fell between reads, which can put a flat trace several J above idle, far above the
    floor; instant power of a flat trace averages the same over any window."""
    idle_power_w = idle.power_w if idle is not None else None
    floors = ev.meta.work_floors
    expected = ev.meta.engine_on_gpu
    above = [r.joules_per_token_above_idle for r in runs]
    util = [r.gpu_util_pct for r in runs]
    procs = [r.engine_processes_min for r in runs]
    jpt_min = (
        None
        if not runs or any(x is None for x in above)
        else min(x for x in above if x is not None)
    )
    util_min = (
        None if not runs or any(x is None for x in util) else min(x for x in util if x is not None)
    )
    procs_min = (
        None
        if not runs or any(x is None for x in procs)
        else min(x for x in procs if x is not None)
    )
    problems: list[str] = []
    if not runs:
        problems.append("no run was measured")
    if idle_power_w is None:
        problems.append("no idle baseline was measured, so energy above idle is unknown")
    elif jpt_min is None:
        problems.append("a run produced no output tokens")
    elif jpt_min < floors.min_joules_per_token_above_idle:
        problems.append(
            f"energy above the idle baseline ({idle_power_w:.1f} W) is {jpt_min:.4g} J per "
            f"output token in the worst run (floor {floors.min_joules_per_token_above_idle:g})"
        )
    elif idle is not None:
        witness = _instant_problem(
            runs, idle.instant_power_w, floors.min_joules_per_token_above_idle
        )
        if witness is not None:
            problems.append(witness)
    if util_min is None:
        problems.append("GPU utilisation was not reported during every run")
    elif util_min < floors.min_gpu_util_pct:
        problems.append(
            f"GPU utilisation averaged {util_min:.1f} % in the worst run on the least busy GPU "
            f"(floor {floors.min_gpu_util_pct:g} %)"
        )
    if expected and (procs_min is None or procs_min < 1):
        problems.append(
            "the engine's processes were not seen on every measured GPU during the runs"
            if procs_min is not None
            else "the compute processes on the measured GPUs could not be listed"
        )
    message = (
        "the declared work did not run on the measured GPUs: " + "; ".join(problems)
        if problems
        else ""
    )
    return WorkDone(
        joules_per_token_above_idle_min=jpt_min,
        gpu_util_pct_min=util_min,
        engine_processes_min=procs_min,
        engine_on_gpu_expected=expected,
        floors=floors,
        passed=not problems,
        message=message,
    )


def _measure(
    ev: Evidence, per: list[Trace]
) -> tuple[
    list[RunMetrics],
    list[FloatArray],
    PooledMetrics | None,
    IdleBaseline | None,
    list[float],
    EnergyModel | None,
    Sweep | None,
]:
    runs: list[RunMetrics] = []
    windows: list[FloatArray] = []
    samples: list[_Sample] = []
    idle_power_w: float | None = None
    per_gpu_avg: list[float] = []
    if not per:
        return runs, windows, None, None, per_gpu_avg, None, None
    energy = energy_model(per, ev.meta.sampler.interval_s)
    inst = instant_power(per, energy.integrals)
    idle = idle_baseline(ev, energy, inst)
    if idle is not None:
        idle_power_w = idle.power_w
    for run in ev.timeline.runs:
        m, win, sample = _run_metrics(ev, run, energy, inst, idle_power_w)
        runs.append(m)
        windows.append(win)
        samples.append(sample)
    sweep = None
    workload = ev.meta.workload
    if workload.concurrency_levels is not None:
        # the whole table from every run; the price, and every check on it, from the runs
        # at the declared level alone
        levels = [r.concurrency for r in ev.timeline.runs]
        sweep = sweep_table(runs, levels, workload.levels(), workload.tier_level())
        keep = [i for i, level in enumerate(levels) if level == workload.tier_level()]
        runs = [runs[i] for i in keep]
        windows = [windows[i] for i in keep]
        samples = [samples[i] for i in keep]
    total_t = sum(r.duration_s for r in runs)
    for i, _ in enumerate(per):
        single = EnergyModel(
            [energy.knots[i]], [energy.integrals[i]], energy.from_counter, False, []
        )
        e = sum(single.between(r.window_start_s, r.window_end_s) for r in runs)
        per_gpu_avg.append(e / total_t if total_t > 0 else 0.0)
    pooled = _pooled(ev, runs, windows, samples, idle_power_w)
    return runs, windows, pooled, idle, per_gpu_avg, energy, sweep


def analyze(ev: Evidence) -> BenchmarkResult:
    """Derive every metric, flag and refusal from the evidence alone."""
    meta = ev.meta
    per = _per_gpu(ev.trace)
    found = _Findings(flags=[], notes=list(meta.notes) + list(meta.power_source.notes))
    if meta.power_source.simulated or meta.backend.simulated:
        found.flag(Flag.SIMULATED)
    if not meta.power_source.instant_power_field:
        found.flag(Flag.NO_INSTANT_POWER)
    runs, _, pooled, idle, per_gpu_avg, energy, sweep = _measure(ev, per)
    if energy is not None and energy.counter_reset:
        found.flag(Flag.ENERGY_COUNTER_RESET)
    if energy is not None and not energy.from_counter:
        found.flag(
            Flag.ENERGY_FALLBACK,
            "energy is the integral of instant power: no usable energy counter",
        )
    health = sampler_health(ev, runs, per)
    _check_sampler(found, health)
    _check_windows(found, runs)
    _check_missing(found, runs)
    _check_energy(found, runs)
    if pooled is not None and pooled.throttled_s > THROTTLE_FLAG_FRACTION * pooled.duration_s:
        found.flag(Flag.THROTTLED)
    if pooled is not None and pooled.power_cv is not None and pooled.power_cv_ci95 is None:
        found.flag(Flag.NO_INTERVAL, "the tier metric has no confidence interval: runs too short")
    _check_tokens(found, ev)
    _check_contention(found, ev)
    gate = work_done(ev, runs, idle)
    if not gate.passed:
        found.refuse(Reason.NO_LOAD_ON_GPU, gate.message)

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
        run_to_run=_run_to_run(runs),
        sampler_health=health,
        per_gpu_avg_power_w=per_gpu_avg,
        flags=found.flags,
        refusal=found.refusal,
        notes=found.notes,
        work_done=gate,
        evidence=getattr(ev, "digests", None),
        job_nonce=meta.job_nonce,
        sweep=sweep,
    )


def _run_to_run(runs: list[RunMetrics]) -> dict[str, Spread]:
    """Run-to-run spread of the per-run figures (seed 002's statistics)."""
    out: dict[str, Spread] = {}
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
            out[key] = s
    return out


def _pooled(
    ev: Evidence,
    runs: list[RunMetrics],
    windows: list[FloatArray],
    samples: list[_Sample],
    idle_power_w: float | None,
) -> PooledMetrics | None:
    if not runs:
        return None
    duration = sum(r.duration_s for r in runs)
    energy = sum(r.energy_j for r in runs)
    tokens = sum(r.output_tokens for r in runs)
    requests = sum(r.requests for r in runs)
    p = np.concatenate([s.p for s in samples]) if samples else np.zeros(0)
    w = np.concatenate([s.w for s in samples]) if samples else np.zeros(0)
    stats = _power_stats(p, w, merge_sorted([s.ranked for s in samples]))
    cvs = [r.power_cv_1s for r in runs]
    power_cv = (
        float(np.mean([c for c in cvs if c is not None]))
        if all(c is not None for c in cvs)
        else None
    )
    power_cv, ci, ci_method = _tier_estimate(windows, power_cv, ev.meta.workload.seed)
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
    priced = {r.run for r in runs}
    ttft = np.array(
        [
            q.first_token_s - q.start_s
            for r in ev.timeline.runs
            if r.index in priced
            for q in r.requests
        ],
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
        power_cv_ci_method=ci_method,
        windows_used=sum(r.windows_1s - r.windows_excluded for r in runs),
        windows_excluded=sum(r.windows_excluded for r in runs),
        missing_readings=sum(r.missing_readings for r in runs),
        readings=sum(r.readings for r in runs),
    )


def _tier_estimate(
    windows: list[FloatArray], mean_cv: float | None, seed: int
) -> tuple[float | None, tuple[float, float] | None, str]:
    """The tier metric's point estimate, its 95 % interval and the interval's method.

    The estimate is the bias-corrected within-run CV pooled over the runs
    (`modelgrid_bench.interval`); with too few windows per run for a calibrated interval, the
    mean of the per-run CVs is shown without an interval, which is never priced as it stands.
    """
    if mean_cv is None:
        return None, None, ""
    est = tier_metric_estimate(windows, seed=seed, level=0.95)
    if est is None:
        return mean_cv, None, ""
    return est.cv, (est.low, est.high), est.method
