"""What a TierPolicy makes of a sound result: the policy's rungs of `verdict.validate_result`'s
ladder (simulated power, unverified placement, the work-done floors, disqualifying flags, a
metric to price), the tier limits and borderline rule, the claims against their tolerances,
the discount, and the words `verdict.evaluate` gives for them. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelgrid_contract.reasons import Reason
from modelgrid_contract.result import CompactResult, Flag
from modelgrid_contract.wire import ResultRejected
from modelgrid_operator.api import QualificationSpec
from modelgrid_operator.integrity import implied_flags
from modelgrid_operator.policy import BorderlinePolicy, Boundary, Tier, TierPolicySpec


def simulated(result: CompactResult, policy: TierPolicySpec) -> None:
    """Replayed or synthesised power, under a policy that does not accept it."""
    if result.simulated and not policy.allow_simulated:
        raise ResultRejected(
            Reason.SIMULATED,
            f"the result is simulated (power source {result.source.value}, backend "
            f"{result.backend}) and the policy does not accept simulated results",
        )


def placement(result: CompactResult, policy: TierPolicySpec) -> None:
    """A result from an external endpoint: the work may have run on GPUs other than the
    measured ones, so only a policy that accepts unverified placement prices it."""
    if result.backend == "openai" and not policy.endpoint_access.allow_unverified_placement:
        raise ResultRejected(
            Reason.ENGINE_IN_POD_REQUIRED,
            "the model was served by an external endpoint, whose placement on the measured "
            "GPUs cannot be shown; the policy does not accept that "
            "(spec.endpointAccess.allowUnverifiedPlacement): use spec.model.source.server",
        )


def work_done(result: CompactResult, policy: TierPolicySpec) -> None:
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


def disqualified(result: CompactResult, policy: TierPolicySpec) -> None:
    """A flag the policy makes disqualifying."""
    for flag in [*result.flags, *implied_flags(result)]:
        if flag in policy.disqualifying_flags:
            raise ResultRejected(
                Reason.DISQUALIFYING_FLAG,
                f"flag {flag.value} disqualifies the result under this policy: "
                f"{_flag_figure(flag, result)}",
            )


def priceable(result: CompactResult, policy: TierPolicySpec) -> None:
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


def within(value: float, limit: float | None, boundary: Boundary) -> bool:
    if limit is None:
        return True
    return value <= limit if boundary is Boundary.INCLUSIVE else value < limit


def _worse(tier: Tier, policy: TierPolicySpec) -> Tier:
    later = [t for t in policy.tiers if t.number > tier.number]
    return later[0] if later else tier


def _fmt_limit(name: str, value: float, limit: float | None, boundary: Boundary, unit: str) -> str:
    if limit is None:
        return ""
    op = (
        ("<=" if boundary is Boundary.INCLUSIVE else "<")
        if within(value, limit, boundary)
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
class Priced:
    """The tier a result's figures settle on, once the interval has had its say."""

    tier: Tier | None
    borderline: bool
    rerun: bool
    words: list[str]


def price(
    result: CompactResult,
    cv: float,
    avg_power_w: float,
    fits: Tier | None,
    policy: TierPolicySpec,
    reruns_done: int,
) -> Priced:
    """`fits`, the best tier the figures meet (None: none), as the interval leaves it: a
    tier metric without a 95 % interval, or whose interval crosses the tier's CV limit, is
    borderline (see `_borderline`)."""
    tier, borderline, rerun = fits, False, False
    parts: list[str] = []
    scale = (
        "1 s energy-counter windows" if policy.tier_metric == "power_cv_1s" else "instant samples"
    )
    ci = result.power_cv_ci95 if policy.tier_metric == "power_cv_1s" else None
    ci_text = f", 95% CI {ci[0]:.4g}-{ci[1]:.4g}" if ci else ""
    if tier is not None:
        parts.append(_priced_sentence(cv, avg_power_w, tier, f"{scale}{ci_text}"))
        no_interval = policy.tier_metric == "power_cv_1s" and ci is None
        crosses = (
            ci is not None
            and tier.max_cv is not None
            and not within(ci[1], tier.max_cv, tier.cv_boundary)
        )
        if no_interval and tier.max_cv is not None:
            parts.append("No confidence interval for the tier metric: never a price without one.")
        if (no_interval and tier.max_cv is not None) or crosses:
            borderline = True
            tier, rerun, words = _borderline(tier, ci, policy, reruns_done)
            parts.append(words)
    else:
        parts.append(
            f"Power CV {cv:.4g}, average power {avg_power_w:.4g} W: no tier of the policy fits."
        )
    return Priced(tier, borderline, rerun, parts)


def discount(
    tier: Tier | None,
    rerun: bool,
    verification: str,
    spec: QualificationSpec,
    policy: TierPolicySpec,
) -> tuple[bool, bool, list[str]]:
    """Whether the tier qualifies for a discount, whether it is approved, and the words: a
    rerun approves nothing yet, and the policy may withhold it for an incomplete attestation
    or a claim outside tolerance (`verification` "Failed")."""
    parts: list[str] = []
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
    return qualified, approved, parts
