"""A concurrency sweep's table (seed 002): per run and per level, against the first level.
Pure: numbers in, numbers out.

Run i of a level is compared with run i of the first level (the runs are interleaved, so the
two are close in time): speedup = tokens/s over the first level's, efficiency = speedup /
(level / first level) in %, throughput delta in tokens/s, TTFT delta (p50) in ms. A run is
contended when its efficiency falls below `CONTENTION_SHARE_OF_MEDIAN` of its level's median.
Per level: the means, the median TTFT, and the efficiency statistics (mean, sample std, min,
max, range, CV), as seed 002 reports them.
"""

from __future__ import annotations

import statistics

import numpy as np

from modelgrid_bench.stats import spread
from modelgrid_contract.result import (
    CONTENTION_SHARE_OF_MEDIAN,
    RunMetrics,
    Spread,
    Sweep,
    SweepLevel,
    SweepRun,
)


def _ms(seconds: float | None) -> float | None:
    return seconds * 1000.0 if seconds is not None else None


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _mean(values: list[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def _against(
    run: RunMetrics, base: RunMetrics | None, level: int, first: int, number: int
) -> SweepRun:
    """Run `number` of a level against the same run of the first level (None: no such run)."""
    speedup = _ratio(run.tokens_per_s, base.tokens_per_s) if base is not None else None
    ttft, base_ttft = _ms(run.ttft_p50_s), _ms(base.ttft_p50_s) if base else None
    return SweepRun(
        concurrency=level,
        run=number,
        tokens_per_s=run.tokens_per_s,
        ttft_p50_ms=ttft,
        ttft_p95_ms=_ms(run.ttft_p95_s),
        avg_power_w=run.avg_power_w,
        power_cv=run.power_cv_1s,
        joules_per_token=run.joules_per_token,
        speedup=speedup,
        efficiency_pct=speedup / (level / first) * 100.0 if speedup is not None else None,
        throughput_delta_tok_s=run.tokens_per_s - base.tokens_per_s if base is not None else None,
        ttft_delta_ms=ttft - base_ttft if ttft is not None and base_ttft is not None else None,
        contention=False,
    )


def _contended(rows: list[SweepRun]) -> list[SweepRun]:
    """Mark the runs whose efficiency is below the stated share of the level's median."""
    effs = [r.efficiency_pct for r in rows if r.efficiency_pct is not None]
    if not effs:
        return rows
    floor = CONTENTION_SHARE_OF_MEDIAN * statistics.median(effs)
    return [
        r.model_copy(
            update={"contention": r.efficiency_pct is not None and r.efficiency_pct < floor}
        )
        for r in rows
    ]


def _efficiency(rows: list[SweepRun]) -> Spread | None:
    values = np.array(
        [np.nan if r.efficiency_pct is None else r.efficiency_pct for r in rows], dtype=np.float64
    )
    s = spread(values)
    if s is None:
        return None
    return Spread(n=s.n, mean=s.mean, std=s.std, min=s.min, max=s.max, range=s.range, cv=s.cv)


def _level(level: int, rows: list[SweepRun]) -> SweepLevel:
    ttfts = [r.ttft_p50_ms for r in rows if r.ttft_p50_ms is not None]
    return SweepLevel(
        concurrency=level,
        runs=len(rows),
        tokens_per_s=_mean([r.tokens_per_s for r in rows]) or 0.0,
        ttft_p50_ms=statistics.median(ttfts) if ttfts else None,
        avg_power_w=_mean([r.avg_power_w for r in rows]) or 0.0,
        power_cv=_mean([r.power_cv for r in rows]),
        joules_per_token=_mean([r.joules_per_token for r in rows]),
        speedup=_mean([r.speedup for r in rows]),
        efficiency=_efficiency(rows),
        contended_runs=sum(r.contention for r in rows),
    )


def sweep_table(
    runs: list[RunMetrics], concurrency: list[int], levels: tuple[int, ...], tier_level: int
) -> Sweep:
    """The sweep of `runs` (in the order they ran), `concurrency[i]` being run i's level."""
    by_level: dict[int, list[RunMetrics]] = {level: [] for level in levels}
    for run, level in zip(runs, concurrency, strict=True):
        by_level.setdefault(level, []).append(run)
    first = levels[0]
    bases = by_level[first]
    table: list[SweepRun] = []
    summaries: list[SweepLevel] = []
    for level in levels:
        rows = [
            _against(run, bases[i] if i < len(bases) else None, level, first, i + 1)
            for i, run in enumerate(by_level[level])
        ]
        rows = _contended(rows)
        table += rows
        summaries.append(_level(level, rows))
    return Sweep(levels=list(levels), tier_concurrency=tier_level, runs=table, per_level=summaries)
