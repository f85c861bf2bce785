"""From a benchmark result to a verdict: trust checks, tier, claim deltas, discount. Pure.

The operator and the `modelgrid verdict` CLI call the same functions, so a developer can see
offline exactly what the cluster will decide. Decisions made here (see docs/api.md):

* A tier is the first tier of the policy (best first) whose every limit holds. A limit is
  `value < max` when its boundary is Exclusive, `value <= max` when Inclusive.
* Borderline: the upper end of the tier metric's 95 % confidence interval does not satisfy the
  assigned tier's CV limit. The policy then either assigns the next worse tier or asks for a
  rerun (up to `maxReruns`, then the worse tier).
* A claim is checked one-sided: it fails only when the model does worse than declared by more
  than the tolerance (more power, more variance, more J/token, fewer tokens/J, a worse tier);
  doing better than claimed is within tolerance. delta % = (measured - claimed) / claimed x 100.
* The discount is the tier's when the tier has one, the attestation is complete (if the policy
  requires it) and, if the policy says so, every claim is within tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from modelgrid_contract.reasons import Reason
from modelgrid_contract.result import (
    ENERGY_DISCREPANCY_LIMIT_PCT,
    ENGINE_IN_POD_BACKENDS,
    MAX_EXCLUDED_WINDOW_SHARE,
    MAX_MISSING_READING_SHARE,
    MIN_WINDOWS_FOR_TIER,
    TIER_METRIC,
    TIER_METRIC_TIME_SCALE_S,
    CompactResult,
    Flag,
    normalise_product,
)
from modelgrid_contract.wire import ResultRejected, decode_compact
from modelgrid_contract.workload import Workload
from modelgrid_operator.api import (
    BorderlinePolicy,
    Boundary,
    QualificationSpec,
    Tier,
    TierPolicySpec,
)


def bench_workload(spec: QualificationSpec) -> Workload:
    """The benchmark's workload for a qualification: what its Job runs and what its result's
    digest must match. It is the contract's model itself, read from the CRD's camelCase."""
    return spec.workload


def workload_digest(spec: QualificationSpec) -> str:
    """The digest the benchmark computes for the workload the operator asks it to run."""
    return bench_workload(spec).digest()


def validate_result(
    raw: str | bytes,
    spec: QualificationSpec,
    policy: TierPolicySpec,
    *,
    check_identity: bool = True,
    expected_nonce: str | None = None,
    check_nonce: bool = False,
) -> CompactResult:
    """Decode and check a termination message. Raises `ResultRejected` with a reason.

    The checks run as a ladder, first refusal wins: the result was made for this Job (it
    echoes `expected_nonce`, when `check_nonce`); the benchmark's own refusal; contention;
    simulated power; identity (GPU product and count, workload digest); internal consistency;
    the work-done gate under the policy's floors; the policy's disqualifying flags; a tier
    metric to price. `check_identity=False` skips the identity checks, which need the
    qualification the result was made for (the offline CLI without a qualification).
    """
    result = decode_compact(raw)
    if check_nonce:
        _bound(result, expected_nonce)
    _refused_by_benchmark(result)
    _contended(result)
    _simulated(result, policy)
    if check_identity:
        _identity(result, spec)
        _served_as_declared(result, spec)
        _sweep_as_declared(result, spec)
    _placement(result, policy)
    _consistent(result)
    _sweep_consistent(result)
    _complete(result)
    _plausible_interval(result)
    _work_done(result, policy)
    _disqualified(result, policy)
    _priceable(result, policy)
    return result


def _bound(result: CompactResult, expected: str | None) -> None:
    """The result echoes the nonce of the Job it came from: one measured for another Job (a
    replay of another qualification's result) proves nothing about this one."""
    if expected is None:
        raise ResultRejected(
            Reason.NOT_BOUND,
            "the benchmark Job carries no nonce, so no result can be bound to it",
        )
    if result.job_nonce != expected:
        got = "none" if result.job_nonce is None else f"{result.job_nonce[:8]}…"
        raise ResultRejected(
            Reason.NOT_BOUND,
            f"the result echoes nonce {got}, not its Job's {expected[:8]}…: it was not measured "
            "for this Job",
        )


def _refused_by_benchmark(result: CompactResult) -> None:
    """The benchmark refused its own measurement."""
    if result.refusal is not None or not result.ok:
        reason = result.refusal.reason if result.refusal else Reason.NOT_OK
        message = result.refusal.message if result.refusal else "the benchmark reported ok=false"
        raise ResultRejected(reason, f"the benchmark refused its own measurement: {message}")


def _contended(result: CompactResult) -> None:
    """Another workload shared the GPU: never priced, whatever the policy."""
    if Flag.CONTENTION in result.flags or Flag.GPU_NOT_IDLE in result.flags:
        raise ResultRejected(
            Reason.CONTENTION, "another workload shared the GPU during the measurement"
        )


def _simulated(result: CompactResult, policy: TierPolicySpec) -> None:
    """Replayed or synthesised power, under a policy that does not accept it."""
    if result.simulated and not policy.allow_simulated:
        raise ResultRejected(
            Reason.SIMULATED,
            f"the result is simulated (power source {result.source.value}, backend "
            f"{result.backend}) and the policy does not accept simulated results",
        )


def _identity(result: CompactResult, spec: QualificationSpec) -> None:
    """Measured on the declared GPUs, for the declared workload."""
    want = spec.hardware.gpu_product
    if normalise_product(result.gpu.name) != normalise_product(want):
        raise ResultRejected(
            Reason.WRONG_GPU, f"measured on {result.gpu.name!r}, but {want!r} was required"
        )
    if result.gpu.count != spec.hardware.gpu_count:
        raise ResultRejected(
            Reason.WRONG_GPU,
            f"measured on {result.gpu.count} GPU(s), but {spec.hardware.gpu_count} were required",
        )
    expected = workload_digest(spec)
    if result.workload_digest != expected:
        raise ResultRejected(
            Reason.WORKLOAD_MISMATCH,
            f"the result is for workload {result.workload_digest}, not the declared {expected}",
        )


def _expected_backend(spec: QualificationSpec) -> str:
    """The backend a model source runs on; a result of another was not made for this spec."""
    src = spec.model.source
    if src.server is not None:
        return "server"
    if src.endpoint is not None:
        return "openai"
    return "transformers"


def _served_as_declared(result: CompactResult, spec: QualificationSpec) -> None:
    """The model ran the way the spec declared: in-process, through the declared engine in
    the pod, or against the endpoint (a synthetic backend is the sandbox's stand-in and is
    simulated, which the policy has already accepted or refused)."""
    want = _expected_backend(spec)
    if result.backend in ("synthetic", want):
        server = spec.model.source.server
        engine = result.engine
        if (
            server is not None
            and result.backend == "server"
            and (engine is None or engine.name != server.engine.value)
        ):
            got = engine.name if engine is not None else "none"
            raise ResultRejected(
                Reason.WORKLOAD_MISMATCH,
                f"the result was served by engine {got!r}, not the declared "
                f"{server.engine.value!r}",
            )
        return
    raise ResultRejected(
        Reason.WORKLOAD_MISMATCH,
        f"the result was measured with backend {result.backend!r}, but the model source "
        f"runs on {want!r}",
    )


def _sweep_as_declared(result: CompactResult, spec: QualificationSpec) -> None:
    """The sweep the result reports is the declared one, priced at the declared level (the
    workload digest covers the levels; this names what is wrong in words)."""
    workload = bench_workload(spec)
    sw = result.sweep
    if workload.concurrency_levels is None:
        if sw is not None:
            raise ResultRejected(
                Reason.WORKLOAD_MISMATCH, "the result reports a sweep, but none was declared"
            )
        return
    if sw is None and "sweep" not in result.truncated:
        raise ResultRejected(
            Reason.WORKLOAD_MISMATCH,
            "a concurrency sweep was declared, but the result reports none",
        )
    if sw is not None and (
        tuple(sw.levels) != workload.concurrency_levels
        or sw.tier_concurrency != workload.tier_level()
    ):
        raise ResultRejected(
            Reason.WORKLOAD_MISMATCH,
            f"the result's sweep has levels {sw.levels} priced at {sw.tier_concurrency}, not "
            f"the declared {list(workload.concurrency_levels)} at {workload.tier_level()}",
        )


def _sweep_consistent(result: CompactResult) -> None:
    """The priced runs are the tier level's: its row of the sweep is the mean of the result's
    per-run figures (when the compact form still carries them)."""
    sw, runs = result.sweep, result.runs
    if sw is None or runs is None or not runs.tokens_per_s:
        return
    i = sw.levels.index(sw.tier_concurrency)
    pairs = (
        ("avg_power_w", sw.avg_power_w[i], runs.avg_power_w),
        ("tokens_per_s", sw.tokens_per_s[i], runs.tokens_per_s),
    )
    for name, row, values in pairs:
        mean = sum(values) / len(values)
        if sw.runs[i] != len(values) or abs(row - mean) > ROUNDING_TOLERANCE * max(mean, 1e-9):
            raise ResultRejected(
                Reason.INCONSISTENT_RESULT,
                f"the sweep's {name} at concurrency {sw.tier_concurrency} ({row:g} over "
                f"{sw.runs[i]} runs) is not the priced runs' ({mean:g} over {len(values)})",
            )


def _placement(result: CompactResult, policy: TierPolicySpec) -> None:
    """A result from an external endpoint: the work may have run on GPUs other than the
    measured ones, so only a policy that accepts unverified placement prices it."""
    if result.backend == "openai" and not policy.endpoint_access.allow_unverified_placement:
        raise ResultRejected(
            Reason.ENGINE_IN_POD_REQUIRED,
            "the model was served by an external endpoint, whose placement on the measured "
            "GPUs cannot be shown; the policy does not accept that "
            "(spec.endpointAccess.allowUnverifiedPlacement): use spec.model.source.server",
        )


#: Relative disagreement tolerated between figures the compact form rounds to 5 digits.
ROUNDING_TOLERANCE = 1e-3
#: Average power must equal energy / duration within this share.
ENERGY_CONSISTENCY = 0.01


def _consistent(result: CompactResult) -> None:
    """Figures that contradict each other: the result was not produced by the benchmark."""
    if result.tier_metric != TIER_METRIC or result.cv_time_scale_s != TIER_METRIC_TIME_SCALE_S:
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT,
            f"the result's tier metric is {result.tier_metric!r} over "
            f"{result.cv_time_scale_s:g} s, not {TIER_METRIC!r} over "
            f"{TIER_METRIC_TIME_SCALE_S:g} s",
        )
    avg, e, d = result.avg_power_watts, result.energy_j, result.duration_s
    if avg is not None and (e is None or d is None or d <= 0):
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT,
            "an average power needs the energy and a positive duration it was derived from",
        )
    jpt, tokens = result.joules_per_token, result.output_tokens
    if jpt is not None and e is not None:
        if not tokens:
            raise ResultRejected(
                Reason.INCONSISTENT_RESULT, "energy per token without any output token"
            )
        if abs(jpt - e / tokens) > ENERGY_CONSISTENCY * max(e / tokens, 1e-9):
            raise ResultRejected(
                Reason.INCONSISTENT_RESULT,
                f"{jpt:.4g} J per token contradicts energy / output tokens = {e / tokens:.4g}",
            )
    if avg is not None and e is not None and d is not None and d > 0:
        derived = e / d
        if abs(avg - derived) > ENERGY_CONSISTENCY * max(abs(derived), 1e-9):
            raise ResultRejected(
                Reason.INCONSISTENT_RESULT,
                f"average power {avg:.4g} W contradicts energy / duration = {derived:.4g} W",
            )
    ci, cv = result.power_cv_ci95, result.power_cv
    if ci is not None and cv is not None:
        slack = ROUNDING_TOLERANCE * max(cv, 1e-6)
        if not (ci[0] <= ci[1] and ci[0] - slack <= cv <= ci[1] + slack):
            raise ResultRejected(
                Reason.INCONSISTENT_RESULT,
                f"the 95% interval [{ci[0]:.4g}, {ci[1]:.4g}] does not contain the power CV "
                f"{cv:.4g}",
            )
    replay_marks = result.gpu.driver == "replay" or any(
        u.startswith("GPU-REPLAY") for u in result.gpu.uuids
    )
    if replay_marks and not result.simulated:
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT,
            "the result says it is not simulated, but its GPU identity is a replay's",
        )
    work = result.work
    if (
        work is not None
        and result.backend in ENGINE_IN_POD_BACKENDS
        and not work.engine_on_gpu_expected
    ):
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT,
            f"the {result.backend} engine runs in the benchmark pod, but the result does not "
            "expect its processes on the GPUs",
        )


