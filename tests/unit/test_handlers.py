"""The reconciler's wiring over our Kube boundary: where Jobs go, what is read, what is swept."""

from __future__ import annotations

from typing import Any

from modelgrid_contract.progress import Progress, Stage
from modelgrid_operator.jobs import LABEL_CONTROLLER_UID, JobSettings, job_nonce, qualification_of
from modelgrid_operator.reconciler import Reconciler
from modelgrid_operator.settings import Settings
from tests import factory as f
from tests.fake_kube import FakeKube

BENCH_NS = "gpu-bench"


def _qualification(
    ns: str, name: str, uid: str, source: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "modelgrid.firmus.ai/v1alpha1",
        "kind": "ModelQualification",
        "metadata": {"namespace": ns, "name": name, "uid": uid, "generation": 1},
        "spec": {
            "model": {
                "name": name,
                "source": source or {"randomWeights": {"architecture": "tiny-llama"}},
            }
        },
    }


def _world(*qualifications: dict[str, Any]) -> tuple[FakeKube, Reconciler]:
    kube = FakeKube()
    kube.policies["model-card"] = {
        "metadata": {"name": "model-card", "generation": 1},
        "spec": f.shipped_policy_spec(),
    }
    for q in qualifications:
        kube.qualifications[(q["metadata"]["namespace"], q["metadata"]["name"])] = q
    settings = Settings(job=JobSettings(namespace=BENCH_NS))
    return kube, Reconciler(kube, settings)  # type: ignore[arg-type]


def test_the_job_is_made_in_the_benchmark_namespace_with_a_fresh_nonce() -> None:
    kube, r = _world(_qualification("team-a", "q", "uid-a"), _qualification("team-b", "q", "uid-b"))
    r.reconcile("team-a", "q")
    r.reconcile("team-b", "q")
    jobs = list(kube.jobs.values())
    assert len(jobs) == 2
    assert {j["metadata"]["namespace"] for j in jobs} == {BENCH_NS}
    assert {qualification_of(j) for j in jobs} == {
        ("team-a", "q", "uid-a"),
        ("team-b", "q", "uid-b"),
    }
    nonces = [job_nonce(j) for j in jobs]
    assert all(n and len(n) == 32 for n in nonces)
    assert nonces[0] != nonces[1]
    status = kube.qualifications[("team-a", "q")]["status"]
    assert status["phase"] == "Scheduling"
    assert status["jobName"] in {j["metadata"]["name"] for j in jobs}


def test_model_volumes_are_looked_up_in_the_benchmark_namespace_only() -> None:
    source = {"pvc": {"claimName": "llama", "path": "/w"}}
    kube, r = _world(_qualification("team-a", "q", "uid-a", source))
    kube.pvcs[("team-a", "llama")] = {"metadata": {"name": "llama", "annotations": {}}}
    r.reconcile("team-a", "q")
    assert kube.pvc_reads == [(BENCH_NS, "llama")]
    assert not kube.jobs  # the tenant's own claim of that name does not count
    st = kube.qualifications[("team-a", "q")]["status"]
    assert st["phase"] == "Pending"
    assert [(e[1], e[2]) for e in kube.events] == [("Warning", "ModelVolumeMissing")]
    kube.pvcs[(BENCH_NS, "llama")] = {
        "metadata": {"name": "llama", "annotations": {"modelgrid.firmus.ai/shared-with": "team-a"}}
    }
    r.reconcile("team-a", "q")
    assert len(kube.jobs) == 1


def test_the_sweep_deletes_jobs_whose_qualification_is_gone_or_recreated() -> None:
    kube, r = _world(
        _qualification("team-a", "kept", "uid-kept"),
        _qualification("team-a", "gone", "uid-gone"),
        _qualification("team-a", "again", "uid-old"),
    )
    for name in ("kept", "gone", "again"):
        r.reconcile("team-a", name)
    assert len(kube.jobs) == 3
    del kube.qualifications[("team-a", "gone")]
    kube.qualifications[("team-a", "again")]["metadata"]["uid"] = "uid-new"  # deleted, recreated
    assert r.collect_orphans() == 2
    left = [qualification_of(j) for j in kube.jobs.values()]
    assert left == [("team-a", "kept", "uid-kept")]
    assert r.collect_orphans() == 0


def test_deleting_a_qualification_deletes_its_jobs() -> None:
    kube, r = _world(_qualification("team-a", "q", "uid-a"), _qualification("team-b", "q", "uid-b"))
    r.reconcile("team-a", "q")
    r.reconcile("team-b", "q")
    r.delete_jobs_of("team-a", "q", "uid-a")
    assert [qualification_of(j) for j in kube.jobs.values()] == [("team-b", "q", "uid-b")]


