"""The reconcile decision on every path, from Job, pod and policy objects shaped like the API's.

Valid termination messages are real: evidence from tests.factory, analysed by the benchmark's own
analysis and encoded by its own `encode_compact`, never hand-written JSON.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
from typing import Any

import pytest

from modelgrid_bench.analysis import analyze
from modelgrid_contract.result import TERMINATION_MESSAGE_LIMIT_BYTES, BenchFailure, PowerSourceKind
from modelgrid_contract.wire import decode_compact, encode_compact
from modelgrid_operator.api import QualificationSpec
from modelgrid_operator.blocked import job_refused
from modelgrid_operator.jobs import JobSettings, build_job, job_name
from modelgrid_operator.outcome import (
    QUEUE_RECHECK_S,
    ActionKind,
    Decision,
    Observed,
    parse_duration,
)
from modelgrid_operator.podstate import slim_job, slim_pod
from modelgrid_operator.reconcile import decide
from modelgrid_operator.verdict import workload_digest
from tests import factory as f

NAME = "llama-8b"
NS = "team-a"
UID = "5b0e7c1a-3f2d-4c8e-9a61-0d2f4b7e9c13"
T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
SETTINGS = JobSettings()
UNSCHEDULABLE_MSG = (
    "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/"
    "control-plane: }, 2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."
)

# The shipped model-card TierPolicy (crds/tierpolicies/model-card.yaml) as the apiserver serves it.
MODEL_CARD: dict[str, Any] = {
    "apiVersion": "modelgrid.firmus.ai/v1alpha1",
    "kind": "TierPolicy",
    "metadata": {"name": "model-card", "generation": 1, "uid": "policy-uid-1"},
    "spec": {
        "tierMetric": "power_cv_1s",
        "tiers": [
            {
                "name": "tier-1",
                "number": 1,
                "label": "Tier 1 - Low Variance",
                "stability": "Stable",
                "discountPercent": 20,
                "maxCV": 0.10,
                "cvBoundary": "Exclusive",
                "maxAvgPowerW": 150,
                "powerBoundary": "Exclusive",
            },
            {
                "name": "tier-2",
                "number": 2,
                "label": "Tier 2 - Medium Variance",
                "stability": "Moderate",
                "discountPercent": 10,
                "maxCV": 0.15,
                "cvBoundary": "Exclusive",
                "maxAvgPowerW": 200,
                "powerBoundary": "Exclusive",
            },
            {
                "name": "tier-3",
                "number": 3,
                "label": "Tier 3 - High Variance",
                "stability": "Unstable",
                "discountPercent": 0,
            },
        ],
        "tolerancesPercent": {
            "avgPowerW": 10,
            "peakPowerW": 15,
            "powerCV": 20,
            "joulesPerToken": 10,
            "tokensPerJoule": 10,
        },
        "discountRequiresClaimsWithinTolerance": True,
        "requireAttestation": True,
        "borderline": "WorseTier",
        "maxReruns": 1,
        "allowSimulated": False,
    },
}


def policy(generation: int = 1, **spec: Any) -> dict[str, Any]:
    p = copy.deepcopy(MODEL_CARD)
    p["metadata"]["generation"] = generation
    p["spec"].update(spec)
    return p


def spec_dict(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {
            "name": "llama-8b",
            "source": {"randomWeights": {"architecture": "llama-3.1-8b"}},
        },
        "hardware": {"gpuProduct": "NVIDIA-H200", "gpuCount": 1},
        "attestation": {
            "organization": "Example Labs",
            "declarations": {
                "onH200Infrastructure": True,
                "followsMethodology": True,
                "typicalWorkload": True,
                "noManipulation": True,
                "acceptsVerification": True,
            },
        },
    }
    body.update(fields)
    return body


def observe(
    *,
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    tier_policy: dict[str, Any] | None = MODEL_CARD,
    job: dict[str, Any] | None = None,
    pods: list[dict[str, Any]] | None = None,
    stale: list[str] | None = None,
    active: int = 0,
    max_concurrent: int = 4,
    generation: int = 1,
    now: dt.datetime = T0,
    nonce: str = f.JOB_NONCE,
    volumes: dict[str, dict[str, Any] | None] | None = None,
) -> Observed:
    return Observed(
        name=NAME,
        namespace=NS,
        uid=UID,
        generation=generation,
        spec=spec if spec is not None else spec_dict(),
        status=status or {},
        policy_name="model-card",
        policy=tier_policy,
        job=job,
        pods=pods or [],
        stale_jobs=stale or [],
        active_benchmarks=active,
        max_concurrent=max_concurrent,
        now=now,
        nonce=nonce,
        volumes=volumes or {},
    )


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def merged(old: dict[str, Any], d: Decision) -> dict[str, Any]:
    """The status after the handler's merge patch (top-level keys replaced)."""
    return {**old, **d.status}


