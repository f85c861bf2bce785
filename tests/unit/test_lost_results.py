"""A finished benchmark whose pod vanished before its result was read is measured again, not
failed (bounded, with the reason in status). No cluster."""

from __future__ import annotations

import datetime as dt
from typing import Any

from modelgrid_operator.jobs import job_name
from modelgrid_operator.outcome import ActionKind, Decision
from modelgrid_operator.reconcile import decide
from modelgrid_operator.starting import MAX_LOST_RESULTS
from tests.unit.test_reconcile import (
    COMPLETE,
    NAME,
    SETTINGS,
    T0,
    UID,
    cond,
    job_object,
    merged,
    observe,
    real_result,
    started,
    succeeded_pod,
)


def _finished_without_pods(status: dict[str, Any], manifest: dict[str, Any]) -> Decision:
    """The Job completed; its pod is gone (deleted, evicted, collected)."""
    return decide(
        observe(
            status=status,
            job=job_object(manifest, *COMPLETE),
            pods=[],
            now=T0 + dt.timedelta(minutes=12),
        ),
        SETTINGS,
    )


def test_a_vanished_pod_is_measured_again_as_a_new_attempt() -> None:
    _, status, manifest = started()
    d = _finished_without_pods(status, manifest)
    assert d.action is ActionKind.CREATE_JOB
    assert d.job is not None
    assert d.job["metadata"]["name"] == job_name(NAME, UID, 1, 1)
    after = merged(status, d)
    assert after["attempt"] == 1
    assert after["lostResults"] == 1
    assert after["phase"] == "Scheduling"
    assert "tier" not in after or after["tier"] is None
    reasons = [(t, r) for t, r, _ in d.events]
    assert ("Warning", "ResultLost") in reasons
    assert cond(after, "Reconciling")["reason"] == "ResultLost"
    assert "gone before its result was read" in cond(after, "Reconciling")["message"]


def test_losses_are_bounded_then_the_qualification_fails_with_the_reason() -> None:
    _, status, manifest = started()
    for n in range(1, MAX_LOST_RESULTS + 1):
        d = _finished_without_pods(status, manifest)
        assert d.action is ActionKind.CREATE_JOB, n
        assert d.job is not None
        status, manifest = merged(status, d), d.job
        assert status["lostResults"] == n
    d = _finished_without_pods(status, manifest)
    assert d.action is ActionKind.NONE
    after = merged(status, d)
    assert after["phase"] == "Failed"
    assert cond(after, "Stalled")["reason"] == "ResultLost"
    assert f"{MAX_LOST_RESULTS + 1} times" in cond(after, "Stalled")["message"]
    assert after["lostResults"] == MAX_LOST_RESULTS


def test_a_result_read_after_a_loss_is_priced_as_usual() -> None:
    _, status, manifest = started()
    d = _finished_without_pods(status, manifest)
    assert d.job is not None
    status, manifest = merged(status, d), d.job
    d = decide(
        observe(
            status=status,
            job=job_object(manifest, *COMPLETE),
            pods=[succeeded_pod(manifest["metadata"]["name"], real_result())],
            now=T0 + dt.timedelta(minutes=30),
        ),
        SETTINGS,
    )
    after = merged(status, d)
    assert after["phase"] == "Succeeded"
    assert after["attempt"] == 1
    assert after["lostResults"] == 1  # the record of what happened stays


def test_a_new_generation_counts_its_losses_afresh() -> None:
    _, status, manifest = started()
    d = _finished_without_pods(status, manifest)
    status = merged(status, d)
    d = decide(observe(status=status, generation=2), SETTINGS)
    assert d.action is ActionKind.CREATE_JOB
    after = merged(status, d)
    assert after.get("lostResults") is None
    assert after["attempt"] == 0


def test_a_pod_with_an_empty_message_is_still_a_refusal_not_a_loss() -> None:
    _, status, manifest = started()
    d = decide(
        observe(
            status=status,
            job=job_object(manifest, *COMPLETE),
            pods=[succeeded_pod(manifest["metadata"]["name"], "")],
            now=T0 + dt.timedelta(minutes=12),
        ),
        SETTINGS,
    )
    after = merged(status, d)
    assert after["phase"] == "Failed"
    assert cond(after, "Stalled")["reason"] == "ResultRejected"
    assert "lostResults" not in after
