"""Typed views of the TierPolicy spec (modelgrid.firmus.ai/v1alpha1), and its tier rules. Pure.

What a policy prices with: its tiers, tolerances, borderline and work-done rules, which flags
disqualify, which endpoints and engines it takes. tests/unit/test_api_drift.py fails when a
field here drifts from crds/modelgrid.firmus.ai_tierpolicies.yaml; `tier_order_problems`
repeats the CRD's rules on spec.tiers in the apiserver's words.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from modelgrid_contract.result import Flag, WorkDoneFloors
from modelgrid_operator.apimodel import ApiModel


class Boundary(StrEnum):
    EXCLUSIVE = "Exclusive"
    INCLUSIVE = "Inclusive"


class Tier(ApiModel):
    name: str
    number: Annotated[int, Field(ge=1, le=10)]
    label: str = ""
    stability: str = ""
    discount_percent: Annotated[float, Field(ge=0, le=100)] = Field(alias="discountPercent")
    max_cv: Annotated[float, Field(ge=0, le=10)] | None = Field(None, alias="maxCV")
    cv_boundary: Boundary = Field(Boundary.EXCLUSIVE, alias="cvBoundary")
    max_avg_power_w: Annotated[float, Field(gt=0, le=100000)] | None = Field(
        None, alias="maxAvgPowerW"
    )
    power_boundary: Boundary = Field(Boundary.EXCLUSIVE, alias="powerBoundary")


class Tolerances(ApiModel):
    avg_power_w: Annotated[float, Field(ge=0, le=100)] = Field(10.0, alias="avgPowerW")
    peak_power_w: Annotated[float, Field(ge=0, le=100)] = Field(15.0, alias="peakPowerW")
    power_cv: Annotated[float, Field(ge=0, le=100)] = Field(20.0, alias="powerCV")
    joules_per_token: Annotated[float, Field(ge=0, le=100)] = Field(10.0, alias="joulesPerToken")
    tokens_per_joule: Annotated[float, Field(ge=0, le=100)] = Field(10.0, alias="tokensPerJoule")


class BorderlinePolicy(StrEnum):
    WORSE_TIER = "WorseTier"
    RERUN = "Rerun"


class WorkDonePolicy(ApiModel):
    """The work-done gate's floors (modelgrid_contract.result.WorkDoneFloors, in CRD names)."""

    min_joules_per_token_above_idle: Annotated[float, Field(ge=0, le=100)] = Field(
        0.005, alias="minJoulesPerTokenAboveIdle"
    )
    min_gpu_util_percent: Annotated[float, Field(ge=0, le=100)] = Field(
        20.0, alias="minGpuUtilPercent"
    )

    def floors(self) -> WorkDoneFloors:
        return WorkDoneFloors(
            min_joules_per_token_above_idle=self.min_joules_per_token_above_idle,
            min_gpu_util_pct=self.min_gpu_util_percent,
        )


#: Flags a policy may make disqualifying; contention and a busy GPU are always refused and
#: `simulated` is governed by allowSimulated.
CONFIGURABLE_FLAGS = frozenset(
    {
        Flag.THROTTLED,
        Flag.ENERGY_DISCREPANCY,
        Flag.ENERGY_FALLBACK,
        Flag.ENERGY_COUNTER_RESET,
        Flag.SAMPLER_DEGRADED,
        Flag.SHORT_WINDOW,
        Flag.TOKEN_MISMATCH,
        Flag.NO_INSTANT_POWER,
        Flag.MISSING_READINGS,
        Flag.NO_INTERVAL,
    }
)
DEFAULT_DISQUALIFYING_FLAGS = (
    Flag.SAMPLER_DEGRADED,
    Flag.ENERGY_DISCREPANCY,
    Flag.ENERGY_COUNTER_RESET,
    Flag.SHORT_WINDOW,
    Flag.NO_INSTANT_POWER,
    Flag.TOKEN_MISMATCH,
    Flag.MISSING_READINGS,
)


