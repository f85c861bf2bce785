"""What `modelgrid verdict` prints: the model card's "Firmus Verification Results" section in
markdown, the "Concurrency sweep" section, or the verdict as JSON. No I/O: it builds strings
and dicts (the verification date is today's, from the clock); `cli` reads the files and
prints.

A result with a concurrency sweep adds a "Concurrency sweep" section: from a full result.json,
every run of every level in absolute figures and, for each level after the first, seed 002's
per-run table against the first level with its efficiency statistics; from a compact result
(which carries only per-level lists), the per-level summary. The report's granular analysis
reuses its rows and statistics.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from modelgrid_contract.result import (
    CONTENTION_SHARE_OF_MEDIAN,
    BenchmarkResult,
    CompactResult,
    CompactSweep,
    Spread,
    Sweep,
    SweepRun,
)
from modelgrid_operator.verdict import Verdict

#: The head of the model card's "Verified Metrics" table (seed 001), as the card spells it.
VERIFIED_METRICS_HEAD = (
    "### Verified Metrics",
    "",
    "| Metric | Developer Claim | Firmus Measured | Delta | Status |",
    "|--------|----------------|-----------------|-------|--------|",
)


def _num(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def render_markdown(
    result: CompactResult, verdict: Verdict, policy_name: str, identity_checked: bool
) -> str:
    claims = {c.metric: c for c in verdict.claims}
    rows = []
    for metric, label, measured in (
        ("avgPowerW", "Avg Power (W)", result.avg_power_watts),
        ("powerCV", "CV", verdict.cv),
        ("joulesPerToken", "J/token", result.joules_per_token),
        ("peakPowerW", "Peak Power (W)", result.peak_power_watts),
        ("tokensPerJoule", "Tokens/J", result.tokens_per_joule),
    ):
        c = claims.get(metric)
        if c is None and metric in ("peakPowerW", "tokensPerJoule"):
            continue
        rows.append(
            f"| {label} | {_num(c.claimed) if c else '—'} | {_num(measured)} | "
            f"{f'{c.delta_percent:+.1f}%' if c else '—'} | "
            f"{('✓' if c.within_tolerance else '✗') if c else '—'} |"
        )
    tier = verdict.tier
    lines = [
        "## Firmus Verification Results",
        "",
        f"**Verification Date:** {dt.datetime.now(dt.UTC).date().isoformat()}  ",
        f"**Verified By:** modelgrid verdict (TierPolicy {policy_name})  ",
        "**Verification Method:** modelgrid benchmark: NVML energy counter, power CV over "
        f"{result.cv_time_scale_s:g} s windows, {result.sample_interval_s * 1000:g} ms sampling  ",
        f"**Samples Tested:** {result.output_tokens} output tokens over "
        f"{_num(result.duration_s)} s on {result.gpu.count} x {result.gpu.name}"
        + (" (simulated)" if result.simulated else ""),
        "",
        *VERIFIED_METRICS_HEAD,
        *rows,
        "",
        f"**Final Qualification:** {tier.label or tier.name if tier else 'none'}  ",
        f"**Discount Approved:** {'Yes' if verdict.discount_approved else 'No'}"
        + (f" ({verdict.discount_percent:g}%)" if verdict.discount_approved else "")
        + "  ",
        f"**Reasoning:** {verdict.reasoning}",
    ]
    if not identity_checked:
        lines += [
            "",
            "_No qualification given: GPU product, GPU count and workload digest were "
            "not checked._",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- concurrency sweep

_NA = "N/A"

#: Seed 002's per-run table header, verbatim.
COMPARISON_HEADER = (
    "| Run | Speedup | Efficiency (%) | Throughput Delta (tok/s) | TTFT Delta (ms) | Contention |",
    "|-----|---------|----------------|----------------------|-------------|------------|",
)
ABSOLUTE_HEADER = (
    "| Level | Run | Tokens/s | TTFT p50 (ms) | TTFT p95 (ms) | Avg Power (W) | Power CV "
    "| J/token |",
    "|-------|-----|----------|---------------|---------------|---------------|----------"
    "|---------|",
)
SUMMARY_HEADER = (
    "| Level | Runs | Tokens/s | TTFT p50 (ms) | Avg Power (W) | Power CV | J/token | Speedup "
    "| Efficiency mean (%) | Efficiency std (pp) | Efficiency min (%) | Efficiency max (%) "
    "| Contended runs |",
    "|-------|------|----------|---------------|---------------|----------|---------|---------"
    "|---------------------|---------------------|--------------------|--------------------"
    "|----------------|",
)


def _fixed(x: float | None, digits: int, suffix: str = "") -> str:
    """`x` with `digits` decimals and `suffix`, or N/A for a figure that is not there."""
    return _NA if x is None else f"{x:.{digits}f}{suffix}"


def _signed(x: float | None, digits: int) -> str:
    """`x` with an explicit sign and `digits` decimals (a delta), or N/A."""
    return _NA if x is None else f"{x:+.{digits}f}"


def sweep_levels_line(levels: Sequence[int], tier_concurrency: int, declared: bool) -> str:
    """The levels swept and the one the tier was decided at, and why that one."""
    why = "declared" if declared else "the highest level"
    return (
        f"**Levels:** {', '.join(str(n) for n in levels)}; tier decided at concurrency "
        f"{tier_concurrency} ({why})."
    )


def contention_rule_line(share_of_median: float) -> str:
    """The stated rule behind the Contention column (seed 002's, made explicit)."""
    return (
        f"A run is contended when its efficiency is below {share_of_median * 100:g}% of its "
        "level's median."
    )


def absolute_row(run: SweepRun) -> str:
    """One run of one level in absolute figures."""
    return (
        f"| {run.concurrency} | {run.run} | {_fixed(run.tokens_per_s, 2)} | "
        f"{_fixed(run.ttft_p50_ms, 1)} | {_fixed(run.ttft_p95_ms, 1)} | "
        f"{_fixed(run.avg_power_w, 1)} | {_fixed(run.power_cv, 4)} | "
        f"{_fixed(run.joules_per_token, 4)} |"
    )


def comparison_row(run: SweepRun) -> str:
    """One run against the first level's same run, as a row of seed 002's table."""
    return (
        f"| {run.run} | {_fixed(run.speedup, 4, 'x')} | {_fixed(run.efficiency_pct, 2)} | "
        f"{_signed(run.throughput_delta_tok_s, 2)} | {_signed(run.ttft_delta_ms, 1)} | "
        f"{'Yes' if run.contention else 'No'} |"
    )


def efficiency_statistics(spread: Spread | None) -> list[str]:
    """Seed 002's "Efficiency Statistics" block: % for levels, pp for spreads, the CV as a
    percentage (std / mean * 100); N/A for what a level's runs cannot give."""
    if spread is None:
        mean = std = lo = hi = width = cv = None
    else:
        mean, std, lo, hi, width = spread.mean, spread.std, spread.min, spread.max, spread.range
        cv = spread.cv * 100.0 if spread.cv is not None else None
    return [
        "**Efficiency Statistics:**",
        f"- Mean: {_fixed(mean, 2, '%')}",
        f"- Std Dev: {_fixed(std, 2, 'pp')}",
        f"- Min: {_fixed(lo, 2, '%')} | Max: {_fixed(hi, 2, '%')}",
        f"- Range: {_fixed(width, 2, 'pp')}",
        f"- CV: {_fixed(cv, 2, '%')}",
    ]


def comparison_section(sweep: Sweep, level: int) -> list[str]:
    """`### Concurrency N vs M`: the level's runs against the first level's, and their
    efficiency statistics."""
    first = sweep.levels[0]
    summary = next((s for s in sweep.per_level if s.concurrency == level), None)
    return [
        f"### Concurrency {level} vs {first}",
        "",
        *COMPARISON_HEADER,
        *(comparison_row(r) for r in sweep.runs if r.concurrency == level),
        "",
        *efficiency_statistics(summary.efficiency if summary else None),
    ]


def render_full_sweep(sweep: Sweep, declared: bool) -> str:
    """The sweep of a full result: every run in absolute figures, then each level after the
    first against the first, run by run."""
    lines = [
        "## Concurrency sweep",
        "",
        sweep_levels_line(sweep.levels, sweep.tier_concurrency, declared) + "  ",
        contention_rule_line(sweep.contention_share_of_median),
        "",
        *ABSOLUTE_HEADER,
        *(absolute_row(r) for r in sweep.runs),
    ]
    for level in sweep.levels[1:]:
        lines += ["", *comparison_section(sweep, level)]
    return "\n".join(lines) + "\n"


def summary_row(sweep: CompactSweep, i: int) -> str:
    """Level `i` of a compact sweep's per-level lists."""
    return (
        f"| {sweep.levels[i]} | {sweep.runs[i]} | {_fixed(sweep.tokens_per_s[i], 2)} | "
        f"{_fixed(sweep.ttft_p50_ms[i], 1)} | {_fixed(sweep.avg_power_w[i], 1)} | "
        f"{_fixed(sweep.power_cv[i], 4)} | {_fixed(sweep.joules_per_token[i], 4)} | "
        f"{_fixed(sweep.speedup[i], 4, 'x')} | {_fixed(sweep.efficiency_mean_pct[i], 2)} | "
        f"{_fixed(sweep.efficiency_std_pct[i], 2)} | {_fixed(sweep.efficiency_min_pct[i], 2)} | "
        f"{_fixed(sweep.efficiency_max_pct[i], 2)} | {sweep.contended_runs[i]} |"
    )


def render_compact_sweep(sweep: CompactSweep) -> str:
    """The sweep of a compact result: its per-level summary (the per-run table is not in the
    compact form)."""
    declared = sweep.tier_concurrency != max(sweep.levels)
    return (
        "\n".join(
            [
                "## Concurrency sweep",
                "",
                sweep_levels_line(sweep.levels, sweep.tier_concurrency, declared) + "  ",
                contention_rule_line(CONTENTION_SHARE_OF_MEDIAN),
                "",
                *SUMMARY_HEADER,
                *(summary_row(sweep, i) for i in range(len(sweep.levels))),
                "",
                "_The per-run table is in the evidence's result.json: `modelgrid verdict "
                "--result result.json` prints it._",
            ]
        )
        + "\n"
    )


def render_sweep(result: CompactResult, full: BenchmarkResult | None) -> str:
    """The "Concurrency sweep" section: from the full result when there is one, else from
    the compact one; empty for a result without a sweep."""
    if full is not None and full.sweep is not None:
        return render_full_sweep(full.sweep, full.workload.tier_concurrency is not None)
    if result.sweep is not None:
        return render_compact_sweep(result.sweep)
    return ""


def sweep_json(result: CompactResult, full: BenchmarkResult | None) -> dict[str, Any] | None:
    """The sweep for `--json`: the full one (levels, every run, each level summarised) from a
    full result, else the compact per-level lists; None without a sweep."""
    if full is not None and full.sweep is not None:
        return full.sweep.model_dump(mode="json")
    return result.sweep.model_dump(mode="json") if result.sweep is not None else None


def verdict_json(
    result: CompactResult,
    verdict: Verdict,
    policy_name: str,
    full: BenchmarkResult | None = None,
) -> dict[str, Any]:
    """The verdict as JSON; `full`, the full result it came from, gives the per-run sweep."""
    tier = verdict.tier
    return {
        "tier": tier.name if tier else None,
        "tier_number": tier.number if tier else None,
        "tier_label": tier.label if tier else None,
        "discount_percentage": verdict.discount_percent,
        "power_cv": verdict.cv,
        "avg_power_watts": result.avg_power_watts,
        "peak_power_watts": result.peak_power_watts,
        "joules_per_token": result.joules_per_token,
        "tokens_per_joule": result.tokens_per_joule,
        "qualified": verdict.qualified,
        "discount_approved": verdict.discount_approved,
        "borderline": verdict.borderline,
        "verification": verdict.verification,
        "claims": [c.to_status() for c in verdict.claims],
        "reasoning": verdict.reasoning,
        "policy": policy_name,
        "simulated": result.simulated,
        "sweep": sweep_json(result, full),
    }
