"""The ModelQualification status: its words (phase, conditions, reasons) and its schema. Pure.

The apiserver drops a status key its CRD does not define without a word, so a misspelt key is
lost in silence. The models below mirror the `status` of
crds/modelgrid.firmus.ai_modelqualifications.yaml, every property with its JSON type
(tests/unit/test_api_drift.py fails when they drift), and `statuspatch.validate_status_patch`
refuses a merge patch that writes anything else. Ranges and lengths are left to the apiserver,
which refuses a value outside them loudly (422).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field

from modelgrid_contract.reasons import Reason as WireReason
from modelgrid_operator.apimodel import ApiModel


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


# --------------------------------------------------------------------------- status schema

VerificationResult = Literal["Verified", "Failed", "NoClaims"]
ClaimMetric = Literal[
    "avgPowerW", "peakPowerW", "powerCV", "joulesPerToken", "tokensPerJoule", "targetTier"
]


class _Status(ApiModel):
    # What the operator writes: a key the CRD does not have would be pruned, so none is taken.
    model_config = ConfigDict(extra="forbid")


class Condition(_Status):
    """One kstatus condition (metav1.Condition), of a type the operator sets; the CRD requires
    all but observedGeneration."""

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition_time: str = Field(alias="lastTransitionTime")
    observed_generation: int | None = Field(None, alias="observedGeneration")


class ProgressStatus(_Status):
    stage: str | None = None
    run: int | None = None
    runs: int | None = None
    level: int | None = None
    levels: int | None = None
    requests_done: int | None = Field(None, alias="requestsDone")
    requests_total: int | None = Field(None, alias="requestsTotal")
    eta_seconds: float | None = Field(None, alias="etaSeconds")
    summary: str | None = None
    updated_at: str | None = Field(None, alias="updatedAt")
    changed_at: str | None = Field(None, alias="changedAt")


class Spread(_Status):
    """Statistics of one figure over runs: a sweep level's efficiency."""

    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    range: float | None = None
    cv: float | None = None


class RunSpread(Spread):
    """One metric's run-to-run statistics (measured.runToRun), with how many runs had it."""

    n: int | None = None


class SweepLevel(_Status):
    concurrency: int | None = None
    runs: int | None = None
    tokens_per_second: float | None = Field(None, alias="tokensPerSecond")
    ttft_p50_ms: float | None = Field(None, alias="ttftP50Ms")
    avg_power_w: float | None = Field(None, alias="avgPowerW")
    power_cv: float | None = Field(None, alias="powerCV")
    joules_per_token: float | None = Field(None, alias="joulesPerToken")
    speedup: float | None = None
    efficiency: Spread | None = None
    contended_runs: int | None = Field(None, alias="contendedRuns")


class SweepStatus(_Status):
    tier_concurrency: int | None = Field(None, alias="tierConcurrency")
    levels: list[SweepLevel] | None = None


class MeasuredRun(_Status):
    run: int | None = None
    power_cv: float | None = Field(None, alias="powerCV")
    avg_power_w: float | None = Field(None, alias="avgPowerW")
    joules_per_token: float | None = Field(None, alias="joulesPerToken")
    tokens_per_second: float | None = Field(None, alias="tokensPerSecond")


class WorkDoneFigures(_Status):
    joules_per_token_above_idle: float | None = Field(None, alias="joulesPerTokenAboveIdle")
    gpu_util_percent: float | None = Field(None, alias="gpuUtilPercent")
    engine_processes: int | None = Field(None, alias="engineProcesses")
    engine_on_gpu_expected: bool | None = Field(None, alias="engineOnGpuExpected")


class WindowCounts(_Status):
    used: int | None = None
    excluded: int | None = None
    min_per_run: int | None = Field(None, alias="minPerRun")
    missing_readings: int | None = Field(None, alias="missingReadings")
    readings: int | None = None
    ci_method: str | None = Field(None, alias="ciMethod")


class Digests(_Status):
    """sha256 of the evidence files a result was derived from."""

    trace_sha256: str | None = Field(None, alias="traceSha256")
    telemetry_sha256: str | None = Field(None, alias="telemetrySha256")
    columns_sha256: str | None = Field(None, alias="columnsSha256")