def _complete(result: CompactResult) -> None:
    """A priceable result says what it rests on: its windows, and (when measured on a real
    GPU) the digests of its evidence."""
    win = result.windows
    if win is None:
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT, "the result does not say which windows it rests on"
        )
    if not result.simulated and result.evidence is None:
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT, "a measured result must carry its evidence digests"
        )
    if result.power_cv is not None and win.used < 2:
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT,
            f"a power CV from {win.used} 1 s windows is not a measurement",
        )


def implied_flags(result: CompactResult) -> list[Flag]:
    """Flags the result's own figures call for, whether or not the benchmark raised them:
    the operator prices the figures, not the benchmark's word about them."""
    out: list[Flag] = []
    disc = result.energy_discrepancy_pct
    if disc is not None and abs(disc) > ENERGY_DISCREPANCY_LIMIT_PCT:
        out.append(Flag.ENERGY_DISCREPANCY)
    win = result.windows
    if win is not None:
        total = win.used + win.excluded
        if win.min_per_run < MIN_WINDOWS_FOR_TIER:
            out.append(Flag.SHORT_WINDOW)
        if total and win.excluded / total > MAX_EXCLUDED_WINDOW_SHARE:
            out.append(Flag.SAMPLER_DEGRADED)
        if win.readings and win.missing_readings / win.readings > MAX_MISSING_READING_SHARE:
            out.append(Flag.MISSING_READINGS)
    return out