def cond(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    (c,) = [c for c in status["conditions"] if c["type"] == ctype]
    return c  # type: ignore[no-any-return]


def stalled_in(d: Decision, phase: str, reason: str) -> dict[str, Any]:
    """The Stalled condition of a decision that stops in `phase` for `reason`, no Job made."""
    assert d.action is ActionKind.NONE
    assert d.status["phase"] == phase
    stalled = cond(d.status, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", reason)
    return stalled


def assert_kstatus(status: dict[str, Any], ready: str, reconciling: str, stalled: str) -> None:
    got = tuple(cond(status, t)["status"] for t in ("Ready", "Reconciling", "Stalled"))
    assert got == (ready, reconciling, stalled)


# --------------------------------------------------------------------------- results


TWO_RUNS = ((1.0, 13.0), (13.5, 25.5))
#: What the GPU draws between the runs: the work-done gate needs load above it.
IDLE_W = 60.0


@functools.cache
def real_result(
    half_swing_w: float = 5.0,
    *,
    kind: PowerSourceKind = PowerSourceKind.NVML,
    gpus: int = 1,
    seed: int = 0,
    processes: int = 1,
    nonce: str | None = f.JOB_NONCE,
) -> str:
    """A real termination message: 2 runs of 12 s around 100 W, analysed and encoded."""
    tel = (
        f.telemetry(
            26.0, gpus=gpus, process_count=lambda t: processes, util_pct=f.busy_in(TWO_RUNS)
        )
        if processes != 1
        else None
    )
    ev = f.evidence(
        f.square(100.0 - half_swing_w, 100.0 + half_swing_w, 3.0),
        list(TWO_RUNS),
        kind=kind,
        gpus=gpus,
        seed=seed,
        tel=tel,
        idle_w=IDLE_W,
        job_nonce=nonce,
    )
    return encode_compact(analyze(ev))


def test_the_real_results_are_what_the_tests_assume() -> None:
    good = decode_compact(real_result())
    assert good.ok
    assert not good.simulated
    assert not good.flags
    assert good.gpu.name == "NVIDIA H200"
    assert good.gpu.count == 1
    assert good.workload_digest == workload_digest(QualificationSpec.model_validate(spec_dict()))
    assert good.power_cv is not None
    assert good.power_cv_ci95 is not None
    assert good.power_cv < 0.10
    assert good.power_cv_ci95[1] < 0.10
    assert good.avg_power_watts == pytest.approx(100.0, rel=1e-3)
    border = decode_compact(real_result(12.0))
    assert border.power_cv is not None
    assert border.power_cv_ci95 is not None
    assert border.power_cv < 0.10 < border.power_cv_ci95[1]  # tier 1, but its CI crosses 0.10
    assert decode_compact(real_result(kind=PowerSourceKind.REPLAY)).simulated


# --------------------------------------------------------------------------- API objects


def job_object(
    manifest: dict[str, Any],
    *conditions: dict[str, Any],
    suspend: bool | None = None,
    active: int = 0,
) -> dict[str, Any]:
    """The Job as the apiserver returns it after creating `manifest`."""
    job = copy.deepcopy(manifest)
    job["metadata"].update(
        {"uid": "job-uid-" + manifest["metadata"]["name"], "creationTimestamp": iso(T0)}
    )
    if suspend is not None:
        job["spec"]["suspend"] = suspend
    status: dict[str, Any] = {}
    if active:
        status.update({"active": active, "startTime": iso(T0), "ready": 0})
    if conditions:
        status["conditions"] = [
            {
                "lastProbeTime": iso(T0),
                "lastTransitionTime": iso(T0),
                "status": "True",
                "message": "",
                **c,
            }
            for c in conditions
        ]
    job["status"] = status
    return job


COMPLETE = (
    {
        "type": "SuccessCriteriaMet",
        "reason": "CompletionsReached",
        "message": "Reached expected number of succeeded pods",
    },
    {
        "type": "Complete",
        "reason": "CompletionsReached",
        "message": "Reached expected number of succeeded pods",
    },
)


def failed(reason: str, message: str) -> tuple[dict[str, Any], ...]:
    return (
        {"type": "FailureTarget", "reason": reason, "message": message},
        {"type": "Failed", "reason": reason, "message": message},
    )


def pod(
    job: str,
    phase: str,
    *,
    created: str = "2026-03-01T12:00:05Z",
    scheduled: bool | None = True,
    terminated: dict[str, Any] | None = None,
    node: str = "gpu-node-7",
) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = []
    if scheduled is False:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": UNSCHEDULABLE_MSG,
                "lastTransitionTime": created,
            }
        )
    elif scheduled:
        conditions.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": created})
    state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
    if phase == "Running":
        state = {"running": {"startedAt": created}}
    if terminated is not None:
        state = {
            "terminated": {
                "containerID": "containerd://abc",
                "startedAt": created,
                "finishedAt": "2026-03-01T12:10:00Z",
                **terminated,
            }
        }
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job}-{created[-3:-1]}xkq",
            "namespace": NS,
            "creationTimestamp": created,
            "labels": {"job-name": job, "batch.kubernetes.io/job-name": job},
        },
        "spec": {"containers": [{"name": "benchmark"}]},
        "status": {"phase": phase, "conditions": conditions},
    }
    if scheduled:
        body["spec"]["nodeName"] = node
    if phase != "Pending" or terminated is not None:
        body["status"]["containerStatuses"] = [
            {"name": "benchmark", "ready": phase == "Running", "restartCount": 0, "state": state}
        ]
    return body


def succeeded_pod(job: str, message: str) -> dict[str, Any]:
    return pod(
        job,
        "Succeeded",
        terminated={"exitCode": 0, "reason": "Completed", "message": message},
    )


def failed_pod(
    job: str, code: int, message: str, created: str = "2026-03-01T12:00:05Z"
) -> dict[str, Any]:
    return pod(
        job,
        "Failed",
        created=created,
        terminated={"exitCode": code, "reason": "Error", "message": message},
    )


def started(**kw: Any) -> tuple[Decision, dict[str, Any], dict[str, Any]]:
    """decide() on a fresh qualification: the decision, the status after it, and its Job."""
    d = decide(observe(**kw), SETTINGS)
    assert d.action is ActionKind.CREATE_JOB
    assert d.job is not None
    return d, merged({}, d), d.job


def completed(
    message: str, *, spec: dict[str, Any] | None = None, tier_policy: dict[str, Any] = MODEL_CARD
) -> tuple[Decision, dict[str, Any]]:
    """Create the Job, let it complete with `message`, decide again."""
    _, status, manifest = started(spec=spec, tier_policy=tier_policy)
    name = manifest["metadata"]["name"]
    d = decide(
        observe(
            spec=spec,
            tier_policy=tier_policy,
            status=status,
            job=job_object(manifest, *COMPLETE),
            pods=[succeeded_pod(name, message)],
            now=T0 + dt.timedelta(minutes=12),
        ),
        SETTINGS,
    )
    return d, merged(status, d)


# --------------------------------------------------------------------------- starting


