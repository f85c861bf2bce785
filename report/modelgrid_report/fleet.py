"""The fleet as the reports see it: one `Entry` per qualification, built from a live
ModelQualification's status or from a result file priced offline. Pure (no I/O).

An entry is *tiered* only when the operator (or the offline verdict, which is the same code)
priced a validated result; a refused result, a failed benchmark and one still in progress are
entries too, listed as such and never given a tier. Figures are copied from status (or from the
verdict), never recomputed, so the report matches what `kubectl get mq` shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from modelgrid_contract.result import BenchmarkResult, CompactResult, CompactSweep, Sweep
from modelgrid_contract.wire import ResultRejected, decode_compact
from modelgrid_operator.api import Boundary, Phase, TierPolicySpec
from modelgrid_operator.verdict import Verdict


class EntryState(StrEnum):
    """Where a qualification stands, for the report."""

    TIERED = "tiered"
    #: a result was measured and refused for pricing (ResultRejected)
    REFUSED = "refused"
    #: the benchmark failed or could not run (no result to price)
    FAILED = "failed"
    #: not finished: pending, queued, scheduling, running
    RUNNING = "running"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunFigures(_Model):
    """One measured run, as status.measured.runs has it (numbered from 1 here)."""

    run: int
    power_cv: float | None
    avg_power_w: float | None
    joules_per_token: float | None
    tokens_per_s: float | None


class Threshold(_Model):
    """One tier's limits in a policy, as the report states them."""

    tier_number: int
    tier_name: str
    label: str
    stability: str
    discount_percent: float
    max_cv: float | None
    cv_inclusive: bool
    max_avg_power_w: float | None
    power_inclusive: bool

    def criteria(self) -> str:
        """The tier's rule in words: "CV < 0.10, avg power < 150 W"; the last tier's "otherwise"."""
        parts = []
        if self.max_cv is not None:
            parts.append(f"CV {'≤' if self.cv_inclusive else '<'} {self.max_cv:g}")
        if self.max_avg_power_w is not None:
            parts.append(
                f"avg power {'≤' if self.power_inclusive else '<'} {self.max_avg_power_w:g} W"
            )
        return ", ".join(parts) or "any other result"


class PolicyView(_Model):
    """A TierPolicy's tiers, best first."""

    name: str
    tier_metric: str
    tiers: list[Threshold]

    @property
    def worst(self) -> Threshold:
        """The tier with the highest number (no discount, standard pricing in the model card)."""
        return max(self.tiers, key=lambda t: t.tier_number)

    @property
    def best(self) -> Threshold:
        """The tier with the lowest number."""
        return min(self.tiers, key=lambda t: t.tier_number)