#: An interval narrower than this many standard errors of a CV cannot come from `used`
#: windows (the calibrated 95 % interval is about 2 x 1.96 of them wide).
MIN_INTERVAL_HALF_WIDTH_SE = 0.5


def _plausible_interval(result: CompactResult) -> None:
    """An interval too narrow for the windows it rests on was not computed from them."""
    ci, cv, win = result.power_cv_ci95, result.power_cv, result.windows
    if ci is None or cv is None or win is None or cv == 0:
        return
    runs = len(result.runs.power_cv) if result.runs is not None else 1
    dof = max(win.used - max(runs, 1), 1)
    # Width only: a real interval may be lopsided (a CV near its lower bound of 0, or the
    # bias correction), so neither side alone says anything.
    half = MIN_INTERVAL_HALF_WIDTH_SE * cv / math.sqrt(2.0 * dof)
    if ci[1] - ci[0] < 2.0 * half:
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT,
            f"the 95% interval [{ci[0]:.4g}, {ci[1]:.4g}] is too narrow for a CV of {cv:.4g} "
            f"from {win.used} 1 s windows",
        )


def _work_done(result: CompactResult, policy: TierPolicySpec) -> None:
    """The work-done gate, checked again under the policy's own floors."""
    w = result.work
    floors = policy.work_done
    if w is None:
        raise ResultRejected(
            Reason.NO_LOAD_ON_GPU, "the result carries no work-done figures, so it proves nothing"
        )
    problems = []
    jpt = w.j_per_token_above_idle_min
    if jpt is None or jpt < floors.min_joules_per_token_above_idle:
        problems.append(
            f"energy above idle per output token {_fmt_opt(jpt, ' J')} in the worst run "
            f"(floor {floors.min_joules_per_token_above_idle:g} J)"
        )
    util = w.gpu_util_pct_min
    if util is None or util < floors.min_gpu_util_percent:
        problems.append(
            f"GPU utilisation {_fmt_opt(util, ' %')} in the worst run "
            f"(floor {floors.min_gpu_util_percent:g} %)"
        )
    if w.engine_on_gpu_expected and (w.engine_processes_min is None or w.engine_processes_min < 1):
        problems.append("the engine's processes were not on every measured GPU")
    if problems or not w.passed:
        raise ResultRejected(
            Reason.NO_LOAD_ON_GPU,
            "the declared work did not run on the measured GPUs: "
            + ("; ".join(problems) or "the benchmark's own gate failed"),
        )