def test_no_job_creates_one() -> None:
    d = decide(observe(), SETTINGS)
    assert d.action is ActionKind.CREATE_JOB
    spec = QualificationSpec.model_validate(spec_dict())
    want = build_job(
        name=NAME,
        namespace=NS,
        uid=UID,
        generation=1,
        spec=spec,
        settings=SETTINGS,
        nonce=f.JOB_NONCE,
    )
    assert d.job == want
    st = d.status
    assert st["phase"] == "Scheduling"
    assert st["observedGeneration"] == 1
    assert st["attempt"] == 0
    assert st["jobName"] == want["metadata"]["name"] == job_name(NAME, UID, 1, 0)
    assert st["startedAt"] == iso(T0)
    assert_kstatus(st, "False", "True", "False")
    assert cond(st, "Reconciling")["reason"] == "JobCreated"
    assert cond(st, "Scheduled")["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in st["conditions"])
    assert all(c["lastTransitionTime"] == iso(T0) for c in st["conditions"])
    assert [(t, r) for t, r, _ in d.events] == [("Normal", "JobCreated")]
    assert want["metadata"]["name"] in d.events[0][2]
    assert d.delete_jobs == []


def test_the_concurrency_cap_queues_without_a_job() -> None:
    d = decide(observe(active=4, max_concurrent=4), SETTINGS)
    assert d.action is ActionKind.NONE
    assert d.job is None
    assert d.status["phase"] == "Queued"
    assert_kstatus(d.status, "False", "True", "False")
    assert cond(d.status, "Reconciling")["reason"] == "Queued"
    assert "4 of 4" in cond(d.status, "Reconciling")["message"]
    assert d.requeue_after_s == QUEUE_RECHECK_S
    assert d.requeue_after_s > 0
    assert [(t, r) for t, r, _ in d.events] == [("Normal", "Queued")]
    # still queued: no second event
    again = decide(observe(status=merged({}, d), active=5, max_concurrent=4), SETTINGS)
    assert again.action is ActionKind.NONE
    assert again.events == []
    # a slot frees: the Job is created
    freed = decide(observe(status=merged({}, d), active=3, max_concurrent=4), SETTINGS)
    assert freed.action is ActionKind.CREATE_JOB
    assert freed.status["phase"] == "Scheduling"


def test_a_queue_name_leaves_admission_to_kueue() -> None:
    spec = spec_dict(queueName="gpu-bench")
    d = decide(observe(spec=spec, active=10, max_concurrent=4), SETTINGS)
    assert d.action is ActionKind.CREATE_JOB
    assert d.job is not None
    assert d.job["spec"]["suspend"] is True
    assert d.job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-bench"


def test_a_suspended_job_is_queued_waiting_for_kueue() -> None:
    spec = spec_dict(queueName="gpu-bench")
    _, status, manifest = started(spec=spec)
    d = decide(observe(spec=spec, status=status, job=job_object(manifest, suspend=True)), SETTINGS)
    assert d.action is ActionKind.NONE
    assert d.status["phase"] == "Queued"
    assert_kstatus(d.status, "False", "True", "False")
    reconciling = cond(d.status, "Reconciling")
    assert reconciling["reason"] == "Queued"
    assert "Kueue" in reconciling["message"]
    assert "gpu-bench" in reconciling["message"]
    assert cond(d.status, "Scheduled")["status"] == "False"
    assert d.status["jobName"] == manifest["metadata"]["name"]


def test_an_unschedulable_pod_says_why() -> None:
    _, status, manifest = started()
    name = manifest["metadata"]["name"]
    d = decide(
        observe(
            status=status,
            job=job_object(manifest, active=1),
            pods=[pod(name, "Pending", scheduled=False)],
        ),
        SETTINGS,
    )
    assert d.action is ActionKind.NONE
    assert d.status["phase"] == "Scheduling"
    assert_kstatus(d.status, "False", "True", "False")
    sched = cond(d.status, "Scheduled")
    assert (sched["status"], sched["reason"], sched["message"]) == (
        "False",
        "Unschedulable",
        UNSCHEDULABLE_MSG,
    )
    assert cond(d.status, "Reconciling")["reason"] == "Unschedulable"
    assert "NVIDIA-H200" in cond(d.status, "Ready")["message"]


def test_a_pod_not_yet_looked_at_by_the_scheduler_is_pending() -> None:
    _, status, manifest = started()
    name = manifest["metadata"]["name"]
    d = decide(
        observe(
            status=status,
            job=job_object(manifest, active=1),
            pods=[pod(name, "Pending", scheduled=None)],
        ),
        SETTINGS,
    )
    assert d.status["phase"] == "Scheduling"
    assert cond(d.status, "Scheduled")["status"] == "False"
    assert cond(d.status, "Scheduled")["reason"] == "Pending"


def test_a_running_pod_is_running_and_scheduled() -> None:
    _, status, manifest = started()
    name = manifest["metadata"]["name"]
    d = decide(
        observe(status=status, job=job_object(manifest, active=1), pods=[pod(name, "Running")]),
        SETTINGS,
    )
    assert d.action is ActionKind.NONE
    assert d.status["phase"] == "Running"
    assert_kstatus(d.status, "False", "True", "False")
    sched = cond(d.status, "Scheduled")
    assert sched["status"] == "True"
    assert "gpu-node-7" in sched["message"]
    assert cond(d.status, "Reconciling")["reason"] == "BenchmarkRunning"


# --------------------------------------------------------------------------- a verdict


def test_a_complete_job_with_a_valid_result_succeeds() -> None:
    spec = spec_dict(claims={"avgPowerW": 105, "powerCV": 0.05, "targetTier": 1})
    raw = real_result()
    d, status = completed(raw, spec=spec)
    assert d.action is ActionKind.NONE
    assert d.job is None
    now = T0 + dt.timedelta(minutes=12)
    assert status["phase"] == "Succeeded"
    assert status["observedGeneration"] == 1
    assert_kstatus(status, "True", "False", "False")
    assert cond(status, "Ready")["reason"] == "Qualified"
    assert cond(status, "Verified")["status"] == "True"
    assert cond(status, "Verified")["reason"] == "ClaimsVerified"
    assert cond(status, "Scheduled")["status"] == "True"
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])
    assert status["tier"] == {
        "name": "tier-1",
        "number": 1,
        "label": "Tier 1 - Low Variance",
        "stability": "Stable",
        "discountPercent": 20,
    }
    assert status["discountPercent"] == 20
    assert status["qualified"] is True
    assert status["discountApproved"] is True
    compact = decode_compact(raw)
    assert status["measured"]["powerCV"] == compact.power_cv
    assert status["measured"]["avgPowerW"] == compact.avg_power_watts
    assert status["measured"]["powerCVHigh"] == compact.power_cv_ci95[1]  # type: ignore[index]
    assert len(status["measured"]["runs"]) == 2
    assert status["verification"]["result"] == "Verified"
    assert {c["metric"] for c in status["verification"]["claims"]} == {
        "avgPowerW",
        "powerCV",
        "targetTier",
    }
    assert all(c["withinTolerance"] for c in status["verification"]["claims"])
    assert "Tier 1" in status["reasoning"]
    assert "Discount approved: 20%" in status["reasoning"]
    assert status["policy"] == {"name": "model-card", "generation": 1}
    assert status["environment"] == {
        "gpu": "NVIDIA H200",
        "gpuCount": 1,
        "driver": "570.00",
        "cuda": "",
        "node": "",
        "simulated": False,
        "source": "nvml",
    }
    assert status["result"] == raw
    assert status["completedAt"] == iso(now)
    assert status["expiresAt"] == iso(now + dt.timedelta(days=365))
    assert status["history"] == [
        {
            "completedAt": iso(now),
            "tier": 1,
            "discountPercent": 20,
            "powerCV": compact.power_cv,
            "avgPowerW": compact.avg_power_watts,
            "verification": "Verified",
            "policy": "model-card",
        }
    ]
    assert [(t, r) for t, r, _ in d.events] == [("Normal", "Qualified")]


def test_claims_outside_tolerance_are_ready_but_not_qualified() -> None:
    spec = spec_dict(claims={"avgPowerW": 80})  # measured 100 W: +25 %, tolerance 10 %
    d, status = completed(real_result(), spec=spec)
    assert status["phase"] == "Succeeded"
    assert_kstatus(status, "True", "False", "False")
    assert cond(status, "Ready")["reason"] == "NotQualified"
    verified = cond(status, "Verified")
    assert (verified["status"], verified["reason"]) == ("False", "ClaimsOutsideTolerance")
    assert status["tier"]["number"] == 1
    assert status["discountApproved"] is False
    assert status["discountPercent"] == 0
    assert [(t, r) for t, r, _ in d.events] == [("Warning", "NotQualified")]


def test_a_simulated_result_is_accepted_when_the_policy_allows_it() -> None:
    _d, status = completed(
        real_result(kind=PowerSourceKind.REPLAY), tier_policy=policy(allowSimulated=True)
    )
    assert status["phase"] == "Succeeded"
    assert status["environment"]["simulated"] is True
    assert status["environment"]["source"] == "replay"
    assert "Simulated measurement" in status["reasoning"]
    assert "simulated" in status["flags"]


def _with_schema(raw: str, schema: str) -> str:
    obj = json.loads(raw)
    obj["schema"] = schema
    return json.dumps(obj, separators=(",", ":"))


REJECTED = [
    pytest.param(lambda: "{not json", {}, {}, "MalformedResult", "not JSON", id="malformed"),
    pytest.param(
        lambda: json.dumps({**json.loads(real_result()), "tier": "tier_1"}),
        {},
        {},
        "MalformedResult",
        "tier",
        id="unknown-key",
    ),
    pytest.param(
        lambda: real_result() + " " * (TERMINATION_MESSAGE_LIMIT_BYTES + 1 - len(real_result())),
        {},
        {},
        "OversizedResult",
        "4097 bytes",
        id="oversized",
    ),
    pytest.param(lambda: "", {}, {}, "EmptyResult", "no termination message", id="empty"),
    pytest.param(
        lambda: _with_schema(real_result(), "modelgrid.bench/v2"),
        {},
        {},
        "UnknownSchemaVersion",
        "modelgrid.bench/v2",
        id="unknown-schema",
    ),
    pytest.param(
        lambda: real_result(kind=PowerSourceKind.REPLAY),
        {},
        {},
        "SimulatedResult",
        "does not accept simulated",
        id="simulated-forbidden",
    ),
    pytest.param(
        real_result,
        {"hardware": {"gpuProduct": "NVIDIA-H100-80GB-HBM3", "gpuCount": 1}},
        {},
        "WrongGPU",
        "'NVIDIA H200'",
        id="wrong-product",
    ),
    pytest.param(
        real_result,
        {"hardware": {"gpuProduct": "NVIDIA-H200", "gpuCount": 2}},
        {},
        "WrongGPU",
        "1 GPU(s), but 2",
        id="wrong-count",
    ),
    pytest.param(
        lambda: real_result(gpus=2),
        {},
        {},
        "WrongGPU",
        "2 GPU(s), but 1",
        id="more-gpus-than-asked",
    ),
    pytest.param(
        lambda: real_result(seed=7),
        {},
        {},
        "WorkloadMismatch",
        "not the declared",
        id="workload-digest",
    ),
    pytest.param(
        real_result,
        {"workload": {"samples": 21}},
        {},
        "WorkloadMismatch",
        "not the declared",
        id="spec-workload-differs",
    ),
    pytest.param(
        lambda: real_result(processes=2),
        {},
        {},
        "Contention",
        "compute processes",
        id="contention",
    ),
]


