"""The roster the resync and the sweep read instead of listing every qualification; the queue
order a freed slot follows; what kopf's resume and a policy change hand to the reconciler.
No cluster: our Kube boundary is `FakeKube`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest

from modelgrid_operator import handlers
from modelgrid_operator.jobs import JobSettings
from modelgrid_operator.reconciler import Reconciler
from modelgrid_operator.resync import due_now
from modelgrid_operator.roster import Roster, trimmed
from modelgrid_operator.settings import Settings
from modelgrid_operator.watcher import Watcher
from tests import factory as f
from tests.fake_kube import FakeKube
from tests.unit.test_handlers import BENCH_NS, _qualification, _world

NOW = dt.datetime(2026, 12, 2, 6, 0, tzinfo=dt.UTC)
POLICIES = {"model-card": 1}


def _queued(name: str, created: str, **meta: Any) -> dict[str, Any]:
    obj = f.qualification_cr(name, phase="Queued", reason="Queued")
    obj["metadata"].update(creationTimestamp=created, **meta)
    return obj


def test_a_trimmed_copy_keeps_what_the_resync_reads_and_drops_the_rest() -> None:
    obj = f.qualification_cr("q")
    obj["status"].update(
        result="x" * 4000,
        history=[{"tier": 1}] * 10,
        expiresAt="2027-12-01T00:00:00Z",
        policy={"name": "model-card", "generation": 1},
    )
    small = trimmed(obj)
    assert small["status"]["phase"] == obj["status"]["phase"]
    assert small["status"]["expiresAt"] == "2027-12-01T00:00:00Z"
    assert small["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert "result" not in small["status"]
    assert "history" not in small["status"]
    assert len(json.dumps(small)) < len(json.dumps(obj)) / 10


def test_an_event_older_than_our_own_write_does_not_undo_it() -> None:
    roster = Roster()
    new = _queued("q", "2026-12-02T05:00:00Z", resourceVersion="120")
    new["status"]["phase"] = "Scheduling"
    roster.put(new)
    old = _queued("q", "2026-12-02T05:00:00Z", resourceVersion="110")
    roster.put(old)  # kopf's event for the write before ours, delivered late
    assert roster.items()[0]["status"]["phase"] == "Scheduling"
    again = _queued("q", "2026-12-02T05:00:00Z", resourceVersion="90", uid="uid-recreated")
    roster.put(again)  # another object of the same name: never "older"
    assert roster.items()[0]["metadata"]["uid"] == "uid-recreated"


def test_retain_drops_the_deleted_and_names_the_unknown() -> None:
    roster = Roster()
    roster.put(_queued("a", "t1", uid="uid-a"))
    roster.put(_queued("b", "t1", uid="uid-b"))
    ns = roster.items()[0]["metadata"]["namespace"]
    missing = roster.retain({(ns, "a", "uid-a"), (ns, "c", "uid-c")})
    assert [m["metadata"]["name"] for m in roster.items()] == ["a"]
    assert missing == [(ns, "c")]


def test_a_freed_slot_goes_to_the_longest_waiting() -> None:
    fleet = [
        _queued("late", "2026-12-02T05:03:00Z"),
        _queued("first", "2026-12-02T05:01:00Z"),
        _queued("second", "2026-12-02T05:02:00Z"),
    ]
    names = [n for _, n in due_now(fleet, POLICIES, "model-card", NOW, free_slots=1)]
    assert names == ["first"]
    names = [n for _, n in due_now(fleet, POLICIES, "model-card", NOW, free_slots=2)]
    assert names == ["first", "second"]
    assert due_now(fleet, POLICIES, "model-card", NOW, free_slots=0) == []
    assert due_now(fleet, POLICIES, "model-card", NOW, free_slots=-3) == []


def test_a_full_queue_does_not_hold_back_what_is_not_waiting_for_a_slot() -> None:
    running = f.qualification_cr("running", phase="Running", reason="Running")
    changed = _queued("changed", "2026-12-02T05:00:00Z")
    changed["metadata"]["generation"] = 2  # a new spec while queued: looked at in any case
    kueue = _queued("kueue", "2026-12-02T05:00:00Z")
    kueue["spec"]["queueName"] = "gpu"  # Kueue admits it, not our slots
    fleet = [running, changed, kueue, _queued("waiting", "2026-12-02T05:00:00Z")]
    names = sorted(n for _, n in due_now(fleet, POLICIES, "model-card", NOW, free_slots=0))
    assert names == ["changed", "kueue", "running"]


def test_the_resync_reads_the_roster_after_one_list() -> None:
    kube, r = _world(_qualification("team-a", "new", "uid-new"))
    for _ in range(3):
        r.resync(lambda ns, name: None)
    assert kube.listings == 1  # the first round fills the roster; the rest read it


def test_a_queue_reconciled_by_the_resync_follows_creation_order() -> None:
    kube = FakeKube()
    kube.policies["model-card"] = {
        "metadata": {"name": "model-card", "generation": 1},
        "spec": f.shipped_policy_spec(),
    }
    for i, name in enumerate(("c", "a", "b")):
        q = _qualification("team-a", name, f"uid-{name}")
        q["metadata"]["creationTimestamp"] = f"2026-12-02T05:0{i}:00Z"
        kube.qualifications[("team-a", name)] = q
    settings = dataclasses.replace(
        Settings(job=JobSettings(namespace=BENCH_NS)), max_concurrent_jobs=1
    )
    r = Reconciler(kube, settings)  # type: ignore[arg-type]
    for name in ("a", "b", "c"):  # reconciled out of order: "a" takes the slot
        r.reconcile("team-a", name)
    assert [q["status"]["phase"] for q in map(kube.qualifications.get, [("team-a", "a")])] == [
        "Scheduling"
    ]
    for job in kube.jobs.values():  # the slot frees
        job["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
    due: list[tuple[str, str]] = []
    r.resync(lambda ns, name: due.append((ns, name)))
    assert ("team-a", "c") in due
    assert ("team-a", "b") not in due


def test_the_sweep_prunes_the_roster_and_hands_over_what_it_lacks() -> None:
    kube, r = _world(_qualification("team-a", "kept", "uid-kept"))
    r.reconcile("team-a", "kept")
    r.roster.put(_qualification("team-a", "deleted-while-down", "uid-x"))
    kube.qualifications[("team-a", "unseen")] = _qualification("team-a", "unseen", "uid-u")
    handed: list[tuple[str, str]] = []
    r.collect_orphans(lambda ns, name: handed.append((ns, name)))
    assert sorted(m["metadata"]["name"] for m in r.roster.items()) == ["kept"]
    assert handed == [("team-a", "unseen")]


@pytest.fixture
def runtime() -> Any:
    kube, r = _world(_qualification("team-a", "new", "uid-new"))
    w = Watcher(r)
    handlers._runtime.update(reconciler=r, watcher=w)
    try:
        yield kube, r, w
    finally:
        handlers._runtime.clear()
        w.pool.shutdown(wait=True)


def test_resuming_a_standing_verdict_sends_nothing(runtime: Any) -> None:
    kube, r, _ = runtime
    settled = f.qualification_cr("done")
    settled["status"].update(
        expiresAt="2027-12-01T00:00:00Z", policy={"name": "model-card", "generation": 1}
    )
    kube.qualifications[("team-a", "done")] = settled
    handlers.on_resume(body=settled, namespace="team-a", name="done")
    assert kube.status_patches == []
    assert kube.jobs == {}
    assert [m["metadata"]["name"] for m in r.roster.items()] == ["done"]
    new = kube.qualifications[("team-a", "new")]
    handlers.on_resume(body=new, namespace="team-a", name="new")
    assert kube.status_patches == [("team-a", "new")]
    assert len(kube.jobs) == 1


def test_a_policy_change_queues_its_users_and_no_others(runtime: Any) -> None:
    kube, _r, w = runtime
    other = _qualification("team-a", "other", "uid-o")
    other["spec"]["policyRef"] = {"name": "another"}
    kube.qualifications[("team-a", "other")] = other
    queued: list[tuple[str, str]] = []
    w.enqueue = lambda ns, name: queued.append((ns, name))  # type: ignore[method-assign]
    handlers.on_policy(body=kube.policies["model-card"])
    assert queued == [("team-a", "new")]


def test_a_policy_is_not_resumed_at_start() -> None:
    import kopf

    changing = list(kopf.get_default_registry()._changing.get_all_handlers())
    policy = [h for h in changing if getattr(h.fn, "__name__", "") == "on_policy"]
    assert sorted(str(h.reason) for h in policy) == ["create", "update"]
    assert not any(getattr(h, "initial", None) for h in policy)
    resumes = [h for h in changing if getattr(h, "initial", None)]
    assert [h.fn.__name__ for h in resumes] == ["on_resume"]


def test_a_newcomer_does_not_take_a_slot_from_those_queued_before_it() -> None:
    kube = FakeKube()
    kube.policies["model-card"] = {
        "metadata": {"name": "model-card", "generation": 1},
        "spec": f.shipped_policy_spec(),
    }
    settings = dataclasses.replace(
        Settings(job=JobSettings(namespace=BENCH_NS)), max_concurrent_jobs=1
    )
    r = Reconciler(kube, settings)  # type: ignore[arg-type]
    for i, name in enumerate(("running", "waiting", "newcomer")):
        q = _qualification("team-a", name, f"uid-{name}")
        q["metadata"]["creationTimestamp"] = f"2026-12-02T05:0{i}:00Z"
        kube.qualifications[("team-a", name)] = q
    r.reconcile("team-a", "running")
    r.reconcile("team-a", "waiting")
    for job in kube.jobs.values():  # the slot frees just as a new qualification arrives
        job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    kube.jobs.clear()
    r.reconcile("team-a", "newcomer")
    newcomer = kube.qualifications[("team-a", "newcomer")]["status"]
    assert newcomer["phase"] == "Queued"
    ready = next(c for c in newcomer["conditions"] if c["type"] == "Ready")
    assert "1 queued before it" in ready["message"]
    r.reconcile("team-a", "waiting")
    assert kube.qualifications[("team-a", "waiting")]["status"]["phase"] == "Scheduling"
