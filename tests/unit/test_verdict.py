"""Tiering, claim verification and the discount decision (shipped policies, every boundary)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelgrid_bench.analysis import analyze
from modelgrid_contract.result import CompactResult
from modelgrid_contract.wire import ResultRejected, decode_compact, encode_compact
from modelgrid_operator.api import QualificationSpec
from modelgrid_operator.policy import TierPolicySpec
from modelgrid_operator.verdict import evaluate, tier_for, validate_result, workload_digest
from tests import factory as f

REPO = Path(__file__).resolve().parents[2]


def policy(name: str, **overrides: Any) -> TierPolicySpec:
    doc = yaml.safe_load((REPO / "crds" / "tierpolicies" / f"{name}.yaml").read_text())
    return TierPolicySpec.model_validate({**doc["spec"], **overrides})


MODEL_CARD = policy("model-card")
CV_ONLY = policy("cv-only")


@pytest.mark.parametrize(
    ("cv", "power_w", "tier"),
    [
        (0.05, 100.0, 1),
        (0.0999, 149.99, 1),
        (0.10, 100.0, 2),  # "CV < 0.10": exactly 0.10 is not Tier 1
        (0.05, 150.0, 2),  # "< 150W": exactly 150 W is not Tier 1
        (0.1499, 199.9, 2),
        (0.15, 100.0, 3),  # "CV < 0.15"; Tier 3 is "CV > 0.15 or > 200W", i.e. everything else
        (0.05, 200.0, 3),
        (0.05, 450.0, 3),  # a realistic H200 draw fails the card's power limits
        (0.40, 100.0, 3),
    ],
)
def test_model_card_table_boundaries(cv: float, power_w: float, tier: int) -> None:
    t = tier_for(cv, power_w, MODEL_CARD)
    assert t is not None
    assert t.number == tier


@pytest.mark.parametrize(
    ("cv", "tier", "label", "stability"),
    [
        (0.0282, 1, "Tier 1 - Low Variance", "Stable"),  # GPT-OSS-20B in the report
        (0.10, 1, "Tier 1 - Low Variance", "Stable"),  # "CV <= 0.1"
        (0.1000001, 2, "Tier 2 - Medium Variance", "Moderate"),
        (0.1245, 2, "Tier 2 - Medium Variance", "Moderate"),  # Llama-4-Scout
        (0.15, 2, "Tier 2 - Medium Variance", "Moderate"),  # "0.1 < CV <= 0.15"
        (0.1651, 3, "Tier 3 - High Variance", "Unstable"),  # DeepSeek-R1-Distill
    ],
)
def test_cv_only_tiering_of_the_report(cv: float, tier: int, label: str, stability: str) -> None:
    # Power plays no part: the report's models draw 420-680 W and still reach Tier 1.
    t = tier_for(cv, 682.67, CV_ONLY)
    assert t is not None
    assert (t.number, t.label, t.stability) == (tier, label, stability)


# ------------------------------------------------------------------ full verdicts on real results


def _compact(**overrides: Any) -> CompactResult:
    ev = f.evidence(f.square(95.0, 105.0, 3.0), [(1.0, 13.0), (13.5, 25.5)], idle_w=60.0)
    obj = json.loads(encode_compact(analyze(ev)))
    obj.update(overrides)
    return decode_compact(json.dumps(obj))


def _spec(**spec: Any) -> QualificationSpec:
    base: dict[str, Any] = {
        "model": {"name": "m", "source": {"randomWeights": {"architecture": "llama-3.1-8b"}}},
        "attestation": {
            "declarations": {
                "onH200Infrastructure": True,
                "followsMethodology": True,
                "typicalWorkload": True,
                "noManipulation": True,
                "acceptsVerification": True,
            }
        },
    }
    base.update(spec)
    return QualificationSpec.model_validate(base)


def test_a_stable_low_power_model_gets_tier_1_and_the_discount() -> None:
    r = _compact(
        power_cv=0.085, avg_power_watts=142.3, peak_power_watts=165.8, power_cv_ci95=[0.07, 0.095]
    )
    v = evaluate(
        r, _spec(claims={"avgPowerW": 140, "powerCV": 0.08, "peakPowerW": 160}), MODEL_CARD
    )
    assert v.tier is not None
    assert v.tier.number == 1
    assert v.qualified
    assert v.discount_approved
    assert v.discount_percent == 20.0
    assert v.verification == "Verified"
    by_metric = {c.metric: c for c in v.claims}
    assert by_metric["avgPowerW"].delta_percent == pytest.approx((142.3 - 140) / 140 * 100)
    assert by_metric["powerCV"].delta_percent == pytest.approx(6.25)
    assert "Tier 1 - Low Variance" in v.reasoning
    assert "Discount approved: 20%" in v.reasoning


def test_claims_fail_only_when_the_model_does_worse() -> None:
    r = _compact(power_cv=0.085, avg_power_watts=142.3, power_cv_ci95=[0.07, 0.095])
    better = evaluate(r, _spec(claims={"avgPowerW": 180.0, "tokensPerJoule": 0.01}), MODEL_CARD)
    assert better.verification == "Verified"
    worse = evaluate(r, _spec(claims={"avgPowerW": 120.0}), MODEL_CARD)  # +18.6 % > 10 %
    assert worse.verification == "Failed"
    assert not worse.discount_approved
    assert worse.discount_percent == 0.0
    assert worse.qualified  # the tier stands; the discount is withheld
    assert "avgPowerW 142.3 vs claimed 120" in worse.reasoning
    lax = evaluate(
        r,
        _spec(claims={"avgPowerW": 120.0}),
        policy("model-card", discountRequiresClaimsWithinTolerance=False),
    )
    assert lax.discount_approved


def test_target_tier_claim() -> None:
    r = _compact(power_cv=0.12, avg_power_watts=142.3, power_cv_ci95=[0.11, 0.13])
    v = evaluate(r, _spec(claims={"targetTier": 1}), MODEL_CARD)
    assert v.tier is not None
    assert v.tier.number == 2
    assert v.verification == "Failed"
    assert evaluate(r, _spec(claims={"targetTier": 2}), MODEL_CARD).verification == "Verified"


def test_an_incomplete_attestation_withholds_the_discount() -> None:
    r = _compact(power_cv=0.05, avg_power_watts=100.0, power_cv_ci95=[0.04, 0.06])
    v = evaluate(r, _spec(attestation={"organization": "x"}), MODEL_CARD)
    assert v.qualified
    assert not v.discount_approved
    assert "attestation" in v.reasoning
    assert evaluate(
        r, _spec(attestation={"organization": "x"}), policy("model-card", requireAttestation=False)
    ).discount_approved


def test_borderline_takes_the_worse_tier_or_asks_for_a_rerun() -> None:
    r = _compact(power_cv=0.095, avg_power_watts=100.0, power_cv_ci95=[0.085, 0.104])
    v = evaluate(r, _spec(), MODEL_CARD)
    assert v.borderline
    assert v.tier is not None
    assert v.tier.number == 2
    assert "borderline" in v.flags
    rerun_policy = policy("model-card", borderline="Rerun", maxReruns=1)
    first = evaluate(r, _spec(), rerun_policy, reruns_done=0)
    assert first.rerun_requested
    assert not first.discount_approved
    last = evaluate(r, _spec(), rerun_policy, reruns_done=1)
    assert not last.rerun_requested
    assert last.tier is not None
    assert last.tier.number == 2
    clear = _compact(power_cv=0.05, avg_power_watts=100.0, power_cv_ci95=[0.04, 0.06])
    assert not evaluate(clear, _spec(), MODEL_CARD).borderline


def _raw(spec: QualificationSpec, **overrides: Any) -> str:
    ev = f.evidence(f.constant(100.0), [(1.0, 13.0)], idle_w=60.0)
    obj = json.loads(encode_compact(analyze(ev)))
    obj["workload_digest"] = workload_digest(spec)
    obj.update(overrides)
    return json.dumps(obj)


def test_validation_accepts_a_matching_result() -> None:
    spec = _spec()
    r = validate_result(_raw(spec), spec, MODEL_CARD)
    assert r.gpu.name == "NVIDIA H200"


@pytest.mark.parametrize(
    ("overrides", "spec_kw", "reason"),
    [
        (
            {
                "gpu": {
                    "name": "NVIDIA H100 80GB HBM3",
                    "count": 1,
                    "driver": "",
                    "cuda": "",
                    "uuids": [],
                }
            },
            {},
            "WrongGPU",
        ),
        ({}, {"hardware": {"gpuCount": 2}}, "WrongGPU"),
        ({"workload_digest": "0" * 16}, {}, "WorkloadMismatch"),
        ({"flags": ["contention"]}, {}, "Contention"),
        ({"power_cv": None}, {}, "NoTierMetric"),
        (
            {"ok": False, "refusal": {"reason": "Contention", "message": "2 processes"}},
            {},
            "Contention",
        ),
    ],
)
def test_validation_refuses_untrustworthy_results(
    overrides: dict[str, Any], spec_kw: dict[str, Any], reason: str
) -> None:
    spec = _spec(**spec_kw)
    with pytest.raises(ResultRejected) as exc:
        validate_result(_raw(spec, **overrides), spec, MODEL_CARD)
    assert exc.value.reason == reason


def test_simulated_results_need_a_policy_that_allows_them() -> None:
    spec = _spec()
    obj = json.loads(_raw(spec))
    obj.update({"simulated": True, "source": "replay", "flags": ["simulated"]})
    with pytest.raises(ResultRejected) as exc:
        validate_result(json.dumps(obj), spec, MODEL_CARD)
    assert exc.value.reason == "SimulatedResult"
    ok = validate_result(json.dumps(obj), spec, policy("model-card", allowSimulated=True))
    assert ok.simulated
    v = evaluate(ok, spec, policy("model-card", allowSimulated=True))
    assert "Simulated measurement" in v.reasoning


def test_the_gpu_product_label_matches_nvmls_name() -> None:
    spec = _spec(hardware={"gpuProduct": "NVIDIA-H200"})
    assert validate_result(_raw(spec), spec, MODEL_CARD).gpu.name == "NVIDIA H200"