@pytest.mark.parametrize(("raw", "spec_over", "policy_over", "reason", "detail"), REJECTED)
def test_an_untrustworthy_result_is_rejected_with_its_reason(
    raw: Any, spec_over: dict[str, Any], policy_over: dict[str, Any], reason: str, detail: str
) -> None:
    d, status = completed(raw(), spec=spec_dict(**spec_over), tier_policy=policy(**policy_over))
    assert d.action is ActionKind.NONE
    assert d.job is None
    assert status["phase"] == "Failed"
    assert_kstatus(status, "False", "False", "True")
    stalled = cond(status, "Stalled")
    assert stalled["reason"] == "ResultRejected"
    assert stalled["message"].startswith(f"{reason}: ")
    assert detail in stalled["message"]
    assert cond(status, "Verified")["status"] == "False"
    for absent in ("tier", "discountPercent", "discountApproved", "result", "expiresAt"):
        assert status.get(absent) is None  # absent, or removed by the merge patch
    assert [(t, r) for t, r, _ in d.events] == [("Warning", "ResultRejected")]
    assert d.events[0][2].startswith(f"{reason}: ")


# --------------------------------------------------------------------------- failures


def test_backoff_limit_exceeded_reports_the_benchmarks_last_failure() -> None:
    _, status, manifest = started()
    name = manifest["metadata"]["name"]
    first = BenchFailure(reason="InternalError", message="RuntimeError: first try", exit_code=1)
    last = BenchFailure(
        reason="DeviceError",
        message="NVML nvmlDeviceGetTotalEnergyConsumption failed: GPU is lost (NVML error 15)",
        exit_code=1,
    )
    pods = [  # newest first: the decision must sort by creation time, not trust list order
        failed_pod(name, 1, last.encode(), created="2026-03-01T12:09:00Z"),
        failed_pod(name, 1, first.encode(), created="2026-03-01T12:00:05Z"),
        failed_pod(name, 1, first.encode(), created="2026-03-01T12:04:00Z"),
    ]
    d = decide(
        observe(
            status=status,
            job=job_object(
                manifest,
                *failed("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
            ),
            pods=pods,
        ),
        SETTINGS,
    )
    assert d.action is ActionKind.NONE
    assert d.status["phase"] == "Failed"
    assert_kstatus(d.status, "False", "False", "True")
    stalled = cond(d.status, "Stalled")
    assert stalled["reason"] == "BackoffLimitExceeded"
    assert "3 times" in stalled["message"]
    assert f"DeviceError: {last.message}" in stalled["message"]
    assert "first try" not in stalled["message"]
    assert [(t, r) for t, r, _ in d.events] == [("Warning", "BackoffLimitExceeded")]


def test_deadline_exceeded_with_a_pod_never_scheduled_says_so() -> None:
    spec = spec_dict(timeoutSeconds=900)
    _, status, manifest = started(spec=spec)
    name = manifest["metadata"]["name"]
    d = decide(
        observe(
            spec=spec,
            status=status,
            job=job_object(
                manifest,
                *failed("DeadlineExceeded", "Job was active longer than specified deadline"),
            ),
            pods=[pod(name, "Pending", scheduled=False)],
        ),
        SETTINGS,
    )
    assert d.status["phase"] == "Failed"
    stalled = cond(d.status, "Stalled")
    assert stalled["reason"] == "DeadlineExceeded"
    assert "timeoutSeconds=900" in stalled["message"]
    assert "never scheduled" in stalled["message"]
    assert "Insufficient nvidia.com/gpu" in stalled["message"]


def test_deadline_exceeded_after_running_does_not_blame_scheduling() -> None:
    _, status, manifest = started()
    name = manifest["metadata"]["name"]
    d = decide(
        observe(
            status=status,
            job=job_object(
                manifest,
                *failed("DeadlineExceeded", "Job was active longer than specified deadline"),
            ),
            pods=[failed_pod(name, 137, "")],
        ),
        SETTINGS,
    )
    stalled = cond(d.status, "Stalled")
    assert stalled["reason"] == "DeadlineExceeded"
    assert "never scheduled" not in stalled["message"]


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        (
            BenchFailure(
                reason="BadInput",
                message="modelgrid-bench: unrecognized arguments: --frobnicate",
                exit_code=2,
            ).encode(),
            "unrecognized arguments: --frobnicate",
        ),
        # FallbackToLogsOnError: no JSON was written, the log tail is the message
        ("Traceback ...\nmodelgrid-bench: error: --model is required\n", "exit code 2"),
    ],
)
def test_a_pod_failure_policy_on_exit_code_2_is_bad_input(message: str, detail: str) -> None:
    _, status, manifest = started()
    name = manifest["metadata"]["name"]
    d = decide(
        observe(
            status=status,
            job=job_object(
                manifest,
                *failed(
                    "PodFailurePolicy",
                    f"Container benchmark for pod {NS}/{name}-x failed with exit code 2 "
                    "matching FailJob rule at index 0",
                ),
            ),
            pods=[failed_pod(name, 2, message)],
        ),
        SETTINGS,
    )
    assert d.status["phase"] == "Failed"
    assert_kstatus(d.status, "False", "False", "True")
    stalled = cond(d.status, "Stalled")
    assert stalled["reason"] == "BadInput"
    assert detail in stalled["message"]
    assert [(t, r) for t, r, _ in d.events] == [("Warning", "BadInput")]


def test_a_failed_qualification_stays_failed_for_its_generation() -> None:
    _, status, manifest = started()
    name = manifest["metadata"]["name"]
    job = job_object(manifest, *failed("BackoffLimitExceeded", "limit"))
    pods = [failed_pod(name, 1, "")]
    d = decide(observe(status=status, job=job, pods=pods), SETTINGS)
    status = merged(status, d)
    again = decide(observe(status=status, job=job, pods=pods), SETTINGS)
    assert again.action is ActionKind.NONE
    assert again.status == {"observedGeneration": 1}
    assert again.events == []


# --------------------------------------------------------------------------- the policy


def test_a_missing_policy_stalls_without_creating_a_job() -> None:
    d = decide(observe(tier_policy=None), SETTINGS)
    assert d.action is ActionKind.NONE
    assert d.job is None
    assert d.status["phase"] == "Pending"
    assert_kstatus(d.status, "False", "False", "True")
    stalled = cond(d.status, "Stalled")
    assert stalled["reason"] == "PolicyNotFound"
    assert "model-card" in stalled["message"]
    assert d.requeue_after_s is not None
    assert [(t, r) for t, r, _ in d.events] == [("Warning", "PolicyNotFound")]
    # once it exists, the Job is created
    later = decide(observe(status=merged({}, d)), SETTINGS)
    assert later.action is ActionKind.CREATE_JOB


