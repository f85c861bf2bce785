"""What a reconcile decides and the status pieces every decision is made of. Pure.

`Observed` is everything a decision may look at (gathered by the reconciler), `Decision` the
status to write and the one action to take. Conditions follow kstatus, so Flux and Argo CD
read health: Reconciling=True while work is in progress, Stalled=True when it ended without a
verdict, Ready=True with a verdict; Scheduled and Verified add detail.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modelgrid_contract.progress import Progress
from modelgrid_operator.api import GROUP, VERSION
from modelgrid_operator.status import ConditionType, Phase, Reason

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
    #: qualifications queued for a slot before this one (they take the next free slots)
    waiting_ahead: int = 0


@dataclass
class Decision:
    status: dict[str, Any]
    action: ActionKind = ActionKind.NONE
    job: dict[str, Any] | None = None
    delete_jobs: list[str] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    requeue_after_s: float | None = None


def iso(t: dt.datetime) -> str:
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


def clip(text: str) -> str:
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
                "message": clip(message),
                "observedGeneration": generation,
                "lastTransitionTime": iso(now) if changed else prev["lastTransitionTime"],  # type: ignore[index]
            }
        )
    return out


def in_progress(
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


def condition_of(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    """A condition of `status` by type, {} when absent."""
    found: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == ctype), {}
    )
    return found


def scheduled_after(obs: Observed) -> tuple[bool, str, str]:
    """Scheduled, once it is over: where the benchmark's pods ran, or that none ever did."""
    ran = [p for p in obs.pods if (p.get("spec") or {}).get("nodeName")]
    if ran:
        nodes = sorted({str(p["spec"]["nodeName"]) for p in ran})
        return (
            True,
            Reason.SCHEDULED.value,
            f"the benchmark ran {len(ran)} time(s), on {', '.join(nodes)}",
        )
    prev = condition_of(obs.status, "Scheduled")
    if prev.get("status") == "True":  # its pods are gone (a re-evaluation): what it said stands
        return True, str(prev.get("reason", "")), str(prev.get("message", ""))
    if obs.job is not None:
        return False, "NeverScheduled", "no benchmark pod was ever scheduled"
    return False, "NotStarted", "no benchmark Job was started"


def failed_status(obs: Observed, reason: str, message: str) -> dict[str, Any]:
    scheduled = scheduled_after(obs)
    return {
        "phase": Phase.FAILED.value,
        "completedAt": iso(obs.now),
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


def until(now: dt.datetime, when: dt.datetime | None) -> float | None:
    if when is None:
        return None
    return max((when - now).total_seconds(), 1.0)


def event_body(
    obj: dict[str, Any], event_type: str, reason: str, message: str, now: dt.datetime
) -> dict[str, Any]:
    """A core/v1 Event about the qualification `obj` (posted by `kube`)."""
    meta = obj["metadata"]
    return {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelQualification",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "modelgrid-operator"},
        "firstTimestamp": now.isoformat(),
        "lastTimestamp": now.isoformat(),
        "count": 1,
        "reportingComponent": "modelgrid-operator",
    }
