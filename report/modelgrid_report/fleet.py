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
from modelgrid_contract.wire import ResultRejected, decode_compact, encode_compact
from modelgrid_operator.policy import Boundary, TierPolicySpec
from modelgrid_operator.status import Phase
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
    #: holds no price now though nothing failed: blocked (a missing volume or policy), a
    #: verdict for an earlier generation, no tier of the policy fits, a rerun requested
    NOT_PRICED = "not priced"


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
    #: the compact result that was priced (status.result): kept evidence must reproduce it
    result: str = ""

    @property
    def label(self) -> str:
        """The model as the reports name it: marked when its figures are simulated."""
        return f"{self.model} (simulated)" if self.simulated else self.model

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


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _current_verdict(meta: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """A Succeeded status that stands for this generation: Ready, for the spec as it is now
    (a spec edited since, or left Ready=False by a missing policy, is priced at nothing)."""
    ready = _condition(status, "Ready")
    generation = meta.get("generation")
    return (
        status.get("phase") == Phase.SUCCEEDED.value
        and ready.get("status") == "True"
        and (generation is None or status.get("observedGeneration") == generation)
    )


def _state(meta: Mapping[str, Any], status: Mapping[str, Any]) -> EntryState:
    """A ladder, first match wins: a standing verdict with a tier and a finite CV is tiered;
    a Failed one is refused when its result was rejected, failed otherwise; a Succeeded one
    that does not stand, or has no tier, and a Pending one that is blocked hold no price;
    anything else is still in progress."""
    phase = status.get("phase")
    tier = _mapping(status.get("tier"))
    cv = _num(_mapping(status.get("measured")).get("powerCV"))
    if _current_verdict(meta, status) and tier and cv is not None:
        return EntryState.TIERED
    if phase == Phase.FAILED.value:
        rejected = _condition(status, "Stalled").get("reason") == "ResultRejected"
        return EntryState.REFUSED if rejected else EntryState.FAILED
    if phase == Phase.SUCCEEDED.value:
        return EntryState.NOT_PRICED
    if _condition(status, "Stalled").get("status") == "True":
        return EntryState.NOT_PRICED
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
    engine = _mapping(_mapping(status.get("environment")).get("engine"))
    if isinstance(engine, Mapping) and engine.get("name"):
        return str(engine["name"])
    return str(compact.backend) if compact is not None else ""


def _concurrency(spec: Mapping[str, Any], compact: CompactResult | None) -> int:
    if compact is not None and compact.sweep is not None:
        return compact.sweep.tier_concurrency
    return int(_mapping(spec.get("workload")).get("concurrency") or 1)


def _tier_fields(status: Mapping[str, Any], state: EntryState) -> dict[str, Any]:
    if state is not EntryState.TIERED:
        return {}
    tier = _mapping(status.get("tier"))
    return {
        "tier_number": int(tier.get("number") or 0),
        "tier_name": str(tier.get("name") or ""),
        "tier_label": str(tier.get("label") or tier.get("name") or ""),
        "stability": str(tier.get("stability") or ""),
        "discount_percent": _num(status.get("discountPercent")),
        "discount_approved": bool(status.get("discountApproved")),
    }


#: The tier metric a policy may price on other than the default, and its status field (it has
#: no interval: the benchmark's interval is of the 1 s CV).
INSTANT_METRIC = "power_cv_instant"


def _measured_fields(
    status: Mapping[str, Any], state: EntryState, priced_metric: str | None
) -> dict[str, Any]:
    """The figures of a priced result (a refused or running one shows none: nothing was
    priced, and a previous generation's figures would be wrong here). The CV is the one the
    policy priced: under `power_cv_instant` the instant CV, without an interval."""
    if state is not EntryState.TIERED:
        return {}
    m = _mapping(status.get("measured"))
    instant = priced_metric == INSTANT_METRIC
    return {
        "avg_power_w": _num(m.get("avgPowerW")),
        "power_std_w": _num(m.get("powerStdW")),
        "power_cv": _num(m.get("powerCVInstant" if instant else "powerCV")),
        "power_cv_low": None if instant else _num(m.get("powerCVLow")),
        "power_cv_high": None if instant else _num(m.get("powerCVHigh")),
        "tier_metric": INSTANT_METRIC if instant else str(m.get("tierMetric") or ""),
        "runs": _runs(m),
    }


def entry_from_status(obj: Mapping[str, Any], priced_metric: str | None = None) -> Entry:
    """An entry from a ModelQualification custom resource (metadata, spec, status);
    `priced_metric` is the tier metric of the policy that priced it. A status the report
    cannot read (wrong types) is an entry that holds no price, never an abort."""
    meta = _mapping(obj.get("metadata"))
    try:
        return _entry(obj, meta, priced_metric)
    except (ValueError, TypeError, AttributeError, KeyError, ValidationError) as exc:
        return Entry(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or "?"),
            model=str(meta.get("name") or "?"),
            state=EntryState.NOT_PRICED,
            phase="Unknown",
            reason="UnreadableStatus",
            message=f"the report cannot read this status: {' '.join(str(exc).split())[:200]}",
        )