def test_an_invalid_policy_or_spec_stalls_without_creating_a_job() -> None:
    d = decide(observe(tier_policy=policy(tiers=[])), SETTINGS)
    assert d.action is ActionKind.NONE
    assert cond(d.status, "Stalled")["reason"] == "PolicyInvalid"
    bad = spec_dict(hardware={"gpuProduct": "NVIDIA-H200", "gpuCount": 9})
    stalled = stalled_in(decide(observe(spec=bad), SETTINGS), "Failed", "SpecInvalid")
    # in a person's words: the field and what is wrong, no pydantic link or input echo
    assert "hardware.gpuCount: Input should be less than or equal to 8" in stalled["message"]
    assert "errors.pydantic.dev" not in stalled["message"]
    assert "input_value" not in stalled["message"]
    policy_msg = cond(decide(observe(tier_policy=policy(tiers=[])), SETTINGS).status, "Stalled")
    assert "errors.pydantic.dev" not in policy_msg["message"]
    assert "tiers: " in policy_msg["message"]


def test_a_verdict_stands_until_it_expires() -> None:
    _, status = completed(real_result())
    later = T0 + dt.timedelta(days=30)
    d = decide(observe(status=status, now=later), SETTINGS)
    assert d.action is ActionKind.NONE
    assert d.job is None
    assert d.status == {"observedGeneration": 1}
    assert d.events == []
    expires = dt.datetime.fromisoformat(status["expiresAt"].replace("Z", "+00:00"))
    assert d.requeue_after_s == pytest.approx((expires - later).total_seconds())


def test_a_policy_change_re_evaluates_the_stored_result_without_a_job() -> None:
    _, status = completed(real_result())
    tiers = copy.deepcopy(MODEL_CARD["spec"]["tiers"])
    tiers[0]["discountPercent"] = 25
    later = T0 + dt.timedelta(days=30)
    d = decide(observe(status=status, tier_policy=policy(2, tiers=tiers), now=later), SETTINGS)
    assert d.action is ActionKind.NONE
    assert d.job is None
    new = merged(status, d)
    assert new["phase"] == "Succeeded"
    assert new["tier"]["discountPercent"] == 25
    assert new["discountPercent"] == 25
    assert new["policy"] == {"name": "model-card", "generation": 2}
    assert new["result"] == status["result"]
    assert len(new["history"]) == 2
    # re-pricing an old measurement does not postpone its re-verification
    assert new["expiresAt"] == status["expiresAt"]
    assert len(d.events) == 1
    assert "re-evaluated" in d.events[0][2]
    assert "generation 2" in d.events[0][2]
    # and then it stands again
    again = decide(observe(status=new, tier_policy=policy(2, tiers=tiers), now=later), SETTINGS)
    assert again.status == {"observedGeneration": 1}


def test_a_policy_change_that_now_rejects_the_result_fails_it() -> None:
    allow = policy(allowSimulated=True)
    _, status = completed(real_result(kind=PowerSourceKind.REPLAY), tier_policy=allow)
    assert status["phase"] == "Succeeded"
    d = decide(observe(status=status, tier_policy=policy(2, allowSimulated=False)), SETTINGS)
    assert d.action is ActionKind.NONE
    assert d.status["phase"] == "Failed"
    assert cond(d.status, "Stalled")["reason"] == "ResultRejected"
    assert "SimulatedResult" in cond(d.status, "Stalled")["message"]
    assert "re-evaluated" in d.events[0][2]


def test_a_restored_policy_makes_the_standing_verdict_ready_again() -> None:
    _, status = completed(real_result())
    gone = decide(observe(status=status, tier_policy=None), SETTINGS)
    status = merged(status, gone)
    assert status["phase"] == "Succeeded"
    assert_kstatus(status, "False", "False", "True")
    # recreated from the same manifest: generation 1 again, as stored in status.policy
    back = decide(observe(status=status), SETTINGS)
    status = merged(status, back)
    assert back.action is ActionKind.NONE
    assert_kstatus(status, "True", "False", "False")
    assert status["tier"]["number"] == 1


def test_an_expired_verdict_starts_a_fresh_attempt() -> None:
    _, status = completed(real_result())
    expires = dt.datetime.fromisoformat(status["expiresAt"].replace("Z", "+00:00"))
    d = decide(observe(status=status, now=expires), SETTINGS)
    assert d.action is ActionKind.CREATE_JOB
    assert d.job is not None
    assert d.status["attempt"] == 1
    assert d.status["reruns"] == 0
    assert d.job["metadata"]["name"] == job_name(NAME, UID, 1, 1)
    assert d.job["metadata"]["name"] != status["jobName"]
    assert d.job["metadata"]["labels"]["modelgrid.firmus.ai/attempt"] == "1"
    assert d.status["phase"] == "Scheduling"
    assert d.status["jobName"] == d.job["metadata"]["name"]
    assert [(t, r) for t, r, _ in d.events] == [("Normal", "ReverifyDue")]
    # a second before expiry nothing happens
    early = decide(observe(status=status, now=expires - dt.timedelta(seconds=1)), SETTINGS)
    assert early.action is ActionKind.NONE


def test_a_verdict_stored_before_results_were_bound_is_measured_again_not_repriced() -> None:
    _, status = completed(real_result())
    stored = json.loads(status["result"])
    del stored["job_nonce"]  # what an operator before the nonce stored
    old = {**status, "result": json.dumps(stored)}
    for tier_policy in (MODEL_CARD, policy(2)):  # standing, and under a changed policy
        d = decide(observe(status=old, tier_policy=tier_policy), SETTINGS)
        assert d.action is ActionKind.CREATE_JOB
        assert d.status["attempt"] == 1
        assert d.status["tier"] is None  # the unbound price is withdrawn while it runs
        assert [(t, r) for t, r, _ in d.events] == [("Normal", "ReverifyDue")]
        assert "before results were bound" in d.events[0][2]


# --------------------------------------------------------------------------- a spec change


def test_a_spec_change_supersedes_the_running_job() -> None:
    _, status, manifest = started()
    old = manifest["metadata"]["name"]
    running = decide(
        observe(status=status, job=job_object(manifest, active=1), pods=[pod(old, "Running")]),
        SETTINGS,
    )
    status = merged(status, running)
    spec = spec_dict(workload={"samples": 40})
    d = decide(observe(spec=spec, status=status, generation=2, stale=[old]), SETTINGS)
    assert d.action is ActionKind.CREATE_JOB
    assert d.job is not None
    assert d.delete_jobs == [old]
    assert d.job["metadata"]["name"] == job_name(NAME, UID, 2, 0) != old
    assert d.status["observedGeneration"] == 2
    assert d.status["attempt"] == 0
    assert d.status["phase"] == "Scheduling"
    assert all(c["observedGeneration"] == 2 for c in d.status["conditions"])
    args = d.job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert '"samples":40' in args[args.index("--workload-json") + 1]


def test_a_spec_change_supersedes_the_old_job_even_when_it_must_queue() -> None:
    # The superseded Job itself holds the only slot; keeping it would block the new generation
    # until the old benchmark ran to the end, only to throw its result away.
    _, status, manifest = started()
    old = manifest["metadata"]["name"]
    spec = spec_dict(workload={"samples": 40})
    d = decide(
        observe(spec=spec, status=status, generation=2, stale=[old], active=1, max_concurrent=1),
        SETTINGS,
    )
    assert d.action is ActionKind.NONE
    assert d.status["phase"] == "Queued"
    assert d.delete_jobs == [old]


