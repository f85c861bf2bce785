"""The periodic resync (one thread, two lists; no per-object timer, no finalizer), no-op status
patches left unsent, and the concurrency cap under parallel reconciles. No cluster."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from typing import Any

import pytest

from modelgrid_operator import handlers
from modelgrid_operator.jobs import JobSettings
from modelgrid_operator.reconciler import Reconciler
from modelgrid_operator.resync import needs_resync
from modelgrid_operator.settings import Settings
from modelgrid_operator.watcher import Watcher
from tests import factory as f
from tests.fake_kube import FakeKube
from tests.unit.test_handlers import BENCH_NS, _qualification, _world

NOW = dt.datetime(2026, 12, 2, 6, 0, tzinfo=dt.UTC)
POLICIES = {"model-card": 1}


def _settled(**status: Any) -> dict[str, Any]:
    obj = f.qualification_cr("q")
    obj["status"].update(
        {"expiresAt": "2027-12-01T00:00:00Z", "policy": {"name": "model-card", "generation": 1}}
    )
    obj["status"].update(status)
    return obj


def test_a_standing_verdict_is_not_resynced() -> None:
    assert not needs_resync(_settled(), POLICIES, "model-card", NOW)


@pytest.mark.parametrize(
    ("why", "edit", "policies"),
    [
        ("expired", lambda o: o["status"].update(expiresAt="2026-12-01T00:00:00Z"), POLICIES),
        ("policy changed", lambda o: None, {"model-card": 2}),
        ("policy missing", lambda o: None, {}),
        ("new generation", lambda o: o["metadata"].update(generation=2), POLICIES),
        ("not ready", lambda o: o["status"]["conditions"][0].update(status="False"), POLICIES),
        ("queued", lambda o: o["status"].update(phase="Queued"), POLICIES),
        ("running", lambda o: o["status"].update(phase="Running"), POLICIES),
        ("never looked at", lambda o: o.update(status={}), POLICIES),
    ],
)
def test_what_a_resync_must_look_at(why: str, edit: Any, policies: dict[str, int]) -> None:
    obj = _settled()
    edit(obj)
    assert needs_resync(obj, policies, "model-card", NOW), why


def test_failed_and_deleting_are_left_alone() -> None:
    failed = f.qualification_cr("x", phase="Failed", reason="ResultRejected")
    assert not needs_resync(failed, POLICIES, "model-card", NOW)
    going = _settled()
    going["metadata"]["deletionTimestamp"] = "2026-12-02T05:00:00Z"
    going["status"]["phase"] = "Running"
    assert not needs_resync(going, POLICIES, "model-card", NOW)


def test_the_resync_reconciles_only_what_is_due() -> None:
    kube, r = _world(_qualification("team-a", "new", "uid-new"))
    settled = _settled()
    settled["metadata"].update(namespace="team-a", name="done", uid="uid-done")
    kube.qualifications[("team-a", "done")] = settled
    due: list[tuple[str, str]] = []
    assert r.resync(lambda ns, name: due.append((ns, name))) == 1
    assert due == [("team-a", "new")]


def test_no_timer_and_no_finalizer_is_registered_with_kopf() -> None:
    import kopf

    registry = kopf.get_default_registry()
    resource_handlers = list(registry._spawning.get_all_handlers())
    assert resource_handlers == []
    changing = list(registry._changing.get_all_handlers())
    assert changing
    assert all(not h.requires_finalizer for h in changing)
    # deletions are seen as watch events, which never need a finalizer
    watching = list(registry._watching.get_all_handlers())
    assert any(getattr(h.fn, "__name__", "") == handlers.on_event.__name__ for h in watching)


def test_an_unchanged_status_is_not_patched_again() -> None:
    kube, r = _world(_qualification("team-a", "q", "uid-a"))
    r.reconcile("team-a", "q")
    assert kube.status_patches == [("team-a", "q")]
    kube.status_patches.clear()
    for _ in range(3):
        r.reconcile("team-a", "q")  # the Job exists and has not moved
    assert kube.status_patches == []


class _SlowCount(FakeKube):
    """Counting the slots in use takes a while: two reconciles overlap inside it."""

    def active_benchmarks(self, namespace: str) -> int:
        n = super().active_benchmarks(namespace)
        time.sleep(0.2)
        return n


def test_two_qualifications_never_both_take_the_last_slot() -> None:
    kube = _SlowCount()
    kube.policies["model-card"] = {
        "metadata": {"name": "model-card", "generation": 1},
        "spec": f.shipped_policy_spec(),
    }
    for name in ("a", "b", "c"):
        q = _qualification("team-a", name, f"uid-{name}")
        kube.qualifications[("team-a", name)] = q
    settings = dataclasses.replace(
        Settings(job=JobSettings(namespace=BENCH_NS)), max_concurrent_jobs=1
    )
    r = Reconciler(kube, settings)  # type: ignore[arg-type]
    threads = [threading.Thread(target=r.reconcile, args=("team-a", n)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(kube.jobs) == 1
    phases = sorted(q["status"]["phase"] for q in kube.qualifications.values())
    assert phases == ["Queued", "Queued", "Scheduling"]


def test_the_resync_interval_is_read_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELGRID_RESYNC_SECONDS", "45")
    assert Settings.from_env().resync_interval_s == 45.0
    monkeypatch.setenv("MODELGRID_RESYNC_SECONDS", "0")
    with pytest.raises(ValueError, match="between 5 and 3600"):
        Settings.from_env()


def test_a_finished_job_wakes_the_resync_for_the_queue() -> None:
    _, r = _world(_qualification("team-a", "q", "uid-a"))
    w = Watcher(r)
    try:
        running = {"kind": "Job", "metadata": {"name": "j"}, "status": {"active": 1}}
        w.changed(running)
        assert not w.wake.is_set()
        done = {
            "kind": "Job",
            "metadata": {"name": "j"},
            "status": {"conditions": [{"type": "Complete", "status": "True"}]},
        }
        w.changed(done)
        assert w.wake.is_set()
    finally:
        w.pool.shutdown(wait=True)