def _fmt_opt(value: float | None, unit: str) -> str:
    return "unknown" if value is None else f"{value:.4g}{unit}"


def _flag_figure(flag: Flag, result: CompactResult) -> str:
    """The figure behind a flag, so a refusal says how far off the measurement was."""
    win = result.windows
    if flag is Flag.ENERGY_DISCREPANCY and result.energy_discrepancy_pct is not None:
        return f"counter and instant-power integral differ by {result.energy_discrepancy_pct:+.2f}%"
    if flag is Flag.SAMPLER_DEGRADED and win is not None:
        return f"{win.excluded} of {win.used + win.excluded} 1 s windows overlapped sampler gaps"
    if flag is Flag.SHORT_WINDOW and win is not None:
        return f"the shortest run has {win.min_per_run} usable 1 s windows"
    if flag is Flag.MISSING_READINGS and win is not None:
        return f"{win.missing_readings} of {win.readings} reads had no value"
    if flag is Flag.TOKEN_MISMATCH:
        made = f" ({result.output_tokens} in the measured runs)" if result.output_tokens else ""
        return (
            f"the {'engine' if result.backend == 'server' else 'model'} generated a different "
            f"number of tokens than the workload asked{made}, so its energy per token is not the "
            "declared workload's"
        )
    return "see the benchmark's notes"


