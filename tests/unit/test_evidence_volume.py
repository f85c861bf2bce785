"""Kept evidence: the Job mounts the evidence claim (its own directory only), status says where
the evidence is, and nothing fails without a claim. No cluster."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
from typing import Any

import pytest

from modelgrid_operator.jobs import JobSettings, evidence_dir
from modelgrid_operator.outcome import ActionKind, Decision
from modelgrid_operator.reconcile import decide
from modelgrid_operator.settings import Settings
from tests.unit.test_reconcile import (
    COMPLETE,
    NAME,
    NS,
    T0,
    UID,
    job_object,
    merged,
    observe,
    real_result,
    succeeded_pod,
)

CLAIM = "modelgrid-evidence"
KEPT = dataclasses.replace(JobSettings(), evidence_claim=CLAIM)
PVC = {
    "metadata": {"name": CLAIM, "namespace": "modelgrid-benchmarks"},
    "status": {"phase": "Bound"},
}


def _results(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """The Job's results volume, its mount and the container's env."""
    pod = job["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "results"]
    (c,) = pod["containers"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "results"]
    return volume, mount, c["env"]


def _start(settings: JobSettings, **kw: Any) -> Decision:
    d = decide(observe(**kw), settings)
    assert d.action is ActionKind.CREATE_JOB
    assert d.job is not None
    return d


def test_without_a_claim_the_evidence_is_scratch_and_status_says_so() -> None:
    d = _start(JobSettings())
    assert d.job is not None
    volume, mount, _ = _results(d.job)
    assert volume == {"name": "results", "emptyDir": {}}
    assert mount == {"name": "results", "mountPath": "/results"}
    ev = d.status["evidence"]
    assert ev["kept"] is False
    assert "no evidence volume is configured" in ev["message"]
    assert "claimName" not in ev
    assert [r for _, r, _ in d.events] == ["JobCreated"]  # nothing to warn about


def test_a_claim_mounts_the_attempts_own_directory_read_write() -> None:
    d = _start(KEPT, volumes={CLAIM: PVC})
    assert d.job is not None
    volume, mount, env = _results(d.job)
    assert volume == {"name": "results", "persistentVolumeClaim": {"claimName": CLAIM}}
    want = f"{NS}/{NAME}/{UID}/g1-a0"
    assert evidence_dir(NS, NAME, UID, 1, 0) == want
    assert mount == {
        "name": "results",
        "mountPath": "/results",
        "subPathExpr": f"{want}/$(POD_NAME)",
    }
    assert "readOnly" not in mount
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env
    notes = d.job["metadata"]["annotations"]
    assert notes["modelgrid.firmus.ai/evidence-claim"] == CLAIM
    assert notes["modelgrid.firmus.ai/evidence-path"] == want
    # the pod template carries them too, so the pod says where its files go
    assert (
        d.job["spec"]["template"]["metadata"]["annotations"]["modelgrid.firmus.ai/evidence-path"]
        == want
    )
    ev = d.status["evidence"]
    assert ev == {"kept": True, "claimName": CLAIM, "path": want, "message": ev["message"]}
    assert want in ev["message"]
    # no other volume of the pod is the claim, and only one container mounts it
    pod = d.job["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v] == ["results"]


def test_a_missing_claim_runs_the_benchmark_and_warns() -> None:
    d = _start(KEPT, volumes={CLAIM: None})
    assert d.job is not None
    volume, _, _ = _results(d.job)
    assert volume == {"name": "results", "emptyDir": {}}
    ev = d.status["evidence"]
    assert (ev["kept"], ev["claimName"]) == (False, CLAIM)
    assert "does not exist" in ev["message"]
    assert ("Warning", "EvidenceNotKept") in [(t, r) for t, r, _ in d.events]
    assert d.status["phase"] == "Scheduling"  # nothing fails


def test_a_namespace_may_have_its_own_claim_or_none() -> None:
    own = dataclasses.replace(KEPT, evidence_claims=((NS, "team-a-evidence"),))
    d = _start(own, volumes={"team-a-evidence": PVC})
    assert d.job is not None
    assert _results(d.job)[0]["persistentVolumeClaim"] == {"claimName": "team-a-evidence"}
    off = dataclasses.replace(KEPT, evidence_claims=((NS, ""),))
    d = _start(off, volumes={CLAIM: PVC})
    assert d.status["evidence"]["kept"] is False
    assert off.evidence_claim_for("team-b") == CLAIM


def test_once_priced_status_names_the_pod_directory_and_its_digests() -> None:
    raw = real_result()
    first = _start(KEPT, volumes={CLAIM: PVC})
    status = merged({}, first)
    assert first.job is not None
    job = first.job["metadata"]["name"]
    pod = succeeded_pod(job, raw)
    d = decide(
        observe(
            status=status,
            job=job_object(first.job, *COMPLETE),
            pods=[pod],
            now=T0 + dt.timedelta(minutes=12),
            volumes={CLAIM: PVC},
        ),
        KEPT,
    )
    after = merged(status, d)
    assert after["phase"] == "Succeeded"
    ev = after["evidence"]
    assert ev["kept"] is True
    assert ev["pod"] == pod["metadata"]["name"]
    assert ev["path"] == f"{NS}/{NAME}/{UID}/g1-a0/{pod['metadata']['name']}"
    digests = after["measured"]["evidence"]
    assert ev["traceSha256"] == digests["traceSha256"]
    assert ev["telemetrySha256"] == digests["telemetrySha256"]


def test_without_a_claim_the_priced_status_still_says_not_kept() -> None:
    raw = real_result()
    first = _start(JobSettings())
    status = merged({}, first)
    assert first.job is not None
    d = decide(
        observe(
            status=status,
            job=job_object(first.job, *COMPLETE),
            pods=[succeeded_pod(first.job["metadata"]["name"], raw)],
            now=T0 + dt.timedelta(minutes=12),
        ),
        JobSettings(),
    )
    after = merged(status, d)
    assert after["phase"] == "Succeeded"
    assert after["evidence"]["kept"] is False


def test_each_generation_and_attempt_has_its_own_directory() -> None:
    assert evidence_dir(NS, NAME, UID, 2, 0) != evidence_dir(NS, NAME, UID, 1, 0)
    d = _start(KEPT, volumes={CLAIM: PVC}, generation=3)
    assert d.status["evidence"]["path"].endswith("/g3-a0")
    d = _start(KEPT, volumes={CLAIM: PVC}, status={"observedGeneration": 1, "attempt": 2})
    assert d.status["evidence"]["path"].endswith("/g1-a2")


def test_settings_read_the_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELGRID_EVIDENCE_CLAIM", " ev ")
    monkeypatch.setenv("MODELGRID_EVIDENCE_CLAIMS", "team-a=a-ev, team-b= ,")
    job = Settings.from_env().job
    assert job.evidence_claim == "ev"
    assert job.evidence_claim_for("team-a") == "a-ev"
    assert job.evidence_claim_for("team-b") == ""
    assert job.evidence_claim_for("team-c") == "ev"
    monkeypatch.setenv("MODELGRID_EVIDENCE_CLAIMS", "team-a")
    with pytest.raises(ValueError, match="not namespace=claim"):
        Settings.from_env()


@pytest.mark.timeout(60)
def test_a_misconfigured_operator_stops_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "modelgrid_operator"],
        env={"PATH": "/usr/bin:/bin", "MODELGRID_EVIDENCE_CLAIMS": "oops"},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "MODELGRID_EVIDENCE_CLAIMS" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("phase", ["Pending", "Lost", None])
def test_a_claim_that_is_not_bound_is_not_used(phase: str | None) -> None:
    pvc = {**PVC, "status": {"phase": phase} if phase else {}}
    d = _start(KEPT, volumes={CLAIM: pvc})
    assert d.job is not None
    assert _results(d.job)[0] == {"name": "results", "emptyDir": {}}
    ev = d.status["evidence"]
    assert ev["kept"] is False
    assert (phase or "not bound") in ev["message"]
    assert ("Warning", "EvidenceNotKept") in [(t, r) for t, r, _ in d.events]


def test_a_refused_result_still_says_where_its_evidence_is() -> None:
    first = _start(KEPT, volumes={CLAIM: PVC})
    status = merged({}, first)
    assert first.job is not None
    pod = succeeded_pod(first.job["metadata"]["name"], "{not json")
    d = decide(
        observe(
            status=status,
            job=job_object(first.job, *COMPLETE),
            pods=[pod],
            now=T0 + dt.timedelta(minutes=12),
        ),
        KEPT,
    )
    after = merged(status, d)
    assert after["phase"] == "Failed"
    assert after["evidence"]["path"] == f"{NS}/{NAME}/{UID}/g1-a0/{pod['metadata']['name']}"
    assert after["evidence"]["pod"] == pod["metadata"]["name"]


def test_the_evidence_location_comes_from_the_job_even_if_status_lost_it() -> None:
    raw = real_result()
    first = _start(KEPT, volumes={CLAIM: PVC})
    assert first.job is not None
    status = {k: v for k, v in merged({}, first).items() if k != "evidence"}  # patch lost
    pod = succeeded_pod(first.job["metadata"]["name"], raw)
    d = decide(
        observe(
            status=status,
            job=job_object(first.job, *COMPLETE),
            pods=[pod],
            now=T0 + dt.timedelta(minutes=12),
        ),
        KEPT,
    )
    ev = merged(status, d)["evidence"]
    assert (ev["kept"], ev["claimName"]) == (True, CLAIM)
    assert ev["path"].endswith(f"/g1-a0/{pod['metadata']['name']}")
