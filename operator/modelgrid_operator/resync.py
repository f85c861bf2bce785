"""Which qualifications the periodic resync reconciles: those not settled. Pure."""

from __future__ import annotations

import datetime as dt
from typing import Any

from modelgrid_operator.outcome import parse_iso
from modelgrid_operator.status import Phase


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


def waiting_for_slot(obj: dict[str, Any]) -> bool:
    """Queued for one of the operator's benchmark slots at its current generation (not for
    Kueue, whose queue admits it)."""
    meta, spec, st = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    return (
        st.get("phase") == Phase.QUEUED.value
        and st.get("observedGeneration") == meta.get("generation")
        and not spec.get("queueName")
    )


def due_now(
    objs: list[dict[str, Any]],
    policy_generations: dict[str, int],
    default_policy: str,
    now: dt.datetime,
    free_slots: int,
) -> list[tuple[str, str]]:
    """(namespace, name) of what a resync round reconciles: every qualification that
    `needs_resync`, except that of those waiting for a slot only the `free_slots` oldest (by
    creation, then name) are taken: a freed slot goes to the longest waiting, and a full queue
    costs nothing while no slot is free."""
    due = [o for o in objs if needs_resync(o, policy_generations, default_policy, now)]
    waiting = sorted((o for o in due if waiting_for_slot(o)), key=_queue_place)
    others = [o for o in due if not waiting_for_slot(o)]
    return [_key(o) for o in others + waiting[: max(free_slots, 0)]]


def _queue_place(obj: dict[str, Any]) -> tuple[str, tuple[str, str]]:
    """Where a qualification stands in the queue: by creation, then by name."""
    return str(obj["metadata"].get("creationTimestamp") or ""), _key(obj)


def waiting_ahead(objs: list[dict[str, Any]], obj: dict[str, Any]) -> int:
    """How many of `objs` wait for a slot ahead of `obj` (created before it): a qualification
    that arrives, or is looked at, while others wait does not jump the queue."""
    place = _queue_place(obj)
    return sum(1 for o in objs if waiting_for_slot(o) and _queue_place(o) < place)


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    return str(meta["namespace"]), str(meta["name"])
