"""Speed of `analyze` on a long session, against the reference script's pure-Python method. I/O.

Builds one evidence directory of 1e6 power samples (one GPU read every 5 ms, 5000 s: an idle
baseline and 3 runs of about 1600 s, telemetry every 0.5 s, requests back to back), written with
the real writer (trace.csv, its trace.npz cache, telemetry.csv, evidence.json). Then, in shuffled
rounds, it times side by side:

* `reference`: the method of the program's reference script over the same 1e6 power samples, a
  Python loop with the `statistics` module (mean, population std and variance, min, max, range,
  CV) plus a pure-Python trapezoid loop for energy;
* `analyze`: `modelgrid_bench.analysis.analyze(ev)`, the evidence already in memory (it computes
  far more: every metric, flag and refusal, the tier metric's interval);
* `cli`: `python -m modelgrid_bench analyze DIR` end to end in a fresh process (interpreter
  start, imports, reading and validating the evidence, analysis, JSON out);
* `cli-csv`: the same on a copy of the directory without trace.npz, so trace.csv is parsed;
* `cli --help`: `python -m modelgrid_bench analyze --help`, the interpreter and the imports alone.

Reports medians and the ratio reference / analyze, prints JSON on stdout and, with
--write-docs, replaces the section between the markers in docs/benchmarks.md.

    python benchmarks/analyze_speed.py --rounds 5 --write-docs
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modelgrid_bench.analysis import analyze, energy_model
from modelgrid_bench.evidence import TRACE_CACHE_FILE, read_evidence, write_evidence
from modelgrid_bench.interval import tier_metric_estimate
from modelgrid_bench.records import (
    TELEMETRY_COLUMNS,
    Evidence,
    Interval,
    RequestRecord,
    RunRecord,
    SessionMeta,
    Telemetry,
    Timeline,
    Trace,
)
from modelgrid_bench.stats import window_powers_w
from modelgrid_contract.result import (
    BackendInfo,
    Environment,
    GpuInfo,
    PowerSourceInfo,
    PowerSourceKind,
    SamplerConfig,
)
from modelgrid_contract.wire import encode_compact
from modelgrid_contract.workload import Workload

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- analyze-speed:start -->"
END = "<!-- analyze-speed:end -->"
#: The section goes before this heading when the markers are not there yet.
BEFORE = "## Coverage of the tier metric's 95 % interval"

INTERVAL_S = 0.005
TELEMETRY_S = 0.5
COUNTER_UPDATE_S = 0.1
IDLE_W = 72.0


# --------------------------------------------------------------------------- the session


def session(samples: int, seed: int) -> Evidence:
    """A one-GPU session of `samples` reads 5 ms apart: baseline, 3 runs, requests, telemetry.

    Power is what a decode-heavy LLM draws: idle at 72 W, prefill near 650 W, decode near
    430 W with a slow drift and per-token ripple, Gaussian read noise; reads jitter by up to
    0.4 ms and a few stall (sampler hiccups); the energy counter updates every 100 ms. Power
    is in whole milliwatts, as NVML reports it.
    """
    rng = np.random.default_rng(seed)
    t = 0.0037 + INTERVAL_S * np.arange(samples) + rng.uniform(0.0, 0.0004, samples)
    for i in rng.integers(1000, samples - 1000, 5):
        t[i:] += 0.03  # a 30 ms stall: a few gaps, as a busy node shows
    end = float(t[-1])
    span = end - 200.0
    run_len = (span - 2 * 5.0) / 3.0
    runs = [(200.0 + k * (run_len + 5.0), 200.0 + k * (run_len + 5.0) + run_len) for k in range(3)]
    requests: list[list[RequestRecord]] = []
    power = np.full(samples, IDLE_W)
    for a, b in runs:
        reqs: list[RequestRecord] = []
        s = a
        while True:
            ttft = float(rng.uniform(0.04, 0.2))
            dur = float(rng.uniform(1.5, 2.5))
            if s + dur > b:
                break
            reqs.append(
                RequestRecord(
                    start_s=s,
                    first_token_s=s + ttft,
                    end_s=s + dur,
                    input_tokens=int(rng.integers(100, 300)),
                    output_tokens=128,
                )
            )
            s += dur + 0.01
        requests.append(reqs)
        inside = (t >= a) & (t < b)
        tt = t[inside]
        power[inside] = (
            430.0 + 25.0 * np.sin(2 * np.pi * tt / 97.0) + 12.0 * np.sin(2 * np.pi * tt / 0.031)
        )
        st = np.array([r.start_s for r in reqs])
        ft = np.array([r.first_token_s for r in reqs])
        k = np.searchsorted(st, tt, side="right") - 1
        pre = (k >= 0) & (tt < ft[np.maximum(k, 0)])
        power[np.flatnonzero(inside)[pre]] = 650.0
    # NVML reports whole milliwatts, so reads repeat values (ties the percentiles must order).
    power = np.round(power + rng.normal(0.0, 8.0, samples), 3)
    steps = np.diff(t) * (power[1:] + power[:-1]) / 2.0
    cum = np.concatenate(([0.0], np.cumsum(steps)))
    last = np.floor(t / COUNTER_UPDATE_S) * COUNTER_UPDATE_S
    energy = np.interp(last, t, cum) + 3.2e9  # counters start at an arbitrary offset
    nan = np.full(samples, np.nan)
    trace = Trace(
        t_s=t,
        gpu=np.zeros(samples, dtype=np.int64),
        power_w=power,
        power_avg_w=nan.copy(),
        energy_j=energy,
        power_ts_s=nan.copy(),
        energy_ts_s=nan.copy(),
    )
    tel_t = np.arange(0.0, end, TELEMETRY_S)
    busy = np.zeros(tel_t.size, dtype=bool)
    for a, b in runs:
        busy |= (tel_t > a) & (tel_t <= b)
    n = tel_t.size
    cols = {
        "t_s": tel_t,
        "gpu": np.zeros(n),
        "sm_clock_mhz": np.where(busy, 1980.0, 345.0),
        "mem_clock_mhz": np.full(n, 2619.0),
        "temperature_c": np.round(np.where(busy, 61.0, 38.0) + rng.normal(0, 0.5, n)),
        "clocks_event_reasons": np.where(busy, 0.0, 1.0),
        "power_violation_ns": np.zeros(n),
        "thermal_violation_ns": np.zeros(n),
        "power_limit_w": np.full(n, 700.0),
        "gpu_util_pct": np.where(busy, 97.0, 0.0),
        "process_count": np.ones(n),
    }
    assert tuple(cols) == TELEMETRY_COLUMNS
    meta = SessionMeta(
        workload=Workload(samples=800, tokens_per_sample=128, repeats=3, seed=0),
        backend=BackendInfo(kind="synthetic", model="analyze-speed", simulated=True),
        power_source=PowerSourceInfo(
            kind=PowerSourceKind.REPLAY, instant_power_field=True, energy_counter=True
        ),
        sampler=SamplerConfig(interval_s=INTERVAL_S, telemetry_interval_s=TELEMETRY_S),
        environment=Environment(
            gpus=[GpuInfo(index=0, name="NVIDIA H200", uuid="GPU-0")], driver_version="570.00"
        ),
        engine_on_gpu=True,
    )
    timeline = Timeline(
        baseline=Interval(start_s=20.0, end_s=190.0),
        runs=[
            RunRecord(index=i, start_s=a, end_s=b, requests=requests[i])
            for i, (a, b) in enumerate(runs)
        ],
    )
    return Evidence(meta=meta, timeline=timeline, trace=trace, telemetry=Telemetry(cols))


# --------------------------------------------------------------------------- the configurations


def reference(samples: list[tuple[float, float]]) -> dict[str, float]:
    """The reference script's method over (time s, power W) samples: a Python loop collecting
    them, the `statistics` module for mean, population std and variance, min, max, range and
    CV, and a pure-Python trapezoid loop for energy."""
    times: list[float] = []
    powers: list[float] = []
    for t, p in samples:
        times.append(t)
        powers.append(p)
    mean = statistics.mean(powers)
    std = statistics.pstdev(powers)
    variance = statistics.pvariance(powers)
    low, high = min(powers), max(powers)
    energy = 0.0
    for i in range(1, len(powers)):
        energy += (times[i] - times[i - 1]) * (powers[i] + powers[i - 1]) / 2.0
    return {
        "mean_w": mean,
        "std_w": std,
        "variance_w2": variance,
        "min_w": low,
        "max_w": high,
        "range_w": high - low,
        "cv": std / mean,
        "energy_j": energy,
    }


def cli(directory: Path, *extra: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "modelgrid_bench", "analyze", str(directory), *extra],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MODELGRID_LOG_LEVEL": "ERROR"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"analyze failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --------------------------------------------------------------------------- the report


def _s(x: float) -> str:
    return f"{x:.3f}"


def section(report: dict[str, object]) -> str:
    """The markdown section between the markers (heading included)."""
    med: dict[str, float] = report["median_s"]  # type: ignore[assignment]
    lo: dict[str, float] = report["min_s"]  # type: ignore[assignment]
    hi: dict[str, float] = report["max_s"]  # type: ignore[assignment]
    load: list[float] = report["load_average_1min"]  # type: ignore[assignment]
    rows = [
        ("reference", "reference script's method (pure Python, `statistics`), in process"),
        ("analyze", "`analysis.analyze(ev)`, evidence in memory"),
        ("interval", "of which: `interval.tier_metric_estimate` on the same windows"),
        ("cli", "`python -m modelgrid_bench analyze DIR`, end to end (trace.npz cache)"),
        ("cli-csv", "the same, trace.csv parsed (no trace.npz)"),
        ("cli-help", "`python -m modelgrid_bench analyze --help` (start and imports only)"),
    ]
    lines = [
        BEGIN,
        "## Speed of `analyze` on a long session",
        "",
        f"Command: `{report['command']}`, run {report['date']} on a {report['cpus']}-core "
        f"machine ({report['machine']}, Python {report['python']}, numpy {report['numpy']}); "
        f"1-minute load average {load[0]:.1f} before and {load[1]:.1f} after (the machine is "
        "shared, so absolute times vary between runs; ratios are taken within each round).",
        "",
        f"One GPU read every 5 ms for {report['duration_s']:.0f} s: {report['samples']:,} "
        f"samples (an idle baseline and {report['runs']} runs of about "
        f"{report['run_s']:.0f} s, {report['requests']:,} requests, telemetry every 0.5 s, "
        f"{report['windows']:,} 1 s windows for the tier metric), written by the real writer "
        f"({report['trace_mb']:.0f} MB trace.csv). {report['rounds']} rounds, the "
        "configurations in a shuffled order in each; medians (min-max) of wall time.",
        "",
        "| configuration | what is timed | median s | min s | max s |",
        "|---|---|---|---|---|",
    ]
    for key, what in rows:
        lines.append(f"| {key} | {what} | {_s(med[key])} | {_s(lo[key])} | {_s(hi[key])} |")
    lines += [
        "",
        f"Ratio reference / analyze (median of the per-round ratios): "
        f"**{report['ratio_median']:.1f}x** (min {report['ratio_min']:.1f}x, max "
        f"{report['ratio_max']:.1f}x); without the interval's time: "
        f"{report['ratio_without_interval']:.1f}x: the tier metric's interval (its parametric "
        f"bootstrap) is {med['interval'] / med['analyze']:.0%} of analyze's median time. The "
        f"CLI end to end: **{med['cli']:.2f} s** median, {hi['cli']:.2f} s at worst.",
        "",
        "`analyze` computes much more than the reference method (per-run and pooled "
        "time-weighted statistics with percentiles, counter energy, the 1 s windows, the tier "
        "metric's calibrated interval, sampler health, every check); its result is checked to "
        "equal the CLI's in every round.",
        END,
    ]
    return "\n".join(lines)


def write_docs(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        doc = head + text + tail
    elif BEFORE in doc:
        head, tail = doc.split(BEFORE, 1)
        doc = head + text + "\n\n" + BEFORE + tail
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    DOC.write_text(doc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--samples", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", type=Path, help="where to write the evidence (default: a temp dir)")
    p.add_argument("--write-docs", action="store_true", help="replace the section in the docs")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="analyze-speed-") as tmp:
        root = args.dir or Path(tmp)
        cached, plain = root / "evidence", root / "evidence-csv"
        ev = session(args.samples, args.seed)
        ev.digests = write_evidence(cached, ev)
        plain.mkdir(parents=True, exist_ok=True)
        for f in cached.iterdir():
            if f.name != TRACE_CACHE_FILE:
                (plain / f.name).write_bytes(f.read_bytes())
        ev = read_evidence(cached)  # in memory exactly as the CLI reads it
        samples = list(zip(ev.trace.t_s.tolist(), ev.trace.power_w.tolist(), strict=True))
        result = analyze(ev)
        expected = encode_compact(result)
        # The windows analyze prices (this session has no sampler gap that would exclude any).
        energy = energy_model([ev.trace], ev.meta.sampler.interval_s)
        assert not energy.gaps
        windows = [window_powers_w(energy.at, r.start_s, r.end_s, 1.0) for r in ev.timeline.runs]
        checks: list[str] = []
        configs: dict[str, Callable[[], object]] = {
            "reference": lambda: reference(samples),
            "analyze": lambda: analyze(ev),
            "interval": lambda: tier_metric_estimate(windows, seed=ev.meta.workload.seed),
            "cli": lambda: checks.append(cli(cached).strip()),
            "cli-csv": lambda: checks.append(cli(plain).strip()),
            "cli-help": lambda: subprocess.run(
                [sys.executable, "-m", "modelgrid_bench", "analyze", "--help"],
                capture_output=True,
                check=True,
            ),
        }
        load_before = os.getloadavg()[0]
        rng = random.Random(args.seed)
        times: dict[str, list[float]] = {k: [] for k in configs}
        for _ in range(args.rounds):
            order = list(configs)
            rng.shuffle(order)
            for key in order:
                times[key].append(timed(configs[key]))
        # Equal but for the provenance of the trace: the CSV-only read names no columnar copy.
        want = json.loads(expected)
        want["evidence"]["columns_sha256"] = None
        if any({**json.loads(c), "evidence": None} != {**want, "evidence": None} for c in checks):
            raise SystemExit("the CLI's result differs from analyze(ev) in memory")
        trace_mb = (cached / "trace.csv").stat().st_size / 1e6
        load_after = os.getloadavg()[0]

    ratios = [r / a for r, a in zip(times["reference"], times["analyze"], strict=True)]
    without = [
        r / max(a - i, 1e-9)
        for r, a, i in zip(times["reference"], times["analyze"], times["interval"], strict=True)
    ]
    runs = ev.timeline.runs
    report: dict[str, object] = {
        "command": "python benchmarks/analyze_speed.py"
        + (f" --samples {args.samples}" if args.samples != 1_000_000 else "")
        + f" --rounds {args.rounds} --seed {args.seed}"
        + (" --write-docs" if args.write_docs else ""),
        "date": datetime.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "samples": int(ev.trace.t_s.size),
        "duration_s": float(ev.trace.t_s[-1] - ev.trace.t_s[0]),
        "runs": len(runs),
        "run_s": statistics.mean(r.end_s - r.start_s for r in runs),
        "requests": sum(len(r.requests) for r in runs),
        "windows": sum(w.size for w in windows),
        "trace_mb": trace_mb,
        "rounds": args.rounds,
        "load_average_1min": [load_before, load_after],
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "min_s": {k: min(v) for k, v in times.items()},
        "max_s": {k: max(v) for k, v in times.items()},
        "times_s": times,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_without_interval": statistics.median(without),
        "tier_metric": result.pooled.power_cv if result.pooled else None,
    }
    print(json.dumps(report, indent=1))
    if args.write_docs:
        write_docs(section(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
