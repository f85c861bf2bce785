"""Starting a benchmark: the Job for an attempt (or the wait for a slot), where it keeps its
evidence, and a measurement run again when its result was lost. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelgrid_operator.api import QualificationSpec
from modelgrid_operator.blocked import blocked, blocked_decision
from modelgrid_operator.jobs import (
    ANNOTATION_EVIDENCE_CLAIM,
    ANNOTATION_EVIDENCE_PATH,
    JobSettings,
    build_job,
    evidence_dir,
)
from modelgrid_operator.outcome import (
    CLEARED_VERDICT,
    QUEUE_RECHECK_S,
    ActionKind,
    Decision,
    Observed,
    failed_status,
    in_progress,
    iso,
)
from modelgrid_operator.policy import TierPolicySpec
from modelgrid_operator.status import Phase, Reason


def start_job(
    obs: Observed,
    spec: QualificationSpec,
    settings: JobSettings,
    attempt: int,
    base: dict[str, Any],
    queue_cap_applies: bool,
    reason: Reason,
    why: str,
    *,
    policy: TierPolicySpec,
) -> Decision:
    why_not = blocked(obs, spec, policy, settings)
    if why_not is not None:
        return blocked_decision(obs, base, *why_not)
    # the qualifications queued before this one go first: a slot that frees is theirs
    taken = obs.active_benchmarks + obs.waiting_ahead
    if queue_cap_applies and not spec.queue_name and taken >= obs.max_concurrent:
        ahead = f"; {obs.waiting_ahead} queued before it" if obs.waiting_ahead else ""
        message = (
            f"{obs.active_benchmarks} of {obs.max_concurrent} benchmark slots are in use{ahead}; "
            "waiting for one to free"
        )
        status = in_progress(
            obs, Phase.QUEUED, Reason.QUEUED, message, (False, Reason.QUEUED.value, "not started")
        )
        return Decision(
            {**base, **status},
            requeue_after_s=QUEUE_RECHECK_S,
            # superseded Jobs go even while this one waits: they may hold the slot it waits for
            delete_jobs=list(obs.stale_jobs),
            events=[("Normal", Reason.QUEUED.value, message)]
            if obs.status.get("phase") != Phase.QUEUED.value
            else [],
        )
    evidence_claim, evidence = evidence_plan(obs, settings, attempt)
    manifest = build_job(
        name=obs.name,
        namespace=obs.namespace,
        uid=obs.uid,
        generation=obs.generation,
        spec=spec,
        settings=settings,
        nonce=obs.nonce,
        attempt=attempt,
        floors=policy.work_done.floors(),
        endpoint_access=policy.endpoint_access,
        evidence_claim=evidence_claim,
    )
    name = manifest["metadata"]["name"]
    message = f"Job {name} created" + (f" ({why})" if why else "")
    status = in_progress(
        obs,
        Phase.SCHEDULING,
        reason,
        message,
        (False, "Pending", "the benchmark pod is not scheduled yet"),
    )
    status.update(
        {"jobName": name, "startedAt": iso(obs.now), **CLEARED_VERDICT, "evidence": evidence}
    )
    events = [("Normal", reason.value, message)]
    if evidence.get("claimName") and not evidence["kept"]:
        events.append(("Warning", Reason.EVIDENCE_NOT_KEPT.value, evidence["message"]))
    return Decision(
        {**base, **status},
        action=ActionKind.CREATE_JOB,
        job=manifest,
        delete_jobs=list(obs.stale_jobs),
        events=events,
    )


def evidence_plan(obs: Observed, settings: JobSettings, attempt: int) -> tuple[str, dict[str, Any]]:
    """The claim a new Job of `attempt` keeps its evidence on ("" for none) and
    `status.evidence` for it.

    No claim configured, or the configured one missing: the benchmark runs all the same (a
    price does not depend on where its evidence is kept) and status says where it went."""
    claim = settings.evidence_claim_for(obs.namespace)
    if not claim:
        return "", {
            "kept": False,
            "message": "no evidence volume is configured (chart value evidence.claimName): "
            "the trace, telemetry and timeline lived in the benchmark pod's scratch space and "
            "are gone with it",
        }
    pvc = obs.volumes.get(claim)
    phase = ((pvc or {}).get("status") or {}).get("phase")
    if pvc is None or phase != "Bound":
        # a claim that is missing, Pending or Lost would hold the pod unscheduled until its
        # deadline: the benchmark runs without it instead
        state = "does not exist" if pvc is None else f"is {phase or 'not bound'}"
        return "", {
            "kept": False,
            "claimName": claim,
            "message": f"the evidence claim {claim!r} {state} in the benchmark namespace: "
            "this benchmark's evidence is not kept (docs/operations.md, 'Kept evidence')",
        }
    path = evidence_dir(obs.namespace, obs.name, obs.uid, obs.generation, attempt)
    return claim, {
        "kept": True,
        "claimName": claim,
        "path": path,
        "message": f"kept on claim {claim!r}, one directory per pod under {path}",
    }


#: The digests of `status.measured.evidence` that `status.evidence` repeats beside the path.
EVIDENCE_DIGEST_KEYS = ("traceSha256", "telemetrySha256", "columnsSha256")


def evidence_read(
    job: dict[str, Any], pod: dict[str, Any], measured: dict[str, Any]
) -> dict[str, Any] | None:
    """`status.evidence` once `pod`'s result is read (priced or refused): the claim and the
    attempt directory the Job itself was made with (its annotations), that pod's directory in
    it, and the digests its files must have (the priced result's). None when the Job kept no
    evidence."""
    notes = (job.get("metadata") or {}).get("annotations") or {}
    claim, attempt_dir = notes.get(ANNOTATION_EVIDENCE_CLAIM), notes.get(ANNOTATION_EVIDENCE_PATH)
    if not claim or not attempt_dir:
        return None
    pod_name = str((pod.get("metadata") or {}).get("name") or "")
    path = f"{attempt_dir}/{pod_name}"
    digests = measured.get("evidence") or {}
    return {
        "kept": True,
        "claimName": claim,
        "path": path,
        "pod": pod_name,
        "message": f"kept on claim {claim!r} under {path}",
        **{k: digests[k] for k in EVIDENCE_DIGEST_KEYS if k in digests},
    }


#: How often one generation's finished benchmark may be measured again because its pod was gone
#: before its result was read (deleted, evicted, its node lost, collected while the operator
#: was down): each try holds the GPUs for a whole benchmark.
MAX_LOST_RESULTS = 2


#: (attempt, base status, reason, why) -> the Job for that attempt, or the wait for one
Start = Callable[[int, dict[str, Any], Reason, str], Decision]


def result_lost(obs: Observed, attempt: int, base: dict[str, Any], start: Start) -> Decision:
    """The Job finished but no pod of it is left to read the result from: a finished
    measurement is not thrown away as a failure, it is measured again as a new attempt (at
    most `MAX_LOST_RESULTS` times a generation, through `start`), with the reason in status
    and an event."""
    job = obs.job["metadata"]["name"] if obs.job else "?"
    same_gen = obs.status.get("observedGeneration") == obs.generation
    lost = (int(obs.status.get("lostResults") or 0) if same_gen else 0) + 1
    if lost > MAX_LOST_RESULTS:
        message = (
            f"Job {job} finished but its pod was gone before its result was read, "
            f"{lost} times for this generation: not measured again (change the spec to retry)"
        )
        status = failed_status(obs, Reason.RESULT_LOST.value, message)
        return Decision(
            {**base, **status, "lostResults": lost - 1},
            events=[("Warning", Reason.RESULT_LOST.value, message)],
        )
    why = (
        f"Job {job} finished but its pod was gone before its result was read (deleted, "
        f"evicted or collected); measuring again ({lost} of {MAX_LOST_RESULTS})"
    )
    nxt = {**base, "attempt": attempt + 1, "lostResults": lost}
    d = start(attempt + 1, nxt, Reason.RESULT_LOST, why)
    d.events.insert(0, ("Warning", Reason.RESULT_LOST.value, why))
    return d
