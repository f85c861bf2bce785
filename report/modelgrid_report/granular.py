"""Per-run granular analysis of the fleet (seed 002's "Comprehensive Per-Run Granular Analysis").

Pure: no I/O, no clock. `analysis(entries)` computes everything into pydantic models;
`analysis_markdown` and `analysis_json` only format what it computed, so both show the same
numbers.

What it gives, for the tiered entries that have per-run figures:

* One numbered section per scenario, "## N. <engine>: <model> - <scenario>":
  - an entry with a full sweep (every run of every level, from a result.json): one section per
    level after the first, with seed 002's per-run table against the first level and its
    "Efficiency Statistics" block (the formatting is the verdict CLI's, reused);
  - an entry with only the per-level summary (status, a compact result): that summary, a note
    that the per-run table needs the kept evidence, and the priced runs when there are any;
  - an entry with two or more runs and no sweep: a per-run power table and "Power Statistics"
    blocks for the per-run power CV and the per-run average power.
* "# Multi-Level Statistical Analysis": the correlation of |throughput delta| with efficiency
  per model and engine (of tokens/s with power CV for entries without a per-run sweep), the
  variance decomposition per engine and metric, and the distribution per engine and metric.

Decisions:

* Refused, failed and running entries were never priced: they are listed in one "Not
  analysed" line with their state, and never appear in a section or in a statistic. A tiered
  entry with fewer than two runs and no sweep is listed there too (a spread needs two runs).
* The per-run metric of an entry is the efficiency (%) of the runs of its levels after the first
  when it has a full sweep, else the power CV of its runs; the two are never mixed (every
  decomposition and distribution is of one engine and one metric).
* Statistics use only finite figures: a None (or NaN) figure is skipped, and shown as N/A in a
  table. A section's statistics need two figures (the sample std, ddof=1, of one is undefined);
  with fewer the block shows N/A and the JSON null. CV is std / |mean|, in %.
* A section's efficiency statistics are computed from the runs its table shows, not copied from
  the level's stored summary, so the table and the block cannot disagree.
* The correlation uses the absolute throughput delta, as seed 002's hypothesis states. (Seed
  002's printed r values are those of the signed delta: for its Rust rows the absolute delta
  gives other values; for its Python rows, all positive, the two agree.) A (model, engine)
  with more than one swept level pools the runs of all levels after the first.
* The variance decomposition is the law of total variance with population variances (ddof=0)
  weighted by runs, so total = between + within = the variance of the pooled runs. (Seed 002's
  figures are the sample variance of the model means plus the mean of the sample variances,
  whose sum is not the pooled variance.)
* Percentiles are numpy's with linear interpolation (numpy's default method).
* Order is deterministic: sections and correlations in the entries' order, decompositions and
  distributions by engine name (sorted), then by metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict

from modelgrid_contract.result import (
    CONTENTION_SHARE_OF_MEDIAN,
    CompactSweep,
    Spread,
    Sweep,
    SweepRun,
)
from modelgrid_operator.render import (
    COMPARISON_HEADER,
    SUMMARY_HEADER,
    _fixed,
    comparison_row,
    contention_rule_line,
    efficiency_statistics,
    summary_row,
    sweep_levels_line,
)
from modelgrid_report.fleet import Entry, EntryState, RunFigures

#: A correlation needs this many runs (two points always lie on a line).
MIN_CORRELATION_RUNS: Final = 3
#: |r| below this is "Weak/no correlation", below STRONG_R "Moderate", else "Strong".
MODERATE_R: Final = 0.4
STRONG_R: Final = 0.7
#: The percentiles of a distribution.
PERCENTILES: Final = (5.0, 50.0, 95.0)
UNKNOWN_ENGINE: Final = "unknown"

RUNS_HEADER: Final = (
    "| Run | Avg Power (W) | Power CV | J/token | Tokens/s |",
    "|-----|---------------|----------|---------|----------|",
)

EVIDENCE_NOTE: Final = (
    "_Per-level summary only: the per-run table needs the kept evidence "
    "(`--evidence-root`, where each qualification's result.json is kept)._"
)
SECTION_METHOD: Final = (
    "_Per-section statistics: sample standard deviation (ddof=1) over the runs the table "
    "shows, N/A figures left out; CV = std / |mean|._"
)
HYPOTHESIS: Final = (
    "**Hypothesis:** Models with higher throughput imbalance (absolute delta) show lower "
    "efficiency."
)
CORRELATION_METHOD: Final = (
    "**Method:** Pearson r over the runs of every level after the first, per model and engine: "
    "x = |throughput delta| (tok/s, the absolute difference from the first level's same run), "
    f"y = efficiency (%); not computed below {MIN_CORRELATION_RUNS} runs or with zero variance."
)
RUNS_CORRELATION_METHOD: Final = (
    "**Method:** Pearson r over the runs of each model and engine without a per-run sweep: "
    f"x = tokens/s, y = power CV of the run; not computed below {MIN_CORRELATION_RUNS} runs or "
    "with zero variance."
)
DECOMPOSITION_METHOD: Final = (
    "**Method:** law of total variance over the per-run metric of each engine, population "
    "variances (ddof=0) weighted by runs: between = Σ nᵢ(meanᵢ − grand)² / N, within = "
    "Σ nᵢ varᵢ / N, total = between + within (the variance of the pooled runs)."
)
DISTRIBUTION_METHOD: Final = (
    "**Method:** every per-run value of the engine; percentiles by numpy with linear "
    "interpolation; Std Dev is the sample one (ddof=1)."
)


class MetricKind(StrEnum):
    """The per-run metric a statistic is of."""

    #: speedup / ideal speedup of a run of a sweep level against the first level's same run (%)
    EFFICIENCY = "efficiency"
    #: the run's power coefficient of variation (the tier metric, a plain number)
    POWER_CV = "power_cv"


class SectionKind(StrEnum):
    """What a per-scenario section shows."""

    #: one level of a full sweep against the first level, run by run (seed 002's table)
    SWEEP_LEVEL = "sweep_level"
    #: a sweep known only by its per-level summary
    SWEEP_SUMMARY = "sweep_summary"
    #: the runs of an entry without a sweep
    RUNS = "runs"


class CorrelationKind(StrEnum):
    """Which two per-run figures a correlation is between."""

    ABS_THROUGHPUT_DELTA_VS_EFFICIENCY = "abs_throughput_delta_vs_efficiency"
    TOKENS_PER_S_VS_POWER_CV = "tokens_per_s_vs_power_cv"


@dataclass(frozen=True)
class _Units:
    title: str
    label: str
    digits: int
    value_unit: str
    spread_unit: str
    variance_unit: str


_UNITS: Final = {
    MetricKind.EFFICIENCY: _Units("Efficiency", "efficiency (%)", 2, "%", "pp", "pp^2"),
    MetricKind.POWER_CV: _Units("Power CV", "power CV", 4, "", "", "CV^2"),
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Statistics(_Model):
    """Seed 002's statistics block of one per-run figure: n >= 2, sample std (ddof=1)."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    range: float
    #: std / |mean| in %; None when the mean is 0
    cv_pct: float | None


