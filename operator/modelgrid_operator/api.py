"""Typed views of the modelgrid.firmus.ai/v1alpha1 API (ModelQualification, TierPolicy). Pure.

`crds/` is the single source of the API; these models mirror the parts the operator reads, and
tests/unit/test_api_drift.py fails when a field here is missing from (or bounded differently
than) the CRD schema. The apiserver applies the CRD's defaults, so every default here repeats
the CRD's and only matters for objects built without the apiserver (the `verdict` CLI, tests).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelgrid_contract.engines import (
    DEFAULT_ENGINE_PORT,
    DEFAULT_STARTUP_TIMEOUT_S,
    MAX_ENGINE_ARGS,
    MAX_STARTUP_TIMEOUT_S,
    EngineName,
)
from modelgrid_contract.reasons import Reason as WireReason
from modelgrid_contract.result import Flag, WorkDoneFloors
from modelgrid_contract.workload import Workload

GROUP = "modelgrid.firmus.ai"
VERSION = "v1alpha1"
MQ_PLURAL = "modelqualifications"
TP_PLURAL = "tierpolicies"


def validation_message(exc: ValidationError, limit: int = 3) -> str:
    """A pydantic error in a person's words: `field: what is wrong` for the first few errors,
    without pydantic's input echo or its "For further information visit" link."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


class _Api(BaseModel):
    # Unknown fields are ignored, not refused: the apiserver has already validated the object
    # against the CRD, and a newer CRD must not crash an older operator.
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class PvcSource(_Api):
    claim_name: str = Field(alias="claimName")
    path: str = "/"


class CacheSource(_Api):
    claim_name: str = Field(alias="claimName")
    model_id: str = Field(alias="modelId")


class EndpointSource(_Api):
    url: str
    served_model: str | None = Field(default=None, alias="servedModel")


class RandomWeightsSource(_Api):
    architecture: str


class ServerWeights(_Api):
    """Where a server source's engine reads the model: exactly one of pvc and cache."""

    pvc: PvcSource | None = None
    cache: CacheSource | None = None


class ServerSource(_Api):
    """A serving engine the benchmark starts in its own pod, on the GPUs it measures."""

    engine: EngineName
    model: ServerWeights = Field(default_factory=ServerWeights)
    args: list[str] = Field(default_factory=list, max_length=MAX_ENGINE_ARGS)
    command: list[str] = Field(default_factory=list, max_length=MAX_ENGINE_ARGS)
    port: int = Field(DEFAULT_ENGINE_PORT, ge=1024, le=65535)
    startup_timeout_seconds: int = Field(
        DEFAULT_STARTUP_TIMEOUT_S, ge=10, le=MAX_STARTUP_TIMEOUT_S, alias="startupTimeoutSeconds"
    )
    served_model: str | None = Field(default=None, alias="servedModel")

    def claim(self) -> str | None:
        """The PersistentVolumeClaim the weights are read from."""
        if self.model.pvc is not None:
            return self.model.pvc.claim_name
        if self.model.cache is not None:
            return self.model.cache.claim_name
        return None


class ModelSource(_Api):
    pvc: PvcSource | None = None
    cache: CacheSource | None = None
    endpoint: EndpointSource | None = None
    random_weights: RandomWeightsSource | None = Field(default=None, alias="randomWeights")
    server: ServerSource | None = None


class Model(_Api):
    name: str
    version: str | None = None
    architecture: str | None = None
    parameter_count: str | None = Field(default=None, alias="parameterCount")
    framework: str | None = None
    quantization: str | None = None
    source: ModelSource


class Claims(_Api):
    avg_power_w: Annotated[float, Field(gt=0, le=10000)] | None = Field(None, alias="avgPowerW")
    peak_power_w: Annotated[float, Field(gt=0, le=10000)] | None = Field(None, alias="peakPowerW")
    power_cv: Annotated[float, Field(ge=0, le=1)] | None = Field(None, alias="powerCV")
    joules_per_token: Annotated[float, Field(gt=0, le=1000)] | None = Field(
        None, alias="joulesPerToken"
    )
    tokens_per_joule: Annotated[float, Field(gt=0, le=100000)] | None = Field(
        None, alias="tokensPerJoule"
    )
    target_tier: Annotated[int, Field(ge=1, le=10)] | None = Field(None, alias="targetTier")


class Toleration(_Api):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, alias="tolerationSeconds")


class Hardware(_Api):
    gpu_product: str = Field("NVIDIA-H200", alias="gpuProduct")
    gpu_count: Annotated[int, Field(ge=1, le=8)] = Field(1, alias="gpuCount")
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[Toleration] = Field(default_factory=list)


class PolicyRef(_Api):
    name: str


class Declarations(_Api):
    on_h200_infrastructure: bool = Field(False, alias="onH200Infrastructure")
    follows_methodology: bool = Field(False, alias="followsMethodology")
    typical_workload: bool = Field(False, alias="typicalWorkload")
    no_manipulation: bool = Field(False, alias="noManipulation")
    accepts_verification: bool = Field(False, alias="acceptsVerification")

    @property
    def all_checked(self) -> bool:
        return all(
            (
                self.on_h200_infrastructure,
                self.follows_methodology,
                self.typical_workload,
                self.no_manipulation,
                self.accepts_verification,
            )
        )


class Attestation(_Api):
    organization: str | None = None
    contact: str | None = None
    date_tested: str | None = Field(None, alias="dateTested")
    account_id: str | None = Field(None, alias="accountId")
    signature: str | None = None
    signed_date: str | None = Field(None, alias="signedDate")
    declarations: Declarations = Field(default_factory=Declarations)


