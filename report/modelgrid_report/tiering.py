"""The fleet tiering report in the format of seed 000 ("Power Variance Analysis Results"). Pure.

Every sentence is derived from the entries and from the TierPolicies that priced them: the tier
distribution lists each policy's own tiers with their own limits; a finding names a model only
where its figures support the words (a model is in the "high variance" alert only when its CV,
not its power, put it in the policy's last tier; two models are "most stable" in an order only
when their 95 % intervals do not overlap); implications are stated only for tiers that hold a
model. Refused, failed and running qualifications are listed as such and never given a tier.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from modelgrid_report.fleet import Entry, EntryState, PolicyView, Threshold, ordered

NA = "—"
#: The 95 % interval is always stated beside the CV; the report says what it is an interval of.
INTERVAL_NOTE = (
    "CV 95% CI: the benchmark's 95 % confidence interval of the tier metric (the power CV over "
    "the policy's time scale), from run-to-run and window-to-window variation."
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TierShare(_Model):
    """How many qualifications a tier of a policy holds."""

    policy: str
    tier_number: int
    label: str
    stability: str
    criteria: str
    discount_percent: float
    count: int
    total: int
    #: of `count`, those whose discount was granted (claims, attestation: the policy's rules)
    granted: int = 0

    @property
    def share_pct(self) -> float:
        return 100.0 * self.count / self.total if self.total else 0.0


class StateShare(_Model):
    """How many qualifications are not tiered, and why (refused, failed, running)."""

    state: EntryState
    count: int
    total: int

    @property
    def share_pct(self) -> float:
        return 100.0 * self.count / self.total if self.total else 0.0


class Row(_Model):
    """One line of the model results table."""

    model: str
    qualification: str
    avg_power_w: float | None
    power_std_w: float | None
    power_cv: float | None
    power_cv_low: float | None
    power_cv_high: float | None
    tier: str
    tier_number: int | None
    stability: str
    simulated: bool


class TieringReport(_Model):
    """The whole report, before it is rendered."""

    generated_at: str
    policies: list[PolicyView]
    distribution: list[TierShare]
    not_tiered: list[StateShare]
    rows: list[Row]
    findings: list[str]
    implications: list[str]
    artifacts: list[str] = []


# --------------------------------------------------------------------------- formatting


def _f(x: float | None, digits: int) -> str:
    return NA if x is None else f"{x:.{digits}f}"


def cv_text(e: Entry) -> str:
    """ "0.0282 (95% CI 0.0251-0.0313)" or the CV alone when there is no interval."""
    if e.power_cv is None:
        return NA
    if e.power_cv_low is None or e.power_cv_high is None:
        return f"{e.power_cv:.4f} (no interval)"
    return f"{e.power_cv:.4f} (95% CI {e.power_cv_low:.4f}-{e.power_cv_high:.4f})"


def _state_words(e: Entry) -> str:
    """What the Tier column says of an entry that holds no tier."""
    why = f": {e.reason}" if e.reason else ""
    return {
        EntryState.REFUSED: f"not tiered (refused{why})",
        EntryState.FAILED: f"not tiered (failed{why})",
        EntryState.RUNNING: f"not tiered yet ({e.phase})",
        EntryState.NOT_PRICED: f"not priced ({e.reason or e.phase})",
    }.get(e.state, NA)


def _row(e: Entry) -> Row:
    return Row(
        model=e.model,
        qualification=e.key,
        avg_power_w=e.avg_power_w,
        power_std_w=e.power_std_w,
        power_cv=e.power_cv,
        power_cv_low=e.power_cv_low,
        power_cv_high=e.power_cv_high,
        tier=e.tier_label if e.tiered else _state_words(e),
        tier_number=e.tier_number if e.tiered else None,
        stability=e.stability if e.tiered else NA,
        simulated=e.simulated,
    )


# --------------------------------------------------------------------------- distribution


def distribution(entries: Sequence[Entry], policies: Mapping[str, PolicyView]) -> list[TierShare]:
    """Per policy that priced an entry, each of its tiers (empty ones too) with its count; the
    share is of every qualification in the report."""
    total = len(entries)
    used = sorted({e.policy for e in entries if e.tiered and e.policy in policies})
    out = []
    for name in used:
        for t in policies[name].tiers:
            members = [
                e
                for e in entries
                if e.tiered and e.policy == name and e.tier_number == t.tier_number
            ]
            count = len(members)

            out.append(
                TierShare(
                    policy=name,
                    tier_number=t.tier_number,
                    label=t.label,
                    stability=t.stability,
                    criteria=t.criteria(),
                    discount_percent=t.discount_percent,
                    count=count,
                    total=total,
                    granted=sum(1 for e in members if e.discount_approved),
                )
            )
    return out


def not_tiered(entries: Sequence[Entry]) -> list[StateShare]:
    """The qualifications that hold no tier, by state (only states that occur)."""
    total = len(entries)
    return [
        StateShare(state=s, count=n, total=total)
        for s in (EntryState.REFUSED, EntryState.FAILED, EntryState.NOT_PRICED, EntryState.RUNNING)
        if (n := sum(1 for e in entries if e.state is s))
    ]


# --------------------------------------------------------------------------- findings


def _overlap(a: Entry, b: Entry) -> bool:
    """Whether two entries' CV intervals overlap (or either has none: then no order is shown)."""
    a_lo, a_hi, b_lo, b_hi = a.power_cv_low, a.power_cv_high, b.power_cv_low, b.power_cv_high
    if a_lo is None or a_hi is None or b_lo is None or b_hi is None:
        return True
    return a_lo <= b_hi and b_lo <= a_hi