def _disqualified(result: CompactResult, policy: TierPolicySpec) -> None:
    """A flag the policy makes disqualifying."""
    for flag in [*result.flags, *implied_flags(result)]:
        if flag in policy.disqualifying_flags:
            raise ResultRejected(
                Reason.DISQUALIFYING_FLAG,
                f"flag {flag.value} disqualifies the result under this policy: "
                f"{_flag_figure(flag, result)}",
            )


def _priceable(result: CompactResult, policy: TierPolicySpec) -> None:
    """A tier metric and an average power to price."""
    if tier_metric(result, policy) is None:
        raise ResultRejected(
            Reason.NO_TIER_METRIC,
            f"the result has no {policy.tier_metric} (runs too short for whole 1 s windows?)",
        )
    if result.avg_power_watts is None:
        raise ResultRejected(Reason.NO_TIER_METRIC, "the result has no average power")


def tier_metric(result: CompactResult, policy: TierPolicySpec) -> float | None:
    return result.power_cv if policy.tier_metric == "power_cv_1s" else result.power_cv_instant


def _within(value: float, limit: float | None, boundary: Boundary) -> bool:
    if limit is None:
        return True
    return value <= limit if boundary is Boundary.INCLUSIVE else value < limit


def tier_for(cv: float, avg_power_w: float, policy: TierPolicySpec) -> Tier | None:
    """The best tier whose every limit holds, or None when none does."""
    for tier in policy.tiers:
        if _within(cv, tier.max_cv, tier.cv_boundary) and _within(
            avg_power_w, tier.max_avg_power_w, tier.power_boundary
        ):
            return tier
    return None


def _worse(tier: Tier, policy: TierPolicySpec) -> Tier:
    later = [t for t in policy.tiers if t.number > tier.number]
    return later[0] if later else tier


@dataclass(frozen=True)
class ClaimCheck:
    metric: str
    claimed: float
    measured: float
    delta_percent: float
    tolerance_percent: float
    within_tolerance: bool

    def to_status(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "claimed": self.claimed,
            "measured": self.measured,
            "deltaPercent": round(self.delta_percent, 3),
            "tolerancePercent": self.tolerance_percent,
            "withinTolerance": self.within_tolerance,
        }


#: The denominator of a delta against a claim of exactly 0 (a CV of 0 is claimable).
ZERO_CLAIM_FLOOR = 1e-6


def _delta(measured: float, claimed: float) -> float:
    return (measured - claimed) / claimed * 100.0


