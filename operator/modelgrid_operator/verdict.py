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

The rungs of the trust ladder live in `integrity` (the result is what it says it is) and
`tiering` (what the policy accepts), as do the tier limits, the borderline rule, the claim
checks and the discount; this module runs the ladder, assembles the verdict and renders the
status figures. It keeps every name the operator, the CLI and the reports import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelgrid_contract.reasons import Reason
from modelgrid_contract.result import CompactResult
from modelgrid_contract.wire import ResultRejected, decode_compact
from modelgrid_contract.workload import Workload
from modelgrid_operator.api import QualificationSpec
from modelgrid_operator.integrity import (
    bound,
    complete,
    consistent,
    contended,
    identity,
    plausible_interval,
    refused_by_benchmark,
    served_as_declared,
    sweep_as_declared,
    sweep_consistent,
)
from modelgrid_operator.policy import Tier, TierPolicySpec
from modelgrid_operator.tiering import (
    ClaimCheck,
    check_claims,
    discount,
    disqualified,
    placement,
    price,
    priceable,
    simulated,
    tier_metric,
    within,
    work_done,
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
        bound(result, expected_nonce)
    refused_by_benchmark(result)
    contended(result)
    simulated(result, policy)
    if check_identity:
        workload = bench_workload(spec)
        identity(result, spec, workload)
        served_as_declared(result, spec)
        sweep_as_declared(result, workload)
    placement(result, policy)
    consistent(result)
    sweep_consistent(result)
    complete(result)
    plausible_interval(result)
    work_done(result, policy)
    disqualified(result, policy)
    priceable(result, policy)
    return result


def tier_for(cv: float, avg_power_w: float, policy: TierPolicySpec) -> Tier | None:
    """The best tier whose every limit holds, or None when none does."""
    for tier in policy.tiers:
        if within(cv, tier.max_cv, tier.cv_boundary) and within(
            avg_power_w, tier.max_avg_power_w, tier.power_boundary
        ):
            return tier
    return None


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
    priced = price(result, cv, avg, tier_for(cv, avg, policy), policy, reruns_done)
    tier, borderline, rerun, parts = priced.tier, priced.borderline, priced.rerun, priced.words
    flags = [f.value for f in result.flags] + (["borderline"] if borderline else [])
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
    qualified, approved, words = discount(tier, rerun, verification, spec, policy)
    parts.extend(words)
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