class ScenarioSection(_Model):
    """One numbered per-scenario section."""

    number: int
    kind: SectionKind
    entry: str
    model: str
    engine: str
    #: "Concurrency 4 vs 1", "5 runs at concurrency 1", "Concurrency sweep (per-level summary)"
    scenario: str
    metric: MetricKind
    concurrency: int
    baseline_concurrency: int | None = None
    levels: list[int] = []
    tier_concurrency: int | None = None
    contention_share_of_median: float | None = None
    #: the level's runs against the first level's (SWEEP_LEVEL)
    sweep_runs: list[SweepRun] = []
    #: the entry's measured runs (RUNS, and SWEEP_SUMMARY when it has them)
    runs: list[RunFigures] = []
    summary: CompactSweep | None = None
    efficiency: Statistics | None = None
    power_cv: Statistics | None = None
    avg_power_w: Statistics | None = None

    @property
    def heading(self) -> str:
        """`## N. <engine>: <model> - <scenario>`."""
        return f"## {self.number}. {self.engine}: {self.model} - {self.scenario}"

    @property
    def table_runs(self) -> int:
        """How many runs the section's per-run table shows."""
        return len(self.sweep_runs) + len(self.runs)


class NotAnalysed(_Model):
    """An entry left out of the analysis, and why."""

    entry: str
    model: str
    state: EntryState
    why: str


