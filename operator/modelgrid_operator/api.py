"""Typed views of the modelgrid.firmus.ai/v1alpha1 API (ModelQualification, TierPolicy). Pure.

`crds/` is the single source of the API; these models mirror the parts the operator reads, and
tests/unit/test_api_drift.py fails when a field here is missing from (or bounded differently
than) the CRD schema. The apiserver applies the CRD's defaults, so every default here repeats
the CRD's and only matters for objects built without the apiserver (the `verdict` CLI, tests).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelgrid_contract.reasons import Reason as WireReason
from modelgrid_contract.result import Flag, WorkDoneFloors
from modelgrid_contract.workload import Workload

GROUP = "modelgrid.firmus.ai"
VERSION = "v1alpha1"
MQ_PLURAL = "modelqualifications"
TP_PLURAL = "tierpolicies"


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


class ModelSource(_Api):
    pvc: PvcSource | None = None
    cache: CacheSource | None = None
    endpoint: EndpointSource | None = None
    random_weights: RandomWeightsSource | None = Field(default=None, alias="randomWeights")


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

    @field_validator("disqualifying_flags")
    @classmethod
    def _configurable(cls, flags: list[Flag]) -> list[Flag]:
        bad = [f.value for f in flags if f not in CONFIGURABLE_FLAGS]
        if bad:
            raise ValueError(f"flags {bad} cannot be made disqualifying by a policy")
        return flags


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
