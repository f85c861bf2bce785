"""The reconcile decision: from what is observed to the status and the one action to take. Pure.

The operator is level-triggered: whatever woke it (the qualification changed, its Job or pod
moved, a TierPolicy changed, the resync), it observes the world, calls `decide`, applies the
action and writes the status. `decide` is a ladder of small per-situation rungs, read top to
bottom as kopf reads its causes; the pieces it is made of live beside it: `outcome` (what a
decision is, the conditions), `podstate` (what a Job and its pods say), `starting` (a new Job),
`blocked` (why one cannot start), `priced` (a verdict's status).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from modelgrid_contract.wire import ResultRejected
from modelgrid_operator.api import QualificationSpec, validation_message
from modelgrid_operator.blocked import blocked_decision
from modelgrid_operator.jobs import JobSettings, job_nonce
from modelgrid_operator.outcome import (
    Decision,
    Observed,
    clip,
    failed_status,
    in_progress,
    parse_duration,
    parse_iso,
    until,
)
from modelgrid_operator.podstate import (
    bound_result,
    failure_words,
    job_condition,
    progress_status,
    stalled,
    terminated,
    unschedulable,
)
from modelgrid_operator.policy import TierPolicySpec
from modelgrid_operator.priced import policy_of, verdict_status
from modelgrid_operator.starting import evidence_read, result_lost, start_job
from modelgrid_operator.status import Phase, Reason


def decide(obs: Observed, settings: JobSettings, *, queue_cap_applies: bool = True) -> Decision:
    """What to do about one qualification, and its new status. Progress is shown only while
    a benchmark runs: any other outcome removes it."""
    d = _decide(obs, settings, queue_cap_applies=queue_cap_applies)
    if "progress" not in d.status and obs.status.get("progress"):
        d.status["progress"] = None
    return d


@dataclass
class _Case:
    """What every rung of the ladder below works from, once the spec and policy are valid."""

    obs: Observed
    settings: JobSettings
    spec: QualificationSpec
    policy: TierPolicySpec
    base: dict[str, Any]
    queue_cap_applies: bool
    same_gen: bool
    attempt: int
    reruns: int

    def start(self, attempt: int, base: dict[str, Any], reason: Reason, why: str) -> Decision:
        """A Job for `attempt` (or the wait for one: blocked, or the cap reached)."""
        return start_job(
            self.obs,
            self.spec,
            self.settings,
            attempt,
            base,
            self.queue_cap_applies,
            reason,
            why,
            policy=self.policy,
        )


def _decide(obs: Observed, settings: JobSettings, *, queue_cap_applies: bool) -> Decision:
    """The ladder, read top to bottom as kopf reads its causes: the first rung that answers
    decides. An invalid spec; a missing or invalid policy; a policy not for this namespace; a
    verdict that stands (re-priced, re-verified, or left); a failure that stands; no Job yet;
    the Job complete (priced, rerun, or its result lost); failed; suspended by Kueue; running
    or waiting to be scheduled."""
    base: dict[str, Any] = {"observedGeneration": obs.generation}
    spec = _valid_spec(obs, base)
    if isinstance(spec, Decision):
        return spec
    policy = _valid_policy(obs, base)
    if isinstance(policy, Decision):
        return policy
    c = _case(obs, settings, spec, policy, base, queue_cap_applies)
    for rung in (_not_for_this_namespace, _standing_verdict, _standing_failure, _no_job):
        found = rung(c)
        if found is not None:
            return found
    return _with_job(c)


def _valid_spec(obs: Observed, base: dict[str, Any]) -> QualificationSpec | Decision:
    """The spec, or Failed `SpecInvalid` with the words of what is wrong."""
    try:
        spec = QualificationSpec.model_validate(obs.spec)
        parse_duration(spec.reverify_after)
    except ValidationError as exc:
        words = validation_message(exc)
    except ValueError as exc:
        words = str(exc)
    else:
        return spec
    status = failed_status(obs, Reason.SPEC_INVALID.value, f"the spec is invalid: {words}")
    return Decision(
        {**base, **status}, events=[("Warning", Reason.SPEC_INVALID.value, clip(words))]
    )


def _valid_policy(obs: Observed, base: dict[str, Any]) -> TierPolicySpec | Decision:
    """The TierPolicy, or Stalled with why it is missing or invalid (the phase kept)."""
    policy = policy_of(obs)
    if not isinstance(policy, tuple):
        return policy
    reason, message = policy
    status = failed_status(obs, reason, message)
    status["phase"] = obs.status.get("phase") or Phase.PENDING.value
    return Decision({**base, **status}, events=[("Warning", reason, message)], requeue_after_s=60.0)


def _case(
    obs: Observed,
    settings: JobSettings,
    spec: QualificationSpec,
    policy: TierPolicySpec,
    base: dict[str, Any],
    queue_cap_applies: bool,
) -> _Case:
    """The counters of this generation (a new one starts them again)."""
    st = obs.status
    same_gen = st.get("observedGeneration") == obs.generation
    if not same_gen and st.get("lostResults"):
        base["lostResults"] = None
    return _Case(
        obs=obs,
        settings=settings,
        spec=spec,
        policy=policy,
        base=base,
        queue_cap_applies=queue_cap_applies,
        same_gen=same_gen,
        attempt=int(st.get("attempt") or 0) if same_gen else 0,
        reruns=int(st.get("reruns") or 0) if same_gen else 0,
    )


def _not_for_this_namespace(c: _Case) -> Decision | None:
    """A policy that prices other namespaces only: blocked until another is named (a failure
    that stands is left as it is)."""
    obs = c.obs
    if c.policy.applies_to(obs.namespace):
        return None
    if c.same_gen and obs.status.get("phase") == Phase.FAILED.value:
        return None
    return blocked_decision(
        obs,
        {**c.base, "attempt": c.attempt, "reruns": c.reruns},
        Reason.POLICY_NOT_ALLOWED,
        f"TierPolicy {obs.policy_name!r} prices only namespaces "
        f"{', '.join(c.policy.allowed_namespaces)} (spec.allowedNamespaces), not "
        f"{obs.namespace!r}; name another policy in spec.policyRef",
    )


def _standing_verdict(c: _Case) -> Decision | None:
    """A verdict of this generation: measured again when it expired (or predates results bound
    to their Job), re-priced when its policy changed or it is not Ready, else left alone until
    it expires."""
    st = c.obs.status
    if not (c.same_gen and st.get("phase") == Phase.SUCCEEDED.value and st.get("result")):
        return None
    expires = parse_iso(st.get("expiresAt"))
    unbound = not bound_result(st["result"])
    if unbound or (expires is not None and c.obs.now >= expires):
        base = {**c.base, "attempt": c.attempt + 1, "reruns": 0}
        why = (
            "the verdict was measured before results were bound to their Job; a fresh run is due"
            if unbound
            else "the qualification expired; a fresh run is due"
        )
        return c.start(c.attempt + 1, base, Reason.REVERIFY, why)
    if _verdict_current(c):
        return Decision(c.base, requeue_after_s=until(c.obs.now, expires))
    return _reprice(c)


def _policy_generation(obs: Observed) -> int:
    return int((obs.policy or {}).get("metadata", {}).get("generation", 0))


def _verdict_current(c: _Case) -> bool:
    """Priced by this policy at its current generation, and Ready (a verdict left not Ready by
    a missing or invalid policy that is back unchanged is priced again)."""
    st = c.obs.status
    pol = st.get("policy") or {}
    ready: dict[str, Any] = next(
        (x for x in st.get("conditions") or [] if x.get("type") == "Ready"), {}
    )
    return (
        pol.get("name") == c.obs.policy_name
        and int(pol.get("generation", -1)) == _policy_generation(c.obs)
        and ready.get("status") == "True"
    )


def _reprice(c: _Case) -> Decision:
    """The stored measurement priced again under the policy as it is now; re-pricing does not
    postpone its re-verification."""
    obs, st = c.obs, c.obs.status
    try:
        status, _, events = verdict_status(
            obs, c.spec, c.policy, st["result"], c.attempt, reruns_done=c.policy.max_reruns
        )
        if st.get("expiresAt"):
            status["expiresAt"] = st["expiresAt"]
    except ResultRejected as exc:
        status = failed_status(obs, Reason.RESULT_REJECTED.value, f"{exc.reason}: {exc.message}")
        events = [("Warning", Reason.RESULT_REJECTED.value, f"{exc.reason}: {exc.message}")]
    gen = _policy_generation(obs)
    events = [
        (t, r, f"re-evaluated under TierPolicy {obs.policy_name} generation {gen}: {m}")
        for t, r, m in events
    ]
    return Decision({**c.base, **status}, events=events)


def _standing_failure(c: _Case) -> Decision | None:
    """A failure of this generation stands until the spec changes."""
    if c.same_gen and c.obs.status.get("phase") == Phase.FAILED.value:
        return Decision(c.base)
    return None


def _no_job(c: _Case) -> Decision | None:
    """No Job of this generation and attempt yet: make one (or wait for a slot)."""
    if c.obs.job is not None:
        return None
    return c.start(
        c.attempt, {**c.base, "attempt": c.attempt, "reruns": c.reruns}, Reason.CREATED, ""
    )


def _with_job(c: _Case) -> Decision:
    """The Job of this generation and attempt, as it stands."""
    job = c.obs.job
    assert job is not None
    c.base.update({"attempt": c.attempt, "jobName": job["metadata"]["name"], "reruns": c.reruns})
    decision = Decision(c.base, delete_jobs=list(c.obs.stale_jobs))
    if job_condition(job, "Complete") or job_condition(job, "SuccessCriteriaMet"):
        return _completed(c, job, decision)
    failed = job_condition(job, "Failed") or job_condition(job, "FailureTarget")
    if failed:
        reason, message = failure_words(
            c.obs.pods, failed, c.spec.timeout_seconds, c.settings.backoff_limit
        )
        decision.status.update(failed_status(c.obs, reason, message))
        decision.events.append(("Warning", reason, clip(message)))
        return decision
    if (job.get("spec") or {}).get("suspend"):
        decision.status.update(
            in_progress(
                c.obs,
                Phase.QUEUED,
                Reason.QUEUED,
                f"waiting for Kueue to admit the Job to queue {c.spec.queue_name!r}",
                (False, Reason.QUEUED.value, "queued"),
            )
        )
        return decision
    return _in_flight(c, job, decision)


def _completed(c: _Case, job: dict[str, Any], decision: Decision) -> Decision:
    """A complete Job: one succeeded pod's result priced (or refused, or a rerun asked for);
    several are ambiguous; none left is a lost result, measured again."""
    obs = c.obs
    succeeded = [p for p in obs.pods if (p.get("status") or {}).get("phase") == "Succeeded"]
    if len(succeeded) > 1:
        names = ", ".join(sorted(str(p["metadata"]["name"]) for p in succeeded))
        message = (
            f"Job {job['metadata']['name']} has {len(succeeded)} succeeded pods ({names}) "
            "for one run: which one measured is unknown, so none is priced"
        )
        decision.status.update(failed_status(obs, Reason.AMBIGUOUS_RESULT.value, message))
        decision.events.append(("Warning", Reason.AMBIGUOUS_RESULT.value, clip(message)))
        return decision
    if not succeeded:
        return result_lost(obs, c.attempt, c.base, c.start)
    pod = succeeded[-1]
    raw = (terminated(pod) or {}).get("message") or ""
    try:
        status, rerun, events = verdict_status(
            obs, c.spec, c.policy, raw, c.attempt, c.reruns, nonce=job_nonce(job), check_nonce=True
        )
    except ResultRejected as exc:
        message = f"{exc.reason}: {exc.message}"
        decision.status.update(failed_status(obs, Reason.RESULT_REJECTED.value, message))
        decision.events.append(("Warning", Reason.RESULT_REJECTED.value, clip(message)))
        kept = evidence_read(job, pod, {})
        if kept is not None:  # an auditor looks at refused evidence too
            decision.status["evidence"] = kept
        return decision
    if rerun:
        c.base.update({"attempt": c.attempt + 1, "reruns": c.reruns + 1})
        d = c.start(c.attempt + 1, c.base, Reason.RERUN, events[0][2])
        d.events = events + d.events
        return d
    kept = evidence_read(job, pod, status.get("measured") or {})
    if kept is not None:
        status["evidence"] = kept
    decision.status.update(status)
    decision.events.extend(events)
    return decision


def _in_flight(c: _Case, job: dict[str, Any], decision: Decision) -> Decision:
    """A Job still going: running (with its progress, failed when it stopped moving),
    unschedulable, or created and not yet scheduled."""
    obs, spec = c.obs, c.spec
    running = [p for p in obs.pods if (p.get("status") or {}).get("phase") == "Running"]
    waiting = unschedulable(obs.pods)
    if running:
        node = running[0].get("spec", {}).get("nodeName")
        progress = progress_status(obs, job["metadata"]["name"])
        stall = stalled(obs, spec, progress)
        if stall is not None:
            decision.status.update(failed_status(obs, Reason.NO_PROGRESS.value, stall))
            decision.status["progress"] = None
            decision.delete_jobs.append(job["metadata"]["name"])  # frees the GPUs it holds
            decision.events.append(("Warning", Reason.NO_PROGRESS.value, clip(stall)))
            return decision
        decision.status.update(
            in_progress(
                obs,
                Phase.RUNNING,
                Reason.RUNNING,
                f"the benchmark is running on {node}: {progress['summary']}",
                (True, Reason.SCHEDULED.value, f"scheduled on {node}"),
            )
        )
        decision.status["progress"] = progress
        return decision
    state: tuple[Phase, Reason, str, tuple[bool, str, str]] = (
        Phase.SCHEDULING,
        Reason.CREATED,
        f"Job {job['metadata']['name']} created",
        (False, "Pending", "the benchmark pod is not scheduled yet"),
    )
    if waiting:
        state = (
            Phase.SCHEDULING,
            Reason.UNSCHEDULABLE,
            f"waiting for a {spec.hardware.gpu_product} node: {waiting}",
            (False, Reason.UNSCHEDULABLE.value, waiting),
        )
    decision.status.update(in_progress(obs, *state))
    return decision