def _name_cv(e: Entry) -> str:
    return f"{e.label} (CV: {cv_text(e)})"


def most_stable(tiered: Sequence[Entry]) -> str:
    """The (up to) two lowest CVs, and whether their intervals separate them."""
    if not tiered:
        return "**Most Stable:** none: no qualification holds a tier yet"
    best = sorted(tiered, key=lambda e: (e.power_cv if e.power_cv is not None else 1e9, e.key))[:2]
    text = "**Most Stable:** " + " and ".join(_name_cv(e) for e in best)
    if len(best) == 2:
        text += (
            "; their 95 % intervals overlap, so which of the two is steadier is not established"
            if _overlap(*best)
            else "; their 95 % intervals do not overlap"
        )
    return text


def _crossed(e: Entry, policy: PolicyView) -> list[Threshold]:
    """The CV limits of `policy` that fall inside `e`'s 95 % interval (a borderline price)."""
    if e.power_cv_low is None or e.power_cv_high is None:
        return []
    return [
        t
        for t in policy.tiers
        if t.max_cv is not None and e.power_cv_low < t.max_cv < e.power_cv_high
    ]


def requires_monitoring(tiered: Sequence[Entry], policies: Mapping[str, PolicyView]) -> str:
    """Entries in a middle tier of their policy, and entries whose interval straddles a CV
    limit (another run could price them differently)."""
    items = []
    for e in tiered:
        policy = policies.get(e.policy)
        if policy is None:
            continue
        middle = e.tier_number not in (policy.best.tier_number, policy.worst.tier_number)
        crossed = _crossed(e, policy)
        if not middle and not crossed:
            continue
        why = [f"{e.tier_label}"]
        why += [f"its interval crosses the {t.label} limit ({t.criteria()})" for t in crossed]
        items.append(f"{e.label} (CV: {cv_text(e)}; {'; '.join(why)})")
    return "**Requires Monitoring:** " + ("; ".join(items) if items else "none")


def _failed_limits(e: Entry, better: Threshold) -> tuple[bool, bool]:
    """Whether `e` fails the next better tier's CV limit, and its power limit."""
    cv_fails = (
        better.max_cv is not None
        and e.power_cv is not None
        and (
            e.power_cv > better.max_cv or (e.power_cv == better.max_cv and not better.cv_inclusive)
        )
    )
    w = e.avg_power_w
    power_fails = (
        better.max_avg_power_w is not None
        and w is not None
        and (
            w > better.max_avg_power_w
            or (w == better.max_avg_power_w and not better.power_inclusive)
        )
    )
    return cv_fails, power_fails


