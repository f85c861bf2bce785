"""Why a Job cannot be created now, and the decisions for it: a model volume, an endpoint or
an engine the policy does not allow, the apiserver refusing the Job (quota, a namespace being
deleted or missing), the operator forbidden in the benchmark namespace. Pure.
"""

from __future__ import annotations

from typing import Any

from modelgrid_contract.engines import EngineName, engine_arg_problems
from modelgrid_operator.api import QualificationSpec
from modelgrid_operator.endpoints import endpoint_refusal
from modelgrid_operator.jobs import ANNOTATION_SHARED_WITH, JobSettings, model_claims
from modelgrid_operator.outcome import (
    BLOCKED_RECHECK_S,
    CLEARED_VERDICT,
    QUEUE_RECHECK_S,
    Decision,
    Observed,
    clip,
    condition_of,
    conditions,
    failed_status,
    in_progress,
)
from modelgrid_operator.policy import EndpointAccess, TierPolicySpec
from modelgrid_operator.status import ConditionType, Phase, Reason

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
    status = in_progress(
        obs, Phase.QUEUED, Reason.QUEUED, text, (False, Reason.QUEUED.value, "not started")
    )
    news = obs.status.get("phase") != Phase.QUEUED.value
    return Decision(
        {**keep, **status},
        requeue_after_s=QUEUE_RECHECK_S,
        events=[("Normal", Reason.QUEUED.value, clip(text))] if news else [],
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
        return blocked_decision(obs, base, Reason.BENCHMARK_NAMESPACE_MISSING, text)
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
        return blocked_decision(obs, base, Reason.BENCHMARK_NAMESPACE_MISSING, text)
    text = f"the apiserver refused Job {name} ({status_code}): {message}"
    status = {**decision.status, **failed_status(obs, Reason.JOB_REFUSED.value, text)}
    return Decision(status, events=[("Warning", Reason.JOB_REFUSED.value, clip(text))])


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


def blocked(
    obs: Observed, spec: QualificationSpec, policy: TierPolicySpec, settings: JobSettings
) -> tuple[Reason, str] | None:
    """What keeps a Job from being created now, though it may change without a new spec."""
    return (
        _volume_blocked(obs, spec)
        or _endpoint_blocked(spec, policy.endpoint_access)
        or _engine_blocked(spec, policy, settings)
    )


def blocked_decision(obs: Observed, base: dict[str, Any], reason: Reason, message: str) -> Decision:
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
    previous = condition_of(obs.status, "Stalled")
    news = previous.get("reason") != reason.value or previous.get("status") != "True"
    return Decision(
        {**base, **status},
        requeue_after_s=BLOCKED_RECHECK_S,
        delete_jobs=list(obs.stale_jobs),
        events=[("Warning", reason.value, clip(message))] if news else [],
    )


def installation_fault(obs: Observed, namespace: str, message: str) -> Decision:
    """The operator may not read or write what it needs in the benchmark namespace (its Role
    is missing or narrower than the chart's): Pending and Stalled, nothing withdrawn."""
    decision = blocked_decision(
        obs,
        {"observedGeneration": obs.generation},
        Reason.BENCHMARK_NAMESPACE_FORBIDDEN,
        f"the operator may not work in the benchmark namespace {namespace!r} ({message}); "
        "its Role there is missing or incomplete (docs/operations.md, 'Permissions')",
    )
    decision.status = {k: v for k, v in decision.status.items() if k not in CLEARED_VERDICT}
    return decision