def _entry(obj: Mapping[str, Any], meta: Mapping[str, Any], priced_metric: str | None) -> Entry:
    spec = _mapping(obj.get("spec"))
    status = _mapping(obj.get("status"))
    state = _state(meta, status)
    reason, message = _why(status, state)
    compact = _compact(status.get("result")) if state is EntryState.TIERED else None
    evidence = _mapping(status.get("evidence"))
    return Entry(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        model=str(_mapping(spec.get("model")).get("name") or meta.get("name") or ""),
        state=state,
        phase=str(status.get("phase") or "Pending"),
        reason=reason,
        message=message,
        policy=str(_mapping(status.get("policy")).get("name") or ""),
        simulated=bool(_mapping(status.get("environment")).get("simulated")),
        engine=_engine(status, compact),
        concurrency=_concurrency(spec, compact),
        sweep_summary=compact.sweep if compact is not None else None,
        evidence_path=str(evidence.get("path") or "") if evidence.get("kept") else "",
        trace_sha256=str(evidence.get("traceSha256") or ""),
        result=str(status.get("result") or "") if state is EntryState.TIERED else "",
        **_tier_fields(status, state),
        **_measured_fields(status, state, priced_metric),
    )


# --------------------------------------------------------------------------- from a result


def entry_from_verdict(
    label: str,
    result: CompactResult,
    verdict: Verdict,
    policy: str,
    full: BenchmarkResult | None = None,
    priced_metric: str | None = None,
) -> Entry:
    """An entry for a result file priced offline (`modelgrid verdict`'s code path), under a
    policy whose tier metric is `priced_metric`. A verdict that asks for a rerun (borderline)
    or that no tier fits holds no price."""
    tier = verdict.tier
    runs = result.runs
    instant = priced_metric == INSTANT_METRIC
    unpriced = tier is None or verdict.rerun_requested
    why = (
        ("BorderlineRerun", "the policy asks for a rerun of this borderline result")
        if verdict.rerun_requested
        else ("NoTier", "no tier of the policy fits this result")
    )
    return Entry(
        namespace="",
        name=label,
        model=result.model,
        state=EntryState.NOT_PRICED if unpriced else EntryState.TIERED,
        phase=Phase.SUCCEEDED.value,
        reason=why[0] if unpriced else "",
        message=why[1] if unpriced else "",
        policy=policy,
        tier_number=tier.number if tier and not unpriced else None,
        tier_name=tier.name if tier and not unpriced else "",
        tier_label=(tier.label or tier.name) if tier and not unpriced else "",
        stability=tier.stability if tier and not unpriced else "",
        discount_percent=None if unpriced else verdict.discount_percent,
        discount_approved=None if unpriced else verdict.discount_approved,
        avg_power_w=None if unpriced else result.avg_power_watts,
        power_std_w=None if unpriced else result.power_std_w,
        power_cv=None if unpriced else verdict.cv,
        # the benchmark's interval is of the 1 s CV only
        power_cv_low=result.power_cv_ci95[0] if result.power_cv_ci95 and not instant else None,
        power_cv_high=result.power_cv_ci95[1] if result.power_cv_ci95 and not instant else None,
        tier_metric=INSTANT_METRIC if instant else result.tier_metric,
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
        if runs is not None and not unpriced
        else [],
        sweep_summary=result.sweep,
        sweep=full.sweep if full is not None else None,
        trace_sha256=result.evidence.trace_sha256 if result.evidence is not None else "",
        result=encode_compact(full) if full is not None else "",
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
