"""The reconcile decision: from what is observed to the status and the one action to take. Pure.

The operator is level-triggered: whatever woke it (the qualification changed, its Job or pod
moved, a TierPolicy changed, a timer fired), it observes the world, calls `decide`, applies the
action and writes the status. Conditions follow kstatus, so Flux and Argo CD read health:
Reconciling=True while work is in progress, Stalled=True when it ended without a verdict,
Ready=True with a verdict; Scheduled and Verified add detail.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from modelgrid_contract.engines import EngineName, engine_arg_problems
from modelgrid_contract.progress import LOADING_STAGES, Progress
from modelgrid_contract.reasons import ENGINE_REASONS, ExitCode
from modelgrid_contract.result import SCHEMA_FAILURE, BenchFailure
from modelgrid_contract.wire import ResultRejected
from modelgrid_operator.api import (
    ConditionType,
    EndpointAccess,
    Phase,
    QualificationSpec,
    Reason,
    TierPolicySpec,
    validation_message,
)
from modelgrid_operator.endpoints import endpoint_refusal
from modelgrid_operator.jobs import (
    ANNOTATION_EVIDENCE_CLAIM,
    ANNOTATION_EVIDENCE_PATH,
    ANNOTATION_SHARED_WITH,
    JobSettings,
    build_job,
    evidence_dir,
    job_name,
    job_nonce,
    model_claims,
)
from modelgrid_operator.verdict import (
    engine_status,
    evaluate,
    measured_status,
    sweep_status,
    validate_result,
)

HISTORY_LIMIT = 10
#: A new run (new generation, expiry, rerun) withdraws the previous verdict: a JSON merge
#: patch with null removes these fields, so no stale tier or discount is shown while it runs.
#: `history` keeps the earlier verdicts.
CLEARED_VERDICT: dict[str, Any] = dict.fromkeys(
    (
        "tier",
        "discountPercent",
        "qualified",
        "discountApproved",
        "verification",
        "reasoning",
        "measured",
        "result",
        "environment",
        "flags",
        "sweep",
        "evidence",
        "completedAt",
        "expiresAt",
    )
)
QUEUE_RECHECK_S = 15.0
#: How often a qualification waiting on something outside it (a model volume, a policy that
#: allows its endpoint) looks again.
BLOCKED_RECHECK_S = 60.0
MESSAGE_LIMIT = 1024


class ActionKind(StrEnum):
    NONE = "None"
    CREATE_JOB = "CreateJob"


@dataclass(frozen=True)
class Observed:
    """Everything `decide` may look at, gathered by the handlers."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]
    policy_name: str
    policy: dict[str, Any] | None  # the TierPolicy object, None when absent
    job: dict[str, Any] | None  # the Job of the current generation and attempt
    pods: list[dict[str, Any]]  # that Job's own pods (controller owner reference to it)
    stale_jobs: list[str]  # active Jobs of earlier generations or attempts
    active_benchmarks: int  # benchmark Jobs running (for the cap)
    max_concurrent: int
    now: dt.datetime
    #: the nonce a Job created now is given (drawn by the caller: decide stays pure)
    nonce: str
    #: the model's claims in the benchmark namespace, None where absent (looked up only when
    #: a Job is to be created)
    volumes: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    #: the running benchmark's last progress line (read only while its pod runs)
    progress: Progress | None = None


@dataclass
class Decision:
    status: dict[str, Any]
    action: ActionKind = ActionKind.NONE
    job: dict[str, Any] | None = None
    delete_jobs: list[str] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    requeue_after_s: float | None = None


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


#: reverifyAfter's bounds (the CRD's rule): a fresh run at most hourly, at least every 5 years.
REVERIFY_MIN = dt.timedelta(hours=1)
REVERIFY_MAX = dt.timedelta(days=1826)


def parse_duration(text: str) -> dt.timedelta:
    """reverifyAfter ('72h', '365d') as a timedelta; ValueError outside 1h to 1826d."""
    m = re.fullmatch(r"(\d{1,6})(h|d)", text.strip())
    if not m:
        raise ValueError(
            f"reverifyAfter {text!r} is not a whole number of hours or days like '72h' or '365d'"
        )
    n = int(m.group(1))
    d = dt.timedelta(days=n) if m.group(2) == "d" else dt.timedelta(hours=n)
    if not REVERIFY_MIN <= d <= REVERIFY_MAX:
        raise ValueError(f"reverifyAfter {text!r} is outside 1h to 1826d (five years)")
    return d