class Measured(_Status):
    power_cv: float | None = Field(None, alias="powerCV")
    power_cv_low: float | None = Field(None, alias="powerCVLow")
    power_cv_high: float | None = Field(None, alias="powerCVHigh")
    power_cv_instant: float | None = Field(None, alias="powerCVInstant")
    avg_power_w: float | None = Field(None, alias="avgPowerW")
    peak_power_w: float | None = Field(None, alias="peakPowerW")
    power_std_w: float | None = Field(None, alias="powerStdW")
    p95_power_w: float | None = Field(None, alias="p95PowerW")
    joules_per_token: float | None = Field(None, alias="joulesPerToken")
    tokens_per_joule: float | None = Field(None, alias="tokensPerJoule")
    tokens_per_second: float | None = Field(None, alias="tokensPerSecond")
    ttft_seconds: float | None = Field(None, alias="ttftSeconds")
    energy_j: float | None = Field(None, alias="energyJ")
    duration_seconds: float | None = Field(None, alias="durationSeconds")
    output_tokens: int | None = Field(None, alias="outputTokens")
    idle_power_w: float | None = Field(None, alias="idlePowerW")
    wh_per_1k_queries: float | None = Field(None, alias="whPer1kQueries")
    energy_discrepancy_pct: float | None = Field(None, alias="energyDiscrepancyPct")
    tier_metric: str | None = Field(None, alias="tierMetric")
    cv_time_scale_seconds: float | None = Field(None, alias="cvTimeScaleSeconds")
    sample_interval_seconds: float | None = Field(None, alias="sampleIntervalSeconds")
    runs: list[MeasuredRun] | None = None
    run_to_run: dict[str, RunSpread] | None = Field(None, alias="runToRun")
    work_done: WorkDoneFigures | None = Field(None, alias="workDone")
    windows: WindowCounts | None = None
    evidence: Digests | None = None


class TierStatus(_Status):
    name: str | None = None
    number: int | None = None
    label: str | None = None
    stability: str | None = None
    discount_percent: float | None = Field(None, alias="discountPercent")


class ClaimCheck(_Status):
    """One claim against the measurement; the CRD requires its metric (the list's map key)."""

    metric: ClaimMetric
    claimed: float | None = None
    measured: float | None = None
    delta_percent: float | None = Field(None, alias="deltaPercent")
    tolerance_percent: float | None = Field(None, alias="tolerancePercent")
    within_tolerance: bool | None = Field(None, alias="withinTolerance")


class Verification(_Status):
    result: VerificationResult | None = None
    claims: list[ClaimCheck] | None = None


class PolicyStatus(_Status):
    name: str | None = None
    generation: int | None = None


class EngineStatus(_Status):
    name: str | None = None
    version: str | None = None
    startup_seconds: float | None = Field(None, alias="startupSeconds")
    command_sha256: str | None = Field(None, alias="commandSha256")


class EnvironmentStatus(_Status):
    gpu: str | None = None
    gpu_count: int | None = Field(None, alias="gpuCount")
    driver: str | None = None
    cuda: str | None = None
    node: str | None = None
    simulated: bool | None = None
    source: str | None = None
    engine: EngineStatus | None = None


class EvidenceStatus(_Status):
    kept: bool | None = None
    claim_name: str | None = Field(None, alias="claimName")
    path: str | None = None
    pod: str | None = None
    trace_sha256: str | None = Field(None, alias="traceSha256")
    telemetry_sha256: str | None = Field(None, alias="telemetrySha256")
    columns_sha256: str | None = Field(None, alias="columnsSha256")
    message: str | None = None


class HistoryEntry(_Status):
    completed_at: str | None = Field(None, alias="completedAt")
    tier: int | None = None
    discount_percent: float | None = Field(None, alias="discountPercent")
    power_cv: float | None = Field(None, alias="powerCV")
    avg_power_w: float | None = Field(None, alias="avgPowerW")
    verification: VerificationResult | None = None
    policy: str | None = None


class QualificationStatus(_Status):
    """A ModelQualification's status as its CRD defines it (date-times are RFC 3339 strings)."""

    observed_generation: int | None = Field(None, alias="observedGeneration")
    phase: Phase | None = None
    conditions: list[Condition] | None = None
    job_name: str | None = Field(None, alias="jobName")
    started_at: str | None = Field(None, alias="startedAt")
    completed_at: str | None = Field(None, alias="completedAt")
    expires_at: str | None = Field(None, alias="expiresAt")
    attempt: int | None = None
    reruns: int | None = None
    lost_results: int | None = Field(None, alias="lostResults")
    result: str | None = None
    progress: ProgressStatus | None = None
    sweep: SweepStatus | None = None
    measured: Measured | None = None
    tier: TierStatus | None = None
    discount_percent: float | None = Field(None, alias="discountPercent")
    qualified: bool | None = None
    discount_approved: bool | None = Field(None, alias="discountApproved")
    verification: Verification | None = None
    reasoning: str | None = None
    policy: PolicyStatus | None = None
    environment: EnvironmentStatus | None = None
    evidence: EvidenceStatus | None = None
    flags: list[str] | None = None
    history: list[HistoryEntry] | None = None
