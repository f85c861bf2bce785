"""The fleet tiering report (seed 000): figures from status, words only where the numbers
support them, refused and running qualifications never tiered. No cluster."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from modelgrid_operator.policy import TierPolicySpec
from modelgrid_report.fleet import (
    EntryState,
    PolicyView,
    entry_from_status,
    ordered,
    policy_view,
)
from modelgrid_report.tiering import tiering, tiering_markdown
from tests.factory import qualification_cr, shipped_policy_spec

NOW = dt.datetime(2026, 12, 2, 6, 0, tzinfo=dt.UTC)


def _policies() -> dict[str, PolicyView]:
    spec = TierPolicySpec.model_validate(shipped_policy_spec())
    return {"model-card": policy_view("model-card", spec)}


#: Seed 000's six models, as statuses the operator would have written, plus a refused and a
#: running one.
SEED_FLEET = [
    qualification_cr(
        "ds",
        model="DeepSeek-R1-Distill (32B)",
        tier_number=3,
        cv=0.1651,
        cv_low=0.15,
        cv_high=0.18,
        avg_power_w=515.52,
        power_std_w=85.1,
    ),
    qualification_cr(
        "scout",
        model="Llama-4-Scout (17B)",
        tier_number=2,
        cv=0.1245,
        cv_low=0.118,
        cv_high=0.131,
        avg_power_w=121.23,
        power_std_w=15.1,
    ),
    qualification_cr(
        "maverick",
        model="Llama-4-Maverick (17B)",
        tier_number=1,
        cv=0.0848,
        cv_low=0.080,
        cv_high=0.089,
        avg_power_w=147.27,
        power_std_w=12.5,
    ),
    qualification_cr(
        "qwen32",
        model="Qwen3-32B",
        tier_number=1,
        cv=0.0753,
        cv_low=0.07,
        cv_high=0.08,
        avg_power_w=140.39,
        power_std_w=10.57,
    ),
    qualification_cr(
        "qwen235",
        model="Qwen3-235B",
        tier_number=1,
        cv=0.0324,
        cv_low=0.030,
        cv_high=0.035,
        avg_power_w=142.67,
        power_std_w=4.6,
    ),
    qualification_cr(
        "gptoss",
        model="GPT-OSS-20B",
        tier_number=1,
        cv=0.0282,
        cv_low=0.026,
        cv_high=0.031,
        avg_power_w=133.44,
        power_std_w=3.76,
    ),
    qualification_cr(
        "forged",
        model="Forged-7B",
        phase="Failed",
        reason="ResultRejected",
        message="WorkloadMismatch: the result is for another workload",
    ),
    qualification_cr(
        "slow", model="Slow-70B", phase="Running", reason="BenchmarkRunning", message="run 1/3"
    ),
]


def _report_md() -> str:
    entries = [entry_from_status(o) for o in SEED_FLEET]
    return tiering_markdown(tiering(entries, _policies(), generated_at=NOW))


def _table(md: str) -> dict[str, list[str]]:
    rows = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| Model"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].rstrip(" *")] = cells
    return rows


def test_entries_copy_status_and_never_tier_refused_or_running() -> None:
    entries = {e.name: e for e in (entry_from_status(o) for o in SEED_FLEET)}
    ds = entries["ds"]
    assert (ds.state, ds.tier_number, ds.power_cv, ds.power_cv_low, ds.power_cv_high) == (
        EntryState.TIERED,
        3,
        0.1651,
        0.15,
        0.18,
    )
    assert ds.avg_power_w == 515.52
    assert ds.power_std_w == 85.1
    forged, slow = entries["forged"], entries["slow"]
    assert forged.state is EntryState.REFUSED
    assert forged.reason == "ResultRejected"
    assert slow.state is EntryState.RUNNING
    for e in (forged, slow):
        assert e.tier_number is None
        assert e.power_cv is None
        assert e.discount_percent is None


def test_a_failed_benchmark_is_failed_not_refused() -> None:
    e = entry_from_status(
        qualification_cr("x", phase="Failed", reason="BackoffLimitExceeded", message="boom")
    )
    assert e.state is EntryState.FAILED
    assert (e.reason, e.message) == ("BackoffLimitExceeded", "boom")


def test_a_stale_tier_on_a_failed_status_is_not_a_tier() -> None:
    obj = qualification_cr("x", phase="Failed", reason="ResultRejected")
    obj["status"]["tier"] = {"name": "tier-1", "number": 1}  # left over by a merge patch
    assert entry_from_status(obj).state is EntryState.REFUSED


def test_the_model_table_matches_status_with_the_interval_beside_the_cv() -> None:
    rows = _table(_report_md())
    assert rows["GPT-OSS-20B"][1:8] == [
        "133.44",
        "3.76",
        "0.0282",
        "0.0260-0.0310",
        "Tier 1 - Low Variance",
        "1",
        "Stable",
    ]
    assert rows["DeepSeek-R1-Distill (32B)"][5:7] == ["Tier 3 - High Variance", "3"]
    assert rows["Forged-7B"][5] == "not tiered (refused: ResultRejected)"
    assert rows["Forged-7B"][6] == "—"
    assert rows["Slow-70B"][5] == "not tiered yet (Running)"
    # most stable first, then refused, then running (seed 000 listed by CV)
    order = list(rows)
    assert order[0] == "GPT-OSS-20B"
    assert order[-2:] == ["Forged-7B", "Slow-70B"]


def test_the_distribution_uses_the_policys_tiers_and_counts_everyone() -> None:
    md = _report_md()
    assert (
        "- **Tier 1 - Low Variance (Stable, CV < 0.1, avg power < 150 W; 20% discount):** "
        "50% of models (4/8)" in md
    )
    assert (
        "- **Tier 3 - High Variance (Unstable, any other result; 0% discount):** 12% of "
        "models (1/8)" in md
    )
    assert "- **Not tiered (refused):** 12% of models (1/8)" in md
    assert "- **Not tiered (running):** 12% of models (1/8)" in md


def test_findings_follow_the_numbers() -> None:
    md = _report_md()
    assert "**Most Stable:** GPT-OSS-20B (CV: 0.0282" in md
    assert "and Qwen3-235B (CV: 0.0324" in md
    # their intervals (0.026-0.031 and 0.030-0.035) overlap: no order is claimed
    assert "which of the two is steadier is not established" in md
    assert "**Requires Monitoring:** Llama-4-Scout (17B)" in md
    assert "**High Variance Alert:** DeepSeek-R1-Distill (32B) (CV: 0.1651" in md
    assert "Tier 3 - High Variance models (1 here) require enhanced power management" in md
    # ±17 %: the highest CV measured in tier 3, not a fixed phrase
    assert "±17% variance" in md
    assert "Tier 1 - Low Variance models (4 of 6 tiered" in md
    assert "1 result was refused for pricing" in md
    assert "**Not Tiered:** Forged-7B (not tiered (refused: ResultRejected)); Slow-70B" in md


def test_a_tier_3_for_power_alone_is_no_variance_alert() -> None:
    hot = qualification_cr(
        "hot", model="Hot-70B", tier_number=3, cv=0.03, cv_low=0.02, cv_high=0.04, avg_power_w=450.0
    )
    md = tiering_markdown(tiering([entry_from_status(hot)], _policies(), generated_at=NOW))
    assert "**High Variance Alert:** none" in md
    assert "**High Power (not variance):** Hot-70B (avg power 450.0 W" in md


def test_an_interval_across_a_limit_requires_monitoring_even_in_tier_1() -> None:
    edge = qualification_cr(
        "edge",
        model="Edge-8B",
        tier_number=1,
        cv=0.097,
        cv_low=0.09,
        cv_high=0.105,
        avg_power_w=120.0,
    )
    md = tiering_markdown(tiering([entry_from_status(edge)], _policies(), generated_at=NOW))
    assert "**Requires Monitoring:** Edge-8B" in md
    assert "its interval crosses the Tier 1 - Low Variance limit (CV < 0.1" in md


def test_separated_intervals_are_said_to_be_separated() -> None:
    a = qualification_cr("a", model="A", cv=0.02, cv_low=0.015, cv_high=0.025)
    b = qualification_cr("b", model="B", cv=0.06, cv_low=0.05, cv_high=0.07)
    md = tiering_markdown(
        tiering([entry_from_status(x) for x in (b, a)], _policies(), generated_at=NOW)
    )
    assert "**Most Stable:** A (CV: 0.0200" in md
    assert "their 95 % intervals do not overlap" in md


def test_no_tiered_model_means_no_tier_words() -> None:
    only = [qualification_cr("r", phase="Failed", reason="ResultRejected")]
    md = tiering_markdown(
        tiering([entry_from_status(o) for o in only], _policies(), generated_at=NOW)
    )
    assert "**Most Stable:** none" in md
    assert "Tier 1 - Low Variance models" not in md
    assert "require enhanced power management" not in md
    assert "- none: no qualification holds a tier" not in md  # the refusal is an implication
    assert "1 result was refused" in md


def test_simulated_figures_are_marked_and_said_not_to_be_prices() -> None:
    sim = qualification_cr("s", model="Sim-8B", simulated=True)
    md = tiering_markdown(tiering([entry_from_status(sim)], _policies(), generated_at=NOW))
    assert "| Sim-8B * |" in md
    assert "simulated measurement (replayed power or synthetic inference): not a price" in md
    assert "they show the method, not a price" in md


def test_another_policys_thresholds_are_its_own() -> None:
    strict = TierPolicySpec.model_validate(
        {
            "tiers": [
                {
                    "name": "gold",
                    "number": 1,
                    "label": "Gold",
                    "discountPercent": 30,
                    "maxCV": 0.02,
                    "cvBoundary": "Inclusive",
                },
                {"name": "std", "number": 2, "label": "Standard", "discountPercent": 0},
            ],
        }
    )
    obj = qualification_cr("g", model="G", cv=0.02, cv_low=0.018, cv_high=0.022, policy="strict")
    obj["status"]["tier"] = {"name": "gold", "number": 1, "label": "Gold", "discountPercent": 30}
    md = tiering_markdown(
        tiering(
            [entry_from_status(obj)], {"strict": policy_view("strict", strict)}, generated_at=NOW
        )
    )
    assert "- **Gold (CV ≤ 0.02; 30% discount):** 100% of models (1/1)" in md
    assert "Tier 1" not in md


@pytest.mark.parametrize("fleet", [SEED_FLEET, SEED_FLEET[::-1]])
def test_the_report_does_not_depend_on_listing_order(fleet: list[dict[str, object]]) -> None:
    a = [e.key for e in ordered([entry_from_status(o) for o in fleet])]
    assert a == [e.key for e in ordered([entry_from_status(o) for o in SEED_FLEET])]


def test_no_nan_and_every_number_of_the_table_is_from_status() -> None:
    md = _report_md()
    assert "nan" not in md.lower().replace("financ", "")
    numbers = set(re.findall(r"\| (\d+\.\d+) \|", md))
    allowed = {
        f"{v:.2f}"
        for o in SEED_FLEET
        for k, v in (o["status"].get("measured") or {}).items()
        if k in ("avgPowerW", "powerStdW")
    } | {
        f"{v:.4f}"
        for o in SEED_FLEET
        for k, v in (o["status"].get("measured") or {}).items()
        if k == "powerCV"
    }
    assert numbers <= allowed, numbers - allowed


# --------------------------------------------------------------------------- what holds no price


def test_a_verdict_for_an_earlier_spec_holds_no_price() -> None:
    obj = qualification_cr("edited")
    obj["metadata"]["generation"] = 2  # the spec changed since the verdict
    e = entry_from_status(obj)
    assert e.state is EntryState.NOT_PRICED
    assert e.tier_number is None
    assert e.power_cv is None


def test_a_verdict_left_not_ready_by_a_missing_policy_holds_no_price() -> None:
    obj = qualification_cr("orphan")
    obj["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "PolicyNotFound", "message": "gone"},
        {"type": "Stalled", "status": "True", "reason": "PolicyNotFound", "message": "gone"},
    ]
    e = entry_from_status(obj)
    assert e.state is EntryState.NOT_PRICED
    assert e.reason == "PolicyNotFound"


def test_succeeded_without_a_tier_and_blocked_pending_hold_no_price() -> None:
    none_fits = qualification_cr("nofit", tier_number=None)
    none_fits["status"]["phase"] = "Succeeded"
    blocked = qualification_cr(
        "blocked", phase="Pending", reason="ModelVolumeMissing", message="no claim"
    )
    blocked["status"]["conditions"][1]["type"] = "Stalled"
    states = {o["metadata"]["name"]: entry_from_status(o).state for o in (none_fits, blocked)}
    assert states == {"nofit": EntryState.NOT_PRICED, "blocked": EntryState.NOT_PRICED}


@pytest.mark.parametrize(
    "edit",
    [
        lambda st: st.update(tier={"number": "one"}),
        lambda st: st["measured"].update(runs=[{"run": "x"}]),
        lambda st: st.update(measured="oops"),
        lambda st: st.update(environment=[1, 2]),
        lambda st: st.update(policy="model-card"),
        lambda st: st["measured"].update(powerCV=None),
    ],
)
def test_a_status_of_the_wrong_shape_is_not_priced_never_a_crash(edit: Any) -> None:
    obj = qualification_cr("odd")
    edit(obj["status"])
    e = entry_from_status(obj)
    assert e.state is not EntryState.TIERED or isinstance(e.tier_number, int)
    md = tiering_markdown(tiering([e], _policies(), generated_at=NOW))
    assert "# Power Variance Analysis Results" in md


def test_under_the_instant_metric_the_priced_cv_is_the_instant_one() -> None:
    obj = qualification_cr("inst", tier_number=3, cv=0.0074, cv_low=0.006, cv_high=0.009)
    obj["status"]["measured"]["powerCVInstant"] = 0.2
    e = entry_from_status(obj, "power_cv_instant")
    assert e.power_cv == 0.2
    assert (e.power_cv_low, e.power_cv_high) == (None, None)  # the interval is of the 1 s CV
    assert e.tier_metric == "power_cv_instant"


def test_the_distribution_says_how_many_were_granted_the_discount() -> None:
    a = qualification_cr("a", model="A")
    b = qualification_cr("b", model="B")
    b["status"]["discountApproved"] = False
    md = tiering_markdown(
        tiering([entry_from_status(o) for o in (a, b)], _policies(), generated_at=NOW)
    )
    assert "(2/2); discount granted to 1 of 2" in md


def test_simulated_models_are_named_so_in_the_findings() -> None:
    sim = qualification_cr("s", model="Sim-8B", simulated=True)
    md = tiering_markdown(tiering([entry_from_status(sim)], _policies(), generated_at=NOW))
    assert "**Most Stable:** Sim-8B (simulated) (CV:" in md