def test_a_forbidden_benchmark_namespace_is_reported_not_raised() -> None:
    kube, r = _world(_qualification("team-a", "q", "uid-a"), _qualification("team-a", "done", "u2"))
    r.reconcile("team-a", "done")
    kube.qualifications[("team-a", "done")]["status"] = {
        "phase": "Succeeded",
        "tier": {"number": 1},
    }
    kube.denied = True
    kube.events.clear()
    assert r.reconcile("team-a", "q") == 60.0  # no exception: the operator keeps serving
    st = kube.qualifications[("team-a", "q")]["status"]
    assert st["phase"] == "Pending"
    stalled = next(c for c in st["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "BenchmarkNamespaceForbidden")
    assert "jobs.batch is forbidden" in stalled["message"]
    assert [(e[1], e[2]) for e in kube.events] == [("Warning", "BenchmarkNamespaceForbidden")]
    kube.events.clear()
    r.reconcile("team-a", "q")
    assert kube.events == []  # said once
    assert kube.qualifications[("team-a", "q")]["status"]["phase"] == "Pending"
    r.reconcile("team-a", "done")  # a standing verdict is left as it is
    assert kube.qualifications[("team-a", "done")]["status"] == {
        "phase": "Succeeded",
        "tier": {"number": 1},
    }
    kube.denied = False
    r.reconcile("team-a", "q")
    assert kube.qualifications[("team-a", "q")]["status"]["phase"] == "Scheduling"


def test_a_rerun_checks_the_model_volume_again() -> None:
    source = {"pvc": {"claimName": "llama", "path": "/w"}}
    kube, r = _world(_qualification("team-a", "q", "uid-a", source))
    kube.pvcs[(BENCH_NS, "llama")] = {
        "metadata": {"name": "llama", "annotations": {"modelgrid.firmus.ai/shared-with": "*"}}
    }
    r.reconcile("team-a", "q")
    (job,) = kube.jobs.values()
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    kube.pvc_reads.clear()
    r.reconcile("team-a", "q")  # finished: the next attempt may need the volume
    assert kube.pvc_reads == [(BENCH_NS, "llama")]


def _running_pod(kube: FakeKube, job: dict[str, Any]) -> dict[str, Any]:
    """The Job controller's pod for `job`, running, as the fake's pods_of_job finds it."""
    name = job["metadata"]["name"] + "-abcde"
    pod = {
        "metadata": {
            "name": name,
            "namespace": BENCH_NS,
            "labels": {
                **job["spec"]["template"]["metadata"]["labels"],
                LABEL_CONTROLLER_UID: job["metadata"]["uid"],
            },
            "annotations": dict(job["spec"]["template"]["metadata"]["annotations"]),
            "ownerReferences": [
                {"kind": "Job", "controller": True, "uid": job["metadata"]["uid"], "name": name}
            ],
        },
        "spec": {"nodeName": "gpu-node-1", "containers": [{"name": "benchmark"}]},
        "status": {"phase": "Running"},
    }
    kube.pods[(BENCH_NS, name)] = pod
    return pod


def test_a_running_benchmarks_progress_is_read_from_its_log_into_status() -> None:
    kube, r = _world(_qualification("team-a", "q", "uid-a"))
    r.reconcile("team-a", "q")
    (job,) = kube.jobs.values()
    pod = _running_pod(kube, job)
    line = Progress(stage=Stage.MEASURING, run=1, runs=3, level=1, levels=1, done=4, total=20)
    kube.logs[(BENCH_NS, pod["metadata"]["name"])] = "loading...\n" + line.line() + "\n"
    assert kube.running_benchmark_owners(BENCH_NS) == [("team-a", "q")]
    r.reconcile("team-a", "q")
    status = kube.qualifications[("team-a", "q")]["status"]
    assert status["phase"] == "Running"
    assert status["progress"]["stage"] == "measuring"
    assert status["progress"]["summary"] == "run 1/3"
    assert status["progress"]["requestsDone"] == 4


def test_a_finished_jobs_result_is_read_whole_once_and_then_from_the_cache() -> None:
    """The cache's pod copies carry no termination message: the reconcile of a finished Job
    reads its pods from the API until the outcome is in status, and no more after."""
    kube, r = _world(_qualification("team-a", "q", "uid-a"))
    r.reconcile("team-a", "q")
    (job,) = kube.jobs.values()
    pod = _running_pod(kube, job)
    r.reconcile("team-a", "q")
    assert kube.whole_pod_reads == []  # running: the cache serves
    pod["status"] = {
        "phase": "Succeeded",
        "containerStatuses": [
            {"name": "benchmark", "state": {"terminated": {"exitCode": 0, "message": "{not json"}}}
        ],
    }
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    r.reconcile("team-a", "q")
    assert kube.whole_pod_reads == [job["metadata"]["name"]]
    status = kube.qualifications[("team-a", "q")]["status"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert status["phase"] == "Failed"
    assert stalled["reason"] == "ResultRejected"
    assert "lost" not in stalled["message"].lower()  # the message was read, and refused
    r.reconcile("team-a", "q")
    assert kube.whole_pod_reads == [job["metadata"]["name"]]  # settled: no second read