class QualificationSpec(_Api):
    model: Model
    claims: Claims = Field(default_factory=Claims)
    workload: Workload = Field(default_factory=Workload)
    hardware: Hardware = Field(default_factory=Hardware)
    sampling_interval_ms: Annotated[int, Field(ge=5, le=1000)] = Field(
        25, alias="samplingIntervalMs"
    )
    policy_ref: PolicyRef | None = Field(None, alias="policyRef")
    timeout_seconds: Annotated[int, Field(ge=60, le=86400)] = Field(3600, alias="timeoutSeconds")
    progress_timeout_seconds: Annotated[int, Field(ge=30, le=86400)] = Field(
        900, alias="progressTimeoutSeconds"
    )
    reverify_after: str = Field("365d", alias="reverifyAfter")
    queue_name: str | None = Field(None, alias="queueName")
    attestation: Attestation | None = None


# --------------------------------------------------------------------------- TierPolicy


class Boundary(StrEnum):
    EXCLUSIVE = "Exclusive"
    INCLUSIVE = "Inclusive"


class Tier(_Api):
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


class Tolerances(_Api):
    avg_power_w: Annotated[float, Field(ge=0, le=100)] = Field(10.0, alias="avgPowerW")
    peak_power_w: Annotated[float, Field(ge=0, le=100)] = Field(15.0, alias="peakPowerW")
    power_cv: Annotated[float, Field(ge=0, le=100)] = Field(20.0, alias="powerCV")
    joules_per_token: Annotated[float, Field(ge=0, le=100)] = Field(10.0, alias="joulesPerToken")
    tokens_per_joule: Annotated[float, Field(ge=0, le=100)] = Field(10.0, alias="tokensPerJoule")


class BorderlinePolicy(StrEnum):
    WORSE_TIER = "WorseTier"
    RERUN = "Rerun"


class WorkDonePolicy(_Api):
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


class EndpointAccess(_Api):
    """Whether an `endpoint` model source is accepted at all, and which targets it may name
    besides public hosts."""

    #: An endpoint serves from GPUs the benchmark cannot show are its own: its results are
    #: accepted only where a policy says it takes unverified placement.
    allow_unverified_placement: bool = Field(False, alias="allowUnverifiedPlacement")
    allow_cluster_internal: bool = Field(False, alias="allowClusterInternal")
    allow_link_local: bool = Field(False, alias="allowLinkLocal")


class EngineAccess(_Api):
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


class TierPolicySpec(_Api):
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


# --------------------------------------------------------------------------- status words


class Phase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    SCHEDULING = "Scheduling"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    SCHEDULED = "Scheduled"
    VERIFIED = "Verified"


class Reason(StrEnum):
    """The operator's own lifecycle reasons on conditions and events.

    Reasons about a measurement or a result (a refusal, a rejection, a benchmark failure) are
    the contract's `modelgrid_contract.reasons.Reason` and appear verbatim; only `BAD_INPUT` is
    shared, and it is defined from the contract's word.
    """

    CREATED = "JobCreated"
    QUEUED = "Queued"
    UNSCHEDULABLE = "Unschedulable"
    SCHEDULED = "Scheduled"
    RUNNING = "BenchmarkRunning"
    SUCCEEDED = "Qualified"
    NOT_QUALIFIED = "NotQualified"
    RERUN = "BorderlineRerun"
    BACKOFF_LIMIT = "BackoffLimitExceeded"
    DEADLINE = "DeadlineExceeded"
    BENCHMARK_ERROR = "BenchmarkError"
    #: the benchmark exited with ExitCode.BAD_INPUT; the word is the contract's
    BAD_INPUT = WireReason.BAD_INPUT.value
    RESULT_REJECTED = "ResultRejected"
    JOB_REFUSED = "JobRefused"
    POLICY_NOT_FOUND = "PolicyNotFound"
    POLICY_INVALID = "PolicyInvalid"
    SPEC_INVALID = "SpecInvalid"
    CLAIMS_VERIFIED = "ClaimsVerified"
    CLAIMS_FAILED = "ClaimsOutsideTolerance"
    NO_CLAIMS = "NoClaims"
    SUPERSEDED = "Superseded"
    REVERIFY = "ReverifyDue"
    #: the model's volume is not in the benchmark namespace, or not shared with the tenant's
    MODEL_VOLUME_MISSING = "ModelVolumeMissing"
    MODEL_VOLUME_NOT_SHARED = "ModelVolumeNotShared"
    #: the Job finished but its pod was gone before its result was read: measured again
    RESULT_LOST = "ResultLost"
    #: the configured evidence claim is missing: the benchmark runs, its evidence is not kept
    EVIDENCE_NOT_KEPT = "EvidenceNotKept"
    #: the endpoint's host is cluster-internal or link-local and the TierPolicy does not allow it
    ENDPOINT_NOT_ALLOWED = "EndpointNotAllowed"
    #: the Job has more than one pod that finished with a result: which one measured is unknown
    AMBIGUOUS_RESULT = "AmbiguousResult"
    #: the operator's benchmark namespace does not exist (an installation fault)
    BENCHMARK_NAMESPACE_MISSING = "BenchmarkNamespaceMissing"
    #: the operator may not read or write what it needs there (its Role)
    BENCHMARK_NAMESPACE_FORBIDDEN = "BenchmarkNamespaceForbidden"
    #: the TierPolicy names the namespaces it prices, and this one is not among them
    POLICY_NOT_ALLOWED = "PolicyNotAllowed"
    #: a custom engine command the TierPolicy does not allow, or an engine with no image
    ENGINE_NOT_ALLOWED = "EngineNotAllowed"
    #: the benchmark reported no progress for longer than the operator allows
    NO_PROGRESS = WireReason.NO_PROGRESS.value
