"""The per-run granular analysis (seed 002): sections, statistics, and the multi-level analysis."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgrid_contract.result import CompactSweep, Sweep, SweepRun
from modelgrid_operator.render import COMPARISON_HEADER, SUMMARY_HEADER
from modelgrid_report.fleet import Entry, EntryState, RunFigures
from modelgrid_report.granular import (
    RUNS_HEADER,
    CorrelationKind,
    MetricKind,
    SectionKind,
    analysis,
    analysis_json,
    analysis_markdown,
    decompose,
    distribution,
    interpretation,
    pearson_r,
    statistics,
)

# --------------------------------------------------------------------------- builders

#: (speedup, efficiency %, throughput delta tok/s, TTFT delta ms, contention)
Row = tuple[float | None, float | None, float | None, float | None, bool]


def sweep_run(level: int, run: int, row: Row) -> SweepRun:
    speedup, efficiency, delta, ttft_delta, contention = row
    return SweepRun(
        concurrency=level,
        run=run,
        tokens_per_s=100.0,
        ttft_p50_ms=50.0,
        ttft_p95_ms=80.0,
        avg_power_w=250.0,
        power_cv=0.02,
        joules_per_token=0.5,
        speedup=speedup,
        efficiency_pct=efficiency,
        throughput_delta_tok_s=delta,
        ttft_delta_ms=ttft_delta,
        contention=contention,
    )


def baseline(level: int, n: int) -> list[SweepRun]:
    return [sweep_run(level, i + 1, (None, None, None, None, False)) for i in range(n)]


def make_sweep(
    per_level: dict[int, Sequence[Row]], first: int = 1, baseline_runs: int = 5
) -> Sweep:
    """A sweep whose first level is `first` and whose later levels have the given rows."""
    runs = baseline(first, baseline_runs)
    for level, rows in per_level.items():
        runs += [sweep_run(level, i + 1, row) for i, row in enumerate(rows)]
    levels = [first, *per_level]
    return Sweep(levels=levels, tier_concurrency=max(levels), runs=runs, per_level=[])


def eff_rows(pairs: Sequence[tuple[float, float]]) -> list[Row]:
    """Rows from (efficiency, throughput delta) pairs."""
    return [(e / 50.0, e, d, 1.0, False) for e, d in pairs]


def figures(
    cvs: Sequence[float | None],
    powers: Sequence[float | None] | None = None,
    tokens: Sequence[float | None] | None = None,
) -> list[RunFigures]:
    powers = powers if powers is not None else [250.0 + i for i in range(len(cvs))]
    tokens = tokens if tokens is not None else [100.0 + i for i in range(len(cvs))]
    return [
        RunFigures(run=i + 1, power_cv=cv, avg_power_w=p, joules_per_token=0.5, tokens_per_s=t)
        for i, (cv, p, t) in enumerate(zip(cvs, powers, tokens, strict=True))
    ]


def entry(
    name: str,
    model: str,
    engine: str = "vllm",
    *,
    state: EntryState = EntryState.TIERED,
    runs: Sequence[RunFigures] = (),
    sweep: Sweep | None = None,
    summary: CompactSweep | None = None,
    concurrency: int = 1,
    reason: str = "",
) -> Entry:
    return Entry(
        namespace="ns",
        name=name,
        model=model,
        state=state,
        phase="Succeeded" if state is EntryState.TIERED else "Failed",
        reason=reason,
        engine=engine,
        concurrency=concurrency,
        runs=list(runs),
        sweep=sweep,
        sweep_summary=summary,
    )


def compact_sweep() -> CompactSweep:
    return CompactSweep(
        levels=[1, 2],
        tier_concurrency=2,
        runs=[3, 3],
        tokens_per_s=[100.0, 180.0],
        ttft_p50_ms=[50.0, 60.0],
        avg_power_w=[200.0, 250.0],
        power_cv=[0.02, 0.03],
        joules_per_token=[0.5, 0.4],
        speedup=[None, 1.8],
        efficiency_mean_pct=[None, 90.0],
        efficiency_std_pct=[None, 2.0],
        efficiency_min_pct=[None, 88.0],
        efficiency_max_pct=[None, 92.0],
        contended_runs=[0, 0],
    )


NAN_OR_INF = re.compile(r"\b(nan|inf|infinity)\b", re.IGNORECASE)


def assert_clean(text: str) -> None:
    assert not NAN_OR_INF.search(text), NAN_OR_INF.search(text)


# --------------------------------------------------------------------------- seed 002's data

SEED_SECTION_1: list[Row] = [
    (1.7015, 85.08, 30.47, 1422.8, False),
    (1.7037, 85.18, 30.69, 119.4, False),
    (1.9916, 99.58, -0.35, 17.7, False),
    (1.9758, 98.79, -13.13, 86.9, False),
    (1.6239, 81.20, 14.33, 49.8, False),
]
SEED_SECTION_1_TEXT = """\
| Run | Speedup | Efficiency (%) | Throughput Delta (tok/s) | TTFT Delta (ms) | Contention |
|-----|---------|----------------|----------------------|-------------|------------|
| 1 | 1.7015x | 85.08 | +30.47 | +1422.8 | No |
| 2 | 1.7037x | 85.18 | +30.69 | +119.4 | No |
| 3 | 1.9916x | 99.58 | -0.35 | +17.7 | No |
| 4 | 1.9758x | 98.79 | -13.13 | +86.9 | No |
| 5 | 1.6239x | 81.20 | +14.33 | +49.8 | No |

