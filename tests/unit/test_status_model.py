"""What the operator's decisions really write validates against the CRD's status schema.

`statuspatch.validate_status_patch` refuses a status patch the apiserver would prune; these
tests run decide() (and the Job-refusal path) through the lifecycle test_reconcile.py covers,
with its builders, and check every Decision.status it makes: a key the CRD does not have, or
a value of the wrong JSON type, is a bug in the decision code, not in the schema.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
from collections.abc import Callable
from typing import Any

import pytest

from modelgrid_bench.analysis import analyze
from modelgrid_contract.progress import Progress, Stage
from modelgrid_contract.result import BenchFailure, PowerSourceKind
from modelgrid_contract.wire import encode_compact
from modelgrid_operator.api import QualificationSpec
from modelgrid_operator.blocked import job_refused
from modelgrid_operator.jobs import JobSettings
from modelgrid_operator.outcome import Decision
from modelgrid_operator.reconcile import decide
from modelgrid_operator.status import QualificationStatus
from modelgrid_operator.statuspatch import validate_status_patch
from modelgrid_operator.verdict import workload_digest
from tests import factory as f
from tests.unit.test_reconcile import (
    COMPLETE,
    SETTINGS,
    T0,
    completed,
    failed,
    failed_pod,
    job_object,
    merged,
    observe,
    pod,
    policy,
    real_result,
    spec_dict,
    started,
    succeeded_pod,
)

pytestmark = pytest.mark.timeout(120)

Scenario = Callable[[], list[Decision]]
LATER = T0 + dt.timedelta(minutes=12)


def _after_start(
    job: Callable[[dict[str, Any]], dict[str, Any]],
    pods: tuple[Callable[[str], dict[str, Any]], ...] = (),
    spec: dict[str, Any] | None = None,
) -> list[Decision]:
    """The Job's creation, then a decision on that Job (`job` of its manifest) and its pods."""
    first, status, manifest = started(spec=spec)
    name = manifest["metadata"]["name"]
    d = decide(
        observe(spec=spec, status=status, job=job(manifest), pods=[p(name) for p in pods]),
        SETTINGS,
    )
    return [first, d]


def _completed(raw: str, **kw: Any) -> list[Decision]:
    d, _ = completed(raw, **kw)
    return [d]


def _queued() -> list[Decision]:
    return [decide(observe(active=4, max_concurrent=4), SETTINGS)]


def _waiting_for_kueue() -> list[Decision]:
    spec = spec_dict(queueName="gpu-bench")
    return _after_start(spec=spec, job=lambda m: job_object(m, suspend=True))


def _unschedulable() -> list[Decision]:
    return _after_start(
        job=lambda m: job_object(m, active=1), pods=(lambda n: pod(n, "Pending", scheduled=False),)
    )


def _running_with_progress() -> list[Decision]:
    _, status, manifest = started()
    obs = observe(
        status=status,
        job=job_object(manifest, active=1),
        pods=[pod(manifest["metadata"]["name"], "Running")],
    )
    progress = Progress(
        stage=Stage.MEASURING, run=2, runs=3, level=1, levels=2, done=30, total=90, eta_s=61.0
    )
    running = decide(dataclasses.replace(obs, progress=progress), SETTINGS)
    status = merged(status, running)
    late = observe(
        spec=spec_dict(progressTimeoutSeconds=60),
        status=status,
        job=job_object(manifest, active=1),
        pods=[pod(manifest["metadata"]["name"], "Running")],
        now=T0 + dt.timedelta(hours=1),
    )
    stalled = decide(dataclasses.replace(late, progress=progress), SETTINGS)
    done = decide(observe(status=status, job=job_object(manifest, *COMPLETE), pods=[]), SETTINGS)
    return [running, stalled, done]


def _qualified_with_claims() -> list[Decision]:
    spec = spec_dict(claims={"avgPowerW": 105, "powerCV": 0.05, "targetTier": 1})
    return _completed(real_result(), spec=spec)


def _claims_outside_tolerance() -> list[Decision]:
    return _completed(real_result(), spec=spec_dict(claims={"avgPowerW": 80, "peakPowerW": 90}))


def _simulated_allowed() -> list[Decision]:
    return _completed(
        real_result(kind=PowerSourceKind.REPLAY), tier_policy=policy(allowSimulated=True)
    )


def _rejected() -> list[Decision]:
    return [
        *_completed("{not json"),
        *_completed(real_result(kind=PowerSourceKind.REPLAY)),
        *_completed(real_result(nonce=None)),
    ]