def test_a_spec_change_after_a_verdict_runs_the_new_generation() -> None:
    _, status = completed(real_result())
    d = decide(
        observe(spec=spec_dict(samplingIntervalMs=10), status=status, generation=2), SETTINGS
    )
    assert d.action is ActionKind.CREATE_JOB
    assert d.job is not None
    assert d.job["metadata"]["name"] == job_name(NAME, UID, 2, 0)
    assert d.status["observedGeneration"] == 2


# --------------------------------------------------------------------------- borderline


def test_a_borderline_result_under_worse_tier_gets_the_worse_tier_at_once() -> None:
    d, status = completed(real_result(12.0))
    assert d.action is ActionKind.NONE
    assert status["phase"] == "Succeeded"
    assert status["tier"]["number"] == 2
    assert status["discountPercent"] == 10
    assert "borderline" in status["flags"]


@pytest.mark.parametrize("max_reruns", [1, 2])
def test_a_borderline_result_under_rerun_reruns_then_takes_the_worse_tier(max_reruns: int) -> None:
    rerun = policy(borderline="Rerun", maxReruns=max_reruns)
    raw = real_result(12.0)
    _, status, manifest = started(tier_policy=rerun)
    now = T0
    for attempt in range(max_reruns + 1):
        assert manifest["metadata"]["name"] == job_name(NAME, UID, 1, attempt)
        now += dt.timedelta(minutes=15)
        d = decide(
            observe(
                status=status,
                tier_policy=rerun,
                job=job_object(manifest, *COMPLETE),
                pods=[succeeded_pod(manifest["metadata"]["name"], raw)],
                now=now,
            ),
            SETTINGS,
        )
        status = merged(status, d)
        if attempt < max_reruns:
            assert d.action is ActionKind.CREATE_JOB, f"attempt {attempt}"
            assert d.job is not None
            assert status["attempt"] == attempt + 1
            assert status["reruns"] == attempt + 1
            assert status["phase"] == "Scheduling"
            assert [r for _, r, _ in d.events] == ["BorderlineRerun", "BorderlineRerun"]
            assert f"rerun {attempt + 1} of {max_reruns}" in d.events[0][2]
            manifest = d.job
        else:
            assert d.action is ActionKind.NONE
            assert status["phase"] == "Succeeded"
            assert status["tier"]["number"] == 2
            assert status["discountPercent"] == 10
            assert status["attempt"] == max_reruns
            assert "worse tier applies" in status["reasoning"]


def test_a_rerun_waits_for_a_slot_like_any_job() -> None:
    rerun = policy(borderline="Rerun")
    _, status, manifest = started(tier_policy=rerun)
    d = decide(
        observe(
            status=status,
            tier_policy=rerun,
            job=job_object(manifest, *COMPLETE),
            pods=[succeeded_pod(manifest["metadata"]["name"], real_result(12.0))],
            active=4,
        ),
        SETTINGS,
    )
    assert d.action is ActionKind.NONE
    assert d.status["phase"] == "Queued"
    assert d.status["attempt"] == 1
    assert d.status["reruns"] == 1
    # when a slot frees, the rerun's Job (attempt 1) is created, not attempt 0's again
    status = merged(status, d)
    d = decide(observe(status=status, tier_policy=rerun), SETTINGS)
    assert d.action is ActionKind.CREATE_JOB
    assert d.job is not None
    assert d.job["metadata"]["name"] == job_name(NAME, UID, 1, 1)


# --------------------------------------------------------------------------- conditions


def test_conditions_keep_their_transition_time_while_their_status_holds() -> None:
    _, status, manifest = started()
    name = manifest["metadata"]["name"]
    t1 = T0 + dt.timedelta(minutes=3)
    d = decide(
        observe(
            status=status,
            job=job_object(manifest, active=1),
            pods=[pod(name, "Running")],
            now=t1,
        ),
        SETTINGS,
    )
    after = d.status
    assert cond(after, "Reconciling")["reason"] == "BenchmarkRunning"  # reason changed...
    assert cond(after, "Reconciling")["lastTransitionTime"] == iso(T0)  # ...status did not
    assert cond(after, "Ready")["lastTransitionTime"] == iso(T0)
    assert cond(after, "Stalled")["lastTransitionTime"] == iso(T0)
    assert cond(after, "Scheduled")["lastTransitionTime"] == iso(t1)  # False -> True
    # the same observation later changes nothing
    t2 = t1 + dt.timedelta(minutes=1)
    again = decide(
        observe(
            status=merged(status, d),
            job=job_object(manifest, active=1),
            pods=[pod(name, "Running")],
            now=t2,
        ),
        SETTINGS,
    )
    assert again.status["conditions"] == after["conditions"]


# --------------------------------------------------------------- what the operator cannot run


def test_a_job_the_apiserver_refuses_ends_failed_with_its_words() -> None:
    obs = observe()
    d = decide(obs, SETTINGS)
    message = 'Job.batch "x" is invalid: spec.template.spec.nodeSelector: Invalid value: "syd 1a"'
    refused = job_refused(obs, d, 422, message)
    st = refused.status
    assert st["phase"] == "Failed"
    assert_kstatus(st, "False", "False", "True")
    stalled = cond(st, "Stalled")
    assert stalled["reason"] == "JobRefused"
    assert "(422)" in stalled["message"]
    assert '"syd 1a"' in stalled["message"]
    assert [(t, r) for t, r, _ in refused.events] == [("Warning", "JobRefused")]
    assert refused.action is ActionKind.NONE


def test_a_terminating_benchmark_namespace_stalls_with_its_cause() -> None:
    # Jobs go to the benchmark namespace: a tenant namespace being deleted takes its
    # qualifications with it, so a namespace "being terminated" here is the operator's own.
    obs = observe()
    d = decide(obs, SETTINGS)
    gone = job_refused(
        obs,
        d,
        403,
        "unable to create new content in namespace modelgrid-benchmarks because it is being "
        "terminated",
    )
    assert gone.action is ActionKind.NONE
    assert gone.status["phase"] == "Pending"
    stalled = cond(gone.status, "Stalled")
    assert stalled["reason"] == "BenchmarkNamespaceMissing"
    assert "is being deleted" in stalled["message"]
    assert [(t, r) for t, r, _ in gone.events] == [("Warning", "BenchmarkNamespaceMissing")]


@pytest.mark.parametrize("value", ["0h", "0d", "1827d", "99999999999999d", "43825h"])
def test_a_reverify_period_out_of_bounds_is_a_spec_error_not_a_crash(value: str) -> None:
    d = decide(observe(spec=spec_dict(reverifyAfter=value)), SETTINGS)
    assert d.action is ActionKind.NONE
    assert d.status["phase"] == "Failed"
    stalled = cond(d.status, "Stalled")
    assert stalled["reason"] == "SpecInvalid"
    assert "reverifyAfter" in stalled["message"]


@pytest.mark.parametrize("value", ["1h", "72h", "365d", "1826d"])
def test_reverify_periods_within_bounds_parse(value: str) -> None:
    assert parse_duration(value) > dt.timedelta(0)


# --------------------------------------------------------------------------- binding and isolation


def _completed_with_pods(
    pods: list[dict[str, Any]], manifest: dict[str, Any], status: dict[str, Any]
) -> Decision:
    return decide(
        observe(
            status=status,
            job=job_object(manifest, *COMPLETE),
            pods=pods,
            now=T0 + dt.timedelta(minutes=12),
        ),
        SETTINGS,
    )


