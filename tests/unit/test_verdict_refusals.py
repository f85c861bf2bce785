"""The operator's own checks of a result, each refusing with its reason: the operator never
trusts the benchmark's word for the work-done gate, the flags, or the interval.

Every case starts from a real analysis that passes (`factory.priced_compact`) and changes one
thing, the way a broken or hostile benchmark pod would.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from modelgrid_contract.reasons import Reason
from modelgrid_contract.wire import ResultRejected
from modelgrid_operator.api import QualificationSpec
from modelgrid_operator.policy import TierPolicySpec
from modelgrid_operator.verdict import evaluate, validate_result, workload_digest
from tests import factory as f

pytestmark = pytest.mark.timeout(60)

SPEC = QualificationSpec.model_validate(
    {
        "model": {"name": "m", "source": {"randomWeights": {"architecture": "llama-3.1-8b"}}},
        "hardware": {"gpuProduct": "NVIDIA-H200", "gpuCount": 1},
    }
)


def _policy(**overrides: Any) -> TierPolicySpec:
    return TierPolicySpec.model_validate(f.shipped_policy_spec("model-card", **overrides))


def _raw(**overrides: Any) -> str:
    obj = f.priced_compact(workload_digest=workload_digest(SPEC))
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(obj.get(key), dict):
            obj[key] = {**obj[key], **value}
        else:
            obj[key] = value
    return json.dumps(obj)


def _refusal(raw: str, policy: TierPolicySpec | None = None) -> ResultRejected:
    with pytest.raises(ResultRejected) as info:
        validate_result(raw, SPEC, policy or _policy())
    return info.value


def test_the_untouched_result_is_priced() -> None:
    r = validate_result(_raw(), SPEC, _policy())
    v = evaluate(r, SPEC, _policy())
    assert v.tier is not None
    assert v.tier.number == 1
    assert not v.borderline


# ------------------------------------------------------------------------------ work done


def test_a_result_without_work_done_figures_proves_nothing() -> None:
    err = _refusal(_raw(work=None))
    assert err.reason == Reason.NO_LOAD_ON_GPU
    assert "no work-done figures" in err.message


def test_the_gate_is_checked_again_under_the_policys_floors() -> None:
    # The benchmark passed its gate, but this policy asks for more utilisation than it saw.
    obj = f.priced_compact(workload_digest=workload_digest(SPEC))
    util = obj["work"]["gpu_util_pct_min"]
    err = _refusal(json.dumps(obj), _policy(workDone={"minGpuUtilPercent": util + 5}))
    assert err.reason == Reason.NO_LOAD_ON_GPU
    assert f"GPU utilisation {util:.4g} %" in err.message
    lax = _policy(workDone={"minGpuUtilPercent": util - 5})
    assert validate_result(json.dumps(obj), SPEC, lax).ok


@pytest.mark.parametrize(
    ("work", "needle"),
    [
        ({"j_per_token_above_idle_min": 0.0}, "energy above idle per output token 0 J"),
        ({"j_per_token_above_idle_min": None}, "energy above idle per output token unknown"),
        ({"gpu_util_pct_min": 0.0}, "GPU utilisation 0 %"),
        ({"engine_processes_min": 0}, "processes were not on every measured GPU"),
        ({"passed": False}, "the benchmark's own gate failed"),
    ],
)
def test_an_idle_or_remote_gpu_is_refused_whatever_the_benchmark_says(
    work: dict[str, Any], needle: str
) -> None:
    err = _refusal(_raw(work=work))
    assert err.reason == Reason.NO_LOAD_ON_GPU
    assert needle in err.message


def test_an_in_pod_engine_cannot_waive_its_process_check() -> None:
    err = _refusal(_raw(work={"engine_on_gpu_expected": False, "engine_processes_min": 0}))
    assert err.reason == Reason.INCONSISTENT_RESULT
    assert "transformers engine runs in the benchmark pod" in err.message


# ---------------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("flag", "extra", "figure"),
    [
        ("energy_discrepancy", {"energy_discrepancy_pct": 10.2}, "differ by +10.20%"),
        ("sampler_degraded", {"windows": {"used": 20, "excluded": 4}}, "4 of 24 1 s windows"),
        ("short_window", {"windows": {"min_per_run": 6}}, "has 6 usable 1 s windows"),
        ("missing_readings", {"windows": {"missing_readings": 40}}, "40 of"),
        ("energy_counter_reset", {}, "notes"),
        ("no_instant_power", {}, "notes"),
        ("token_mismatch", {}, "a different number of tokens than the workload asked"),
    ],
)
def test_a_disqualifying_flag_refuses_with_its_figure(
    flag: str, extra: dict[str, Any], figure: str
) -> None:
    raw = _raw(flags=[flag], **extra)
    err = _refusal(raw)
    assert err.reason == Reason.DISQUALIFYING_FLAG
    assert f"flag {flag}" in err.message
    assert figure in err.message
    # Informational under a policy that does not list it: the result is priced.
    others = [x for x in _policy().disqualifying_flags if x.value != flag]
    priced = validate_result(raw, SPEC, _policy(disqualifyingFlags=[x.value for x in others]))
    assert flag in [x.value for x in priced.flags]


def test_the_policy_cannot_make_contention_or_simulation_merely_informational() -> None:
    with pytest.raises(ValueError, match="cannot be made disqualifying"):
        _policy(disqualifyingFlags=["contention"])
    err = _refusal(_raw(flags=["contention"]), _policy(disqualifyingFlags=[]))
    assert err.reason == Reason.CONTENTION


# ---------------------------------------------------------------------- consistency, types


def test_average_power_must_equal_energy_over_duration() -> None:
    obj = f.priced_compact(workload_digest=workload_digest(SPEC))
    err = _refusal(_raw(avg_power_watts=obj["avg_power_watts"] * 0.7))
    assert err.reason == Reason.INCONSISTENT_RESULT
    assert "contradicts energy / duration" in err.message


def test_an_interval_that_does_not_contain_the_cv_is_refused() -> None:
    err = _refusal(_raw(power_cv_ci95=[0.001, 0.002]))
    assert err.reason == Reason.INCONSISTENT_RESULT
    assert "does not contain the power CV" in err.message


def test_a_replay_cannot_pose_as_a_real_gpu() -> None:
    gpu = {"name": "NVIDIA H200", "count": 1, "driver": "replay", "cuda": "replay", "uuids": []}
    err = _refusal(_raw(gpu=gpu))
    assert err.reason == Reason.INCONSISTENT_RESULT
    assert "replay" in err.message


@pytest.mark.parametrize("value", ['"90"', "-100", "Infinity", "NaN", "true", "1e999"])
def test_a_power_that_is_not_a_finite_non_negative_number_is_malformed(value: str) -> None:
    raw = _raw(avg_power_watts="@@").replace('"@@"', value)
    err = _refusal(raw)
    assert err.reason == Reason.MALFORMED_RESULT


# ---------------------------------------------------------------------------- the interval


def test_no_interval_is_never_a_price_without_borderline() -> None:
    r = validate_result(_raw(power_cv_ci95=None), SPEC, _policy())
    worse = evaluate(r, SPEC, _policy())
    assert worse.borderline
    assert worse.tier is not None
    assert worse.tier.number == 3  # nothing bounds the CV: the last tier, standard pricing
    assert worse.discount_percent == 0.0
    assert "No confidence interval" in worse.reasoning
    rerun = evaluate(r, SPEC, _policy(borderline="Rerun", maxReruns=1))
    assert rerun.rerun_requested


# ------------------------------------------------- what a broken or hostile pod could write


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("[" * 2000 + "]" * 2000, Reason.MALFORMED_RESULT),  # deep nesting, under 4096 bytes
        ('{"schema":"modelgrid.bench/v1","ok":true,"ok":false}', Reason.MALFORMED_RESULT),
    ],
)
def test_pathological_json_is_malformed_never_a_crash(raw: str, reason: Reason) -> None:
    assert _refusal(raw).reason == reason


def test_per_run_lists_of_unequal_length_are_malformed() -> None:
    obj = json.loads(_raw())
    obj["runs"]["power_cv"] = obj["runs"]["power_cv"][:1]
    assert _refusal(json.dumps(obj)).reason == Reason.MALFORMED_RESULT


@pytest.mark.parametrize(
    "path",
    [
        ("runs", "avg_power_w", 0),
        ("run_stats", "avg_power_w", "mean"),
        ("work", "gpu_util_pct_min"),
    ],
)
def test_nested_infinities_are_malformed(path: tuple[Any, ...]) -> None:
    obj = json.loads(_raw())
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "@@"
    raw = json.dumps(obj).replace('"@@"', "1e999")
    assert _refusal(raw).reason == Reason.MALFORMED_RESULT


def test_utilisation_above_100_percent_is_malformed() -> None:
    assert _refusal(_raw(work={"gpu_util_pct_min": 500.0})).reason == Reason.MALFORMED_RESULT


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        ({"energy_discrepancy_pct": 10.0}, "energy_discrepancy"),
        ({"windows": {"missing_readings": 480, "readings": 960}}, "missing_readings"),
        ({"windows": {"min_per_run": 2}}, "short_window"),
        ({"windows": {"excluded": 10}}, "sampler_degraded"),
    ],
)
def test_the_figures_imply_their_flags_when_the_benchmark_leaves_them_out(
    overrides: dict[str, Any], flag: str
) -> None:
    err = _refusal(_raw(flags=[], **overrides))
    assert err.reason == Reason.DISQUALIFYING_FLAG
    assert f"flag {flag}" in err.message


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"windows": None}, "which windows it rests on"),
        ({"evidence": None}, "evidence digests"),
        ({"windows": {"used": 0}}, "from 0 1 s windows"),
        ({"power_cv_ci95": "@cv"}, "too narrow"),
        ({"tier_metric": "anything"}, "tier metric"),
        ({"cv_time_scale_s": 1000.0}, "tier metric"),
        ({"duration_s": 0.0}, "positive duration"),
        ({"output_tokens": 0}, "without any output token"),
        ({"joules_per_token": 99.0}, "contradicts energy / output tokens"),
    ],
)
def test_figures_the_operator_cross_checks(overrides: dict[str, Any], needle: str) -> None:
    if overrides.get("power_cv_ci95") == "@cv":
        cv = f.priced_compact()["power_cv"]
        overrides = {"power_cv_ci95": [cv, cv]}
    err = _refusal(_raw(**overrides))
    assert err.reason == Reason.INCONSISTENT_RESULT
    assert needle in err.message


def test_a_claim_of_zero_variance_fails_with_a_finite_delta() -> None:
    spec = SPEC.model_copy(update={"claims": SPEC.claims.model_copy(update={"power_cv": 0.0})})
    r = validate_result(_raw(), spec, _policy())
    v = evaluate(r, spec, _policy())
    (check,) = [c for c in v.claims if c.metric == "powerCV"]
    assert not check.within_tolerance
    assert math.isfinite(check.to_status()["deltaPercent"])
    json.dumps(check.to_status(), allow_nan=False)  # a status can hold it