def _benchmark_failures() -> list[Decision]:
    failure = BenchFailure(reason="DeviceError", message="GPU is lost", exit_code=1).encode()
    bad = BenchFailure(reason="BadInput", message="unrecognized arguments", exit_code=2).encode()
    return [
        *_after_start(
            job=lambda m: job_object(m, *failed("BackoffLimitExceeded", "limit")),
            pods=(lambda n: failed_pod(n, 1, failure),),
        ),
        *_after_start(
            job=lambda m: job_object(m, *failed("DeadlineExceeded", "deadline")),
            pods=(lambda n: pod(n, "Pending", scheduled=False),),
        ),
        *_after_start(
            job=lambda m: job_object(m, *failed("PodFailurePolicy", "exit code 2")),
            pods=(lambda n: failed_pod(n, 2, bad),),
        ),
    ]


def _policy_and_spec_problems() -> list[Decision]:
    bad_spec = spec_dict(hardware={"gpuProduct": "NVIDIA-H200", "gpuCount": 9})
    return [
        decide(observe(tier_policy=None), SETTINGS),
        decide(observe(tier_policy=policy(tiers=[])), SETTINGS),
        decide(observe(spec=bad_spec), SETTINGS),
        decide(observe(spec=spec_dict(reverifyAfter="0h")), SETTINGS),
        decide(observe(tier_policy=policy(2, allowedNamespaces=["team-b"])), SETTINGS),
    ]


def _verdict_lifecycle() -> list[Decision]:
    """A verdict re-priced, withdrawn, restored, expired, and superseded by a new spec."""
    first, status = completed(real_result())
    tiers = [
        {**t, "discountPercent": 25} if t["number"] == 1 else t for t in policy()["spec"]["tiers"]
    ]
    later = T0 + dt.timedelta(days=30)
    expires = dt.datetime.fromisoformat(status["expiresAt"].replace("Z", "+00:00"))
    allowed = policy(allowSimulated=True)
    _, simulated = completed(real_result(kind=PowerSourceKind.REPLAY), tier_policy=allowed)
    return [
        first,
        decide(observe(status=status, now=later), SETTINGS),
        decide(observe(status=status, tier_policy=policy(2, tiers=tiers), now=later), SETTINGS),
        decide(observe(status=simulated, tier_policy=policy(2)), SETTINGS),
        decide(observe(status=status, tier_policy=None), SETTINGS),
        decide(observe(status=status, tier_policy=policy(2, allowedNamespaces=["b"])), SETTINGS),
        decide(observe(status=status, now=expires), SETTINGS),
        decide(
            observe(spec=spec_dict(samplingIntervalMs=10), status=status, generation=2), SETTINGS
        ),
    ]


def _superseded_while_running() -> list[Decision]:
    _, status, manifest = started()
    old = manifest["metadata"]["name"]
    spec = spec_dict(workload={"samples": 40})
    return [
        decide(observe(spec=spec, status=status, generation=2, stale=[old]), SETTINGS),
        decide(
            observe(
                spec=spec, status=status, generation=2, stale=[old], active=1, max_concurrent=1
            ),
            SETTINGS,
        ),
    ]


def _borderline_rerun() -> list[Decision]:
    rerun = policy(borderline="Rerun", maxReruns=1)
    _, status, manifest = started(tier_policy=rerun)
    decisions = []
    for _attempt in range(2):
        d = decide(
            observe(
                status=status,
                tier_policy=rerun,
                job=job_object(manifest, *COMPLETE),
                pods=[succeeded_pod(manifest["metadata"]["name"], real_result(12.0))],
                now=LATER,
            ),
            SETTINGS,
        )
        decisions.append(d)
        status = merged(status, d)
        manifest = d.job or manifest
    return [*decisions, *_completed(real_result(12.0))]


def _results_lost_and_ambiguous() -> list[Decision]:
    _, status, manifest = started()
    name = manifest["metadata"]["name"]
    decisions = []
    for _loss in range(3):
        d = decide(observe(status=status, job=job_object(manifest, *COMPLETE), now=LATER), SETTINGS)
        decisions.append(d)
        status = merged(status, d)
        manifest = d.job or manifest
    two = [succeeded_pod(name, real_result()), succeeded_pod(name, real_result(12.0))]
    two[1]["metadata"]["name"] += "-2"
    _, fresh, job = started()
    decisions.append(
        decide(observe(status=fresh, job=job_object(job, *COMPLETE), pods=two), SETTINGS)
    )
    return decisions


def _refused_jobs() -> list[Decision]:
    obs = observe()
    d = decide(obs, SETTINGS)
    quota = 'jobs.batch "x" is forbidden: exceeded quota: benchmarks, used: count/jobs.batch=20'
    return [
        job_refused(obs, d, 422, 'Job.batch "x" is invalid: spec.template: Invalid value'),
        job_refused(obs, d, 404, 'namespaces "modelgrid-benchmarks" not found'),
        job_refused(
            obs,
            d,
            403,
            "unable to create new content in namespace x because it is being terminated",
        ),
        job_refused(obs, d, 403, quota),
    ]