def _worst_tier(
    e: Entry, policies: Mapping[str, PolicyView]
) -> tuple[PolicyView, Threshold] | None:
    """The policy and its next better tier when `e` is in that policy's last tier."""
    policy = policies.get(e.policy)
    if policy is None or len(policy.tiers) < 2 or e.tier_number != policy.worst.tier_number:
        return None
    better = max(
        (t for t in policy.tiers if t.tier_number < e.tier_number), key=lambda t: t.tier_number
    )
    return policy, better


def alerts(tiered: Sequence[Entry], policies: Mapping[str, PolicyView]) -> list[str]:
    """The last tier's models: a high-variance alert for those its CV put there, a high-power
    note for those only their average power put there."""
    variance, power = [], []
    for e in tiered:
        found = _worst_tier(e, policies)
        if found is None:
            continue
        _, better = found
        cv_fails, power_fails = _failed_limits(e, better)
        if cv_fails:
            variance.append(f"{e.label} (CV: {cv_text(e)}, {e.tier_label})")
        elif power_fails:
            power.append(
                f"{e.label} (avg power {_f(e.avg_power_w, 1)} W, over {better.label}'s "
                f"{better.criteria()}; CV {cv_text(e)})"
            )
    out = ["**High Variance Alert:** " + ("; ".join(variance) if variance else "none")]
    if power:
        out.append("**High Power (not variance):** " + "; ".join(power))
    return out


def findings(entries: Sequence[Entry], policies: Mapping[str, PolicyView]) -> list[str]:
    """Seed 000's key findings, each supported by the figures it names."""
    tiered = [e for e in entries if e.tiered]
    out = [most_stable(tiered), requires_monitoring(tiered, policies), *alerts(tiered, policies)]
    absent = [e for e in entries if not e.tiered]
    if absent:
        out.append("**Not Tiered:** " + "; ".join(f"{e.label} ({_state_words(e)})" for e in absent))
    return out


# --------------------------------------------------------------------------- implications


def _worst_implications(tiered: Sequence[Entry], policy: PolicyView) -> list[str]:
    worst = policy.worst
    members = [e for e in tiered if e.policy == policy.name and e.tier_number == worst.tier_number]
    cvs = [e.power_cv for e in members if e.power_cv is not None]
    if not members or not cvs:
        return []
    return [
        f"{worst.label} models ({len(members)} here) require enhanced power management and "
        "monitoring",
        f"Power provisioning must account for ±{max(cvs) * 100:.0f}% variance (one standard "
        f"deviation of {policy.tier_metric}, the highest CV measured) in {worst.label} models",
    ]


def _best_implications(tiered: Sequence[Entry], policy: PolicyView) -> list[str]:
    best = policy.best
    members = [e for e in tiered if e.policy == policy.name and e.tier_number == best.tier_number]
    total = sum(1 for e in tiered if e.policy == policy.name)
    if not members:
        return [f"No model reached {best.label} ({best.criteria()}) under TierPolicy {policy.name}"]
    return [
        f"{best.label} models ({len(members)} of {total} tiered; {best.criteria()}) are ideal for "
        "production workloads with predictable power budgets"
    ]


def implications(entries: Sequence[Entry], policies: Mapping[str, PolicyView]) -> list[str]:
    """What the tiers that hold models mean for the infrastructure, from each policy's own
    tiers; and what the reader must not take for a price."""
    tiered = [e for e in entries if e.tiered]
    out: list[str] = []
    for name in sorted({e.policy for e in tiered if e.policy in policies}):
        policy = policies[name]
        if len(policy.tiers) > 1:
            out += _worst_implications(tiered, policy)
        out += _best_implications(tiered, policy)
    simulated = [e for e in tiered if e.simulated]
    if simulated:
        out.append(
            f"{len(simulated)} of the tiered figures come from simulated measurements (replayed "
            "power or synthetic inference, marked *): they show the method, not a price"
        )
    refused = [e for e in entries if e.state is EntryState.REFUSED]
    if refused:
        were, carry = ("s were", "carry") if len(refused) != 1 else (" was", "carries")
        out.append(
            f"{len(refused)} result{were} refused for pricing and {carry} no tier until a new "
            "measurement is accepted"
        )
    return out


