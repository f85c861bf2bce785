"""The operator's check of a TierPolicy's tier order (api.tier_order_problems), which repeats the
CRD's rules on spec.tiers word for word, so a policy stored before those rules is refused too.

tests/controlplane/test_crds.py checks that the apiserver says the same words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from modelgrid_operator.cli import main
from modelgrid_operator.policy import (
    TIER_ZERO_CV_MESSAGE,
    TIERS_DISCOUNT_MESSAGE,
    TIERS_ORDER_MESSAGE,
    TIERS_SAME_LIMITS_MESSAGE,
    Tier,
    TierPolicySpec,
    tier_order_problems,
)
from tests import factory as f
from tests.factory import tier

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(
    [*(REPO / "crds" / "tierpolicies").glob("*.yaml"), *(REPO / "hack" / "sandbox").glob("*.yaml")]
)


def problems(*tiers: dict[str, Any]) -> list[str]:
    return tier_order_problems([Tier.model_validate(t) for t in tiers])


def policy(*tiers: dict[str, Any]) -> dict[str, Any]:
    return f.shipped_policy_spec("model-card", tiers=list(tiers))


LAST = tier("last", 9, 0)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_the_shipped_policies_are_ordered(path: Path) -> None:
    spec = yaml.safe_load(path.read_text())["spec"]
    assert problems(*spec["tiers"]) == []
    TierPolicySpec.model_validate(spec)


@pytest.mark.parametrize(
    "tiers",
    [
        pytest.param([tier("only", 1, 0)], id="one-tier"),
        pytest.param([tier("a", 1, 20, max_cv=0.1), tier("b", 5, 0)], id="numbers-with-a-gap"),
        pytest.param(
            [tier("a", 1, 20, max_cv=0.1), tier("b", 2, 10, max_cv=0.1, cv_boundary="Inclusive")],
            id="equal-limit-wider-boundary",
        ),
        pytest.param(
            [tier("a", 1, 20, max_cv=0.1, max_power_w=150), tier("b", 2, 20, max_cv=0.1), LAST],
            id="same-discount-power-limit-dropped",
        ),
        pytest.param(
            [tier("a", 1, 20, max_cv=0.0, cv_boundary="Inclusive"), tier("b", 2, 0)],
            id="cv-zero-inclusive",
        ),
        pytest.param(
            [tier(f"t{n}", n, 10 - n, max_cv=0.01 * n) for n in range(1, 10)]
            + [tier("t10", 10, 0)],
            id="ten-tiers",
        ),
        pytest.param(
            [
                tier("a", 1, 20, max_cv=0.1, max_power_w=150),
                tier("b", 2, 10, max_power_w=150.0),
                tier("c", 3, 0),
            ],
            id="an-int-and-a-float-limit",
        ),
    ],
)
def test_an_ordered_policy_has_no_problems(tiers: list[dict[str, Any]]) -> None:
    assert problems(*tiers) == []
    TierPolicySpec.model_validate(policy(*tiers))


#: (id, tiers, every message the check gives, in its order)
INVALID: list[tuple[str, list[dict[str, Any]], list[str]]] = [
    (
        "tier-2-stricter-on-cv",
        [tier("tier-1", 1, 20, max_cv=0.1), tier("tier-2", 2, 10, max_cv=0.05), LAST],
        [
            "tier tier-2 allows CV < 0.05, less than the better tier tier-1 (CV < 0.1): a worse"
            " tier must allow at least the CV every better tier allows"
        ],
    ),
    (
        "tier-2-stricter-on-power",
        [
            tier("tier-1", 1, 20, max_cv=0.1, max_power_w=150),
            tier("tier-2", 2, 10, max_cv=0.15, max_power_w=120),
            LAST,
        ],
        [
            "tier tier-2 allows average power < 120 W, less than the better tier tier-1 (average"
            " power < 150 W): a worse tier must allow at least the average power every better"
            " tier allows"
        ],
    ),
    (
        "better-tier-without-cv-limit",
        [tier("a", 1, 20, max_power_w=150), tier("b", 2, 10, max_cv=0.2, max_power_w=200), LAST],
        [
            "tier b allows CV < 0.2, less than the better tier a (any CV): a worse tier must"
            " allow at least the CV every better tier allows"
        ],
    ),
    (
        "equal-limit-narrower-boundary",
        [tier("a", 1, 20, max_cv=0.1, cv_boundary="Inclusive"), tier("b", 2, 10, max_cv=0.1), LAST],
        [
            "tier b allows CV < 0.1, less than the better tier a (CV <= 0.1): a worse tier must"
            " allow at least the CV every better tier allows"
        ],
    ),
    (
        "same-limits",
        [
            tier("a", 1, 20, max_cv=0.1, max_power_w=150),
            tier("b", 2, 10, max_cv=0.1, max_power_w=150),
            LAST,
        ],
        [
            "tier b can never be earned: it has the same maxCV and maxAvgPowerW as the better"
            f" tier a; {TIERS_SAME_LIMITS_MESSAGE}"
        ],
    ),
    (
        "two-tiers-without-limits",
        [tier("a", 1, 20, max_cv=0.1), tier("b", 2, 0), tier("c", 3, 0)],
        [
            "tier c can never be earned: it has the same maxCV and maxAvgPowerW as the better"
            f" tier b; {TIERS_SAME_LIMITS_MESSAGE}"
        ],
    ),
    (
        "duplicate-number",
        [tier("a", 1, 10, max_cv=0.1), tier("b", 1, 10)],
        [f"tiers a and b both have number 1: {TIERS_ORDER_MESSAGE}"],
    ),
    (
        "numbers-out-of-order",
        [tier("b", 2, 10, max_cv=0.15), tier("a", 1, 20, max_cv=0.1), LAST],
        [f"tier a (number 1) is listed after tier b (number 2): {TIERS_ORDER_MESSAGE}"],
    ),
    (
        "discount-increasing",
        [tier("a", 1, 10, max_cv=0.1), tier("b", 2, 20)],
        [
            "tier b carries a larger discount (20%) than the better tier a (10%): "
            + TIERS_DISCOUNT_MESSAGE
        ],
    ),
    (
        "cv-below-0",
        [tier("a", 1, 20, max_cv=0), tier("b", 2, 0)],
        [f"tier a: {TIER_ZERO_CV_MESSAGE}"],
    ),
    (
        "everything-at-once",
        [
            tier("b", 2, 12.5, max_cv=0.05, max_power_w=100.5),
            tier("a", 1, 5, max_cv=0.123456789, max_power_w=150),
            LAST,
        ],
        [
            f"tier a (number 1) is listed after tier b (number 2): {TIERS_ORDER_MESSAGE}",
            "tier b carries a larger discount (12.5%) than the better tier a (5%): "
            + TIERS_DISCOUNT_MESSAGE,
            "tier b allows CV < 0.05, less than the better tier a (CV < 0.123456789): a worse"
            " tier must allow at least the CV every better tier allows",
            "tier b allows average power < 100.5 W, less than the better tier a (average power"
            " < 150 W): a worse tier must allow at least the average power every better tier"
            " allows",
        ],
    ),
]


@pytest.mark.parametrize(("tiers", "expected"), [pytest.param(t, m, id=i) for i, t, m in INVALID])
def test_each_disorder_is_named_in_the_crds_words(
    tiers: list[dict[str, Any]], expected: list[str]
) -> None:
    assert problems(*tiers) == expected
    with pytest.raises(ValidationError) as exc:
        TierPolicySpec.model_validate(policy(*tiers))
    for message in expected:
        assert message in str(exc.value)


def test_the_first_offending_pair_in_list_order_is_named() -> None:
    """Tier c is narrower than a and b; the message names a, the first better tier listed."""
    tiers = [
        tier("a", 1, 20, max_cv=0.2),
        tier("b", 2, 10, max_cv=0.3),
        tier("c", 3, 5, max_cv=0.1),
        tier("d", 4, 0),
    ]
    assert problems(*tiers) == [
        "tier c allows CV < 0.1, less than the better tier a (CV < 0.2): a worse tier must allow"
        " at least the CV every better tier allows"
    ]


def test_the_verdict_cli_refuses_a_disordered_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "policy.yaml"
    stricter = [tier("tier-1", 1, 20, max_cv=0.1), tier("tier-2", 2, 10, max_cv=0.05), LAST]
    bad.write_text(yaml.safe_dump({"metadata": {"name": "bad"}, "spec": policy(*stricter)}))
    result = tmp_path / "result.json"
    result.write_text("{}")
    assert main(["verdict", "--result", str(result), "--policy", str(bad)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "is not a valid TierPolicy" in err
    assert "tier tier-2 allows CV < 0.05, less than the better tier tier-1 (CV < 0.1)" in err