class Correlation(_Model):
    """Pearson r of two per-run figures of one model on one engine."""

    kind: CorrelationKind
    model: str
    engine: str
    n: int
    #: None when not computed (fewer than MIN_CORRELATION_RUNS runs, or zero variance)
    r: float | None
    interpretation: str


class VarianceDecomposition(_Model):
    """The law of total variance of one engine's per-run metric across its models."""

    engine: str
    metric: MetricKind
    models: list[str]
    n: int
    #: pp^2 for efficiency, CV^2 for power CV (see `variance_unit`); None with one model
    between_variance: float | None
    within_variance: float | None
    total_variance: float | None
    between_share_pct: float | None
    variance_unit: str
    note: str = ""


class Distribution(_Model):
    """The distribution of one engine's per-run metric."""

    engine: str
    metric: MetricKind
    n: int
    mean: float
    median: float
    p5: float
    p95: float
    min: float
    max: float
    range: float
    #: sample std (ddof=1); None for one run
    std: float | None


class Analysis(_Model):
    """Everything the granular report shows."""

    runs: int
    models: list[str]
    engines: list[str]
    not_analysed: list[NotAnalysed]
    sections: list[ScenarioSection]
    correlations: list[Correlation]
    decompositions: list[VarianceDecomposition]
    distributions: list[Distribution]
    methods: dict[str, str]


class VarianceParts(NamedTuple):
    between: float
    within: float
    total: float


