"""The concurrency sweep (seed 002) against evidence with known truths: per-run speedup,
efficiency, deltas and contention, per-level efficiency statistics, the tier decided at the
declared level only, the compact form's budget, and the workload's rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from modelgrid_bench.analysis import analyze
from modelgrid_contract.result import CONTENTION_SHARE_OF_MEDIAN, TERMINATION_MESSAGE_LIMIT_BYTES
from modelgrid_contract.wire import decode_compact, encode_compact
from modelgrid_contract.workload import Workload
from tests import factory as f

pytestmark = pytest.mark.timeout(120)

LEVELS = (1, 4, 16)
#: Efficiency of each level's runs; run 3 at 16 is contended (0.5 of a 0.75 median < 0.85).
EFF = {1: [1.0, 1.0, 1.0], 4: [0.9, 0.92, 0.88], 16: [0.75, 0.76, 0.5]}


def _eff(level: int, run: int) -> float:
    return EFF[level][run]


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    return analyze(f.sweep_evidence(LEVELS, 3, efficiency=_eff))


def test_every_run_of_every_level_is_compared_with_the_first_levels_same_run(result) -> None:  # type: ignore[no-untyped-def]
    sweep = result.sweep
    assert sweep is not None
    assert sweep.levels == [1, 4, 16]
    assert [(r.concurrency, r.run) for r in sweep.runs] == [
        (level, i) for level in LEVELS for i in (1, 2, 3)
    ]
    for row in sweep.runs:
        truth = row.concurrency * _eff(row.concurrency, row.run - 1)
        assert row.speedup == pytest.approx(truth, rel=0.02)
        assert row.efficiency_pct == pytest.approx(truth / row.concurrency * 100, rel=0.02)
        base = next(b for b in sweep.runs if b.concurrency == 1 and b.run == row.run)
        assert row.throughput_delta_tok_s == pytest.approx(row.tokens_per_s - base.tokens_per_s)
        assert row.ttft_delta_ms == pytest.approx(0.02 * (row.concurrency - 1) * 1000, abs=1.0)


def test_contention_is_a_run_below_the_stated_share_of_its_levels_median(result) -> None:  # type: ignore[no-untyped-def]
    contended = [(r.concurrency, r.run) for r in result.sweep.runs if r.contention]
    assert contended == [(16, 3)]
    assert result.sweep.contention_share_of_median == CONTENTION_SHARE_OF_MEDIAN
    (top,) = [lv for lv in result.sweep.per_level if lv.concurrency == 16]
    assert top.contended_runs == 1


def test_each_level_has_seed_002s_efficiency_statistics(result) -> None:  # type: ignore[no-untyped-def]
    for level in result.sweep.per_level:
        effs = np.array(
            [r.efficiency_pct for r in result.sweep.runs if r.concurrency == level.concurrency]
        )
        e = level.efficiency
        assert e is not None
        assert e.n == 3
        assert e.mean == pytest.approx(float(np.mean(effs)))
        assert e.std == pytest.approx(float(np.std(effs, ddof=1)))
        assert (e.min, e.max) == (pytest.approx(effs.min()), pytest.approx(effs.max()))
        assert e.range == pytest.approx(effs.max() - effs.min())
    first = result.sweep.per_level[0].efficiency
    assert first.mean == pytest.approx(100.0)
    assert first.std == pytest.approx(0.0)


def test_the_tier_is_decided_from_the_declared_levels_runs_only(result) -> None:  # type: ignore[no-untyped-def]
    """Default: the highest level, the production-like one. Its runs are the result's runs;
    the pooled power is theirs (100 W + 2 W a stream), not the mix of every level."""
    assert result.sweep.tier_concurrency == 16
    assert len(result.runs) == 3
    assert result.pooled is not None
    assert result.pooled.avg_power_w == pytest.approx(132.0, rel=0.02)
    (top,) = [lv for lv in result.sweep.per_level if lv.concurrency == 16]
    assert result.pooled.tokens_per_s == pytest.approx(top.tokens_per_s, rel=0.01)
    at_four = analyze(f.sweep_evidence(LEVELS, 3, efficiency=_eff, tier_concurrency=4))
    assert at_four.sweep.tier_concurrency == 4
    assert at_four.pooled.avg_power_w == pytest.approx(108.0, rel=0.02)


def test_the_compact_form_carries_the_per_level_summary() -> None:
    res = analyze(f.sweep_evidence(LEVELS, 3, efficiency=_eff))
    compact = decode_compact(encode_compact(res))
    sw = compact.sweep
    assert sw is not None
    assert sw.levels == [1, 4, 16]
    assert sw.tier_concurrency == 16
    assert sw.contended_runs == [0, 0, 1]
    assert sw.efficiency_mean_pct[1] == pytest.approx(90.0, rel=0.02)


def test_eight_gpus_five_levels_ten_runs_fit_the_termination_message_with_the_sweep() -> None:
    """The worst case the issue names: a real analysis of a five-level sweep, widened to 8
    GPUs with full-length NVML UUIDs and 10 runs a level (every figure at full precision)."""
    from modelgrid_contract.result import GpuInfo

    res = analyze(f.sweep_evidence((1, 2, 4, 8, 16), 2, efficiency=lambda lv, r: 0.97**lv))
    gpus = [
        GpuInfo(index=i, name="NVIDIA H200", uuid=f"GPU-{i:08x}-1c2d-3e4f-5a6b-7c8d9e0f1a2b")
        for i in range(8)
    ]
    assert res.sweep is not None
    wide = res.model_copy(
        update={
            "environment": res.environment.model_copy(update={"gpus": gpus}),
            "runs": [res.runs[i % len(res.runs)] for i in range(10)],
            "sweep": res.sweep.model_copy(
                update={
                    "per_level": [lv.model_copy(update={"runs": 10}) for lv in res.sweep.per_level]
                }
            ),
        }
    )
    text = encode_compact(wide)
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT_BYTES
    compact = json.loads(text)
    assert "sweep" not in compact["truncated"]
    assert len(compact["sweep"]["levels"]) == 5
    assert compact["sweep"]["runs"] == [10] * 5
    assert len(compact["gpu"]["uuids"]) == 8
    assert decode_compact(text).sweep is not None


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"concurrencyLevels": [4, 1]}, "increase strictly"),
        ({"concurrencyLevels": [1, 1]}, "increase strictly"),
        ({"concurrencyLevels": [1]}, "at least 2"),
        ({"concurrencyLevels": [1, 4], "tierConcurrency": 8}, "one of concurrency_levels"),
        ({"tierConcurrency": 4}, "needs concurrency_levels"),
        ({"concurrencyLevels": [1, 4], "concurrency": 2}, "not both"),
    ],
)
def test_a_sweep_that_cannot_be_run_is_refused(fields: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Workload.model_validate(fields)


def test_a_workload_without_a_sweep_keeps_its_digest() -> None:
    """Results stored before sweeps existed still match their workloads."""
    import hashlib

    w = Workload()
    old = json.dumps(
        {k: v for k, v in w.model_dump(mode="json").items() if v is not None},
        sort_keys=True,
        separators=(",", ":"),
    )
    assert w.digest() == hashlib.sha256(old.encode()).hexdigest()[:16]
    assert Workload(concurrency_levels=(1, 4)).digest() != w.digest()


def test_the_runner_interleaves_the_levels_at_their_concurrency(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from modelgrid_bench.backends.base import BackendOptions, open_backend
    from modelgrid_bench.runner import SessionConfig, run_session
    from modelgrid_bench.sources import open_source
    from modelgrid_contract.result import SamplerConfig

    backend = open_backend(BackendOptions(kind="synthetic", model="synthetic"))
    source = open_source("replay:builtin:h200-decode")
    workload = Workload(
        samples=4, tokens_per_sample=5, repeats=2, warmup_samples=0, concurrency_levels=(1, 4)
    )
    try:
        ev, res = run_session(
            SessionConfig(
                workload=workload,
                sampler=SamplerConfig(interval_s=0.01),
                idle_baseline_s=0.2,
                output_dir=tmp_path,
            ),
            source,
            backend,
        )
    finally:
        source.close()
    assert [r.concurrency for r in ev.timeline.runs] == [1, 4, 1, 4]
    assert [r.index for r in ev.timeline.runs] == [0, 1, 2, 3]
    for run in ev.timeline.runs:
        assert max(q.stream for q in run.requests) + 1 == run.concurrency
    assert res.sweep is not None
    assert [r.run for r in res.runs] == [1, 3]  # the tier's runs: the level-4 ones

    # The evidence keeps the whole table, and re-analysing it gives the same one.
    from modelgrid_bench.evidence import read_evidence
    from modelgrid_contract.result import BenchmarkResult

    stored = BenchmarkResult.model_validate_json((tmp_path / "result.json").read_text())
    assert stored.sweep == res.sweep
    assert analyze(read_evidence(tmp_path)).sweep == res.sweep


# -- the operator: the sweep it accepts, and status.sweep ---------------------------------


def _operator_inputs():  # type: ignore[no-untyped-def]
    from modelgrid_operator.api import QualificationSpec
    from modelgrid_operator.policy import TierPolicySpec
    from modelgrid_operator.verdict import workload_digest

    ev = f.sweep_evidence(LEVELS, 3, efficiency=_eff)
    workload = ev.meta.workload.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec = QualificationSpec.model_validate(
        {
            "model": {"name": "m", "source": {"randomWeights": {"architecture": "tiny-llama"}}},
            "workload": workload,
        }
    )
    obj = json.loads(encode_compact(analyze(ev)))
    obj["workload_digest"] = workload_digest(spec)
    policy = TierPolicySpec.model_validate(f.shipped_policy_spec())
    return spec, policy, obj


def test_status_shows_each_level_and_the_level_the_tier_was_decided_at() -> None:
    from modelgrid_operator.verdict import sweep_status, validate_result

    spec, policy, obj = _operator_inputs()
    result = validate_result(json.dumps(obj), spec, policy)
    status = sweep_status(result)
    assert status is not None
    assert status["tierConcurrency"] == 16
    assert [lv["concurrency"] for lv in status["levels"]] == [1, 4, 16]
    four = status["levels"][1]["efficiency"]
    assert four["mean"] == pytest.approx(90.0, rel=0.02)
    assert four["range"] == pytest.approx(four["max"] - four["min"], abs=1e-3)
    assert four["cv"] == pytest.approx(four["std"] / four["mean"], rel=1e-3)
    assert status["levels"][2]["contendedRuns"] == 1


@pytest.mark.parametrize(
    ("edit", "reason", "says"),
    [
        (lambda sw: sw.update(tier_concurrency=4), "WorkloadMismatch", "priced at 4"),
        (lambda sw: sw.update(levels=[1, 8, 16]), "WorkloadMismatch", "levels [1, 8, 16]"),
        (
            lambda sw: sw["avg_power_w"].__setitem__(2, 90.0),
            "InconsistentResult",
            "is not the priced runs'",
        ),
    ],
)
def test_a_sweep_other_than_declared_or_priced_is_refused(edit, reason: str, says: str) -> None:  # type: ignore[no-untyped-def]
    from modelgrid_contract.wire import ResultRejected
    from modelgrid_operator.verdict import validate_result

    spec, policy, obj = _operator_inputs()
    edit(obj["sweep"])
    with pytest.raises(ResultRejected) as exc:
        validate_result(json.dumps(obj), spec, policy)
    assert exc.value.reason == reason
    assert says in exc.value.message


def test_a_declared_sweep_missing_from_the_result_is_refused() -> None:
    from modelgrid_contract.wire import ResultRejected
    from modelgrid_operator.verdict import validate_result

    spec, policy, obj = _operator_inputs()
    obj["sweep"] = None
    with pytest.raises(ResultRejected, match="reports none"):
        validate_result(json.dumps(obj), spec, policy)
