"""The operator under faults on the real control plane: SIGKILLed at seeded random points over a
batch of paced qualifications and restarted each time, with qualifications deleted while it is
down and specs changed mid-run. A watch opened before the first apply records every Job the
operator ever creates, so a Job made twice, made again after a restart, or left behind is seen
even when it is deleted again before the end."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from modelgrid_operator.jobs import LABEL_ATTEMPT, LABEL_GENERATION, LABEL_QUALIFICATION
from modelgrid_sandbox.cluster import Cluster
from tests.controlplane.conftest import (
    BENCHMARK_NAMESPACE,
    benchmark_jobs,
    benchmark_pods,
    wait_for,
)
from tests.controlplane.kit import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorUnderTest,
    create_qualification,
    get_qualification,
    install_api,
    paced_pods,
)
from tests.factory import PACED_WORKLOAD, paced_qualification

#: The seed of the kill schedule; a failure names it, and the same seed replays the schedule
#: (`MODELGRID_FAULT_SEED=N` runs another).
SEED = int(os.environ.get("MODELGRID_FAULT_SEED", "20261202"))
KILLS = 10
#: q0..q7 run to a verdict, two of them with a spec changed mid-run (one while the operator
#: runs, one while it is down); d0 and d1 are deleted while the operator is down.
KEPT = [f"q{i}" for i in range(8)]
DELETED = ["d0", "d1"]
#: Every qualification's verdict, on a loaded 2-core machine with two simulated H200 GPUs
#: (5 rounds of two ~40 s runs on a quiet one, plus the kills' down time).
ALL_VERDICTS_S = 1200
_QUALIFICATION_NS = "modelgrid.firmus.ai/qualification-namespace"


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[OperatorUnderTest]:
    install_api(cluster)
    op = OperatorUnderTest(
        cluster, {"MODELGRID_MAX_CONCURRENT_JOBS": "3", "MODELGRID_BACKOFF_LIMIT": "1"}
    )
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(autouse=True)
def paced(cluster: Cluster) -> Iterator[None]:
    with paced_pods(cluster):
        yield


@dataclass
class JobLedger:
    """Every Job ever ADDED for one qualification namespace, by its (owner uid, generation,
    attempt), each as the set of Job uids seen (a Job re-created under its old name has a new
    uid). Fed by a watch resumed from its resourceVersion; a relist after a 410 adds what it
    finds, so nothing created in between is missed."""

    api: client.ApiClient
    namespace: str
    made: dict[tuple[str, str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    added: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, job: Any) -> None:
        labels = job.metadata.labels or {}
        key = (
            labels.get(LABEL_QUALIFICATION, ""),
            labels.get(LABEL_GENERATION, ""),
            labels.get(LABEL_ATTEMPT, ""),
        )
        with self.lock:
            fresh = job.metadata.uid not in self.made[key]
            self.made[key].add(job.metadata.uid)
        if fresh:
            self.added.set()

    def _relist(self, batch: client.BatchV1Api, selector: str) -> str:
        listed = batch.list_namespaced_job(BENCHMARK_NAMESPACE, label_selector=selector)
        for job in listed.items:
            self._record(job)
        return str(listed.metadata.resource_version)

    def run(self) -> None:
        batch = client.BatchV1Api(self.api)
        selector = f"{_QUALIFICATION_NS}={self.namespace}"
        rv = self._relist(batch, selector)
        while not self.stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(
                    batch.list_namespaced_job,
                    BENCHMARK_NAMESPACE,
                    label_selector=selector,
                    resource_version=rv,
                    timeout_seconds=5,
                ):
                    rv = ev["object"].metadata.resource_version
                    if ev["type"] == "ADDED":
                        self._record(ev["object"])
                    if self.stop.is_set():
                        break
            except ApiException as exc:
                if exc.status != 410:
                    raise
                rv = self._relist(batch, selector)

    def snapshot(self) -> dict[tuple[str, str, str], set[str]]:
        with self.lock:
            return {k: set(v) for k, v in self.made.items()}


@pytest.fixture
def ledger(api: client.ApiClient, namespace: str) -> Iterator[JobLedger]:
    led = JobLedger(api, namespace)
    thread = threading.Thread(target=led.run, name="job-ledger", daemon=True)
    thread.start()
    try:
        yield led
    finally:
        led.stop.set()
        thread.join(timeout=30)


def _ended(api: client.ApiClient, ns: str, name: str) -> bool:
    st = get_qualification(api, ns, name).get("status") or {}
    return st.get("phase") in ("Succeeded", "Failed")


def _gone(api: client.ApiClient, ns: str, name: str) -> bool:
    try:
        get_qualification(api, ns, name)
    except ApiException as exc:
        return exc.status == 404
    return False


def _bump_workload(api: client.ApiClient, ns: str, name: str) -> None:
    """A new generation: a slightly longer workload (a developer re-applies a changed spec)."""
    workload = {**PACED_WORKLOAD, "tokensPerSample": PACED_WORKLOAD["tokensPerSample"] + 10}
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name, {"spec": {"workload": workload}}
    )


def _running(api: client.ApiClient, ns: str, among: list[str]) -> str | None:
    for name in among:
        if (get_qualification(api, ns, name).get("status") or {}).get("phase") == "Running":
            return name
    return None


@dataclass
class FaultRun:
    """What the kill loop did and measured; `changed` are the qualifications whose spec it
    changed (one while the operator ran, one while it was down), each picked while Running."""

    api: client.ApiClient
    namespace: str
    uids: dict[str, str]
    kills: int = 0
    unfinished_at_kill: list[int] = field(default_factory=list)
    live_after_s: list[float] = field(default_factory=list)
    deleted_gone_after_s: float = float("nan")
    changed: list[str] = field(default_factory=list)

    def change_one_running(self) -> None:
        """A new spec for a qualification whose benchmark runs now (mid-run)."""
        among = [n for n in KEPT if n not in self.changed]
        name = wait_for(
            f"a qualification to be Running, to change its spec mid-run (seed {SEED})",
            lambda: _running(self.api, self.namespace, among),
            300,
        )
        _bump_workload(self.api, self.namespace, name)
        self.changed.append(name)

    def during_down(self) -> None:
        """Kill 3: delete two qualifications (nothing waits for the operator); kill 5: change
        a running one's spec."""
        if self.kills == 2:
            crd = client.CustomObjectsApi(self.api)
            for name in DELETED:
                crd.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
            for name in DELETED:
                wait_for(
                    f"{name} to be deleted with the operator down",
                    lambda n=name: _gone(self.api, self.namespace, n),
                    30,
                )
        if self.kills == 4:
            self.change_one_running()

    def after_restart(self) -> None:
        """After kill 3: the deleted ones' Jobs go; after kill 7: a spec change while it runs."""
        if self.kills == 3:
            deleted = {self.uids[d] for d in DELETED}
            t0 = time.monotonic()
            wait_for(
                "the Jobs of the qualifications deleted while the operator was down to go",
                lambda: (
                    not any(
                        j.metadata.labels.get(LABEL_QUALIFICATION) in deleted
                        for j in benchmark_jobs(self.api, self.namespace)
                    )
                ),
                120,
            )
            self.deleted_gone_after_s = time.monotonic() - t0
        if self.kills == 7:
            self.change_one_running()


