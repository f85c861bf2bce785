"""Monte Carlo coverage of the tier metric's 95 % interval (modelgrid_bench.interval). Seeded.

Each dataset is 3 independent runs of n windows, window power = 300 W * (1 + cv * x_t), with x_t
Gaussian white noise or a stationary Gaussian AR(1) (phi = 0.6), both of unit marginal variance,
so the true CV is cv. For each case it reports how often the interval covers the true CV (with
the binomial 95 % margin of that share), the mean and median point estimate's bias, the median
interval width, and how often the upper end is below 0.10 (the "Tier 1 without borderline"
mistake for a model whose true CV is 0.11).

Prints a Markdown table; with --write-docs also puts it into docs/benchmarks.md between the
ci-coverage markers (appending that section if it is missing).

    python benchmarks/ci_coverage.py --datasets 1000 --seed 0 --write-docs
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelgrid_bench.interval import (
    ASYMPTOTIC_WINDOWS_PER_RUN,
    METHOD_ASYMPTOTIC,
    MIN_WINDOWS_PER_RUN,
    tier_metric_estimate,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BEGIN = "<!-- ci-coverage:start -->"
END = "<!-- ci-coverage:end -->"
HEADING = "## Coverage of the tier metric's 95 % interval"
RUNS = 3
MEAN_POWER_W = 300.0
PHI = {"white": 0.0, "ar1-0.6": 0.6}
TIER1_LIMIT = 0.10


@dataclass(frozen=True)
class Case:
    process: str
    windows: int
    cv: float


CASES = [
    *(Case(p, n, 0.05) for p in PHI for n in (10, 30, 100)),
    *(Case(p, 10, 0.11) for p in PHI),
    *(Case(p, n, cv) for cv in (0.02, 0.2) for p in PHI for n in (10, 30, 100)),
]


#: Long runs, where the interval uses the signed root's normal limit (no bootstrap).
LONG_CASES = [Case(p, n, cv) for cv in (0.05, 0.11) for p in PHI for n in (300, 1000)]
LONG_BEGIN = "<!-- ci-coverage-long:start -->"
LONG_END = "<!-- ci-coverage-long:end -->"


def ar1_series(rng: np.random.Generator, phi: float, shape: tuple[int, ...]) -> np.ndarray:
    """Stationary Gaussian AR(1) with unit marginal variance along the last axis (float64)."""
    x = rng.standard_normal(shape)
    x[..., 1:] *= math.sqrt(1.0 - phi * phi)
    n, k, w = shape[-1], 1, phi
    while k < n and abs(w) > 1e-17:
        x[..., k:] = x[..., k:] + w * x[..., :-k]
        k, w = 2 * k, w * w
    return x


def run_case(args: tuple[Case, int, int]) -> dict[str, float | int | str]:
    case, datasets, seed = args
    key = (seed, list(PHI).index(case.process), case.windows, round(case.cv * 1000))
    rng = np.random.default_rng(key)
    power_w = MEAN_POWER_W * (
        1.0 + case.cv * ar1_series(rng, PHI[case.process], (datasets, RUNS, case.windows))
    )
    start = time.perf_counter()
    low, high, point = np.empty(datasets), np.empty(datasets), np.empty(datasets)
    for i in range(datasets):
        est = tier_metric_estimate(list(power_w[i]), seed=seed * 1_000_003 + i)
        assert est is not None
        low[i], high[i], point[i] = est.low, est.high, est.cv
    elapsed = time.perf_counter() - start
    covered = float(np.mean((low <= case.cv) & (case.cv <= high)))
    return {
        "process": case.process,
        "windows": case.windows,
        "cv": case.cv,
        "datasets": datasets,
        "coverage": covered,
        "margin": 1.96 * math.sqrt(covered * (1.0 - covered) / datasets),
        "miss_below": float(np.mean(high < case.cv)),
        "miss_above": float(np.mean(low > case.cv)),
        "mean_estimate": float(np.mean(point)),
        "bias": float(np.mean(point) - case.cv),
        "median_bias": float(np.median(point) - case.cv),
        "median_width": float(np.median(high - low)),
        "upper_below_limit": float(np.mean(high < TIER1_LIMIT)),
        "ms_per_estimate": 1000.0 * elapsed / datasets,
    }


def table(rows: list[dict[str, float | int | str]]) -> str:
    lines = [
        "| process | true CV | windows/run | datasets | coverage % | ± (95 %) | high < CV % "
        "| low > CV % | mean estimate | bias (mean) | bias (median) | median width "
        "| upper < 0.10 % | ms/estimate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        below = f"{100 * float(r['upper_below_limit']):.1f}" if r["cv"] == 0.11 else "–"
        lines.append(
            f"| {r['process']} | {r['cv']:.2f} | {r['windows']} | {r['datasets']} "
            f"| {100 * float(r['coverage']):.1f} | {100 * float(r['margin']):.1f} "
            f"| {100 * float(r['miss_below']):.1f} | {100 * float(r['miss_above']):.1f} "
            f"| {float(r['mean_estimate']):.4f} | {float(r['bias']):+.4f} "
            f"| {float(r['median_bias']):+.4f} | {float(r['median_width']):.4f} | {below} "
            f"| {float(r['ms_per_estimate']):.0f} |"
        )
    return "\n".join(lines)


def section(body: str, args: argparse.Namespace, wall_s: float) -> str:
    today = datetime.date.today().isoformat()
    cpu = os.cpu_count()
    return (
        f"{BEGIN}\n"
        f"Command: `python benchmarks/ci_coverage.py --datasets {args.datasets} "
        f"--seed {args.seed} --workers {args.workers} --write-docs`, run {today} on a "
        f"{cpu}-core machine ({platform.machine()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}); {wall_s:.0f} s wall.\n\n"
        f"Each dataset: {RUNS} runs of n windows, power = {MEAN_POWER_W:.0f} W x (1 + CV x_t), "
        "x_t Gaussian white noise or AR(1) with phi = 0.6, unit marginal variance. Interval: "
        f"95 %, method `{rows_method()}`, MIN_WINDOWS_PER_RUN = {MIN_WINDOWS_PER_RUN}. "
        "Coverage target 93-97 %; for true CV 0.11 the upper end must be below 0.10 in at "
        'most 2.5 % of datasets. "high < CV" and "low > CV" split the misses by side.\n\n'
        f"{body}\n{END}"
    )


def rows_method() -> str:
    est = tier_metric_estimate([np.linspace(290.0, 310.0, MIN_WINDOWS_PER_RUN)], seed=0)
    return est.method if est is not None else "?"


def write_docs(text: str) -> None:
    doc = DOC.read_text(encoding="utf-8")
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        doc = head + text + tail
    else:
        doc = doc.rstrip("\n") + f"\n\n{HEADING}\n\n{text}\n"
    DOC.write_text(doc, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=1000, help="datasets per case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument(
        "--long",
        action="store_true",
        help=f"the long-run cases ({ASYMPTOTIC_WINDOWS_PER_RUN}+ windows a run: no bootstrap), "
        "written to their own section",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.long:
        return _long(args, start)
    jobs = [(case, args.datasets, args.seed) for case in CASES]
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        rows = list(pool.map(run_case, jobs))
    text = section(table(rows), args, time.perf_counter() - start)
    sys.stdout.write(text + "\n")
    if args.write_docs:
        write_docs(text)
    return 0


def _long(args: argparse.Namespace, start: float) -> int:
    jobs = [(case, args.datasets, args.seed) for case in LONG_CASES]
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        rows = list(pool.map(run_case, jobs))
    wall_s = time.perf_counter() - start
    text = "\n".join(
        [
            LONG_BEGIN,
            f"Long runs (`python benchmarks/ci_coverage.py --long --datasets {args.datasets} "
            f"--seed {args.seed} --write-docs`, {datetime.date.today().isoformat()}, "
            f"{os.cpu_count()} cores, {wall_s:.0f} s): from {ASYMPTOTIC_WINDOWS_PER_RUN} windows "
            f"in every run the interval is the signed root's normal limit, method "
            f"`{METHOD_ASYMPTOTIC}`, with no bootstrap.",
            "",
            table(rows),
            LONG_END,
        ]
    )
    sys.stdout.write(text + "\n")
    if args.write_docs:
        path = DOC
        doc = path.read_text(encoding="utf-8")
        if LONG_BEGIN in doc:
            head, rest = doc.split(LONG_BEGIN, 1)
            doc = head + text + rest.split(LONG_END, 1)[1]
        else:
            doc = doc.replace(END, END + "\n\n" + text, 1)
        path.write_text(doc, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