def check_claims(
    spec: QualificationSpec, result: CompactResult, tier: Tier | None, policy: TierPolicySpec
) -> list[ClaimCheck]:
    c, tol = spec.claims, policy.tolerances_percent
    checks: list[ClaimCheck] = []
    lower_is_better = (
        ("avgPowerW", c.avg_power_w, result.avg_power_watts, tol.avg_power_w),
        ("peakPowerW", c.peak_power_w, result.peak_power_watts, tol.peak_power_w),
        ("powerCV", c.power_cv, tier_metric(result, policy), tol.power_cv),
        ("joulesPerToken", c.joules_per_token, result.joules_per_token, tol.joules_per_token),
    )
    for metric, claimed, measured, t in lower_is_better:
        if claimed is None or measured is None:
            continue
        if claimed == 0:
            # Only 0 meets a claim of 0; the delta stays finite (a status holds no Infinity).
            delta = 0.0 if measured == 0 else _delta(measured, ZERO_CLAIM_FLOOR)
        else:
            delta = _delta(measured, claimed)
        checks.append(ClaimCheck(metric, claimed, measured, delta, t, delta <= t))
    if c.tokens_per_joule is not None and result.tokens_per_joule is not None:
        delta = _delta(result.tokens_per_joule, c.tokens_per_joule)
        t = tol.tokens_per_joule
        checks.append(
            ClaimCheck(
                "tokensPerJoule", c.tokens_per_joule, result.tokens_per_joule, delta, t, delta >= -t
            )
        )
    if c.target_tier is not None:
        got = float(tier.number) if tier else float(len(policy.tiers) + 1)
        checks.append(
            ClaimCheck(
                "targetTier",
                float(c.target_tier),
                got,
                _delta(got, float(c.target_tier)),
                0.0,
                got <= c.target_tier,
            )
        )
    return checks


@dataclass(frozen=True)
class Verdict:
    tier: Tier | None
    qualified: bool
    discount_percent: float
    discount_approved: bool
    borderline: bool
    rerun_requested: bool
    claims: list[ClaimCheck]
    verification: str  # Verified | Failed | NoClaims
    reasoning: str
    cv: float
    avg_power_w: float
    flags: list[str] = field(default_factory=list)


def _fmt_limit(name: str, value: float, limit: float | None, boundary: Boundary, unit: str) -> str:
    if limit is None:
        return ""
    op = (
        ("<=" if boundary is Boundary.INCLUSIVE else "<")
        if _within(value, limit, boundary)
        else (">" if boundary is Boundary.INCLUSIVE else ">=")
    )
    return f"{name} {value:.4g}{unit} {op} {limit:g}{unit}"


def _priced_sentence(cv: float, avg_power_w: float, tier: Tier, over: str) -> str:
    """ "Power CV 0.03 over 1 s windows, 95% CI ...; average power 128 W. power CV 0.03 < 0.1
    and average power 128 W < 150 W: Tier 1." (each limit the tier has, as it was met)."""
    limits = [
        x
        for x in (
            _fmt_limit("power CV", cv, tier.max_cv, tier.cv_boundary, ""),
            _fmt_limit(
                "average power", avg_power_w, tier.max_avg_power_w, tier.power_boundary, " W"
            ),
        )
        if x
    ]
    return (
        f"Power CV {cv:.4g} over {over}; average power {avg_power_w:.4g} W. "
        + (f"{' and '.join(limits)}: " if limits else "")
        + f"{tier.label or tier.name}."
    )


def _borderline(
    tier: Tier, ci: tuple[float, float] | None, policy: TierPolicySpec, reruns_done: int
) -> tuple[Tier, bool, str]:
    """A price the interval does not settle: a rerun when the policy asks for one and reruns
    are left, else the worse tier (the last one without an interval: nothing bounds the CV).
    Returns the tier, whether a rerun is requested, and the words."""
    upper = f"the CI's upper end {ci[1]:.4g} crosses {tier.max_cv:g}" if ci else "no CI"
    if policy.borderline is BorderlinePolicy.RERUN and reruns_done < policy.max_reruns:
        words = f"Borderline: {upper}; rerun {reruns_done + 1} of {policy.max_reruns} requested."
        return tier, True, words
    worse = policy.tiers[-1] if ci is None else _worse(tier, policy)
    return (
        worse,
        False,
        f"Borderline: {upper}, so the worse tier applies: {worse.label or worse.name}.",
    )