# --------------------------------------------------------------------------- the report


def tiering(
    entries: Sequence[Entry],
    policies: Mapping[str, PolicyView],
    *,
    generated_at: dt.datetime,
    artifacts: Sequence[str] = (),
) -> TieringReport:
    """The report of `entries` under the `policies` that priced them."""
    rows = ordered(entries)
    return TieringReport(
        generated_at=generated_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        policies=[policies[n] for n in sorted({e.policy for e in rows if e.policy in policies})],
        distribution=distribution(rows, policies),
        not_tiered=not_tiered(rows),
        rows=[_row(e) for e in rows],
        findings=findings(rows, policies),
        implications=implications(rows, policies),
        artifacts=list(artifacts),
    )


def _framework(report: TieringReport) -> str:
    if not report.policies:
        return "modelgrid - no TierPolicy priced a qualification here"
    named = ", ".join(f"TierPolicy {p.name} ({p.tier_metric})" for p in report.policies)
    return f"modelgrid verification - Power Variance & Tiering, {named}"


def _distribution_lines(report: TieringReport) -> list[str]:
    many = len({s.policy for s in report.distribution}) > 1
    lines = []
    for s in report.distribution:
        where = f"{s.policy}: " if many else ""
        lines.append(
            f"- **{where}{s.label} ({s.stability + ', ' if s.stability else ''}{s.criteria}; "
            f"{s.discount_percent:g}% discount):** {s.share_pct:.0f}% of models "
            f"({s.count}/{s.total}){_granted(s)}"
        )
    for n in report.not_tiered:
        lines.append(
            f"- **Not tiered ({n.state.value}):** {n.share_pct:.0f}% of models "
            f"({n.count}/{n.total})"
        )
    return lines or ["- no qualifications"]


def _granted(s: TierShare) -> str:
    """How many of a tier's models were granted its discount (claims and attestation may
    withhold it), said only where the tier has a discount and models."""
    if not s.count or not s.discount_percent:
        return ""
    return f"; discount granted to {s.granted} of {s.count}"


TABLE_HEADER = (
    "| Model | Avg Power (W) | Std Dev (W) | CV | CV 95% CI | Tier | Tier Number | Stability "
    "| Qualification |",
    "|:------|--------------:|------------:|---:|:----------|:-----|------------:|:----------"
    "|:--------------|",
)


def _table_line(r: Row) -> str:
    ci = (
        f"{r.power_cv_low:.4f}-{r.power_cv_high:.4f}"
        if r.power_cv_low is not None and r.power_cv_high is not None
        else NA
    )
    number = str(r.tier_number) if r.tier_number is not None else NA
    mark = " *" if r.simulated else ""
    return (
        f"| {r.model}{mark} | {_f(r.avg_power_w, 2)} | {_f(r.power_std_w, 2)} | "
        f"{_f(r.power_cv, 4)} | {ci} | {r.tier} | {number} | {r.stability} | {r.qualification} |"
    )


def tiering_markdown(report: TieringReport) -> str:
    """The report as seed 000's markdown."""
    lines = [
        "# Power Variance Analysis Results",
        f"**Generated:** {report.generated_at}",
        f"**Framework:** {_framework(report)}",
        "",
        "## Executive Summary",
        "",
        "### Tiering Distribution:",
        *_distribution_lines(report),
        "",
        "### Model Results:",
        "",
        *TABLE_HEADER,
        *(_table_line(r) for r in report.rows),
        "",
        INTERVAL_NOTE,
    ]
    if any(r.simulated for r in report.rows):
        lines.append(
            "\\* simulated measurement (replayed power or synthetic inference): not a price."
        )
    lines += ["", "## Key Findings:", ""]
    lines += [f"{i}. {f}" for i, f in enumerate(report.findings, 1)]
    lines += ["", "## Implications for Firmus Infrastructure:", ""]
    lines += [f"- {i}" for i in report.implications] or ["- none: no qualification holds a tier"]
    if report.artifacts:
        lines += ["", "## Generated Artifacts:", *(f"- `{a}`" for a in report.artifacts)]
    return "\n".join(lines) + "\n"