def test_the_job_is_created_in_the_benchmark_namespace_with_the_drawn_nonce() -> None:
    d = decide(observe(nonce="ab" * 16), JobSettings(namespace="gpu-bench"))
    assert d.job is not None
    assert d.job["metadata"]["namespace"] == "gpu-bench"
    assert d.job["metadata"]["annotations"]["modelgrid.firmus.ai/job-nonce"] == "ab" * 16
    assert "--job-nonce" in d.job["spec"]["template"]["spec"]["containers"][0]["args"]


def test_a_result_echoing_the_jobs_nonce_is_priced() -> None:
    _, st = completed(real_result())
    assert st["phase"] == "Succeeded"
    assert st["tier"]["number"] == 1


@pytest.mark.parametrize(
    ("nonce", "says"),
    [
        ("ab" * 16, "echoes nonce abababab"),  # another Job's result, replayed
        (None, "echoes nonce none"),  # a result that names no Job
    ],
)
def test_a_result_measured_for_another_job_is_not_priced(nonce: str | None, says: str) -> None:
    d, st = completed(real_result(nonce=nonce))
    assert st["phase"] == "Failed"
    assert not st.get("tier")
    assert st.get("discountPercent") is None
    stalled = cond(st, "Stalled")
    assert stalled["reason"] == "ResultRejected"
    assert stalled["message"].startswith("ResultNotBound: ")
    assert says in stalled["message"]
    assert [(t, r) for t, r, _ in d.events] == [("Warning", "ResultRejected")]


def test_a_job_without_a_nonce_binds_no_result() -> None:
    _, status, manifest = started()
    del manifest["metadata"]["annotations"]["modelgrid.firmus.ai/job-nonce"]
    name = manifest["metadata"]["name"]
    d = _completed_with_pods([succeeded_pod(name, real_result())], manifest, status)
    stalled = cond(merged(status, d), "Stalled")
    assert stalled["reason"] == "ResultRejected"
    assert "carries no nonce" in stalled["message"]


def test_two_succeeded_pods_for_one_run_are_refused_not_guessed_between() -> None:
    _, status, manifest = started()
    name = manifest["metadata"]["name"]
    low = real_result()  # tier 1
    high = real_result(12.0)  # borderline: a different verdict
    pods = [succeeded_pod(name, low), succeeded_pod(name, high)]
    pods[1]["metadata"]["name"] += "-2"
    d = _completed_with_pods(pods, manifest, status)
    st = merged(status, d)
    assert st["phase"] == "Failed"
    assert not st.get("tier")
    stalled = cond(st, "Stalled")
    assert stalled["reason"] == "AmbiguousResult"
    assert "2 succeeded pods" in stalled["message"]
    assert [(t, r) for t, r, _ in d.events] == [("Warning", "AmbiguousResult")]


def test_a_failed_run_says_where_it_ran_not_that_it_was_never_scheduled() -> None:
    _, status, manifest = started()
    name = manifest["metadata"]["name"]
    refusal = BenchFailure(reason="WrongGPU", message="GPU 0 is an H100", exit_code=3).encode()
    pods = [failed_pod(name, 3, refusal, created=f"2026-03-01T12:0{i}:05Z") for i in range(3)]
    d = decide(
        observe(
            status=status,
            job=job_object(manifest, *failed("BackoffLimitExceeded", "limit")),
            pods=pods,
        ),
        SETTINGS,
    )
    st = merged(status, d)
    sched = cond(st, "Scheduled")
    assert sched["status"] == "True"
    assert sched["message"] == "the benchmark ran 3 time(s), on gpu-node-7"
    assert "not scheduled yet" not in json.dumps(st["conditions"])
    never = decide(
        observe(
            status=status,
            job=job_object(manifest, *failed("DeadlineExceeded", "deadline")),
            pods=[pod(name, "Pending", scheduled=False)],
        ),
        SETTINGS,
    )
    sched = cond(never.status, "Scheduled")
    assert (sched["status"], sched["reason"]) == ("False", "NeverScheduled")


PVC_SPEC = {"pvc": {"claimName": "llama-8b", "path": "/weights"}}


def _pvc(name: str, shared_with: str | None) -> dict[str, Any]:
    notes = {"modelgrid.firmus.ai/shared-with": shared_with} if shared_with is not None else {}
    return {"metadata": {"name": name, "namespace": SETTINGS.namespace, "annotations": notes}}


@pytest.mark.parametrize(
    ("volume", "reason", "says"),
    [
        (None, "ModelVolumeMissing", "does not exist in the benchmark namespace"),
        (_pvc("llama-8b", None), "ModelVolumeNotShared", "is not shared with namespace 'team-a'"),
        (_pvc("llama-8b", "team-b, team-c"), "ModelVolumeNotShared", "team-a"),
    ],
)
def test_a_model_volume_missing_or_not_shared_stalls_with_its_cause(
    volume: dict[str, Any] | None, reason: str, says: str
) -> None:
    spec = spec_dict(model={"name": "llama-8b", "source": PVC_SPEC})
    d = decide(observe(spec=spec, volumes={"llama-8b": volume}), SETTINGS)
    assert d.action is ActionKind.NONE
    assert d.job is None
    st = d.status
    assert st["phase"] == "Pending"
    assert_kstatus(st, "False", "False", "True")
    stalled = cond(st, "Stalled")
    assert stalled["reason"] == reason
    assert says in stalled["message"]
    assert "llama-8b" in stalled["message"]
    assert cond(st, "Scheduled")["reason"] == reason  # not "waiting for a node"
    assert d.requeue_after_s == 60.0
    assert [(t, r) for t, r, _ in d.events] == [("Warning", reason)]
    # looked at again with nothing changed: no second event
    again = decide(observe(spec=spec, status=st, volumes={"llama-8b": volume}), SETTINGS)
    assert again.events == []
    assert again.status["phase"] == "Pending"


@pytest.mark.parametrize("shared_with", ["*", "team-a", "team-b,team-a"])
def test_a_model_volume_shared_with_the_namespace_starts_the_job(shared_with: str) -> None:
    spec = spec_dict(model={"name": "llama-8b", "source": PVC_SPEC})
    blocked = decide(observe(spec=spec, volumes={"llama-8b": None}), SETTINGS)
    d = decide(
        observe(
            spec=spec, status=blocked.status, volumes={"llama-8b": _pvc("llama-8b", shared_with)}
        ),
        SETTINGS,
    )
    assert d.action is ActionKind.CREATE_JOB
    assert d.job is not None
    (claim,) = [
        v["persistentVolumeClaim"]["claimName"]
        for v in d.job["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claim == "llama-8b"
    assert_kstatus(d.status, "False", "True", "False")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]:8000",
        "http://metadata.google.internal/computeMetadata/v1",
        "https://kubernetes.default.svc",
        "http://vllm.serving.svc.cluster.local:8000",
        "http://10.0.0.7:8000",
        "http://2852039166/",  # 169.254.169.254 written as one decimal number
    ],
)
def test_an_endpoint_inside_the_cluster_waits_for_a_policy_that_allows_it(url: str) -> None:
    spec = spec_dict(model={"name": "llama-8b", "source": {"endpoint": {"url": url}}})
    unverified = policy(1, endpointAccess={"allowUnverifiedPlacement": True})
    d = decide(observe(spec=spec, tier_policy=unverified), SETTINGS)
    assert d.job is None
    stalled = cond(d.status, "Stalled")
    assert stalled["reason"] == "EndpointNotAllowed"
    assert url in stalled["message"]
    assert "spec.endpointAccess" in stalled["message"]
    allowing = policy(
        2,
        endpointAccess={
            "allowUnverifiedPlacement": True,
            "allowClusterInternal": True,
            "allowLinkLocal": True,
        },
    )
    ok = decide(observe(spec=spec, status=d.status, tier_policy=allowing), SETTINGS)
    assert ok.action is ActionKind.CREATE_JOB