**Efficiency Statistics:**
- Mean: 89.97%
- Std Dev: 8.57pp
- Min: 81.20% | Max: 99.58%
- Range: 18.38pp
- CV: 9.53%
"""
#: seed 002's section 2 (Rust, Qwen, Chimera Homo): (efficiency, throughput delta)
SEED_SECTION_2 = [(95.92, -3.65), (97.40, -3.49), (89.94, -16.06), (91.80, -6.18), (72.00, -32.73)]
#: seed 002's Python sections 7-12, two scenarios per model: (efficiency, throughput delta)
SEED_PYTHON = {
    "Qwen 2.5 7B": (
        [(55.31, 14.32), (82.84, 16.26), (84.00, 14.71), (81.54, 17.53), (84.14, 15.15)],
        [(81.54, 13.18), (84.29, 14.64), (82.83, 16.26), (83.92, 15.01), (88.01, 10.52)],
    ),
    "Gemma 3": (
        [(60.12, 10.16), (84.07, 16.05), (87.51, 11.43), (83.94, 16.57), (85.54, 13.99)],
        [(79.75, 12.49), (86.25, 13.03), (85.41, 13.74), (84.21, 15.31), (88.64, 9.83)],
    ),
    "Llama 3.1 8B": (
        [(60.19, 9.78), (91.29, 6.47), (87.57, 10.08), (91.33, 6.31), (88.61, 9.17)],
        [(69.56, 15.70), (89.37, 8.43), (90.27, 7.18), (91.68, 5.91), (88.00, 9.84)],
    ),
}


def seed_python_entries() -> list[Entry]:
    return [
        entry(
            f"py-{i}",
            model,
            "Python",
            sweep=make_sweep({2: eff_rows(scenario_a), 4: eff_rows(scenario_b)}),
        )
        for i, (model, (scenario_a, scenario_b)) in enumerate(SEED_PYTHON.items())
    ]


# --------------------------------------------------------------------------- sections


def test_statistics_reproduce_seed_section_1() -> None:
    s = statistics([85.08, 85.18, 99.58, 98.79, 81.20])
    assert s is not None
    assert s.n == 5
    assert f"{s.mean:.2f}" == "89.97"
    assert f"{s.std:.2f}" == "8.57"
    assert (s.min, s.max) == (81.20, 99.58)
    assert f"{s.range:.2f}" == "18.38"
    assert s.cv_pct is not None
    assert f"{s.cv_pct:.2f}" == "9.53"
    assert s.std == pytest.approx(np.std([85.08, 85.18, 99.58, 98.79, 81.20], ddof=1))


def test_sweep_entry_renders_seed_002_table_and_statistics() -> None:
    e = entry("qwen", "Qwen 2.5 7B", "Rust", sweep=make_sweep({2: SEED_SECTION_1}))
    md = analysis_markdown([e])
    assert "## 1. Rust: Qwen 2.5 7B - Concurrency 2 vs 1\n" in md
    assert SEED_SECTION_1_TEXT in md
    assert "\n".join(COMPARISON_HEADER) in md
    assert "**Generated from 5 benchmark runs**" in md
    assert "**Engines:** Rust" in md


def test_each_level_after_the_first_gets_a_numbered_section() -> None:
    e = entry("a", "M", "vllm", sweep=make_sweep({2: SEED_SECTION_1, 4: SEED_SECTION_1}))
    a = analysis([e, entry("b", "N", "sglang", runs=figures([0.01, 0.02]))])
    assert [(s.number, s.kind, s.scenario) for s in a.sections] == [
        (1, SectionKind.SWEEP_LEVEL, "Concurrency 2 vs 1"),
        (2, SectionKind.SWEEP_LEVEL, "Concurrency 4 vs 1"),
        (3, SectionKind.RUNS, "2 runs at concurrency 1"),
    ]
    assert a.runs == 12
    md = analysis_markdown([e])
    assert md.index("## 1. vllm: M - Concurrency 2 vs 1") < md.index(
        "## 2. vllm: M - Concurrency 4"
    )


def test_runs_only_entry_has_a_power_table_and_power_statistics() -> None:
    e = entry(
        "r",
        "Llama",
        "transformers",
        runs=figures([0.0100, 0.0120, 0.0140], powers=[240.0, 250.0, 260.0]),
        concurrency=4,
    )
    md = analysis_markdown([e])
    assert "## 1. transformers: Llama - 3 runs at concurrency 4" in md
    assert "\n".join(RUNS_HEADER) in md
    assert "| 1 | 240.0 | 0.0100 | 0.5000 | 100.00 |" in md
    cv_block = (
        "**Power Statistics (per-run power CV):**\n- Mean: 0.0120\n- Std Dev: 0.0020\n"
        "- Min: 0.0100 | Max: 0.0140\n- Range: 0.0040\n- CV: 16.67%"
    )
    power_block = (
        "**Power Statistics (per-run avg power):**\n- Mean: 250.00 W\n- Std Dev: 10.00 W\n"
        "- Min: 240.00 W | Max: 260.00 W\n- Range: 20.00 W\n- CV: 4.00%"
    )
    assert cv_block in md
    assert power_block in md


def test_summary_only_entry_shows_the_summary_and_asks_for_the_evidence() -> None:
    e = entry("s", "Gemma", "vllm", summary=compact_sweep(), runs=figures([0.02, 0.03, 0.025]))
    a = analysis([e])
    assert [s.kind for s in a.sections] == [SectionKind.SWEEP_SUMMARY]
    md = analysis_markdown([e])
    assert "## 1. vllm: Gemma - Concurrency sweep (per-level summary)" in md
    assert "\n".join(SUMMARY_HEADER) in md
    assert "## Concurrency sweep" not in md
    assert "`--evidence-root`" in md
    assert "| 2 | 3 | 180.00 |" in md
    assert "**Power Statistics (per-run power CV):**" in md
    # its priced runs are power-CV figures, never mixed with efficiency
    assert [d.metric for d in a.distributions] == [MetricKind.POWER_CV]


# --------------------------------------------------------------------------- correlation


@pytest.mark.parametrize(
    ("r", "words"),
    [
        (0.0, "Weak/no correlation"),
        (-0.399, "Weak/no correlation"),
        (0.4, "Moderate positive correlation"),
        (-0.654, "Moderate negative correlation"),
        (0.7, "Strong positive correlation"),
        (-0.95, "Strong negative correlation"),
    ],
)
def test_interpretation_words(r: float, words: str) -> None:
    assert interpretation(r, 10) == words


def test_pearson_r_equals_numpy_corrcoef() -> None:
    xs = [1.0, 2.0, 3.5, 4.0, 7.0, 8.5]
    ys = [2.0, 1.0, 4.0, 3.0, 9.0, 7.0]
    r = pearson_r(xs, ys)
    assert r == pytest.approx(float(np.corrcoef(xs, ys)[0, 1]), abs=1e-12)
    assert r is not None
    assert interpretation(r, 6) == "Strong positive correlation"


def test_correlation_uses_the_absolute_throughput_delta() -> None:
    section_1 = [(85.08, 30.47), (85.18, 30.69), (99.58, -0.35), (98.79, -13.13), (81.20, 14.33)]
    pairs = section_1 + SEED_SECTION_2
    rows = eff_rows(pairs)
    e = entry("q", "Qwen 2.5 7B", "Rust", sweep=make_sweep({2: rows[:5], 4: rows[5:]}))
    (c,) = analysis([e]).correlations
    eff = [p[0] for p in pairs]
    delta = [p[1] for p in pairs]
    assert c.kind is CorrelationKind.ABS_THROUGHPUT_DELTA_VS_EFFICIENCY
    assert c.n == 10
    assert c.r == pytest.approx(float(np.corrcoef(np.abs(delta), eff)[0, 1]))
    # the signed delta (seed 002's printed -0.007) is not what the hypothesis tests
    assert round(float(np.corrcoef(delta, eff)[0, 1]), 3) == -0.007
    assert c.r is not None
    assert round(c.r, 3) == -0.804
    assert c.interpretation == "Strong negative correlation"
    md = analysis_markdown([e])
    assert "(absolute delta)" in md
    assert "- **Qwen 2.5 7B (Rust)**: r = -0.804 (n = 10)\n  - Strong negative correlation" in md


def test_seed_python_correlations_are_reproduced() -> None:
    # seed 002's Python deltas are all positive, so |delta| = delta and its r values hold
    got = {c.model: c for c in analysis(seed_python_entries()).correlations}
    assert {m: round(c.r or 0.0, 3) for m, c in got.items()} == {
        "Qwen 2.5 7B": -0.069,
        "Gemma 3": 0.327,
        "Llama 3.1 8B": -0.654,
    }
    assert got["Qwen 2.5 7B"].interpretation == "Weak/no correlation"
    assert got["Gemma 3"].interpretation == "Weak/no correlation"
    assert got["Llama 3.1 8B"].interpretation == "Moderate negative correlation"
    assert all(c.n == 10 for c in got.values())


def test_correlation_not_computed_below_three_runs_or_without_variance() -> None:
    few = entry("few", "A", sweep=make_sweep({2: eff_rows([(90.0, 1.0), (80.0, 2.0)])}))
    flat = entry("flat", "B", sweep=make_sweep({2: eff_rows([(90.0, d) for d in (1, 2, 3, 4)])}))
    a = analysis([few, flat])
    assert [(c.model, c.n, c.r, c.interpretation) for c in a.correlations] == [
        ("A", 2, None, "not computed (n=2)"),
        ("B", 4, None, "not computed (n=4, zero variance)"),
    ]
    md = analysis_markdown([few, flat])
    assert "- **A (vllm)**: not computed (n=2)" in md
    assert "- **B (vllm)**: not computed (n=4, zero variance)" in md


def test_entries_without_a_sweep_correlate_tokens_per_s_with_power_cv() -> None:
    tokens = [100.0, 110.0, 120.0, 130.0]
    cvs = [0.030, 0.028, 0.020, 0.021]
    e = entry("r", "M", "tgi", runs=figures(cvs, tokens=tokens))
    (c,) = analysis([e]).correlations
    assert c.kind is CorrelationKind.TOKENS_PER_S_VS_POWER_CV
    assert c.r == pytest.approx(float(np.corrcoef(tokens, cvs)[0, 1]))
    md = analysis_markdown([e])
    assert "### Tokens/s vs Power CV" in md
    assert "### Throughput Delta vs Efficiency" not in md


def test_nothing_to_correlate_is_said() -> None:
    md = analysis_markdown([entry("x", "M", state=EntryState.RUNNING)])
    assert "Nothing to correlate" in md
    assert "Nothing to decompose" in md


# --------------------------------------------------------------------------- variance


def test_decomposition_on_two_models_with_known_means() -> None:
    a_runs = eff_rows([(80.0, 1.0), (82.0, 2.0)])
    b_runs = eff_rows([(90.0, 1.0), (92.0, 3.0)])
    entries = [
        entry("a", "A", "vllm", sweep=make_sweep({2: a_runs})),
        entry("b", "B", "vllm", sweep=make_sweep({2: b_runs})),
    ]
    (d,) = analysis(entries).decompositions
    assert d.metric is MetricKind.EFFICIENCY
    assert d.models == ["A", "B"]
    assert d.n == 4
    assert d.between_variance == pytest.approx(25.0)
    assert d.within_variance == pytest.approx(1.0)
    assert d.total_variance == pytest.approx(float(np.var([80.0, 82.0, 90.0, 92.0])))
    assert d.between_share_pct == pytest.approx(25.0 / 26.0 * 100.0)
    assert d.variance_unit == "pp^2"
    md = analysis_markdown(entries)
    assert "- **Between-Model Variance:** 25.00 pp^2" in md
    assert "- **Within-Model Variance (avg):** 1.00 pp^2" in md
    assert "- **Total Variance:** 26.00 pp^2" in md
    assert "- **Between-Model % of Total:** 96.2%" in md
    assert "96% of the variance of efficiency (%) in vllm comes from model choice" in md


def test_seed_python_decomposition_is_the_pooled_variance() -> None:
    (d,) = analysis(seed_python_entries()).decompositions
    pooled = [e for pair in SEED_PYTHON.values() for scenario in pair for e, _ in scenario]
    assert d.n == 30
    assert d.total_variance == pytest.approx(float(np.var(pooled)))
    assert d.between_variance is not None
    assert d.within_variance is not None
    assert d.between_variance + d.within_variance == pytest.approx(d.total_variance)
    assert d.between_share_pct == pytest.approx(3.137, abs=1e-3)


def test_decomposition_needs_two_models() -> None:
    e = entry("a", "Only", "vllm", sweep=make_sweep({2: SEED_SECTION_1}))
    (d,) = analysis([e]).decompositions
    assert d.between_variance is None
    assert d.total_variance is None
    assert "needs two models" in d.note
    assert "needs two models; only Only ran on vllm" in analysis_markdown([e])


def test_metrics_are_never_mixed_in_one_decomposition() -> None:
    swept = entry("s", "A", "vllm", sweep=make_sweep({2: SEED_SECTION_1}))
    runs = entry("r", "B", "vllm", runs=figures([0.01, 0.02, 0.03]))
    a = analysis([swept, runs])
    assert [(d.engine, d.metric, d.models) for d in a.decompositions] == [
        ("vllm", MetricKind.EFFICIENCY, ["A"]),
        ("vllm", MetricKind.POWER_CV, ["B"]),
    ]
    assert all(d.total_variance is None for d in a.decompositions)
    assert [(d.metric, d.n) for d in a.distributions] == [
        (MetricKind.EFFICIENCY, 5),
        (MetricKind.POWER_CV, 3),
    ]


def test_power_cv_decomposition_unit() -> None:
    entries = [
        entry("a", "A", "tgi", runs=figures([0.01, 0.012])),
        entry("b", "B", "tgi", runs=figures([0.02, 0.022])),
    ]
    (d,) = analysis(entries).decompositions
    assert d.variance_unit == "CV^2"
    assert d.total_variance == pytest.approx(float(np.var([0.01, 0.012, 0.02, 0.022])))
    assert f"{d.between_variance:.4g} CV^2" in analysis_markdown(entries)


@given(
    st.lists(
        st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), max_size=12),
        min_size=1,
        max_size=6,
    )
)
def test_decomposition_always_sums_and_is_never_negative(groups: list[list[float]]) -> None:
    parts = decompose(groups)
    assert parts.between >= 0.0
    assert parts.within >= 0.0
    assert parts.total == parts.between + parts.within
    pooled = [x for g in groups for x in g]
    expected = float(np.var(pooled)) if pooled else 0.0
    assert parts.total == pytest.approx(expected, rel=1e-7, abs=1e-6)


# --------------------------------------------------------------------------- distribution


def test_percentiles_match_numpy() -> None:
    values = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.6, 5.3, 5.8, 9.7, 9.3]
    d = distribution("vllm", MetricKind.POWER_CV, values)
    assert d is not None
    p5, p50, p95 = np.percentile(values, [5, 50, 95], method="linear")
    assert [d.p5, d.median, d.p95] == pytest.approx([p5, p50, p95])
    assert d.mean == pytest.approx(float(np.mean(values)))
    assert d.std == pytest.approx(float(np.std(values, ddof=1)))
    assert [d.min, d.max, d.range] == pytest.approx([1.0, 9.7, 8.7])


def test_seed_python_distribution_is_reproduced() -> None:
    md = analysis_markdown(seed_python_entries())
    block = (
        "### PYTHON: efficiency (%)\n\n- **Runs:** 30\n- **Mean:** 82.72%\n"
        "- **Median (P50):** 84.25%\n- **P5:** 60.15% | **P95:** 91.31%\n"
        "- **Range:** 55.31% - 91.68% (36.37pp)\n- **Std Dev:** 9.28pp"
    )
    assert block in md
    assert "linear interpolation" in md


def test_one_run_has_no_sample_std() -> None:
    d = distribution("vllm", MetricKind.EFFICIENCY, [90.0])
    assert d is not None
    assert d.std is None
    assert (d.p5, d.median, d.p95, d.range) == (90.0, 90.0, 90.0, 0.0)


# --------------------------------------------------------------------------- states


def test_refused_failed_and_running_entries_are_never_analysed() -> None:
    good = [
        entry("a", "A", "vllm", sweep=make_sweep({2: SEED_SECTION_1})),
        entry("b", "B", "vllm", runs=figures([0.01, 0.02, 0.03])),
    ]
    sweep = make_sweep({2: eff_rows([(10.0, 500.0)] * 3)})
    bad = [
        entry(
            "bad-refused",
            "RefusedModel",
            "vllm",
            state=EntryState.REFUSED,
            runs=figures([9.0, 9.5, 8.0]),
            sweep=sweep,
            reason="ResultRejected",
        ),
        entry("bad-failed", "FailedModel", "zzz", state=EntryState.FAILED, reason="JobFailed"),
        entry("bad-running", "RunningModel", "vllm", state=EntryState.RUNNING),
    ]
    with_bad = analysis([*good, *bad])
    without = analysis(good)
    assert with_bad.model_dump(exclude={"not_analysed"}) == without.model_dump(
        exclude={"not_analysed"}
    )
    assert [(n.entry, n.state) for n in with_bad.not_analysed] == [
        ("ns/bad-refused", EntryState.REFUSED),
        ("ns/bad-failed", EntryState.FAILED),
        ("ns/bad-running", EntryState.RUNNING),
    ]
    md = analysis_markdown([*good, *bad])
    (line,) = [ln for ln in md.splitlines() if "bad-" in ln]
    assert line == (
        "**Not analysed:** ns/bad-refused (refused: ResultRejected); "
        "ns/bad-failed (failed: JobFailed); ns/bad-running (running)"
    )
    for name in ("RefusedModel", "FailedModel", "RunningModel", "zzz"):
        assert name not in md


def test_a_tiered_entry_with_one_run_is_listed_not_analysed() -> None:
    a = analysis([entry("one", "M", runs=figures([0.01]))])
    assert a.sections == []
    assert [n.why for n in a.not_analysed] == ["tiered, 1 run(s) and no sweep"]


# --------------------------------------------------------------------------- output


def test_json_is_serialisable_and_has_the_markdowns_numbers() -> None:
    entries = [
        *seed_python_entries(),
        entry("r1", "A", "tgi", runs=figures([0.01, 0.014, 0.013])),
        entry("r2", "B", "tgi", runs=figures([0.02, 0.021, 0.026])),
    ]
    doc = analysis_json(entries)
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text) == doc
    md = analysis_markdown(entries)
    for s in doc["sections"]:
        if s["efficiency"] is not None:
            assert f"- Mean: {s['efficiency']['mean']:.2f}%" in md
            assert f"- Std Dev: {s['efficiency']['std']:.2f}pp" in md
    for c in doc["correlations"]:
        assert f"r = {c['r']:.3f} (n = {c['n']})" in md
    for d in doc["decompositions"]:
        if d["metric"] == "efficiency":
            assert f"{d['between_variance']:.2f} pp^2" in md
        else:
            assert f"{d['within_variance']:.4g} CV^2" in md
        assert f"{d['between_share_pct']:.1f}%" in md
    for d in doc["distributions"]:
        digits = 2 if d["metric"] == "efficiency" else 4
        assert f"**Median (P50):** {d['median']:.{digits}f}" in md
    assert doc["engines"] == ["Python", "tgi"]
    assert doc["runs"] == 30 + 6


def test_odd_input_never_crashes_and_never_prints_nan() -> None:
    nan = math.nan
    odd_sweep = make_sweep(
        {
            2: [
                (None, None, None, None, False),
                (nan, nan, nan, nan, True),
                (1.8, 90.0, 2.0, None, False),
            ],
            4: [],
        }
    )
    entries = [
        entry("sweep", "S", "vllm", sweep=odd_sweep),
        entry("none", "N", "vllm", runs=figures([None, None], [None, None], [None, None])),
        entry(
            "mixed", "X", "vllm", runs=figures([nan, 0.02, None, 0.03], [nan, 250.0, None, 255.0])
        ),
        entry("noengine", "E", "", runs=figures([0.01, 0.011])),
    ]
    md = analysis_markdown(entries)
    text = json.dumps(analysis_json(entries), allow_nan=False)
    assert_clean(md)
    assert_clean(text)
    assert "| 2 | N/A | N/A | N/A | N/A | Yes |" in md
    assert "## 2. vllm: S - Concurrency 4 vs 1" in md
    assert "- Mean: N/A" in md
    assert "| 1 | N/A | N/A | 0.5000 | N/A |" in md
    assert "unknown: E" in md
    a = analysis(entries)
    mixed = next(s for s in a.sections if s.model == "X")
    assert mixed.power_cv is not None
    assert mixed.power_cv.n == 2


def test_empty_fleet() -> None:
    md = analysis_markdown([])
    assert md.startswith("# Per-Run Granular Analysis\n\n**Generated from 0 benchmark runs**")
    assert "# Multi-Level Statistical Analysis" in md
    assert_clean(md)
    assert analysis_json([])["sections"] == []


def test_layout_and_deterministic_order() -> None:
    entries = [
        entry("z", "Zeta", "vllm", runs=figures([0.01, 0.02])),
        entry("a", "Alpha", "sglang", runs=figures([0.03, 0.02])),
    ]
    md = analysis_markdown(entries)
    assert md == analysis_markdown(entries)
    assert "**Models:** Zeta, Alpha\n**Engines:** sglang, vllm\n" in md
    assert md.index("## 1. vllm: Zeta") < md.index("## 2. sglang: Alpha")
    assert md.index("---\n\n# Multi-Level Statistical Analysis") > md.index("## 2. sglang")
    assert md.index("### SGLANG: power CV") < md.index("### VLLM: power CV")
    assert [d.engine for d in analysis(entries).distributions] == ["sglang", "vllm"]