def _clip(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def conditions(
    previous: list[dict[str, Any]],
    wanted: dict[ConditionType, tuple[bool, str, str]],
    generation: int,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """Condition list with lastTransitionTime kept where a status did not change."""
    old = {c.get("type"): c for c in previous}
    out = []
    for ctype, (value, reason, message) in wanted.items():
        status = "True" if value else "False"
        prev = old.get(ctype.value)
        changed = prev is None or prev.get("status") != status
        out.append(
            {
                "type": ctype.value,
                "status": status,
                "reason": reason,
                "message": _clip(message),
                "observedGeneration": generation,
                "lastTransitionTime": _iso(now) if changed else prev["lastTransitionTime"],  # type: ignore[index]
            }
        )
    return out


def _in_progress(
    obs: Observed, phase: Phase, reason: Reason, message: str, scheduled: tuple[bool, str, str]
) -> dict[str, Any]:
    return {
        "phase": phase.value,
        "conditions": conditions(
            obs.status.get("conditions", []),
            {
                ConditionType.READY: (False, reason.value, message),
                ConditionType.RECONCILING: (True, reason.value, message),
                ConditionType.STALLED: (False, reason.value, ""),
                ConditionType.SCHEDULED: scheduled,
                ConditionType.VERIFIED: (False, "Pending", "no verdict yet"),
            },
            obs.generation,
            obs.now,
        ),
    }


def _condition(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    """A condition of `status` by type, {} when absent."""
    found: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == ctype), {}
    )
    return found


def _scheduled_after(obs: Observed) -> tuple[bool, str, str]:
    """Scheduled, once it is over: where the benchmark's pods ran, or that none ever did."""
    ran = [p for p in obs.pods if (p.get("spec") or {}).get("nodeName")]
    if ran:
        nodes = sorted({str(p["spec"]["nodeName"]) for p in ran})
        return (
            True,
            Reason.SCHEDULED.value,
            f"the benchmark ran {len(ran)} time(s), on {', '.join(nodes)}",
        )
    prev = _condition(obs.status, "Scheduled")
    if prev.get("status") == "True":  # its pods are gone (a re-evaluation): what it said stands
        return True, str(prev.get("reason", "")), str(prev.get("message", ""))
    if obs.job is not None:
        return False, "NeverScheduled", "no benchmark pod was ever scheduled"
    return False, "NotStarted", "no benchmark Job was started"


def _failed(obs: Observed, reason: str, message: str) -> dict[str, Any]:
    scheduled = _scheduled_after(obs)
    return {
        "phase": Phase.FAILED.value,
        "completedAt": _iso(obs.now),
        "conditions": conditions(
            obs.status.get("conditions", []),
            {
                ConditionType.READY: (False, reason, message),
                ConditionType.RECONCILING: (False, reason, ""),
                ConditionType.STALLED: (True, reason, message),
                ConditionType.SCHEDULED: scheduled,
                ConditionType.VERIFIED: (False, reason, "no verdict: " + message),
            },
            obs.generation,
            obs.now,
        ),
    }


def _bound_result(raw: Any) -> bool:
    """Whether a stored result echoes a Job nonce: one that does not was accepted before
    results were bound to their Job (it may come from a pod a tenant planted), so it is
    neither kept nor re-priced but measured again."""
    try:
        obj = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get("job_nonce"), str)


def _job_condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return dict(c)
    return None


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return dict(term)
    return None


def _unschedulable(pods: list[dict[str, Any]]) -> str | None:
    for pod in pods:
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                return str(c.get("message") or c.get("reason") or "unschedulable")
    return None


def _benchmark_failure(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) from the last failed pod's termination message, if any."""
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    failed.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
    for pod in reversed(failed):
        term = _terminated(pod)
        if not term:
            continue
        text = term.get("message") or ""
        code = term.get("exitCode")
        try:
            obj = json.loads(text) if text.strip().startswith("{") else None
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and obj.get("schema") == SCHEMA_FAILURE:
            try:
                f = BenchFailure.model_validate(obj)
                return f.reason, f.message
            except ValidationError:
                pass
        reason = (
            Reason.BAD_INPUT.value
            if code == int(ExitCode.BAD_INPUT)
            else Reason.BENCHMARK_ERROR.value
        )
        tail = " ".join(text.split())[-400:]
        return reason, f"exit code {code}" + (f": {tail}" if tail else "")
    return None


