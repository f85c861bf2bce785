"""What a benchmark Job and its pods say: conditions, termination messages, scheduling, the
progress line and whether it stalled. Pure (reads the objects the reconciler observed).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import ValidationError

from modelgrid_contract.progress import LOADING_STAGES
from modelgrid_contract.reasons import ENGINE_REASONS, ExitCode
from modelgrid_contract.result import SCHEMA_FAILURE, BenchFailure
from modelgrid_operator.api import QualificationSpec
from modelgrid_operator.outcome import Observed, iso, parse_iso
from modelgrid_operator.status import Reason


def bound_result(raw: Any) -> bool:
    """Whether a stored result echoes a Job nonce: one that does not was accepted before
    results were bound to their Job (it may come from a pod a tenant planted), so it is
    neither kept nor re-priced but measured again."""
    try:
        obj = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get("job_nonce"), str)


def job_condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return dict(c)
    return None


def terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return dict(term)
    return None


def unschedulable(pods: list[dict[str, Any]]) -> str | None:
    for pod in pods:
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                return str(c.get("message") or c.get("reason") or "unschedulable")
    return None


def benchmark_failure(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) from the last failed pod's termination message, if any."""
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    failed.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
    for pod in reversed(failed):
        term = terminated(pod)
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
    now = iso(obs.now)
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


def stalled(obs: Observed, spec: QualificationSpec, progress: dict[str, Any]) -> str | None:
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


def failure_words(
    pods: list[dict[str, Any]], failed: dict[str, Any], timeout_seconds: int, backoff_limit: int
) -> tuple[str, str]:
    """The reason and message of a failed Job: its deadline, the benchmark's refusal of its
    input, the engine's own failure, the retries spent, or what the Job controller said."""
    job_reason = str(failed.get("reason") or "Failed")
    bench = benchmark_failure(pods)
    if job_reason == "DeadlineExceeded":
        message = f"the benchmark did not finish within timeoutSeconds={timeout_seconds}"
        never = unschedulable(pods)
        return Reason.DEADLINE.value, message + (
            f"; it was never scheduled: {never}" if never else ""
        )
    if job_reason == "PodFailurePolicy" and bench and bench[0] == Reason.BAD_INPUT.value:
        return Reason.BAD_INPUT.value, f"the benchmark refused its input: {bench[1]}"
    tries = backoff_limit + 1
    if bench and bench[0] in ENGINE_REASONS:
        # the engine's own failure says more than how often the Job tried
        said = "" if job_reason == "PodFailurePolicy" else f" (the benchmark tried {tries} times)"
        return bench[0], bench[1] + said
    if job_reason == "BackoffLimitExceeded":
        last = f"; last: {bench[0]}: {bench[1]}" if bench else ""
        return Reason.BACKOFF_LIMIT.value, f"the benchmark failed {tries} times{last}"
    reason = bench[0] if bench else Reason.BENCHMARK_ERROR.value
    return reason, f"{job_reason}: {bench[1] if bench else failed.get('message', '')}"


def owned_by_job(pod: dict[str, Any], uid: str) -> bool:
    """A controller owner reference to the Job of `uid` (a pod that merely carries the Job's
    name or uid in a label is someone else's)."""
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("controller") and r.get("kind") == "Job" and r.get("uid") == uid for r in refs)


#: A Job's conditions that say it is over (a Job with any of them True runs no more pods).
FINISHED = frozenset({"Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"})


def job_finished(job: dict[str, Any]) -> bool:
    """Whether the Job is over (succeeded or failed, or on its way to either)."""
    return any(
        c.get("type") in FINISHED and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def occupies_slot(job: dict[str, Any]) -> bool:
    """Neither finished nor suspended (waiting for Kueue)."""
    conds = {
        c.get("type")
        for c in (job.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    }
    return not (conds & FINISHED) and not (job.get("spec") or {}).get("suspend")


#: What a cached copy keeps of an object's metadata: names, owner labels and annotations, the
#: controller reference, the ordering and deletion marks (not managedFields, finalizers, ...).
_META_KEPT = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "labels",
    "annotations",
    "ownerReferences",
)
#: What is kept of a condition (not its probe and transition times, which nothing here reads).
_CONDITION_KEPT = ("type", "status", "reason", "message")
#: What is kept of a container's status: its name and states (not image or container IDs).
_CONTAINER_KEPT = ("name", "state", "lastState", "restartCount")
#: Strings this long or shorter are shared between cached copies (keys, condition types and
#: reasons, label values): a thousand finished Jobs and pods hold one copy of each, not one each.
_SHARED_MAX_CHARS = 64


def _shared(value: Any) -> Any:
    """A copy of `value` in which dict keys and short strings are interned (one object for
    every equal string in the cache) and None-valued keys are left out (readers use `.get`)."""
    if isinstance(value, dict):
        return {sys.intern(str(k)): _shared(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_shared(v) for v in value]
    if isinstance(value, str) and len(value) <= _SHARED_MAX_CHARS:
        return sys.intern(value)
    return value


def _shared_dict(value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = _shared(value)
    return out


def _kept(obj: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: obj[k] for k in keys if obj and obj.get(k) is not None}


def _conditions(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [_kept(c, _CONDITION_KEPT) for c in status.get("conditions") or []]


def slim_job(job: dict[str, Any]) -> dict[str, Any]:
    """What the operator reads of a Job: its metadata (names, labels, annotations: its owner,
    nonce and evidence), whether it is suspended, and its conditions (the pod template, most of
    its size, is not kept), with its strings shared."""
    return _shared_dict(
        {
            "kind": job.get("kind", "Job"),
            "metadata": _kept(job.get("metadata"), _META_KEPT),
            "spec": {"suspend": (job.get("spec") or {}).get("suspend")},
            "status": {"conditions": _conditions(job.get("status") or {})},
        }
    )


def _container(status: dict[str, Any]) -> dict[str, Any]:
    out = _kept(status, _CONTAINER_KEPT)
    for key in ("state", "lastState"):
        term = (status.get(key) or {}).get("terminated")
        if term is not None:
            out[key] = {"terminated": {k: v for k, v in term.items() if k not in _TERM_DROPPED}}
    return out


#: Not kept of a terminated state: the termination message (the result, up to 4 KiB a pod) and
#: the container's ID.
_TERM_DROPPED = frozenset({"message", "containerID"})


def slim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """What the operator keeps of a benchmark pod in its cache: its metadata (labels, owner),
    the node it ran on, its phase, conditions and container states -- not its spec, and not
    the termination message (the result, up to 4 KiB a pod): a result is read from the API
    once, when its Job has finished (`Kube.pods_of_job(whole=True)`)."""
    status = pod.get("status") or {}
    return _shared_dict(
        {
            "kind": pod.get("kind", "Pod"),
            "metadata": _kept(pod.get("metadata"), _META_KEPT),
            "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
            "status": {
                **_kept(status, ("phase", "reason", "message")),
                "conditions": _conditions(status),
                "containerStatuses": [_container(c) for c in status.get("containerStatuses") or []],
            },
        }
    )