def _blocked_sources() -> list[Decision]:
    pvc = spec_dict(model={"name": "llama-8b", "source": {"pvc": {"claimName": "llama-8b"}}})
    internal = {"endpoint": {"url": "http://10.0.0.7:8000"}}
    endpoint = spec_dict(model={"name": "llama-8b", "source": internal})
    custom = {"engine": "custom", "command": ["python", "-m", "modelgrid_bench.pacedserver"]}
    server = spec_dict(model={"name": "llama-8b", "source": {"server": custom}})
    return [
        decide(observe(spec=pvc, volumes={"llama-8b": None}), SETTINGS),
        decide(
            observe(spec=pvc, volumes={"llama-8b": {"metadata": {"name": "llama-8b"}}}), SETTINGS
        ),
        decide(observe(spec=endpoint), SETTINGS),
        decide(observe(spec=server), SETTINGS),
    ]


def _evidence_kept() -> list[Decision]:
    claim = "modelgrid-evidence"
    kept = dataclasses.replace(JobSettings(), evidence_claim=claim)
    volumes = {claim: {"metadata": {"name": claim}, "status": {"phase": "Bound"}}}
    first = decide(observe(volumes=volumes), kept)
    assert first.job is not None
    name = first.job["metadata"]["name"]
    priced = decide(
        observe(
            status=merged({}, first),
            job=job_object(first.job, *COMPLETE),
            pods=[succeeded_pod(name, real_result())],
            now=LATER,
            volumes=volumes,
        ),
        kept,
    )
    missing = decide(observe(volumes={claim: None}), kept)
    return [first, priced, missing]


def _sweep_result() -> tuple[dict[str, Any], str]:
    ev = f.sweep_evidence((1, 4), 2, efficiency=lambda level, run: 1.0 if level == 1 else 0.9)
    workload = ev.meta.workload.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec = spec_dict(workload=workload)
    obj = json.loads(encode_compact(analyze(ev)))
    obj["workload_digest"] = workload_digest(QualificationSpec.model_validate(spec))
    obj["job_nonce"] = f.JOB_NONCE
    return spec, json.dumps(obj, separators=(",", ":"))


def _sweep() -> list[Decision]:
    spec, raw = _sweep_result()
    return _completed(raw, spec=spec)


def _server_engine() -> list[Decision]:
    vllm = {"engine": "vllm", "model": {"pvc": {"claimName": "models", "path": "/llama"}}}
    spec = spec_dict(model={"name": "llama-8b", "source": {"server": vllm}})
    engine = {"name": "vllm", "version": "0.11.0", "startup_s": 41.2, "command_sha256": "0" * 16}
    obj = f.priced_compact(backend="server", engine=engine, job_nonce=f.JOB_NONCE)
    obj["workload_digest"] = workload_digest(QualificationSpec.model_validate(spec))
    shared = {
        "metadata": {"name": "models", "annotations": {"modelgrid.firmus.ai/shared-with": "*"}}
    }
    first = decide(observe(spec=spec, volumes={"models": shared}), SETTINGS)
    assert first.job is not None
    name = first.job["metadata"]["name"]
    priced = decide(
        observe(
            spec=spec,
            status=merged({}, first),
            job=job_object(first.job, *COMPLETE),
            pods=[succeeded_pod(name, json.dumps(obj, separators=(",", ":")))],
            now=LATER,
        ),
        SETTINGS,
    )
    return [first, priced]


SCENARIOS: dict[str, Scenario] = {
    "queued": _queued,
    "waiting-for-kueue": _waiting_for_kueue,
    "unschedulable": _unschedulable,
    "running-with-progress": _running_with_progress,
    "qualified-with-claims": _qualified_with_claims,
    "claims-outside-tolerance": _claims_outside_tolerance,
    "simulated-allowed": _simulated_allowed,
    "rejected": _rejected,
    "benchmark-failures": _benchmark_failures,
    "policy-and-spec-problems": _policy_and_spec_problems,
    "verdict-lifecycle": _verdict_lifecycle,
    "superseded-while-running": _superseded_while_running,
    "borderline-rerun": _borderline_rerun,
    "results-lost-and-ambiguous": _results_lost_and_ambiguous,
    "refused-jobs": _refused_jobs,
    "blocked-sources": _blocked_sources,
    "evidence-kept": _evidence_kept,
    "sweep": _sweep,
    "server-engine": _server_engine,
}


@functools.cache
def _decisions(scenario: str) -> list[Decision]:
    decisions = SCENARIOS[scenario]()
    assert decisions
    return decisions


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_status_the_decisions_write_is_in_the_crds_schema(scenario: str) -> None:
    for i, d in enumerate(_decisions(scenario)):
        try:
            validate_status_patch(d.status)
        except ValueError as exc:
            pytest.fail(f"{scenario}, decision {i}: {exc}")


def test_the_scenarios_write_every_status_field() -> None:
    """So that the test above proves something about each top-level field."""
    written = {
        key
        for scenario in SCENARIOS
        for d in _decisions(scenario)
        for key, value in d.status.items()
        if value is not None
    }
    fields = {info.alias or name for name, info in QualificationStatus.model_fields.items()}
    assert fields - written == set()