def _policy(obs: Observed) -> TierPolicySpec | tuple[str, str]:
    if obs.policy is None:
        return (
            Reason.POLICY_NOT_FOUND.value,
            f"TierPolicy {obs.policy_name!r} does not exist; create it or set spec.policyRef",
        )
    try:
        return TierPolicySpec.model_validate(obs.policy.get("spec") or {})
    except ValidationError as exc:
        return (
            Reason.POLICY_INVALID.value,
            f"TierPolicy {obs.policy_name!r} is invalid: {validation_message(exc)}",
        )


def _verdict_status(
    obs: Observed,
    spec: QualificationSpec,
    policy: TierPolicySpec,
    raw: str,
    attempt: int,
    reruns_done: int,
    *,
    nonce: str | None = None,
    check_nonce: bool = False,
) -> tuple[dict[str, Any], bool, list[tuple[str, str, str]]]:
    """Status for a result; (status, rerun requested, events). A fresh result must echo its
    Job's `nonce` (`check_nonce`); a stored one was checked when it was accepted."""
    result = validate_result(raw, spec, policy, expected_nonce=nonce, check_nonce=check_nonce)
    v = evaluate(result, spec, policy, reruns_done=reruns_done)
    if v.rerun_requested:
        return {}, True, [("Normal", Reason.RERUN.value, v.reasoning)]
    gen = int((obs.policy or {}).get("metadata", {}).get("generation", 0))
    tier = v.tier
    verified_reason = {
        "Verified": Reason.CLAIMS_VERIFIED,
        "Failed": Reason.CLAIMS_FAILED,
        "NoClaims": Reason.NO_CLAIMS,
    }[v.verification]
    ready_reason = Reason.SUCCEEDED if v.discount_approved else Reason.NOT_QUALIFIED
    summary = (
        f"{tier.label or tier.name if tier else 'no tier'}; discount {v.discount_percent:g}%; "
        f"claims {v.verification}"
    )
    expires = obs.now + parse_duration(spec.reverify_after)
    entry = {
        "completedAt": _iso(obs.now),
        "tier": tier.number if tier else 0,
        "discountPercent": v.discount_percent,
        "powerCV": v.cv,
        "avgPowerW": v.avg_power_w,
        "verification": v.verification,
        "policy": obs.policy_name,
    }
    history = [entry, *(obs.status.get("history") or [])][:HISTORY_LIMIT]
    status: dict[str, Any] = {
        "phase": Phase.SUCCEEDED.value,
        "completedAt": _iso(obs.now),
        "expiresAt": _iso(expires),
        "attempt": attempt,
        "result": raw if isinstance(raw, str) else raw.decode(),
        "measured": measured_status(result),
        "tier": (
            {
                "name": tier.name,
                "number": tier.number,
                "label": tier.label,
                "stability": tier.stability,
                "discountPercent": tier.discount_percent,
            }
            if tier
            else None
        ),
        "discountPercent": v.discount_percent,
        "qualified": v.qualified,
        "discountApproved": v.discount_approved,
        "verification": {"result": v.verification, "claims": [c.to_status() for c in v.claims]},
        "reasoning": _clip(v.reasoning),
        "policy": {"name": obs.policy_name, "generation": gen},
        "environment": {
            "gpu": result.gpu.name,
            "gpuCount": result.gpu.count,
            "driver": result.gpu.driver,
            "cuda": result.gpu.cuda,
            "node": result.node,
            "simulated": result.simulated,
            "source": result.source.value,
            **({"engine": engine_status(result)} if result.engine is not None else {}),
        },
        "flags": v.flags,
        **({"sweep": sweep_status(result)} if result.sweep is not None else {}),
        "history": history,
        "conditions": conditions(
            obs.status.get("conditions", []),
            {
                ConditionType.READY: (True, ready_reason.value, summary),
                ConditionType.RECONCILING: (False, ready_reason.value, ""),
                ConditionType.STALLED: (False, ready_reason.value, ""),
                ConditionType.SCHEDULED: (True, Reason.SCHEDULED.value, "the benchmark ran"),
                ConditionType.VERIFIED: (
                    v.verification != "Failed",
                    verified_reason.value,
                    v.reasoning,
                ),
            },
            obs.generation,
            obs.now,
        ),
    }
    event = ("Normal" if v.discount_approved else "Warning", ready_reason.value, _clip(v.reasoning))
    return status, False, [event]


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
        return _start(
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
    status = _failed(obs, Reason.SPEC_INVALID.value, f"the spec is invalid: {words}")
    return Decision(
        {**base, **status}, events=[("Warning", Reason.SPEC_INVALID.value, _clip(words))]
    )


def _valid_policy(obs: Observed, base: dict[str, Any]) -> TierPolicySpec | Decision:
    """The TierPolicy, or Stalled with why it is missing or invalid (the phase kept)."""
    policy = _policy(obs)
    if not isinstance(policy, tuple):
        return policy
    reason, message = policy
    status = _failed(obs, reason, message)
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
    return _blocked_decision(
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
    unbound = not _bound_result(st["result"])
    if unbound or (expires is not None and c.obs.now >= expires):
        base = {**c.base, "attempt": c.attempt + 1, "reruns": 0}
        why = (
            "the verdict was measured before results were bound to their Job; a fresh run is due"
            if unbound
            else "the qualification expired; a fresh run is due"
        )
        return c.start(c.attempt + 1, base, Reason.REVERIFY, why)
    if _verdict_current(c):
        return Decision(c.base, requeue_after_s=_until(c.obs.now, expires))
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
        status, _, events = _verdict_status(
            obs, c.spec, c.policy, st["result"], c.attempt, reruns_done=c.policy.max_reruns
        )
        if st.get("expiresAt"):
            status["expiresAt"] = st["expiresAt"]
    except ResultRejected as exc:
        status = _failed(obs, Reason.RESULT_REJECTED.value, f"{exc.reason}: {exc.message}")
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
    if _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet"):
        return _completed(c, job, decision)
    failed = _job_condition(job, "Failed") or _job_condition(job, "FailureTarget")
    if failed:
        reason, message = _failure_words(c, failed)
        decision.status.update(_failed(c.obs, reason, message))
        decision.events.append(("Warning", reason, _clip(message)))
        return decision
    if (job.get("spec") or {}).get("suspend"):
        decision.status.update(
            _in_progress(
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
        decision.status.update(_failed(obs, Reason.AMBIGUOUS_RESULT.value, message))
        decision.events.append(("Warning", Reason.AMBIGUOUS_RESULT.value, _clip(message)))
        return decision
    if not succeeded:
        return result_lost(
            obs, c.spec, c.settings, c.attempt, c.base, c.queue_cap_applies, c.policy
        )
    pod = succeeded[-1]
    raw = (_terminated(pod) or {}).get("message") or ""
    try:
        status, rerun, events = _verdict_status(
            obs, c.spec, c.policy, raw, c.attempt, c.reruns, nonce=job_nonce(job), check_nonce=True
        )
    except ResultRejected as exc:
        message = f"{exc.reason}: {exc.message}"
        decision.status.update(_failed(obs, Reason.RESULT_REJECTED.value, message))
        decision.events.append(("Warning", Reason.RESULT_REJECTED.value, _clip(message)))
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


def _failure_words(c: _Case, failed: dict[str, Any]) -> tuple[str, str]:
    """The reason and message of a failed Job: its deadline, the benchmark's refusal of its
    input, the engine's own failure, the retries spent, or what the Job controller said."""
    job_reason = str(failed.get("reason") or "Failed")
    bench = _benchmark_failure(c.obs.pods)
    if job_reason == "DeadlineExceeded":
        message = f"the benchmark did not finish within timeoutSeconds={c.spec.timeout_seconds}"
        never = _unschedulable(c.obs.pods)
        return Reason.DEADLINE.value, message + (
            f"; it was never scheduled: {never}" if never else ""
        )
    if job_reason == "PodFailurePolicy" and bench and bench[0] == Reason.BAD_INPUT.value:
        return Reason.BAD_INPUT.value, f"the benchmark refused its input: {bench[1]}"
    tries = c.settings.backoff_limit + 1
    if bench and bench[0] in ENGINE_REASONS:
        # the engine's own failure says more than how often the Job tried
        said = "" if job_reason == "PodFailurePolicy" else f" (the benchmark tried {tries} times)"
        return bench[0], bench[1] + said
    if job_reason == "BackoffLimitExceeded":
        last = f"; last: {bench[0]}: {bench[1]}" if bench else ""
        return Reason.BACKOFF_LIMIT.value, f"the benchmark failed {tries} times{last}"
    reason = bench[0] if bench else Reason.BENCHMARK_ERROR.value
    return reason, f"{job_reason}: {bench[1] if bench else failed.get('message', '')}"


def _in_flight(c: _Case, job: dict[str, Any], decision: Decision) -> Decision:
    """A Job still going: running (with its progress, failed when it stopped moving),
    unschedulable, or created and not yet scheduled."""
    obs, spec = c.obs, c.spec
    running = [p for p in obs.pods if (p.get("status") or {}).get("phase") == "Running"]
    unschedulable = _unschedulable(obs.pods)
    if running:
        node = running[0].get("spec", {}).get("nodeName")
        progress = progress_status(obs, job["metadata"]["name"])
        stall = _stalled(obs, spec, progress)
        if stall is not None:
            decision.status.update(_failed(obs, Reason.NO_PROGRESS.value, stall))
            decision.status["progress"] = None
            decision.delete_jobs.append(job["metadata"]["name"])  # frees the GPUs it holds
            decision.events.append(("Warning", Reason.NO_PROGRESS.value, _clip(stall)))
            return decision
        decision.status.update(
            _in_progress(
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
    if unschedulable:
        state = (
            Phase.SCHEDULING,
            Reason.UNSCHEDULABLE,
            f"waiting for a {spec.hardware.gpu_product} node: {unschedulable}",
            (False, Reason.UNSCHEDULABLE.value, unschedulable),
        )
    decision.status.update(_in_progress(obs, *state))
    return decision


#: Stage shown before the benchmark's first progress line (its process is starting).
STARTING = "starting"


def _moved_on(prev: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether the benchmark went further than the previous status shows (a heartbeat that
    repeats the same stage, run and requests does not)."""
    fields = ("stage", "run", "level", "requestsDone")
    return any(prev.get(f) != now.get(f) for f in fields)


def progress_status(obs: Observed, job: str) -> dict[str, Any]:
    """`status.progress` from the last progress line: when it last moved on is kept from the
    previous status while the same Job's progress has not changed."""
    p = obs.progress
    prev = obs.status.get("progress") or {}
    now = _iso(obs.now)
    body: dict[str, Any] = {"stage": STARTING, "summary": STARTING}
    if p is not None:
        body = {
            "stage": p.stage.value,
            "run": p.run,
            "runs": p.runs,
            "level": p.level,
            "levels": p.levels,
            "requestsDone": p.done,
            "requestsTotal": p.total,
            "etaSeconds": p.eta_s,
            "summary": p.summary(),
        }
    same_job = obs.status.get("jobName") == job
    changed_at = prev.get("changedAt")
    if not (same_job and changed_at) or _moved_on(prev, body):
        changed_at = now
    return {
        **{k: v for k, v in body.items() if v is not None},
        "updatedAt": now,
        "changedAt": changed_at,
    }


def _stalled(obs: Observed, spec: QualificationSpec, progress: dict[str, Any]) -> str | None:
    """Why the running benchmark counts as stalled (None: it is moving): its progress has
    not changed for longer than allowed (more while the model loads or the engine starts)."""
    changed = parse_iso(progress.get("changedAt"))
    if changed is None:
        return None
    allowed = spec.progress_timeout_seconds
    loading = progress.get("stage") in {STARTING, *(s.value for s in LOADING_STAGES)}
    server = spec.model.source.server
    if loading and server is not None:
        allowed = max(allowed, server.startup_timeout_seconds + 120)
    idle_s = (obs.now - changed).total_seconds()
    if idle_s <= allowed:
        return None
    return (
        f"the benchmark made no progress for {idle_s:.0f} s (stage {progress.get('summary')}); "
        f"at most {allowed} s are allowed (spec.progressTimeoutSeconds), so its Job was stopped"
    )


#: A namespace being deleted refuses new objects; nothing to report to a qualification going too.
TERMINATING_HINT = "being terminated"
#: A ResourceQuota of the benchmark namespace is used up: a turn comes when a Job goes.
QUOTA_HINT = "exceeded quota"


def _quota_wait(obs: Observed, decision: Decision, message: str) -> Decision:
    """The benchmark namespace's quota refused the Job: Queued (in progress, not failed), with
    the apiserver's words, tried again like a full queue."""
    text = f"the benchmark namespace's ResourceQuota refused the Job; waiting: {message}"
    keep: dict[str, Any] = {
        k: v
        for k, v in decision.status.items()
        if k in ("observedGeneration", "attempt", "reruns", "lostResults")
    }
    status = _in_progress(
        obs, Phase.QUEUED, Reason.QUEUED, text, (False, Reason.QUEUED.value, "not started")
    )
    news = obs.status.get("phase") != Phase.QUEUED.value
    return Decision(
        {**keep, **status},
        requeue_after_s=QUEUE_RECHECK_S,
        events=[("Normal", Reason.QUEUED.value, _clip(text))] if news else [],
    )


def job_refused(obs: Observed, decision: Decision, status_code: int, message: str) -> Decision:
    """The apiserver refused the Job `decision` wanted to create: the qualification cannot run
    as specified (or the operator may not create it), so it ends Failed with the apiserver's
    words, instead of a retry every minute with no status."""
    if status_code == 403 and TERMINATING_HINT in message:
        where = (decision.job or {}).get("metadata", {}).get("namespace", "")
        text = f"the benchmark namespace {where!r} is being deleted: {message}"
        base = {
            k: v
            for k, v in decision.status.items()
            if k in ("observedGeneration", "attempt", "reruns", "lostResults")
        }
        return _blocked_decision(obs, base, Reason.BENCHMARK_NAMESPACE_MISSING, text)
    if status_code == 403 and QUOTA_HINT in message:
        return _quota_wait(obs, decision, message)
    name = (decision.job or {}).get("metadata", {}).get("name", "the benchmark Job")
    if (
        status_code == 404
    ):  # the benchmark namespace is gone: the installation's fault, not the spec's
        where = (decision.job or {}).get("metadata", {}).get("namespace", "")
        text = (
            f"the benchmark namespace {where!r} does not exist, so Job {name} cannot be "
            f"created ({message}); the operator's installation must create it"
        )
        base = {k: v for k, v in decision.status.items() if k in ("observedGeneration",)}
        base.update({k: decision.status[k] for k in ("attempt", "reruns") if k in decision.status})
        return _blocked_decision(obs, base, Reason.BENCHMARK_NAMESPACE_MISSING, text)
    text = f"the apiserver refused Job {name} ({status_code}): {message}"
    status = {**decision.status, **_failed(obs, Reason.JOB_REFUSED.value, text)}
    return Decision(status, events=[("Warning", Reason.JOB_REFUSED.value, _clip(text))])


def _volume_blocked(obs: Observed, spec: QualificationSpec) -> tuple[Reason, str] | None:
    """A model claim that is not in the benchmark namespace, or not shared with the tenant's
    namespace there: the pod could not start (or must not read it)."""
    for claim in model_claims(spec):
        pvc = obs.volumes.get(claim)
        if pvc is None:
            return Reason.MODEL_VOLUME_MISSING, (
                f"PersistentVolumeClaim {claim!r} (spec.model.source) does not exist in the "
                "benchmark namespace; benchmarks read models only from claims there: ask the "
                "platform team to stage the model (docs/operations.md, 'Model volumes')"
            )
        shared = ((pvc.get("metadata") or {}).get("annotations") or {}).get(
            ANNOTATION_SHARED_WITH, ""
        )
        allowed = {s.strip() for s in str(shared).split(",") if s.strip()}
        if "*" not in allowed and obs.namespace not in allowed:
            return Reason.MODEL_VOLUME_NOT_SHARED, (
                f"PersistentVolumeClaim {claim!r} in the benchmark namespace is not shared with "
                f"namespace {obs.namespace!r} (annotation {ANNOTATION_SHARED_WITH})"
            )
    return None


def _endpoint_blocked(spec: QualificationSpec, access: EndpointAccess) -> tuple[Reason, str] | None:
    """An endpoint the TierPolicy does not accept (its placement on the measured GPUs cannot
    be shown) or does not let the benchmark call."""
    endpoint = spec.model.source.endpoint
    if endpoint is None:
        return None
    if not access.allow_unverified_placement:
        return Reason.ENDPOINT_NOT_ALLOWED, (
            "spec.model.source.endpoint serves the model from GPUs the benchmark cannot show are "
            "the ones it measures, and the TierPolicy does not accept that "
            "(spec.endpointAccess.allowUnverifiedPlacement); use spec.model.source.server, "
            "which starts the engine in the benchmark pod"
        )
    why = endpoint_refusal(endpoint.url, access)
    return (Reason.ENDPOINT_NOT_ALLOWED, why) if why else None


def _engine_blocked(
    spec: QualificationSpec, policy: TierPolicySpec, settings: JobSettings
) -> tuple[Reason, str] | None:
    """A server source the operator will not start: a custom command the TierPolicy does not
    trust, arguments that set what the benchmark owns (a spec stored before the CRD's rules),
    or an engine this installation has no image for."""
    server = spec.model.source.server
    if server is None:
        return None
    if server.engine is EngineName.CUSTOM and not policy.engine_access.allow_custom_command:
        return Reason.ENGINE_NOT_ALLOWED, (
            "spec.model.source.server.engine is custom: its command would run inside the "
            "benchmark's container, and the TierPolicy does not allow that "
            "(spec.engineAccess.allowCustomCommand); use a preset engine (vllm, sglang, tgi)"
        )
    problems = engine_arg_problems(server.args)
    if problems:
        return Reason.ENGINE_NOT_ALLOWED, "spec.model.source.server." + "; ".join(problems)
    if not settings.engine_image(server.engine):
        return Reason.ENGINE_NOT_ALLOWED, (
            f"this installation has no image for engine {server.engine.value!r} (chart value "
            f"benchmark.engineImages.{server.engine.value}); ask the platform team"
        )
    return None


def _blocked(
    obs: Observed, spec: QualificationSpec, policy: TierPolicySpec, settings: JobSettings
) -> tuple[Reason, str] | None:
    """What keeps a Job from being created now, though it may change without a new spec."""
    return (
        _volume_blocked(obs, spec)
        or _endpoint_blocked(spec, policy.endpoint_access)
        or _engine_blocked(spec, policy, settings)
    )


def _blocked_decision(
    obs: Observed, base: dict[str, Any], reason: Reason, message: str
) -> Decision:
    """Pending and Stalled with the reason: kstatus reports it Failed with the message, and
    the qualification starts by itself once the cause is gone (it is looked at again)."""
    status = {
        **CLEARED_VERDICT,  # an expired verdict is not shown while the rerun cannot start
        "phase": Phase.PENDING.value,
        "conditions": conditions(
            obs.status.get("conditions", []),
            {
                ConditionType.READY: (False, reason.value, message),
                ConditionType.RECONCILING: (False, reason.value, ""),
                ConditionType.STALLED: (True, reason.value, message),
                ConditionType.SCHEDULED: (False, reason.value, "not started: " + message),
                ConditionType.VERIFIED: (False, "Pending", "no verdict yet"),
            },
            obs.generation,
            obs.now,
        ),
    }
    previous = _condition(obs.status, "Stalled")
    news = previous.get("reason") != reason.value or previous.get("status") != "True"
    return Decision(
        {**base, **status},
        requeue_after_s=BLOCKED_RECHECK_S,
        delete_jobs=list(obs.stale_jobs),
        events=[("Warning", reason.value, _clip(message))] if news else [],
    )


def installation_fault(obs: Observed, namespace: str, message: str) -> Decision:
    """The operator may not read or write what it needs in the benchmark namespace (its Role
    is missing or narrower than the chart's): Pending and Stalled, nothing withdrawn."""
    decision = _blocked_decision(
        obs,
        {"observedGeneration": obs.generation},
        Reason.BENCHMARK_NAMESPACE_FORBIDDEN,
        f"the operator may not work in the benchmark namespace {namespace!r} ({message}); "
        "its Role there is missing or incomplete (docs/operations.md, 'Permissions')",
    )
    decision.status = {k: v for k, v in decision.status.items() if k not in CLEARED_VERDICT}
    return decision


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


def result_lost(
    obs: Observed,
    spec: QualificationSpec,
    settings: JobSettings,
    attempt: int,
    base: dict[str, Any],
    queue_cap_applies: bool,
    policy: TierPolicySpec,
) -> Decision:
    """The Job finished but no pod of it is left to read the result from: a finished
    measurement is not thrown away as a failure, it is measured again as a new attempt (at
    most `MAX_LOST_RESULTS` times a generation), with the reason in status and an event."""
    job = obs.job["metadata"]["name"] if obs.job else "?"
    same_gen = obs.status.get("observedGeneration") == obs.generation
    lost = (int(obs.status.get("lostResults") or 0) if same_gen else 0) + 1
    if lost > MAX_LOST_RESULTS:
        message = (
            f"Job {job} finished but its pod was gone before its result was read, "
            f"{lost} times for this generation: not measured again (change the spec to retry)"
        )
        status = _failed(obs, Reason.RESULT_LOST.value, message)
        return Decision(
            {**base, **status, "lostResults": lost - 1},
            events=[("Warning", Reason.RESULT_LOST.value, message)],
        )
    why = (
        f"Job {job} finished but its pod was gone before its result was read (deleted, "
        f"evicted or collected); measuring again ({lost} of {MAX_LOST_RESULTS})"
    )
    nxt = {**base, "attempt": attempt + 1, "lostResults": lost}
    d = _start(
        obs,
        spec,
        settings,
        attempt + 1,
        nxt,
        queue_cap_applies,
        Reason.RESULT_LOST,
        why,
        policy=policy,
    )
    d.events.insert(0, ("Warning", Reason.RESULT_LOST.value, why))
    return d


def needs_resync(
    obj: dict[str, Any],
    policy_generations: dict[str, int],
    default_policy: str,
    now: dt.datetime,
) -> bool:
    """Whether the periodic resync must reconcile this qualification. A ladder, first match
    wins; what it skips is a verdict that stands, so the resync's cost does not grow with a
    fleet of settled qualifications (watches bring every change of theirs anyway)."""
    meta, spec, st = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return False  # going: the sweep collects its Jobs
    if st.get("observedGeneration") != meta.get("generation"):
        return True  # a spec not looked at yet (an event lost while the operator was down)
    phase = st.get("phase")
    if phase == Phase.FAILED.value:
        return False  # a failure stands for its generation
    if phase != Phase.SUCCEEDED.value:
        return True  # pending, queued, running: slots free, progress, blocks lift
    return _verdict_due(st, spec, policy_generations, default_policy, now)


def _verdict_due(
    st: dict[str, Any],
    spec: dict[str, Any],
    policy_generations: dict[str, int],
    default_policy: str,
    now: dt.datetime,
) -> bool:
    """A standing verdict is looked at again when it expires, when its policy changed or went
    missing, or when it is not Ready (a policy that came back)."""
    name = (spec.get("policyRef") or {}).get("name") or default_policy
    applied = st.get("policy") or {}
    if name not in policy_generations or applied.get("name") != name:
        return True
    if int(applied.get("generation", -1)) != policy_generations[name]:
        return True
    expires = parse_iso(st.get("expiresAt"))
    if expires is not None and now >= expires:
        return True
    ready: dict[str, Any] = next(
        (c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    return bool(ready.get("status") != "True")


def _until(now: dt.datetime, when: dt.datetime | None) -> float | None:
    if when is None:
        return None
    return max((when - now).total_seconds(), 1.0)


def _start(
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
    blocked = _blocked(obs, spec, policy, settings)
    if blocked is not None:
        return _blocked_decision(obs, base, *blocked)
    if queue_cap_applies and not spec.queue_name and obs.active_benchmarks >= obs.max_concurrent:
        message = (
            f"{obs.active_benchmarks} of {obs.max_concurrent} benchmark slots are in use; "
            "waiting for one to free"
        )
        status = _in_progress(
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
    status = _in_progress(
        obs,
        Phase.SCHEDULING,
        reason,
        message,
        (False, "Pending", "the benchmark pod is not scheduled yet"),
    )
    status.update(
        {"jobName": name, "startedAt": _iso(obs.now), **CLEARED_VERDICT, "evidence": evidence}
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


__all__ = [
    "ActionKind",
    "Decision",
    "Observed",
    "decide",
    "job_name",
    "job_refused",
    "needs_resync",
    "parse_duration",
]