class Entry(_Model):
    """One qualification in the report."""

    namespace: str
    name: str
    model: str
    state: EntryState
    phase: str
    #: why it is not tiered (the condition's reason and message), "" when tiered
    reason: str = ""
    message: str = ""
    policy: str = ""
    tier_number: int | None = None
    tier_name: str = ""
    tier_label: str = ""
    stability: str = ""
    discount_percent: float | None = None
    discount_approved: bool | None = None
    avg_power_w: float | None = None
    power_std_w: float | None = None
    power_cv: float | None = None
    power_cv_low: float | None = None
    power_cv_high: float | None = None
    tier_metric: str = ""
    simulated: bool = False
    #: the serving engine, else the benchmark backend ("transformers", "synthetic", ...)
    engine: str = ""
    concurrency: int = 1
    runs: list[RunFigures] = []
    #: the per-level summary (from status or a compact result)
    sweep_summary: CompactSweep | None = None
    #: every run of every level (only from a full result.json: kept evidence or a file)
    sweep: Sweep | None = None
    #: where the evidence is kept (status.evidence.path) and the digest trace.csv must have
    evidence_path: str = ""
    trace_sha256: str = ""

    @property
    def key(self) -> str:
        """namespace/name, or the file's name for an offline entry."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def tiered(self) -> bool:
        return self.state is EntryState.TIERED


# --------------------------------------------------------------------------- policies


def policy_view(name: str, spec: TierPolicySpec) -> PolicyView:
    """The tiers of a TierPolicy as the report states them."""
    return PolicyView(
        name=name,
        tier_metric=spec.tier_metric,
        tiers=[
            Threshold(
                tier_number=t.number,
                tier_name=t.name,
                label=t.label or t.name,
                stability=t.stability,
                discount_percent=t.discount_percent,
                max_cv=t.max_cv,
                cv_inclusive=t.cv_boundary is Boundary.INCLUSIVE,
                max_avg_power_w=t.max_avg_power_w,
                power_inclusive=t.power_boundary is Boundary.INCLUSIVE,
            )
            for t in sorted(spec.tiers, key=lambda t: t.number)
        ],
    )


# --------------------------------------------------------------------------- from status


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _condition(status: Mapping[str, Any], ctype: str) -> Mapping[str, Any]:
    for c in status.get("conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == ctype:
            return c
    return {}


def _state(status: Mapping[str, Any]) -> EntryState:
    """Tiered only with a tier in a Succeeded status; a Failed one is refused when its
    result was rejected, failed otherwise; anything else is still in progress."""
    phase = status.get("phase")
    if phase == Phase.SUCCEEDED.value and isinstance(status.get("tier"), Mapping):
        return EntryState.TIERED
    if phase == Phase.FAILED.value:
        stalled = _condition(status, "Stalled")
        rejected = stalled.get("reason") == "ResultRejected"
        return EntryState.REFUSED if rejected else EntryState.FAILED
    return EntryState.RUNNING


def _why(status: Mapping[str, Any], state: EntryState) -> tuple[str, str]:
    """The reason and message of an entry that is not tiered."""
    if state is EntryState.TIERED:
        return "", ""
    for ctype in ("Stalled", "Ready", "Reconciling"):
        c = _condition(status, ctype)
        if c.get("status") == "True" or (ctype == "Ready" and c):
            return str(c.get("reason") or ""), str(c.get("message") or "")
    return str(status.get("phase") or "Pending"), ""


def _runs(measured: Mapping[str, Any]) -> list[RunFigures]:
    out = []
    for r in measured.get("runs") or []:
        if isinstance(r, Mapping):
            out.append(
                RunFigures(
                    # status counts runs from 0; the reports, like seed 002, from 1
                    run=int(r.get("run") or 0) + 1,
                    power_cv=_num(r.get("powerCV")),
                    avg_power_w=_num(r.get("avgPowerW")),
                    joules_per_token=_num(r.get("joulesPerToken")),
                    tokens_per_s=_num(r.get("tokensPerSecond")),
                )
            )
    return out


def _compact(raw: Any) -> CompactResult | None:
    """The result status.result holds (the operator validated it before storing it)."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return decode_compact(raw)
    except (ResultRejected, ValidationError, ValueError):
        return None


def _engine(status: Mapping[str, Any], compact: CompactResult | None) -> str:
    engine = (status.get("environment") or {}).get("engine") or {}
    if isinstance(engine, Mapping) and engine.get("name"):
        return str(engine["name"])
    return str(compact.backend) if compact is not None else ""


def _concurrency(spec: Mapping[str, Any], compact: CompactResult | None) -> int:
    if compact is not None and compact.sweep is not None:
        return compact.sweep.tier_concurrency
    workload = spec.get("workload") or {}
    return int(workload.get("concurrency") or 1) if isinstance(workload, Mapping) else 1


def _tier_fields(status: Mapping[str, Any], state: EntryState) -> dict[str, Any]:
    if state is not EntryState.TIERED:
        return {}
    tier = status["tier"]
    return {
        "tier_number": int(tier.get("number") or 0),
        "tier_name": str(tier.get("name") or ""),
        "tier_label": str(tier.get("label") or tier.get("name") or ""),
        "stability": str(tier.get("stability") or ""),
        "discount_percent": _num(status.get("discountPercent")),
        "discount_approved": bool(status.get("discountApproved")),
    }


def _measured_fields(status: Mapping[str, Any], state: EntryState) -> dict[str, Any]:
    """The figures of a priced result (a refused or running one shows none: nothing was
    priced, and a previous generation's figures would be wrong here)."""
    if state is not EntryState.TIERED:
        return {}
    m = status.get("measured") or {}
    return {
        "avg_power_w": _num(m.get("avgPowerW")),
        "power_std_w": _num(m.get("powerStdW")),
        "power_cv": _num(m.get("powerCV")),
        "power_cv_low": _num(m.get("powerCVLow")),
        "power_cv_high": _num(m.get("powerCVHigh")),
        "tier_metric": str(m.get("tierMetric") or ""),
        "runs": _runs(m),
    }