class EndpointAccess(ApiModel):
    """Whether an `endpoint` model source is accepted at all, and which targets it may name
    besides public hosts."""

    #: An endpoint serves from GPUs the benchmark cannot show are its own: its results are
    #: accepted only where a policy says it takes unverified placement.
    allow_unverified_placement: bool = Field(False, alias="allowUnverifiedPlacement")
    allow_cluster_internal: bool = Field(False, alias="allowClusterInternal")
    allow_link_local: bool = Field(False, alias="allowLinkLocal")


class EngineAccess(ApiModel):
    """Which engines a `server` model source may start (presets always; custom commands only
    where the policy trusts them: a custom command runs in the benchmark's own container)."""

    allow_custom_command: bool = Field(False, alias="allowCustomCommand")


#: The messages of the CRD's rules on spec.tiers (crds/modelgrid.firmus.ai_tierpolicies.yaml),
#: word for word: tier_order_problems() says what the apiserver says.
TIERS_ORDER_MESSAGE = (
    "tiers must be listed best first, each with its own number, numbers increasing down the list"
)
TIERS_DISCOUNT_MESSAGE = (
    "a worse tier (a higher number) must not carry a larger discount than a better one"
)
TIERS_SAME_LIMITS_MESSAGE = (
    "a worse tier (a higher number) must allow more on maxCV or maxAvgPowerW"
)
TIER_ZERO_CV_MESSAGE = (
    "maxCV 0 with cvBoundary Exclusive (a CV below 0) can never be met: set cvBoundary Inclusive"
    " or a maxCV above 0"
)


def _num(x: float) -> str:
    """A number as CEL's string() writes it: the shortest repr, without a trailing `.0`."""
    return repr(float(x)).removesuffix(".0")


def _allows_at_least(
    worse: float | None, worse_boundary: Boundary, better: float | None, better_boundary: Boundary
) -> bool:
    """Whether the worse tier's limit admits every value the better tier's admits."""
    if worse is None:
        return True
    if better is None:
        return False
    return worse > better or (
        worse == better
        and (worse_boundary is Boundary.INCLUSIVE or better_boundary is Boundary.EXCLUSIVE)
    )


def _limit_text(limit: float | None, boundary: Boundary, what: str, unit: str) -> str:
    if limit is None:
        return f"any {what}"
    op = "<=" if boundary is Boundary.INCLUSIVE else "<"
    return f"{what} {op} {_num(limit)}{unit}"


def _same_limits(a: Tier, b: Tier) -> bool:
    return (
        a.max_cv == b.max_cv
        and a.max_avg_power_w == b.max_avg_power_w
        and (a.max_cv is None or a.cv_boundary is b.cv_boundary)
        and (a.max_avg_power_w is None or a.power_boundary is b.power_boundary)
    )


_Limit = Callable[[Tier], tuple[float | None, Boundary]]
#: Each limit of a tier: its name in messages, its unit, and (limit, boundary) of a tier.
_LIMITS: tuple[tuple[str, str, _Limit], ...] = (
    ("CV", "", lambda t: (t.max_cv, t.cv_boundary)),
    ("average power", " W", lambda t: (t.max_avg_power_w, t.power_boundary)),
)


def _narrower(limit_of: _Limit, better: Tier, worse: Tier) -> bool:
    return not _allows_at_least(*limit_of(worse), *limit_of(better))


def _first_pair(tiers: list[Tier], bad: Callable[[Tier, Tier], bool]) -> tuple[Tier, Tier] | None:
    """The first worse tier in list order that is `bad` against a better one, and the first such
    better one: the pair the CRD's messageExpressions name."""
    for b in tiers:
        for a in tiers:
            if a.number < b.number and bad(a, b):
                return a, b
    return None