def evaluate(
    result: CompactResult,
    spec: QualificationSpec,
    policy: TierPolicySpec,
    *,
    reruns_done: int = 0,
) -> Verdict:
    """The verdict on a validated result (see `validate_result`)."""
    cv = tier_metric(result, policy)
    avg = result.avg_power_watts
    if cv is None or avg is None:
        raise ResultRejected(Reason.NO_TIER_METRIC, "evaluate() needs a validated result")
    tier = tier_for(cv, avg, policy)
    flags = [f.value for f in result.flags]
    borderline = False
    rerun = False
    parts: list[str] = []
    scale = (
        "1 s energy-counter windows" if policy.tier_metric == "power_cv_1s" else "instant samples"
    )
    ci = result.power_cv_ci95 if policy.tier_metric == "power_cv_1s" else None
    ci_text = f", 95% CI {ci[0]:.4g}-{ci[1]:.4g}" if ci else ""
    if tier is not None:
        parts.append(_priced_sentence(cv, avg, tier, f"{scale}{ci_text}"))
        no_interval = policy.tier_metric == "power_cv_1s" and ci is None
        crosses = (
            ci is not None
            and tier.max_cv is not None
            and not _within(ci[1], tier.max_cv, tier.cv_boundary)
        )
        if no_interval and tier.max_cv is not None:
            parts.append("No confidence interval for the tier metric: never a price without one.")
        if (no_interval and tier.max_cv is not None) or crosses:
            borderline = True
            flags.append("borderline")
            tier, rerun, words = _borderline(tier, ci, policy, reruns_done)
            parts.append(words)
    else:
        parts.append(f"Power CV {cv:.4g}, average power {avg:.4g} W: no tier of the policy fits.")
    claims = check_claims(spec, result, tier, policy)
    if not claims:
        verification = "NoClaims"
    elif all(c.within_tolerance for c in claims):
        verification = "Verified"
        parts.append("Every claim is within tolerance.")
    else:
        verification = "Failed"
        bad = ", ".join(
            f"{c.metric} {c.measured:.4g} vs claimed {c.claimed:.4g} ({c.delta_percent:+.1f}%, "
            f"tolerance {c.tolerance_percent:g}%)"
            for c in claims
            if not c.within_tolerance
        )
        parts.append(f"Claims outside tolerance: {bad}.")
    qualified = tier is not None and tier.discount_percent > 0
    attested = spec.attestation is not None and spec.attestation.declarations.all_checked
    approved = qualified and not rerun
    if approved and policy.require_attestation and not attested:
        approved = False
        parts.append("Discount withheld: the developer attestation is incomplete.")
    if approved and policy.discount_requires_claims_within_tolerance and verification == "Failed":
        approved = False
        parts.append("Discount withheld: the policy requires every claim within tolerance.")
    if approved and tier is not None:
        parts.append(f"Discount approved: {tier.discount_percent:g}%.")
    elif not qualified and not rerun:
        parts.append("No discount: standard pricing.")
    if result.simulated:
        parts.append("Simulated measurement (accepted by this policy; not a real GPU).")
    return Verdict(
        tier=tier,
        qualified=qualified,
        discount_percent=tier.discount_percent if (approved and tier) else 0.0,
        discount_approved=approved,
        borderline=borderline,
        rerun_requested=rerun,
        claims=claims,
        verification=verification,
        reasoning=" ".join(parts),
        cv=cv,
        avg_power_w=avg,
        flags=flags,
    )


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def sweep_status(result: CompactResult) -> dict[str, Any] | None:
    """The concurrency sweep as `status.sweep` shows it (None: no sweep). Range and CV of the
    efficiency follow from its min, max, mean and std."""
    sw = result.sweep
    if sw is None:
        return None
    levels = []
    for i, level in enumerate(sw.levels):
        mean, std = sw.efficiency_mean_pct[i], sw.efficiency_std_pct[i]
        lo, hi = sw.efficiency_min_pct[i], sw.efficiency_max_pct[i]
        efficiency = _drop_none(
            {
                "mean": mean,
                "std": std,
                "min": lo,
                "max": hi,
                "range": round(hi - lo, 4) if hi is not None and lo is not None else None,
                "cv": round(std / mean, 6) if std is not None and mean else None,
            }
        )
        entry = {
            "concurrency": level,
            "runs": sw.runs[i],
            "tokensPerSecond": sw.tokens_per_s[i],
            "ttftP50Ms": sw.ttft_p50_ms[i],
            "avgPowerW": sw.avg_power_w[i],
            "powerCV": sw.power_cv[i],
            "joulesPerToken": sw.joules_per_token[i],
            "speedup": sw.speedup[i],
            "efficiency": efficiency or None,
            "contendedRuns": sw.contended_runs[i],
        }
        levels.append(_drop_none(entry))
    return {"tierConcurrency": sw.tier_concurrency, "levels": levels}