def entry_from_status(obj: Mapping[str, Any]) -> Entry:
    """An entry from a ModelQualification custom resource (metadata, spec, status)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    state = _state(status)
    reason, message = _why(status, state)
    compact = _compact(status.get("result")) if state is EntryState.TIERED else None
    evidence = status.get("evidence") or {}
    return Entry(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        model=str((spec.get("model") or {}).get("name") or meta.get("name") or ""),
        state=state,
        phase=str(status.get("phase") or "Pending"),
        reason=reason,
        message=message,
        policy=str((status.get("policy") or {}).get("name") or ""),
        simulated=bool((status.get("environment") or {}).get("simulated")),
        engine=_engine(status, compact),
        concurrency=_concurrency(spec, compact),
        sweep_summary=compact.sweep if compact is not None else None,
        evidence_path=str(evidence.get("path") or "") if evidence.get("kept") else "",
        trace_sha256=str(evidence.get("traceSha256") or ""),
        **_tier_fields(status, state),
        **_measured_fields(status, state),
    )


# --------------------------------------------------------------------------- from a result


def entry_from_verdict(
    label: str,
    result: CompactResult,
    verdict: Verdict,
    policy: str,
    full: BenchmarkResult | None = None,
) -> Entry:
    """An entry for a result file priced offline (`modelgrid verdict`'s code path)."""
    tier = verdict.tier
    runs = result.runs
    return Entry(
        namespace="",
        name=label,
        model=result.model,
        state=EntryState.TIERED if tier is not None else EntryState.REFUSED,
        phase=Phase.SUCCEEDED.value,
        policy=policy,
        tier_number=tier.number if tier else None,
        tier_name=tier.name if tier else "",
        tier_label=(tier.label or tier.name) if tier else "",
        stability=tier.stability if tier else "",
        discount_percent=verdict.discount_percent,
        discount_approved=verdict.discount_approved,
        avg_power_w=result.avg_power_watts,
        power_std_w=result.power_std_w,
        power_cv=verdict.cv,
        power_cv_low=result.power_cv_ci95[0] if result.power_cv_ci95 else None,
        power_cv_high=result.power_cv_ci95[1] if result.power_cv_ci95 else None,
        tier_metric=result.tier_metric,
        simulated=result.simulated,
        engine=result.engine.name if result.engine is not None else str(result.backend),
        concurrency=result.sweep.tier_concurrency if result.sweep is not None else 1,
        runs=[
            RunFigures(run=i, power_cv=cv, avg_power_w=p, joules_per_token=j, tokens_per_s=t)
            for i, (cv, p, j, t) in enumerate(
                zip(
                    runs.power_cv,
                    runs.avg_power_w,
                    runs.joules_per_token,
                    runs.tokens_per_s,
                    strict=True,
                ),
                start=1,
            )
        ]
        if runs is not None
        else [],
        sweep_summary=result.sweep,
        sweep=full.sweep if full is not None else None,
        trace_sha256=result.evidence.trace_sha256 if result.evidence is not None else "",
    )


def entry_refused(label: str, model: str, policy: str, reason: str, message: str) -> Entry:
    """An entry for a result file that the offline verdict refused."""
    return Entry(
        namespace="",
        name=label,
        model=model or label,
        state=EntryState.REFUSED,
        phase=Phase.FAILED.value,
        reason=reason,
        message=message,
        policy=policy,
    )


def with_full_sweep(entry: Entry, full: BenchmarkResult) -> Entry:
    """`entry` with the per-run sweep table of its kept evidence's result.json."""
    return entry.model_copy(update={"sweep": full.sweep}) if full.sweep is not None else entry


def sort_key(entry: Entry) -> tuple[int, float, str]:
    """Tiered entries by CV (most stable first), then refused, failed and running ones."""
    order = list(EntryState).index(entry.state)
    return order, entry.power_cv if entry.power_cv is not None else 0.0, entry.key


def ordered(entries: Sequence[Entry]) -> list[Entry]:
    """The entries in the report's order."""
    return sorted(entries, key=sort_key)