def tier_order_problems(tiers: list[Tier]) -> list[str]:
    """What is wrong with the order of `tiers`, in the CRD's words; empty when nothing is.

    Tiers are listed best first with unique, increasing numbers; every worse tier (a higher
    number) carries at most the discount of every better one, allows at least what every better
    one allows on each limit (no limit is the widest; at an equal limit Inclusive is wider than
    Exclusive), and allows more on at least one: a tier with a better tier's limits can never be
    earned, nor one whose limit is CV < 0.
    """
    problems: list[str] = []
    for prev, tier in itertools.pairwise(tiers):
        if tier.number == prev.number:
            problems.append(
                f"tiers {prev.name} and {tier.name} both have number {tier.number}: "
                + TIERS_ORDER_MESSAGE
            )
            break
        if tier.number < prev.number:
            problems.append(
                f"tier {tier.name} (number {tier.number}) is listed after tier {prev.name}"
                f" (number {prev.number}): " + TIERS_ORDER_MESSAGE
            )
            break
    pair = _first_pair(tiers, lambda a, b: b.discount_percent > a.discount_percent)
    if pair:
        a, b = pair
        problems.append(
            f"tier {b.name} carries a larger discount ({_num(b.discount_percent)}%) than the"
            f" better tier {a.name} ({_num(a.discount_percent)}%): " + TIERS_DISCOUNT_MESSAGE
        )
    for what, unit, limit_of in _LIMITS:
        pair = _first_pair(tiers, functools.partial(_narrower, limit_of))
        if pair:
            a, b = pair
            problems.append(
                f"tier {b.name} allows {_limit_text(*limit_of(b), what, unit)}, less than the"
                f" better tier {a.name} ({_limit_text(*limit_of(a), what, unit)}): a worse tier"
                f" must allow at least the {what} every better tier allows"
            )
    pair = _first_pair(tiers, _same_limits)
    if pair:
        a, b = pair
        problems.append(
            f"tier {b.name} can never be earned: it has the same maxCV and maxAvgPowerW as the"
            f" better tier {a.name}; " + TIERS_SAME_LIMITS_MESSAGE
        )
    problems += [
        f"tier {t.name}: {TIER_ZERO_CV_MESSAGE}"
        for t in tiers
        if t.max_cv == 0 and t.cv_boundary is Boundary.EXCLUSIVE
    ]
    return problems


class TierPolicySpec(ApiModel):
    tiers: list[Tier] = Field(min_length=1, max_length=10)
    tier_metric: Literal["power_cv_1s", "power_cv_instant"] = Field(
        "power_cv_1s", alias="tierMetric"
    )
    tolerances_percent: Tolerances = Field(default_factory=Tolerances, alias="tolerancesPercent")
    discount_requires_claims_within_tolerance: bool = Field(
        True, alias="discountRequiresClaimsWithinTolerance"
    )
    require_attestation: bool = Field(True, alias="requireAttestation")
    borderline: BorderlinePolicy = BorderlinePolicy.WORSE_TIER
    max_reruns: Annotated[int, Field(ge=0, le=5)] = Field(1, alias="maxReruns")
    allow_simulated: bool = Field(False, alias="allowSimulated")
    work_done: WorkDonePolicy = Field(default_factory=WorkDonePolicy, alias="workDone")
    disqualifying_flags: list[Flag] = Field(
        default_factory=lambda: list(DEFAULT_DISQUALIFYING_FLAGS),
        alias="disqualifyingFlags",
        max_length=16,
    )
    endpoint_access: EndpointAccess = Field(default_factory=EndpointAccess, alias="endpointAccess")
    engine_access: EngineAccess = Field(default_factory=EngineAccess, alias="engineAccess")
    allowed_namespaces: list[str] = Field(
        default_factory=list, alias="allowedNamespaces", max_length=256
    )

    def applies_to(self, namespace: str) -> bool:
        """Whether this policy may price a qualification in `namespace`."""
        return not self.allowed_namespaces or namespace in self.allowed_namespaces

    @field_validator("disqualifying_flags")
    @classmethod
    def _configurable(cls, flags: list[Flag]) -> list[Flag]:
        bad = [f.value for f in flags if f not in CONFIGURABLE_FLAGS]
        if bad:
            raise ValueError(f"flags {bad} cannot be made disqualifying by a policy")
        return flags

    @model_validator(mode="after")
    def _tiers_ordered(self) -> TierPolicySpec:
        # The CRD's rules on spec.tiers, so a policy stored before they existed is refused too.
        problems = tier_order_problems(self.tiers)
        if problems:
            raise ValueError("; ".join(problems))
        return self