def engine_status(result: CompactResult) -> dict[str, Any] | None:
    """The serving engine as `status.environment.engine` shows it (None: no engine ran)."""
    if result.engine is None:
        return None
    return {
        "name": result.engine.name,
        "version": result.engine.version,
        "startupSeconds": result.engine.startup_s,
        "commandSha256": result.engine.command_sha256,
    }


def measured_status(result: CompactResult) -> dict[str, Any]:
    """The measured figures as they appear in `status.measured` (CRD field names)."""
    out: dict[str, Any] = {
        "powerCV": result.power_cv,
        "powerCVInstant": result.power_cv_instant,
        "avgPowerW": result.avg_power_watts,
        "peakPowerW": result.peak_power_watts,
        "powerStdW": result.power_std_w,
        "p95PowerW": result.p95_power_w,
        "joulesPerToken": result.joules_per_token,
        "tokensPerJoule": result.tokens_per_joule,
        "tokensPerSecond": result.tokens_per_s,
        "ttftSeconds": result.ttft_p50_s,
        "energyJ": result.energy_j,
        "durationSeconds": result.duration_s,
        "outputTokens": result.output_tokens,
        "idlePowerW": result.idle_power_w,
        "whPer1kQueries": result.wh_per_1k_queries,
        "energyDiscrepancyPct": result.energy_discrepancy_pct,
        "tierMetric": result.tier_metric,
        "cvTimeScaleSeconds": result.cv_time_scale_s,
        "sampleIntervalSeconds": result.sample_interval_s,
    }
    if result.power_cv_ci95 is not None:
        out["powerCVLow"], out["powerCVHigh"] = result.power_cv_ci95
    if result.runs is not None:
        out["runs"] = [
            {"run": i, "powerCV": cv, "avgPowerW": p, "joulesPerToken": j, "tokensPerSecond": t}
            for i, (cv, p, j, t) in enumerate(
                zip(
                    result.runs.power_cv,
                    result.runs.avg_power_w,
                    result.runs.joules_per_token,
                    result.runs.tokens_per_s,
                    strict=True,
                )
            )
        ]
    if result.run_stats:
        out["runToRun"] = {k: v.model_dump() for k, v in result.run_stats.items()}
    if result.work is not None:
        out["workDone"] = _drop_none(
            {
                "joulesPerTokenAboveIdle": result.work.j_per_token_above_idle_min,
                "gpuUtilPercent": result.work.gpu_util_pct_min,
                "engineProcesses": result.work.engine_processes_min,
                "engineOnGpuExpected": result.work.engine_on_gpu_expected,
            }
        )
    if result.windows is not None:
        w = result.windows
        out["windows"] = {
            "used": w.used,
            "excluded": w.excluded,
            "minPerRun": w.min_per_run,
            "missingReadings": w.missing_readings,
            "readings": w.readings,
            "ciMethod": w.ci_method,
        }
    if result.evidence is not None:
        out["evidence"] = _drop_none(
            {
                "traceSha256": result.evidence.trace_sha256,
                "telemetrySha256": result.evidence.telemetry_sha256,
                "columnsSha256": result.evidence.columns_sha256,
            }
        )
    return {k: v for k, v in out.items() if v is not None}


__all__ = [
    "ClaimCheck",
    "ResultRejected",
    "Verdict",
    "check_claims",
    "evaluate",
    "measured_status",
    "tier_for",
    "validate_result",
    "workload_digest",
]