def _kill_and_restart(
    rng: random.Random, operator: OperatorUnderTest, run: FaultRun, ledger: JobLedger
) -> None:
    """Wait a random while (or for the next Job the operator creates, to kill it between the
    create and the status patch), SIGKILL it, act, stay down a random while, and restart."""
    run.unfinished_at_kill.append(sum(not _ended(run.api, run.namespace, n) for n in KEPT))
    if rng.random() < 0.4:
        ledger.added.clear()
        ledger.added.wait(timeout=rng.uniform(5, 20))
    else:
        time.sleep(rng.uniform(1, 10))
    operator.kill()
    run.during_down()
    time.sleep(rng.uniform(0.2, 3))
    t0 = time.monotonic()
    operator.start()
    run.live_after_s.append(time.monotonic() - t0)
    run.kills += 1
    run.after_restart()


def _assert_verdicts(run: FaultRun) -> dict[str, dict[str, Any]]:
    wait_for(
        f"every qualification's verdict after {KILLS} SIGKILLs (seed {SEED})",
        lambda: all(_ended(run.api, run.namespace, n) for n in KEPT),
        ALL_VERDICTS_S,
        interval_s=1.0,
    )
    final = {n: get_qualification(run.api, run.namespace, n) for n in KEPT}
    for name, obj in final.items():
        st = obj["status"]
        assert st["phase"] == "Succeeded", (name, SEED, st.get("conditions"))
        assert st["observedGeneration"] == obj["metadata"]["generation"], (name, st)
        assert obj["metadata"]["generation"] == (2 if name in run.changed else 1), name
    return final