# --------------------------------------------------------------------------- statistics


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _finite_values(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _all_finite(*xs: float) -> bool:
    return all(math.isfinite(x) for x in xs)


def statistics(values: Iterable[float | None]) -> Statistics | None:
    """Mean, sample std (ddof=1), min, max, range and CV (%) of the finite values; None with
    fewer than two of them."""
    xs = _finite_values(values)
    if len(xs) < 2:
        return None
    a = np.asarray(xs, dtype=np.float64)
    with np.errstate(all="ignore"):
        mean = float(np.mean(a))
        std = float(np.std(a, ddof=1))
        cv = std / abs(mean) * 100.0 if mean != 0 else None
    lo, hi = float(a.min()), float(a.max())
    if not _all_finite(mean, std, hi - lo):
        return None
    return Statistics(
        n=len(xs),
        mean=mean,
        std=std,
        min=lo,
        max=hi,
        range=hi - lo,
        cv_pct=cv if cv is not None and math.isfinite(cv) else None,
    )


def pearson_r(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r (numpy.corrcoef) of paired values; None for fewer than
    MIN_CORRELATION_RUNS pairs or when either side has zero variance."""
    if len(xs) != len(ys) or len(xs) < MIN_CORRELATION_RUNS:
        return None
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    with np.errstate(all="ignore"):
        r = float(np.corrcoef(x, y)[0, 1])
    return max(-1.0, min(1.0, r)) if math.isfinite(r) else None


def interpretation(r: float | None, n: int) -> str:
    """Seed 002's words for r: |r| < 0.4 weak/none, < 0.7 moderate, else strong."""
    if r is None:
        why = "" if n < MIN_CORRELATION_RUNS else ", zero variance"
        return f"not computed (n={n}{why})"
    if abs(r) < MODERATE_R:
        return "Weak/no correlation"
    strength = "Moderate" if abs(r) < STRONG_R else "Strong"
    return f"{strength} {'positive' if r > 0 else 'negative'} correlation"


def decompose(groups: Sequence[Sequence[float]]) -> VarianceParts:
    """The law of total variance over groups (population variances, weighted by size):
    between = Σ nᵢ(meanᵢ − grand)² / N, within = Σ nᵢ varᵢ / N, total = between + within.
    Empty groups are left out; no values at all give zeros."""
    arrays = [np.asarray(g, dtype=np.float64) for g in groups if len(g) > 0]
    if not arrays:
        return VarianceParts(0.0, 0.0, 0.0)
    pooled = np.concatenate(arrays)
    grand = float(np.mean(pooled))
    size = float(pooled.size)
    between = sum(a.size * (float(np.mean(a)) - grand) ** 2 for a in arrays) / size
    within = sum(a.size * float(np.var(a)) for a in arrays) / size
    return VarianceParts(between, within, between + within)


def distribution(engine: str, metric: MetricKind, values: Iterable[float]) -> Distribution | None:
    """Mean, median, P5, P95 (numpy, linear interpolation), min, max, range and sample std of
    the finite values; None without any."""
    xs = _finite_values(values)
    if not xs:
        return None
    a = np.asarray(xs, dtype=np.float64)
    p5, p50, p95 = (float(p) for p in np.percentile(a, PERCENTILES, method="linear"))
    with np.errstate(all="ignore"):
        mean = float(np.mean(a))
        std = float(np.std(a, ddof=1)) if a.size >= 2 else None
    lo, hi = float(a.min()), float(a.max())
    if not _all_finite(mean, p5, p50, p95, hi - lo):
        return None
    return Distribution(
        engine=engine,
        metric=metric,
        n=len(xs),
        mean=mean,
        median=p50,
        p5=p5,
        p95=p95,
        min=lo,
        max=hi,
        range=hi - lo,
        std=std if std is not None and math.isfinite(std) else None,
    )


# --------------------------------------------------------------------------- sections

_SWEEP_OPTIONAL = (
    "ttft_p50_ms",
    "ttft_p95_ms",
    "power_cv",
    "joules_per_token",
    "speedup",
    "efficiency_pct",
    "throughput_delta_tok_s",
    "ttft_delta_ms",
)
_RUN_FIGURES = ("power_cv", "avg_power_w", "joules_per_token", "tokens_per_s")


def _clean_sweep_run(run: SweepRun) -> SweepRun:
    """The run with every non-finite optional figure made None (shown N/A, never "nan")."""
    return run.model_copy(update={f: _finite(getattr(run, f)) for f in _SWEEP_OPTIONAL})


def _clean_run(run: RunFigures) -> RunFigures:
    return run.model_copy(update={f: _finite(getattr(run, f)) for f in _RUN_FIGURES})


def _engine(entry: Entry) -> str:
    return entry.engine or UNKNOWN_ENGINE


def _full_sweep(entry: Entry) -> Sweep | None:
    """The entry's per-run sweep, when it has one with a level to compare to the first."""
    sweep = entry.sweep
    return sweep if sweep is not None and len(sweep.levels) >= 2 else None


def _analysable(entry: Entry) -> bool:
    if entry.state is not EntryState.TIERED:
        return False
    return bool(_full_sweep(entry) or entry.sweep_summary or len(entry.runs) >= 2)


def _not_analysed(entry: Entry) -> NotAnalysed:
    if entry.state is EntryState.TIERED:
        why = f"tiered, {len(entry.runs)} run(s) and no sweep"
    else:
        why = entry.state.value + (f": {entry.reason}" if entry.reason else "")
    return NotAnalysed(entry=entry.key, model=entry.model, state=entry.state, why=why)


def _level_runs(sweep: Sweep, level: int) -> list[SweepRun]:
    return [_clean_sweep_run(r) for r in sweep.runs if r.concurrency == level]


def _sweep_sections(entry: Entry, sweep: Sweep, first_number: int) -> list[ScenarioSection]:
    first = sweep.levels[0]
    sections = []
    for i, level in enumerate(sweep.levels[1:]):
        runs = _level_runs(sweep, level)
        sections.append(
            ScenarioSection(
                number=first_number + i,
                kind=SectionKind.SWEEP_LEVEL,
                entry=entry.key,
                model=entry.label,
                engine=_engine(entry),
                scenario=f"Concurrency {level} vs {first}",
                metric=MetricKind.EFFICIENCY,
                concurrency=level,
                baseline_concurrency=first,
                levels=list(sweep.levels),
                tier_concurrency=sweep.tier_concurrency,
                contention_share_of_median=sweep.contention_share_of_median,
                sweep_runs=runs,
                efficiency=statistics(r.efficiency_pct for r in runs),
            )
        )
    return sections


def _runs_section(entry: Entry, number: int, summary: CompactSweep | None) -> ScenarioSection:
    runs = [_clean_run(r) for r in entry.runs]
    if summary is not None:
        kind, scenario = SectionKind.SWEEP_SUMMARY, "Concurrency sweep (per-level summary)"
    else:
        kind, scenario = SectionKind.RUNS, f"{len(runs)} runs at concurrency {entry.concurrency}"
    return ScenarioSection(
        number=number,
        kind=kind,
        entry=entry.key,
        model=entry.label,
        engine=_engine(entry),
        scenario=scenario,
        metric=MetricKind.POWER_CV,
        concurrency=summary.tier_concurrency if summary is not None else entry.concurrency,
        levels=list(summary.levels) if summary is not None else [],
        tier_concurrency=summary.tier_concurrency if summary is not None else None,
        runs=runs,
        summary=summary,
        power_cv=statistics(r.power_cv for r in runs),
        avg_power_w=statistics(r.avg_power_w for r in runs),
    )


def _sections(entry: Entry, first_number: int) -> list[ScenarioSection]:
    """The sections of an analysable entry, numbered from `first_number`."""
    sweep = _full_sweep(entry)
    if sweep is not None:
        return _sweep_sections(entry, sweep, first_number)
    return [_runs_section(entry, first_number, entry.sweep_summary)]


# --------------------------------------------------------------------------- multi-level


@dataclass(frozen=True)
class _Sample:
    """One analysed entry's per-run metric and correlation pairs."""

    model: str
    engine: str
    metric: MetricKind
    values: tuple[float, ...]
    kind: CorrelationKind
    pairs: tuple[tuple[float, float], ...]


def _pairs(
    xs: Iterable[float | None], ys: Iterable[float | None]
) -> tuple[tuple[float, float], ...]:
    out = []
    for x, y in zip(xs, ys, strict=True):
        fx, fy = _finite(x), _finite(y)
        if fx is not None and fy is not None:
            out.append((fx, fy))
    return tuple(out)


def _sample(entry: Entry) -> _Sample:
    sweep = _full_sweep(entry)
    if sweep is not None:
        runs = [_clean_sweep_run(r) for r in sweep.runs if r.concurrency in sweep.levels[1:]]
        deltas = [abs(d) if (d := r.throughput_delta_tok_s) is not None else None for r in runs]
        efficiencies = [r.efficiency_pct for r in runs]
        return _Sample(
            entry.model,
            _engine(entry),
            MetricKind.EFFICIENCY,
            tuple(_finite_values(efficiencies)),
            CorrelationKind.ABS_THROUGHPUT_DELTA_VS_EFFICIENCY,
            _pairs(deltas, efficiencies),
        )
    return _Sample(
        entry.model,
        _engine(entry),
        MetricKind.POWER_CV,
        tuple(_finite_values(r.power_cv for r in entry.runs)),
        CorrelationKind.TOKENS_PER_S_VS_POWER_CV,
        _pairs((r.tokens_per_s for r in entry.runs), (r.power_cv for r in entry.runs)),
    )


def _correlations(samples: Sequence[_Sample]) -> list[Correlation]:
    """One correlation per (model, engine, kind), in the order they first appear; the pairs of
    entries sharing one are pooled."""
    grouped: dict[tuple[str, str, CorrelationKind], list[tuple[float, float]]] = {}
    for s in samples:
        grouped.setdefault((s.model, s.engine, s.kind), []).extend(s.pairs)
    out = []
    for (model, engine, kind), pairs in grouped.items():
        r = pearson_r([p[0] for p in pairs], [p[1] for p in pairs])
        out.append(
            Correlation(
                kind=kind,
                model=model,
                engine=engine,
                n=len(pairs),
                r=r,
                interpretation=interpretation(r, len(pairs)),
            )
        )
    return out


def _by_engine_metric(
    samples: Sequence[_Sample],
) -> list[tuple[str, MetricKind, dict[str, list[float]]]]:
    """(engine, metric, {model: values}) for every pair that has values, engines sorted."""
    grouped: dict[tuple[str, MetricKind], dict[str, list[float]]] = {}
    for s in samples:
        if s.values:
            grouped.setdefault((s.engine, s.metric), {}).setdefault(s.model, []).extend(s.values)
    order = list(MetricKind)
    keys = sorted(grouped, key=lambda k: (k[0], order.index(k[1])))
    return [(engine, metric, grouped[(engine, metric)]) for engine, metric in keys]


def _decomposition(
    engine: str, metric: MetricKind, per_model: dict[str, list[float]]
) -> VarianceDecomposition:
    models = list(per_model)
    n = sum(len(v) for v in per_model.values())
    unit = _UNITS[metric].variance_unit
    if len(models) < 2:
        return VarianceDecomposition(
            engine=engine,
            metric=metric,
            models=models,
            n=n,
            between_variance=None,
            within_variance=None,
            total_variance=None,
            between_share_pct=None,
            variance_unit=unit,
            note=f"the decomposition needs two models; only {models[0]} ran on {engine}",
        )
    parts = decompose(list(per_model.values()))
    share = parts.between / parts.total * 100.0 if parts.total > 0 else None
    return VarianceDecomposition(
        engine=engine,
        metric=metric,
        models=models,
        n=n,
        between_variance=parts.between,
        within_variance=parts.within,
        total_variance=parts.total,
        between_share_pct=share,
        variance_unit=unit,
        note="" if share is not None else "no variance: every run gave the same value",
    )


def _distributions(
    groups: Sequence[tuple[str, MetricKind, dict[str, list[float]]]],
) -> list[Distribution]:
    out = []
    for engine, metric, per_model in groups:
        d = distribution(engine, metric, (v for vs in per_model.values() for v in vs))
        if d is not None:
            out.append(d)
    return out


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def analysis(entries: Sequence[Entry]) -> Analysis:
    """The granular analysis of `entries` (in their order): sections for the tiered entries
    with per-run figures, and the multi-level statistics over their runs."""
    analysed = [e for e in entries if _analysable(e)]
    sections: list[ScenarioSection] = []
    for e in analysed:
        sections += _sections(e, len(sections) + 1)
    samples = [_sample(e) for e in analysed]
    groups = _by_engine_metric(samples)
    return Analysis(
        runs=sum(s.table_runs for s in sections),
        models=_unique(e.label for e in analysed),
        engines=sorted({_engine(e) for e in analysed}),
        not_analysed=[_not_analysed(e) for e in entries if not _analysable(e)],
        sections=sections,
        correlations=_correlations(samples),
        decompositions=[_decomposition(e, m, per_model) for e, m, per_model in groups],
        distributions=_distributions(groups),
        methods={
            "sections": SECTION_METHOD,
            "correlation": CORRELATION_METHOD,
            "runs_correlation": RUNS_CORRELATION_METHOD,
            "decomposition": DECOMPOSITION_METHOD,
            "distribution": DISTRIBUTION_METHOD,
        },
    )


# --------------------------------------------------------------------------- markdown


def _spread(stats: Statistics | None) -> Spread | None:
    """`stats` as the Spread the verdict CLI's efficiency block formats (cv as a fraction)."""
    if stats is None:
        return None
    cv = stats.cv_pct / 100.0 if stats.cv_pct is not None else None
    return Spread.model_construct(
        n=stats.n,
        mean=stats.mean,
        std=stats.std,
        min=stats.min,
        max=stats.max,
        range=stats.range,
        cv=cv,
    )


def _statistics_block(title: str, stats: Statistics | None, digits: int, unit: str) -> list[str]:
    """Seed 002's statistics block for a figure other than efficiency: values and spreads in
    the figure's own unit, the CV in %."""
    s = stats
    return [
        f"**{title}:**",
        f"- Mean: {_fixed(s.mean if s else None, digits, unit)}",
        f"- Std Dev: {_fixed(s.std if s else None, digits, unit)}",
        f"- Min: {_fixed(s.min if s else None, digits, unit)} | "
        f"Max: {_fixed(s.max if s else None, digits, unit)}",
        f"- Range: {_fixed(s.range if s else None, digits, unit)}",
        f"- CV: {_fixed(s.cv_pct if s else None, 2, '%')}",
    ]


def _runs_row(run: RunFigures) -> str:
    return (
        f"| {run.run} | {_fixed(run.avg_power_w, 1)} | {_fixed(run.power_cv, 4)} | "
        f"{_fixed(run.joules_per_token, 4)} | {_fixed(run.tokens_per_s, 2)} |"
    )


def _levels_lines(section: ScenarioSection, share_of_median: float) -> list[str]:
    levels = section.levels
    tier = section.tier_concurrency if section.tier_concurrency is not None else max(levels)
    return [
        sweep_levels_line(levels, tier, tier != max(levels)) + "  ",
        contention_rule_line(share_of_median),
    ]


def _sweep_level_lines(section: ScenarioSection) -> list[str]:
    share = section.contention_share_of_median
    return [
        section.heading,
        "",
        *_levels_lines(section, share if share is not None else CONTENTION_SHARE_OF_MEDIAN),
        "",
        *COMPARISON_HEADER,
        *(comparison_row(r) for r in section.sweep_runs),
        "",
        *efficiency_statistics(_spread(section.efficiency)),
    ]


def _runs_lines(section: ScenarioSection) -> list[str]:
    return [
        *RUNS_HEADER,
        *(_runs_row(r) for r in section.runs),
        "",
        *_statistics_block("Power Statistics (per-run power CV)", section.power_cv, 4, ""),
        "",
        *_statistics_block("Power Statistics (per-run avg power)", section.avg_power_w, 2, " W"),
    ]


def _summary_lines(section: ScenarioSection, summary: CompactSweep) -> list[str]:
    lines = [
        section.heading,
        "",
        *_levels_lines(section, CONTENTION_SHARE_OF_MEDIAN),
        "",
        *SUMMARY_HEADER,
        *(summary_row(summary, i) for i in range(len(summary.levels))),
        "",
        EVIDENCE_NOTE,
    ]
    if section.runs:
        lines += [
            "",
            f"The priced runs, at concurrency {summary.tier_concurrency}:",
            "",
            *_runs_lines(section),
        ]
    return lines


def section_markdown(section: ScenarioSection) -> list[str]:
    """The lines of one per-scenario section."""
    if section.kind is SectionKind.SWEEP_LEVEL:
        return _sweep_level_lines(section)
    if section.summary is not None:
        return _summary_lines(section, section.summary)
    return [section.heading, "", *_runs_lines(section)]


def _correlation_item(c: Correlation) -> list[str]:
    head = f"- **{c.model} ({c.engine})**: "
    if c.r is None:
        return [head + c.interpretation]
    return [head + f"r = {c.r:.3f} (n = {c.n})", f"  - {c.interpretation}"]


def _correlation_lines(correlations: Sequence[Correlation]) -> list[str]:
    sweep = [
        c for c in correlations if c.kind is CorrelationKind.ABS_THROUGHPUT_DELTA_VS_EFFICIENCY
    ]
    runs = [c for c in correlations if c.kind is CorrelationKind.TOKENS_PER_S_VS_POWER_CV]
    lines = ["## 1. Correlation", ""]
    if sweep:
        lines += ["### Throughput Delta vs Efficiency", "", HYPOTHESIS, CORRELATION_METHOD, ""]
        lines += [line for c in sweep for line in _correlation_item(c)]
        lines.append("")
    if runs:
        lines += ["### Tokens/s vs Power CV (entries without a per-run sweep)", ""]
        lines += [RUNS_CORRELATION_METHOD, ""]
        lines += [line for c in runs for line in _correlation_item(c)]
        lines.append("")
    if not correlations:
        lines += ["_Nothing to correlate: no analysed entry has per-run figures._", ""]
    return lines


def _variance_text(x: float | None, metric: MetricKind) -> str:
    unit = _UNITS[metric].variance_unit
    if x is None:
        return "N/A"
    return f"{x:.2f} {unit}" if metric is MetricKind.EFFICIENCY else f"{x:.4g} {unit}"


def _decomposition_item(d: VarianceDecomposition) -> list[str]:
    units = _UNITS[d.metric]
    lines = [f"### {d.engine}: {units.label}", ""]
    if d.between_variance is None:
        return [*lines, f"_Not computed: {d.note}._", ""]
    share = d.between_share_pct
    lines += [
        f"- **Models:** {', '.join(d.models)} ({d.n} runs)",
        f"- **Between-Model Variance:** {_variance_text(d.between_variance, d.metric)}",
        f"- **Within-Model Variance (avg):** {_variance_text(d.within_variance, d.metric)}",
        f"- **Total Variance:** {_variance_text(d.total_variance, d.metric)}",
        f"- **Between-Model % of Total:** {_fixed(share, 1, '%')}",
        "",
    ]
    if share is None:
        return [*lines, f"**Interpretation:** {d.note.capitalize()}.", ""]
    return [
        *lines,
        f"**Interpretation:** {share:.0f}% of the variance of {units.label} in {d.engine} "
        f"comes from model choice, {100.0 - share:.0f}% from run-to-run variation.",
        "",
    ]


def _decomposition_lines(decompositions: Sequence[VarianceDecomposition]) -> list[str]:
    lines = ["## 2. Variance Decomposition", "", DECOMPOSITION_METHOD, ""]
    if not decompositions:
        return [*lines, "_Nothing to decompose: no analysed entry has per-run figures._", ""]
    return lines + [line for d in decompositions for line in _decomposition_item(d)]


def _distribution_item(d: Distribution) -> list[str]:
    u = _UNITS[d.metric]
    v, s = u.value_unit, u.spread_unit
    return [
        f"### {d.engine.upper()}: {u.label}",
        "",
        f"- **Runs:** {d.n}",
        f"- **Mean:** {_fixed(d.mean, u.digits, v)}",
        f"- **Median (P50):** {_fixed(d.median, u.digits, v)}",
        f"- **P5:** {_fixed(d.p5, u.digits, v)} | **P95:** {_fixed(d.p95, u.digits, v)}",
        f"- **Range:** {_fixed(d.min, u.digits, v)} - {_fixed(d.max, u.digits, v)} "
        f"({_fixed(d.range, u.digits, s)})",
        f"- **Std Dev:** {_fixed(d.std, u.digits, s)}",
        "",
    ]


def _distribution_lines(distributions: Sequence[Distribution]) -> list[str]:
    lines = ["## 3. Distribution by Engine", "", DISTRIBUTION_METHOD, ""]
    if not distributions:
        return [*lines, "_No per-run figures to describe._", ""]
    return lines + [line for d in distributions for line in _distribution_item(d)]


def _header_lines(a: Analysis) -> list[str]:
    lines = [
        "# Per-Run Granular Analysis",
        "",
        f"**Generated from {a.runs} benchmark runs**",
        "",
        f"**Models:** {', '.join(a.models) or 'none'}",
        f"**Engines:** {', '.join(a.engines) or 'none'}",
    ]
    if a.not_analysed:
        listed = "; ".join(f"{n.entry} ({n.why})" for n in a.not_analysed)
        lines.append(f"**Not analysed:** {listed}")
    return [*lines, "", SECTION_METHOD, ""]


def render_markdown(a: Analysis) -> str:
    """The markdown of a computed analysis."""
    lines = _header_lines(a)
    for section in a.sections:
        lines += [*section_markdown(section), ""]
    if not a.sections:
        lines += ["_No tiered entry has per-run figures to analyse._", ""]
    lines += ["---", "", "# Multi-Level Statistical Analysis", ""]
    lines += _correlation_lines(a.correlations)
    lines += _decomposition_lines(a.decompositions)
    lines += _distribution_lines(a.distributions)
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def analysis_markdown(entries: Sequence[Entry]) -> str:
    """The granular analysis of `entries` as markdown (seed 002's layout)."""
    return render_markdown(analysis(entries))


def analysis_json(entries: Sequence[Entry]) -> dict[str, Any]:
    """The granular analysis of `entries` as a JSON-serialisable dict (the same numbers as the
    markdown, unrounded)."""
    return analysis(entries).model_dump(mode="json")