PUBLIC_ENDPOINT = {
    "name": "llama-8b",
    "source": {"endpoint": {"url": "https://api.example.com/v1"}},
}


def test_a_public_endpoint_starts_the_job_where_the_policy_takes_unverified_placement() -> None:
    spec = spec_dict(model=PUBLIC_ENDPOINT)
    unverified = policy(1, endpointAccess={"allowUnverifiedPlacement": True})
    assert decide(observe(spec=spec, tier_policy=unverified), SETTINGS).action is (
        ActionKind.CREATE_JOB
    )


def test_an_endpoint_waits_under_a_policy_that_wants_the_engine_in_the_pod() -> None:
    """The shipped policies: an endpoint's GPUs are not the measured ones, as far as anyone can
    show, so it is never started; the message points at the server source."""
    d = decide(observe(spec=spec_dict(model=PUBLIC_ENDPOINT)), SETTINGS)
    assert d.job is None
    stalled = cond(d.status, "Stalled")
    assert stalled["reason"] == "EndpointNotAllowed"
    assert "allowUnverifiedPlacement" in stalled["message"]
    assert "spec.model.source.server" in stalled["message"]


def test_a_missing_benchmark_namespace_stalls_instead_of_failing_the_qualification() -> None:
    obs = observe()
    d = decide(obs, SETTINGS)
    refused = job_refused(obs, d, 404, 'namespaces "modelgrid-benchmarks" not found')
    st = refused.status
    assert st["phase"] == "Pending"
    assert_kstatus(st, "False", "False", "True")
    stalled = cond(st, "Stalled")
    assert stalled["reason"] == "BenchmarkNamespaceMissing"
    assert "modelgrid-benchmarks" in stalled["message"]
    assert refused.requeue_after_s == 60.0
    assert [(t, r) for t, r, _ in refused.events] == [("Warning", "BenchmarkNamespaceMissing")]


def test_a_job_refused_by_the_benchmark_namespaces_quota_waits_queued() -> None:
    obs = observe()
    d = decide(obs, SETTINGS)
    message = (
        'jobs.batch "llama-8b-g1-abc" is forbidden: exceeded quota: benchmarks, requested: '
        "count/jobs.batch=1, used: count/jobs.batch=20, limited: count/jobs.batch=20"
    )
    waiting = job_refused(obs, d, 403, message)
    st = waiting.status
    assert st["phase"] == "Queued"
    assert_kstatus(st, "False", "True", "False")
    assert "exceeded quota" in cond(st, "Reconciling")["message"]
    assert waiting.requeue_after_s == QUEUE_RECHECK_S
    assert [(t, r) for t, r, _ in waiting.events] == [("Normal", "Queued")]
    again = job_refused(observe(status=merged({}, waiting)), d, 403, message)
    assert again.events == []


def test_a_policy_for_other_namespaces_prices_nothing_here() -> None:
    only_b = policy(2, allowedNamespaces=["team-b"])
    d = decide(observe(tier_policy=only_b), SETTINGS)
    stalled = stalled_in(d, "Pending", "PolicyNotAllowed")
    assert "team-b" in stalled["message"]
    assert "'team-a'" in stalled["message"]
    assert [(t, r) for t, r, _ in d.events] == [("Warning", "PolicyNotAllowed")]
    # a verdict that stands under a policy that no longer names the namespace is withdrawn
    _, status = completed(real_result())
    assert status["tier"]["number"] == 1
    withdrawn = decide(observe(status=status, tier_policy=only_b), SETTINGS)
    assert withdrawn.status["tier"] is None
    assert withdrawn.status["discountPercent"] is None
    assert cond(withdrawn.status, "Stalled")["reason"] == "PolicyNotAllowed"
    # naming the namespace lets it run
    both = policy(3, allowedNamespaces=["team-a", "team-b"])
    assert decide(observe(tier_policy=both), SETTINGS).action is ActionKind.CREATE_JOB


# --------------------------------------------------------------------------- the cache's copies


@pytest.mark.parametrize("situation", ["running", "unschedulable", "suspended", "retrying"])
def test_the_caches_slim_copies_decide_as_the_full_objects(situation: str) -> None:
    """The cache keeps only what the operator reads of a Job and its pods while it runs
    (memory stays flat while finished Jobs accumulate): every such decision made from the slim
    copies is the one made from the objects as the apiserver returns them."""
    _, status, manifest = started()
    name = manifest["metadata"]["name"]
    job, pods = {
        "running": (job_object(manifest, active=1), [pod(name, "Running")]),
        "unschedulable": (job_object(manifest), [pod(name, "Pending", scheduled=False)]),
        "suspended": (job_object(manifest, suspend=True), []),
        # the first pod failed, the Job retries: the failure is read from the cache's copies
        "retrying": (
            job_object(manifest, active=1),
            [failed_pod(name, 1, "boom"), pod(name, "Running", created="2026-03-01T12:01:00Z")],
        ),
    }[situation]
    for obj in (job, *pods):
        obj["metadata"]["managedFields"] = [{"manager": "kube-controller-manager"}]
    now = T0 + dt.timedelta(minutes=12)
    full = decide(observe(status=status, job=job, pods=pods, now=now), SETTINGS)
    slim = decide(
        observe(status=status, job=slim_job(job), pods=[slim_pod(p) for p in pods], now=now),
        SETTINGS,
    )
    assert slim.status == full.status
    assert (slim.action, slim.delete_jobs, slim.events) == (
        full.action,
        full.delete_jobs,
        full.events,
    )
    assert len(json.dumps(slim_job(job))) < len(json.dumps(job)) / 2


def test_the_caches_copies_share_their_strings_and_drop_what_nothing_reads() -> None:
    """A thousand finished Jobs and pods hold one copy of each key, label and reason, not a
    thousand: two copies made from two separate reads share every short string."""
    _, _, manifest = started()
    name = manifest["metadata"]["name"]
    one, two = (json.loads(json.dumps(job_object(manifest, *COMPLETE))) for _ in range(2))
    a, b = slim_job(one), slim_job(two)
    assert a == slim_job(one)
    for key_a, key_b in zip(a["metadata"]["labels"], b["metadata"]["labels"], strict=True):
        assert key_a is key_b
    cond_a, cond_b = a["status"]["conditions"][0], b["status"]["conditions"][0]
    assert cond_a["type"] is cond_b["type"]
    assert set(cond_a) <= {"type", "status", "reason", "message"}
    p = pod(name, "Succeeded", terminated={"exitCode": 0, "reason": "Completed"})
    p["status"]["containerStatuses"][0].update(imageID="sha256:" + "a" * 64, containerID="c://1")
    slim = slim_pod(p)["status"]["containerStatuses"][0]
    assert "imageID" not in slim
    assert "containerID" not in slim["state"]["terminated"]
    assert slim["state"]["terminated"]["reason"] == "Completed"


def test_a_slim_pod_keeps_how_it_ended_but_not_its_message() -> None:
    done = failed_pod("j", 3, "x" * 4000)
    slim = slim_pod(done)
    term = slim["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (3, "Error")
    assert "message" not in term
    assert "message" in done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert len(json.dumps(slim)) < 1000
