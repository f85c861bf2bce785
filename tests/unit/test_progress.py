"""Live progress: the benchmark's progress lines, how the operator reads them into status, and
a benchmark that stops making progress failed for it (not left Running until its timeout)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from typing import Any

import pytest

from modelgrid_bench.progress import ProgressReporter
from modelgrid_contract.progress import PREFIX, Progress, Stage, parse_progress
from modelgrid_operator.outcome import Decision
from modelgrid_operator.reconcile import decide
from tests.unit.test_reconcile import (
    SETTINGS,
    T0,
    cond,
    job_object,
    observe,
    pod,
    spec_dict,
    started,
)

pytestmark = pytest.mark.timeout(120)

RUN_2 = Progress(stage=Stage.MEASURING, run=2, runs=3, level=1, levels=2, done=30, total=90)


# -- the line ------------------------------------------------------------------------------


def test_the_last_well_formed_line_wins_and_nothing_else_counts() -> None:
    text = "\n".join(
        [
            Progress(stage=Stage.WARMUP).line(),
            RUN_2.line(),
            # an engine's output reaches the log through the benchmark's logger, prefixed
            "2026-12-02 03:00:00 INFO modelgrid_bench.engine: engine: " + RUN_2.line(),
            PREFIX + '{"stage": "measuring", "run": -1}',  # out of bounds
            PREFIX + "not json",
            PREFIX + '{"stage": "' + "x" * 2000 + '"}',  # too long
            "some other line",
        ]
    )
    assert parse_progress(text) == RUN_2
    assert parse_progress("no progress here\n") is None
    forged = "INFO engine: " + Progress(stage=Stage.ANALYSING).line()
    assert parse_progress(RUN_2.line() + "\n" + forged) == RUN_2


@pytest.mark.parametrize(
    ("progress", "summary"),
    [
        (RUN_2, "run 2/3, level 1/2"),
        (RUN_2.model_copy(update={"levels": 1, "eta_s": 100.0}), "run 2/3, ~1m40s left"),
        (Progress(stage=Stage.ENGINE_STARTUP, eta_s=42.0), "engine-startup, ~42s left"),
    ],
)
def test_a_summary_fits_a_kubectl_column(progress: Progress, summary: str) -> None:
    assert progress.summary() == summary


def test_the_reporter_writes_a_line_per_stage_and_estimates_the_time_left() -> None:
    out = io.StringIO()
    r = ProgressReporter(total_requests=10, out=out)
    r.start()
    r.stage(Stage.WARMUP)
    r.done(5)
    r.stage(Stage.MEASURING, run=1, runs=1, level=1, levels=1)
    r.stop()
    lines = [parse_progress(line) for line in out.getvalue().splitlines()]
    assert [p.stage for p in lines if p] == [Stage.LOADING, Stage.WARMUP, Stage.MEASURING]
    last = lines[-1]
    assert last is not None
    assert last.done == 5
    assert last.total == 10
    assert last.eta_s is not None  # 5 left at the rate the first 5 took
    assert lines[0] is not None
    assert lines[0].eta_s is None  # nothing done yet: no estimate


def test_a_session_reports_its_stages_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    from modelgrid_bench.backends.base import BackendOptions, open_backend
    from modelgrid_bench.runner import SessionConfig, run_session
    from modelgrid_bench.sources import open_source
    from modelgrid_contract.result import SamplerConfig
    from modelgrid_contract.workload import Workload

    backend = open_backend(BackendOptions(kind="synthetic", model="synthetic"))
    source = open_source("replay:builtin:h200-decode")
    try:
        run_session(
            SessionConfig(
                workload=Workload(samples=2, tokens_per_sample=5, repeats=2, warmup_samples=1),
                sampler=SamplerConfig(interval_s=0.01),
                idle_baseline_s=0.2,
                report_progress=True,
            ),
            source,
            backend,
        )
    finally:
        source.close()
    seen = [parse_progress(line) for line in capsys.readouterr().err.splitlines()]
    stages = [(p.stage, p.run) for p in seen if p is not None]
    firsts = [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]
    assert firsts == [
        (Stage.LOADING, 0),
        (Stage.IDLE_BASELINE, 0),
        (Stage.WARMUP, 0),
        (Stage.MEASURING, 1),
        (Stage.MEASURING, 2),
        (Stage.ANALYSING, 0),
    ]
    last = next(p for p in reversed(seen) if p is not None)
    assert (last.done, last.total) == (5, 5)


# -- the operator --------------------------------------------------------------------------


def _running(
    progress: Progress | None, *, status: dict[str, Any], job: dict[str, Any], at_s: float = 0
) -> Decision:
    obs = observe(
        status=status,
        job=job_object(job, active=1),
        pods=[pod(job["metadata"]["name"], "Running")],
        now=T0 + dt.timedelta(seconds=at_s),
    )
    return decide(dataclasses.replace(obs, progress=progress), SETTINGS)


def test_status_shows_the_stage_and_the_ready_message_says_it() -> None:
    _, st, job = started()
    d = _running(RUN_2.model_copy(update={"eta_s": 61.0}), status=st, job=job)
    p = d.status["progress"]
    assert p["stage"] == "measuring"
    assert (p["run"], p["runs"], p["level"], p["levels"]) == (2, 3, 1, 2)
    assert (p["requestsDone"], p["requestsTotal"]) == (30, 90)
    assert p["summary"] == "run 2/3, level 1/2, ~1m01s left"
    assert p["changedAt"] == p["updatedAt"]
    assert "run 2/3" in cond(d.status, "Ready")["message"]


def test_a_heartbeat_does_not_move_the_clock_a_finished_request_does() -> None:
    _, st, job = started()
    first = _running(RUN_2, status=st, job=job)
    st = {**st, **first.status}
    same = _running(RUN_2.model_copy(update={"eta_s": 3.0}), status=st, job=job, at_s=60)
    assert same.status["progress"]["changedAt"] == first.status["progress"]["changedAt"]
    assert same.status["progress"]["updatedAt"] != first.status["progress"]["updatedAt"]
    moved = _running(RUN_2.model_copy(update={"done": 31}), status=st, job=job, at_s=60)
    assert moved.status["progress"]["changedAt"] == moved.status["progress"]["updatedAt"]


def test_a_benchmark_without_progress_for_too_long_fails_and_its_job_goes() -> None:
    _, st, job = started(spec=spec_dict(progressTimeoutSeconds=300))
    first = _running(RUN_2, status=st, job=job)
    st = {**st, **first.status}
    spec = spec_dict(progressTimeoutSeconds=300)
    ok = decide(
        dataclasses.replace(
            observe(
                spec=spec,
                status=st,
                job=job_object(job, active=1),
                pods=[pod(job["metadata"]["name"], "Running")],
                now=T0 + dt.timedelta(seconds=299),
            ),
            progress=RUN_2,
        ),
        SETTINGS,
    )
    assert ok.status["phase"] == "Running"
    late = decide(
        dataclasses.replace(
            observe(
                spec=spec,
                status=st,
                job=job_object(job, active=1),
                pods=[pod(job["metadata"]["name"], "Running")],
                now=T0 + dt.timedelta(seconds=301),
            ),
            progress=RUN_2,
        ),
        SETTINGS,
    )
    assert late.status["phase"] == "Failed"
    stalled = cond(late.status, "Stalled")
    assert stalled["reason"] == "NoProgress"
    assert "no progress for 301 s (stage run 2/3, level 1/2)" in stalled["message"]
    assert "spec.progressTimeoutSeconds" in stalled["message"]
    assert late.delete_jobs == [job["metadata"]["name"]]
    assert late.status["progress"] is None
    assert [(t, r) for t, r, _ in late.events] == [("Warning", "NoProgress")]


def test_an_engine_starting_has_its_startup_time_before_it_counts_as_stalled() -> None:
    server = {
        "engine": "custom",
        "command": ["python", "-m", "modelgrid_bench.pacedserver"],
        "startupTimeoutSeconds": 900,
    }
    spec = spec_dict(
        model={"name": "llama-8b", "source": {"server": server}}, progressTimeoutSeconds=60
    )
    from tests.unit.test_reconcile import policy

    trusting = policy(1, engineAccess={"allowCustomCommand": True})
    first = decide(observe(spec=spec, tier_policy=trusting), SETTINGS)
    assert first.job is not None
    job = first.job
    starting = Progress(stage=Stage.ENGINE_STARTUP)

    def at(seconds: float, status: dict[str, Any]) -> Decision:
        obs = observe(
            spec=spec,
            status=status,
            tier_policy=trusting,
            job=job_object(job, active=1),
            pods=[pod(job["metadata"]["name"], "Running")],
            now=T0 + dt.timedelta(seconds=seconds),
        )
        return decide(dataclasses.replace(obs, progress=starting), SETTINGS)

    st = {**first.status, **at(0, first.status).status}
    assert at(900 + 120, st).status["phase"] == "Running"
    assert at(900 + 121, st).status["phase"] == "Failed"


def test_progress_goes_when_the_benchmark_ends() -> None:
    from tests.unit.test_reconcile import COMPLETE

    _, st, job = started()
    st = {**st, **_running(RUN_2, status=st, job=job).status}
    done = decide(observe(status=st, job=job_object(job, *COMPLETE), pods=[]), SETTINGS)
    assert done.status["progress"] is None
