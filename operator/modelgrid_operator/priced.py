"""A result priced under a TierPolicy: the policy read from its object, and the status of a
verdict (tier, discount, claims, environment, history). Pure.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from modelgrid_operator.api import QualificationSpec, validation_message
from modelgrid_operator.outcome import (
    HISTORY_LIMIT,
    Observed,
    clip,
    conditions,
    iso,
    parse_duration,
)
from modelgrid_operator.policy import TierPolicySpec
from modelgrid_operator.status import ConditionType, Phase, Reason
from modelgrid_operator.verdict import (
    engine_status,
    evaluate,
    measured_status,
    sweep_status,
    validate_result,
)


def policy_of(obs: Observed) -> TierPolicySpec | tuple[str, str]:
    if obs.policy is None:
        return (
            Reason.POLICY_NOT_FOUND.value,
            f"TierPolicy {obs.policy_name!r} does not exist; create it or set spec.policyRef",
        )
    try:
        return TierPolicySpec.model_validate(obs.policy.get("spec") or {})
    except ValidationError as exc:
        return (
            Reason.POLICY_INVALID.value,
            f"TierPolicy {obs.policy_name!r} is invalid: {validation_message(exc)}",
        )


def verdict_status(
    obs: Observed,
    spec: QualificationSpec,
    policy: TierPolicySpec,
    raw: str,
    attempt: int,
    reruns_done: int,
    *,
    nonce: str | None = None,
    check_nonce: bool = False,
) -> tuple[dict[str, Any], bool, list[tuple[str, str, str]]]:
    """Status for a result; (status, rerun requested, events). A fresh result must echo its
    Job's `nonce` (`check_nonce`); a stored one was checked when it was accepted."""
    result = validate_result(raw, spec, policy, expected_nonce=nonce, check_nonce=check_nonce)
    v = evaluate(result, spec, policy, reruns_done=reruns_done)
    if v.rerun_requested:
        return {}, True, [("Normal", Reason.RERUN.value, v.reasoning)]
    gen = int((obs.policy or {}).get("metadata", {}).get("generation", 0))
    tier = v.tier
    verified_reason = {
        "Verified": Reason.CLAIMS_VERIFIED,
        "Failed": Reason.CLAIMS_FAILED,
        "NoClaims": Reason.NO_CLAIMS,
    }[v.verification]
    ready_reason = Reason.SUCCEEDED if v.discount_approved else Reason.NOT_QUALIFIED
    summary = (
        f"{tier.label or tier.name if tier else 'no tier'}; discount {v.discount_percent:g}%; "
        f"claims {v.verification}"
    )
    expires = obs.now + parse_duration(spec.reverify_after)
    entry = {
        "completedAt": iso(obs.now),
        "tier": tier.number if tier else 0,
        "discountPercent": v.discount_percent,
        "powerCV": v.cv,
        "avgPowerW": v.avg_power_w,
        "verification": v.verification,
        "policy": obs.policy_name,
    }
    history = [entry, *(obs.status.get("history") or [])][:HISTORY_LIMIT]
    status: dict[str, Any] = {
        "phase": Phase.SUCCEEDED.value,
        "completedAt": iso(obs.now),
        "expiresAt": iso(expires),
        "attempt": attempt,
        "result": raw if isinstance(raw, str) else raw.decode(),
        "measured": measured_status(result),
        "tier": (
            {
                "name": tier.name,
                "number": tier.number,
                "label": tier.label,
                "stability": tier.stability,
                "discountPercent": tier.discount_percent,
            }
            if tier
            else None
        ),
        "discountPercent": v.discount_percent,
        "qualified": v.qualified,
        "discountApproved": v.discount_approved,
        "verification": {"result": v.verification, "claims": [c.to_status() for c in v.claims]},
        "reasoning": clip(v.reasoning),
        "policy": {"name": obs.policy_name, "generation": gen},
        "environment": {
            "gpu": result.gpu.name,
            "gpuCount": result.gpu.count,
            "driver": result.gpu.driver,
            "cuda": result.gpu.cuda,
            "node": result.node,
            "simulated": result.simulated,
            "source": result.source.value,
            **({"engine": engine_status(result)} if result.engine is not None else {}),
        },
        "flags": v.flags,
        **({"sweep": sweep_status(result)} if result.sweep is not None else {}),
        "history": history,
        "conditions": conditions(
            obs.status.get("conditions", []),
            {
                ConditionType.READY: (True, ready_reason.value, summary),
                ConditionType.RECONCILING: (False, ready_reason.value, ""),
                ConditionType.STALLED: (False, ready_reason.value, ""),
                ConditionType.SCHEDULED: (True, Reason.SCHEDULED.value, "the benchmark ran"),
                ConditionType.VERIFIED: (
                    v.verification != "Failed",
                    verified_reason.value,
                    v.reasoning,
                ),
            },
            obs.generation,
            obs.now,
        ),
    }
    event = ("Normal" if v.discount_approved else "Warning", ready_reason.value, clip(v.reasoning))
    return status, False, [event]