def _assert_one_job_each(run: FaultRun, made: dict[tuple[str, str, str], set[str]]) -> None:
    """Exactly one Job per (uid, generation, attempt), ever; the changed ones one per
    generation (each was Running when changed, so its first generation had its Job)."""
    twice = {k: v for k, v in made.items() if len(v) != 1}
    assert not twice, f"a (qualification uid, generation, attempt) got more than one Job: {twice}"
    per_owner: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for owner, generation, attempt in made:
        per_owner[owner].append((generation, attempt))
    assert set(per_owner) <= set(run.uids.values()), "a Job for no qualification of the test"
    for name in KEPT:
        want = [("1", "0"), ("2", "0")] if name in run.changed else [("1", "0")]
        assert sorted(per_owner[run.uids[name]]) == want, (name, per_owner[run.uids[name]], SEED)


@pytest.mark.timeout(ALL_VERDICTS_S + 900)
def test_sigkills_at_random_points_lose_duplicate_and_orphan_nothing(
    api: client.ApiClient,
    namespace: str,
    operator: OperatorUnderTest,
    ledger: JobLedger,
) -> None:
    t_start = time.monotonic()
    rng = random.Random(SEED)
    for name in [*KEPT, *DELETED]:
        create_qualification(api, namespace, paced_qualification(name))
    uids = {n: get_qualification(api, namespace, n)["metadata"]["uid"] for n in [*KEPT, *DELETED]}
    run = FaultRun(api, namespace, uids)
    wait_for(f"the first Job (seed {SEED})", ledger.snapshot, 120)
    while run.kills < KILLS:
        _kill_and_restart(rng, operator, run, ledger)
    assert all(n > 0 for n in run.unfinished_at_kill), (
        f"a kill came after every verdict (seed {SEED}): {run.unfinished_at_kill}"
    )
    assert len(run.changed) == 2, run.changed
    final = _assert_verdicts(run)
    made = ledger.snapshot()
    _assert_one_job_each(run, made)

    def only_final_jobs() -> bool:
        names = {j.metadata.name for j in benchmark_jobs(api, namespace)}
        return names == {obj["status"]["jobName"] for obj in final.values()}

    wait_for("every superseded or orphaned Job to be deleted", only_final_jobs, 120)
    running = [
        p.metadata.name
        for p in benchmark_pods(api, namespace)
        if p.status.phase not in ("Succeeded", "Failed")
    ]
    assert not running, f"benchmark pods still running with every verdict written: {running}"
    print(
        f"fault run (seed {SEED}): {run.kills} SIGKILLs; unfinished at each kill "
        f"{run.unfinished_at_kill}; restart to live {min(run.live_after_s):.2f}-"
        f"{max(run.live_after_s):.2f} s (median {sorted(run.live_after_s)[KILLS // 2]:.2f}); "
        f"Jobs of qualifications deleted while down gone {run.deleted_gone_after_s:.2f} s after "
        f"the restart; spec changed mid-run: {run.changed}; {sum(map(len, made.values()))} Jobs; "
        f"{time.monotonic() - t_start:.0f} s in all"
    )
