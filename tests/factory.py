"""Builds evidence from analytic power signals whose true metrics are known. Test helper only.

A power signal is a function of time (s) -> W. The energy counter integrates it on a fine grid
and, like NVML's, only updates every `counter_update_s`; reads happen at `t_s` sample times.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
from modelgrid_contract.result import (
    BackendInfo,
    BenchmarkResult,
    Environment,
    EvidenceDigests,
    GpuInfo,
    PowerSourceInfo,
    PowerSourceKind,
    SamplerConfig,
)
from modelgrid_contract.workload import Workload

PowerFn = Callable[[np.ndarray], np.ndarray]
FINE_S = 1e-5
READ_PHASE_S = 0.0037


def constant(w: float) -> PowerFn:
    return lambda t: np.full(np.shape(t), w, dtype=np.float64)


def square(low: float, high: float, period_s: float, duty: float = 0.5) -> PowerFn:
    return lambda t: np.where((np.asarray(t) % period_s) < duty * period_s, high, low)


def step(low: float, high: float, *, at_s: float) -> PowerFn:
    """`low` W before `at_s` (an idle GPU with the model loaded), `high` W from then on."""
    return lambda t: np.where(t < at_s, low, high)


def ramp(start_w: float, end_w: float, t0: float, t1: float) -> PowerFn:
    return lambda t: start_w + (end_w - start_w) * np.clip((np.asarray(t) - t0) / (t1 - t0), 0, 1)


def energy_counter(power: PowerFn, t_s: np.ndarray, update_s: float, t_end: float) -> np.ndarray:
    """Counter value (J) read at each t_s: energy up to the last update before the read."""
    fine = np.arange(0.0, t_end + 2 * update_s, FINE_S)
    p = power(fine)
    cum = np.concatenate(([0.0], np.cumsum((p[1:] + p[:-1]) / 2.0 * FINE_S)))
    if update_s <= 0:
        return np.interp(t_s, fine, cum) + 1.0e6
    last = np.floor(t_s / update_s + 1e-9) * update_s
    return np.interp(last, fine, cum) + 1.0e6  # counters start at an arbitrary offset


def true_energy(power: PowerFn, a: float, b: float) -> float:
    fine = np.arange(a, b + FINE_S / 2, FINE_S)
    p = power(fine)
    return float(np.sum((p[1:] + p[:-1]) / 2.0 * FINE_S))


def make_trace(
    power: PowerFn,
    t_s: np.ndarray,
    *,
    gpus: int = 1,
    counter_update_s: float = 0.1,
    counter: bool = True,
    per_gpu_scale: Sequence[float] | None = None,
) -> Trace:
    t_end = float(t_s[-1])
    rows_t, rows_g, rows_p, rows_e = [], [], [], []
    for g in range(gpus):
        scale = per_gpu_scale[g] if per_gpu_scale else 1.0

        def scaled(x: np.ndarray, s: float = scale) -> np.ndarray:
            return s * power(x)

        rows_t.append(t_s)
        rows_g.append(np.full(t_s.size, g))
        rows_p.append(scaled(t_s))
        rows_e.append(
            energy_counter(scaled, t_s, counter_update_s, t_end)
            if counter
            else np.full(t_s.size, np.nan)
        )
    t = np.concatenate(rows_t)
    order = np.argsort(t, kind="stable")
    nan = np.full(t.size, np.nan)
    return Trace(
        t_s=t[order],
        gpu=np.concatenate(rows_g)[order].astype(np.int64),
        power_w=np.concatenate(rows_p)[order],
        power_avg_w=nan.copy(),
        energy_j=np.concatenate(rows_e)[order],
        power_ts_s=nan.copy(),
        energy_ts_s=nan.copy(),
    )


def telemetry(
    t_end: float,
    *,
    every_s: float = 0.5,
    gpus: int = 1,
    process_count: Callable[[float], int] = lambda t: 1,
    util_pct: Callable[[float], float] = lambda t: 0.0,
    reasons: Callable[[float], int] = lambda t: 0,
    violation_ns: Callable[[float], float] | None = None,
) -> Telemetry:
    cols: dict[str, list[float]] = {c: [] for c in TELEMETRY_COLUMNS}
    for t in np.arange(0.0, t_end + 1e-9, every_s):
        for g in range(gpus):
            vals = {
                "t_s": t,
                "gpu": g,
                "sm_clock_mhz": 1980.0,
                "mem_clock_mhz": 2619.0,
                "temperature_c": 55.0,
                "clocks_event_reasons": reasons(t),
                "power_violation_ns": violation_ns(t) if violation_ns else np.nan,
                "thermal_violation_ns": 0.0 if violation_ns else np.nan,
                "power_limit_w": 700.0,
                "gpu_util_pct": util_pct(t),
                "process_count": process_count(t),
            }
            for c in TELEMETRY_COLUMNS:
                cols[c].append(float(vals[c]))
    return Telemetry({c: np.array(v, dtype=np.float64) for c, v in cols.items()})


def loaded_in(runs: Sequence[tuple[float, float]], load: PowerFn, idle_w: float) -> PowerFn:
    """`load` during the runs, `idle_w` outside them."""

    def power(t: np.ndarray) -> np.ndarray:
        inside = np.zeros(np.shape(t), dtype=bool)
        for a, b in runs:
            inside |= (t >= a) & (t < b)
        return np.where(inside, load(t), idle_w)

    return power


def busy_in(
    runs: Sequence[tuple[float, float]], util_pct: float = 90.0
) -> Callable[[float], float]:
    """Utilisation of a GPU that is busy during the runs and idle otherwise."""
    return lambda t: util_pct if any(a < t <= b for a, b in runs) else 0.0


def requests_evenly(
    a: float, b: float, n: int, *, ttft_s: float = 0.05, tokens: int = 10, input_tokens: int = 8
) -> list[RequestRecord]:
    edges = np.linspace(a, b, n + 1)
    return [
        RequestRecord(
            start_s=float(lo),
            first_token_s=float(lo) + ttft_s,
            end_s=float(hi),
            input_tokens=input_tokens,
            output_tokens=tokens,
        )
        for lo, hi in itertools.pairwise(edges)
    ]


#: A Job's nonce as the operator draws them (tests/unit/test_reconcile's Jobs carry it).
JOB_NONCE = "5eed" * 8


def meta(
    *,
    gpus: int = 1,
    interval_s: float = 0.025,
    kind: PowerSourceKind = PowerSourceKind.NVML,
    simulated_backend: bool = False,
    allowed: int = 1,
    expected_tokens: int | None = None,
    instant: bool = True,
    seed: int = 0,
    job_nonce: str | None = None,
) -> SessionMeta:
    return SessionMeta(
        job_nonce=job_nonce,
        workload=Workload(seed=seed),
        backend=BackendInfo(
            kind="synthetic" if simulated_backend else "transformers",
            model="test-model",
            simulated=simulated_backend,
        ),
        power_source=PowerSourceInfo(kind=kind, instant_power_field=instant, energy_counter=True),
        sampler=SamplerConfig(interval_s=interval_s),
        environment=Environment(
            gpus=[GpuInfo(index=i, name="NVIDIA H200", uuid=f"GPU-{i}") for i in range(gpus)],
            driver_version="570.00",
        ),
        allowed_gpu_processes=allowed,
        expected_output_tokens_per_request=expected_tokens,
        engine_on_gpu=not simulated_backend,
    )


def evidence(
    power: PowerFn,
    runs: Sequence[tuple[float, float]],
    *,
    interval_s: float = 0.025,
    t_end: float | None = None,
    t_s: np.ndarray | None = None,
    gpus: int = 1,
    counter_update_s: float = 0.1,
    counter: bool = True,
    baseline: tuple[float, float] | None = None,
    requests_per_run: int = 10,
    tel: Telemetry | None = None,
    run_requests: list[list[RequestRecord]] | None = None,
    idle_w: float | None = None,
    **meta_kw: object,
) -> Evidence:
    """Evidence of a session whose power is `power`. With `idle_w`, the GPU draws `idle_w`
    outside the runs (a loaded but idle model) and the idle baseline is the time before the
    first run, so the work-done gate sees the load the runs put on the GPU."""
    end = t_end if t_end is not None else max(b for _, b in runs) + 0.5
    if idle_w is not None:
        power = loaded_in(runs, power, idle_w)
        baseline = baseline or (0.0, min(a for a, _ in runs))
    # Reads are not in phase with the counter's updates on a real GPU; an odd offset avoids a
    # synchronous fake that would favour one knot placement over another.
    times = t_s if t_s is not None else np.arange(READ_PHASE_S, end, interval_s)
    trace = make_trace(power, times, gpus=gpus, counter_update_s=counter_update_s, counter=counter)
    run_records = [
        RunRecord(
            index=i,
            start_s=a,
            end_s=b,
            requests=run_requests[i] if run_requests else requests_evenly(a, b, requests_per_run),
        )
        for i, (a, b) in enumerate(runs)
    ]
    timeline = Timeline(
        baseline=Interval(start_s=baseline[0], end_s=baseline[1]) if baseline else None,
        runs=run_records,
    )
    ev = Evidence(
        meta=meta(gpus=gpus, interval_s=interval_s, **meta_kw),  # type: ignore[arg-type]
        timeline=timeline,
        trace=trace,
        telemetry=tel if tel is not None else telemetry(end, gpus=gpus, util_pct=busy_in(runs)),
    )
    # In memory, so no files: digests of the arrays stand in for the CSVs' bytes.
    ev.digests = EvidenceDigests(
        trace_sha256=hashlib.sha256(ev.trace.power_w.tobytes()).hexdigest(),
        telemetry_sha256=hashlib.sha256(ev.telemetry.get("t_s").tobytes()).hexdigest(),
    )
    return ev


#: The synthetic backend's decode step for runs that must be priceable: 4 samples x 300 tokens
#: at 10 ms is at least 12 s a run (12 whole 1 s windows) on any machine; a slow one only
#: makes it longer.
PRICEABLE_STEP_MS = 10.0


def run_simulated_benchmark(
    out: Path,
    *,
    samples: int = 4,
    tokens: int = 300,
    step_ms: float = PRICEABLE_STEP_MS,
    job_nonce: str | None = None,
) -> Path:
    """Run the real benchmark CLI (synthetic inference, replayed power) into `out`."""
    nonce = ["--job-nonce", job_nonce] if job_nonce is not None else []
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelgrid_bench",
            "run",
            "--backend",
            "synthetic",
            "--power-source",
            "replay:builtin:h200-decode",
            "--samples",
            str(samples),
            "--tokens",
            str(tokens),
            "--repeats",
            "2",
            "--warmup-samples",
            "0",
            "--idle-baseline-s",
            "0.3",
            "--synthetic-step-ms",
            repr(step_ms),
            "--output-dir",
            str(out),
            "--log-level",
            "ERROR",
            *nonce,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"the benchmark failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return out


# --------------------------------------------------------------------------- evidence on disk


def known_evidence(*, gpus: int = 1) -> Evidence:
    """A small valid session: square-wave power, a baseline and two runs, busy telemetry."""
    return evidence(
        square(120.0, 480.0, 0.4),
        [(1.0, 3.0), (3.5, 5.5)],
        baseline=(0.2, 0.9),
        gpus=gpus,
        tel=telemetry(6.0, gpus=gpus, util_pct=lambda t: 90.0 if t > 1.0 else 0.0),
    )


def evidence_dir(out: Path, ev: Evidence | None = None, *, gpus: int = 1) -> Path:
    """Write `ev` (default `known_evidence`) with the real writer; sets `ev.digests`."""
    from modelgrid_bench.evidence import write_evidence

    ev = ev if ev is not None else known_evidence(gpus=gpus)
    ev.digests = write_evidence(out, ev)
    return out


def edit_csv(path: Path, edit: Callable[[list[list[str]]], list[list[str]] | None]) -> None:
    """Rewrite a CSV through `edit(rows)` (data rows as lists of cells, header excluded; edit in
    place or return new rows), keeping the header and the writer's CRLF line ends."""
    lines = path.read_bytes().decode("ascii").split("\r\n")
    assert lines[-1] == "", "the writer ends every row with CRLF"
    rows = [line.split(",") for line in lines[1:-1]]
    new = edit(rows)
    rows = rows if new is None else new
    path.write_bytes(("\r\n".join([lines[0], *(",".join(r) for r in rows)]) + "\r\n").encode())


def set_csv_cell(path: Path, row: int, column: str, value: str) -> None:
    """Set one cell; `row` is the 1-based data row (line row + 1)."""
    header = path.read_bytes().split(b"\r\n", 1)[0].decode().split(",")
    col = header.index(column)

    def edit(rows: list[list[str]]) -> None:
        rows[row - 1][col] = value

    edit_csv(path, edit)


def edit_evidence_json(directory: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite evidence.json through `edit(doc)`, which changes the parsed document in place."""
    path = directory / "evidence.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def simulated_session(
    out: Path | None, *, samples: int = 2, tokens: int = 20, repeats: int = 2
) -> tuple[Evidence, BenchmarkResult]:
    """`run_session` in-process: synthetic inference, the built-in replayed power, 10 ms reads."""
    from modelgrid_bench.backends.base import BackendOptions, open_backend
    from modelgrid_bench.runner import SessionConfig, run_session
    from modelgrid_bench.sources import open_source

    backend = open_backend(BackendOptions(kind="synthetic", model="synthetic"))
    source = open_source("replay:builtin:h200-decode")
    try:
        return run_session(
            SessionConfig(
                workload=Workload(
                    samples=samples, tokens_per_sample=tokens, repeats=repeats, warmup_samples=0
                ),
                sampler=SamplerConfig(interval_s=0.01),
                idle_baseline_s=0.3,
                output_dir=out,
            ),
            source,
            backend,
        )
    finally:
        source.close()


#: Two 12 s runs at 100 W with a 10 W square ripple after a 1 s idle baseline at 60 W: a result
#: that every check passes, for tests that change one thing and expect one refusal.
PRICED_RUNS = ((1.0, 13.0), (13.5, 25.5))


def priced_compact(*, seed: int = 0, **overrides: Any) -> dict[str, Any]:
    """The compact result (as its JSON object) of a real analysis that passes every check."""
    from modelgrid_bench.analysis import analyze
    from modelgrid_contract.wire import encode_compact

    ev = evidence(square(95.0, 105.0, 3.0), list(PRICED_RUNS), idle_w=60.0, seed=seed)
    obj: dict[str, Any] = json.loads(encode_compact(analyze(ev)))
    obj.update(overrides)
    return obj


def shipped_policy_spec(name: str = "model-card", **overrides: Any) -> dict[str, Any]:
    """A shipped TierPolicy's spec (crds/tierpolicies/NAME.yaml) with some fields replaced."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    doc = yaml.safe_load((root / "crds" / "tierpolicies" / f"{name}.yaml").read_text())
    spec: dict[str, Any] = {**doc["spec"], **overrides}
    return spec


def bench_cli(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run `python -m modelgrid_bench ARGS` in a clean environment (no MODELGRID_* settings)."""
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MODELGRID_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "modelgrid_bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=full_env,
        check=False,
    )


# --------------------------------------------------------------------------- TierPolicy tiers


def tier(
    name: str,
    number: int,
    discount: float,
    *,
    max_cv: float | None = None,
    max_power_w: float | None = None,
    cv_boundary: str | None = None,
    power_boundary: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """One TierPolicy tier as the CRD spells it: limits and boundaries only where given (the
    apiserver defaults both boundaries to Exclusive, as the operator's model does)."""
    out: dict[str, Any] = {"name": name, "number": number, "discountPercent": discount, **fields}
    for key, value in (
        ("maxCV", max_cv),
        ("maxAvgPowerW", max_power_w),
        ("cvBoundary", cv_boundary),
        ("powerBoundary", power_boundary),
    ):
        if value is not None:
            out[key] = value
    return out


def workload_flags(
    samples: int, tokens: int, *, repeats: int = 1, warmup: int = 0, idle_baseline_s: float = 0.3
) -> list[str]:
    """The benchmark CLI's workload flags for a short, bounded run."""
    return [
        "--samples",
        str(samples),
        "--tokens",
        str(tokens),
        "--repeats",
        str(repeats),
        "--warmup-samples",
        str(warmup),
        "--idle-baseline-s",
        repr(idle_baseline_s),
    ]


def sweep_evidence(
    levels: Sequence[int],
    repeats: int,
    *,
    efficiency: Callable[[int, int], float],
    run_s: float = 12.0,
    base_tokens: int = 600,
    gpus: int = 1,
    tier_concurrency: int | None = None,
) -> Evidence:
    """Evidence of a concurrency sweep with known truths: runs interleaved (run r at every
    level, then r + 1), each `run_s` long; at `level` run r generates `base_tokens * level /
    levels[0] * efficiency(level, r)` tokens, so its speedup over the first level's run r is
    `level / levels[0] * efficiency(level, r) / efficiency(levels[0], r)`. Power rises with
    the level (100 W + 2 W per stream, a 10 W ripple), 60 W idle between runs."""
    spans: list[tuple[float, float]] = []
    run_levels: list[int] = []
    requests: list[list[RequestRecord]] = []
    t = 1.0
    for r in range(repeats):
        for level in levels:
            spans.append((t, t + run_s))
            run_levels.append(level)
            tokens = round(base_tokens * level / levels[0] * efficiency(level, r))
            per = 10
            requests.append(
                requests_evenly(t, t + run_s, per, tokens=tokens // per, ttft_s=0.02 * level)
            )
            t += run_s + 0.5
    by_span = dict(zip(spans, run_levels, strict=True))

    def power(x: np.ndarray) -> np.ndarray:
        out = np.full_like(x, 100.0)
        for (a, b), level in by_span.items():
            out = np.where((x >= a) & (x < b), 100.0 + 2.0 * level, out)
        return out + 5.0 * np.sign(np.sin(2 * np.pi * x / 3.0))

    ev = evidence(power, spans, run_requests=requests, idle_w=60.0, gpus=gpus)
    ev.timeline = Timeline(
        baseline=ev.timeline.baseline,
        runs=[
            run.model_copy(update={"concurrency": level})
            for run, level in zip(ev.timeline.runs, run_levels, strict=True)
        ],
    )
    ev.meta = ev.meta.model_copy(
        update={
            "workload": Workload(
                concurrency_levels=tuple(levels),
                tier_concurrency=tier_concurrency,
                repeats=repeats,
                samples=10,
            )
        }
    )
    return ev


# --------------------------------------------------------------------------- custom resources

#: The model card policy's tiers as status.tier has them.
MODEL_CARD_TIERS: dict[int, dict[str, Any]] = {
    1: {
        "name": "tier-1",
        "number": 1,
        "label": "Tier 1 - Low Variance",
        "stability": "Stable",
        "discountPercent": 20,
    },
    2: {
        "name": "tier-2",
        "number": 2,
        "label": "Tier 2 - Medium Variance",
        "stability": "Moderate",
        "discountPercent": 10,
    },
    3: {
        "name": "tier-3",
        "number": 3,
        "label": "Tier 3 - High Variance",
        "stability": "Unstable",
        "discountPercent": 0,
    },
}


def qualification_cr(
    name: str,
    namespace: str = "team-a",
    *,
    model: str | None = None,
    phase: str = "Succeeded",
    tier_number: int | None = 1,
    cv: float = 0.05,
    cv_low: float | None = 0.04,
    cv_high: float | None = 0.06,
    avg_power_w: float = 120.0,
    power_std_w: float = 6.0,
    reason: str = "",
    message: str = "",
    policy: str = "model-card",
    runs: Sequence[tuple[float, float]] = (),
    simulated: bool = False,
    evidence: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ModelQualification as the apiserver returns it once the operator wrote its status:
    Succeeded with a tier (and the measured figures), or another phase with the condition's
    `reason` and `message` (Failed: Stalled; otherwise Reconciling). `runs` are (power CV,
    avg power W) per run."""
    status: dict[str, Any] = {"phase": phase, "observedGeneration": 1}
    if phase == "Succeeded" and tier_number is not None:
        status.update(
            {
                "tier": dict(MODEL_CARD_TIERS[tier_number]),
                "discountPercent": MODEL_CARD_TIERS[tier_number]["discountPercent"],
                "discountApproved": tier_number < 3,
                "policy": {"name": policy, "generation": 1},
                "environment": {"gpu": "NVIDIA H200", "gpuCount": 1, "simulated": simulated},
                "measured": {
                    "powerCV": cv,
                    "avgPowerW": avg_power_w,
                    "powerStdW": power_std_w,
                    "tierMetric": "power_cv_1s",
                    **({"powerCVLow": cv_low} if cv_low is not None else {}),
                    **({"powerCVHigh": cv_high} if cv_high is not None else {}),
                    "runs": [
                        {
                            "run": i,
                            "powerCV": c,
                            "avgPowerW": w,
                            "joulesPerToken": 0.5,
                            "tokensPerSecond": 40.0,
                        }
                        for i, (c, w) in enumerate(runs)
                    ],
                },
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Qualified", "message": "ok"}
                ],
            }
        )
    else:
        ctype = "Stalled" if phase == "Failed" else "Reconciling"
        status["conditions"] = [
            {"type": "Ready", "status": "False", "reason": reason or phase, "message": message},
            {"type": ctype, "status": "True", "reason": reason or phase, "message": message},
        ]
    if evidence is not None:
        status["evidence"] = evidence
    return {
        "apiVersion": "modelgrid.firmus.ai/v1alpha1",
        "kind": "ModelQualification",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "model": {
                "name": model or f"{name}-model",
                "source": {"randomWeights": {"architecture": "tiny-llama"}},
            },
        },
        "status": status,
    }


#: A workload whose length does not depend on the machine: paced (20 ms a step), 2 samples x 300
#: tokens is at least 12 s a run (12 whole 1 s windows); a slow or busy machine only makes it
#: longer, which the control-plane tests' generous waits absorb.
PACED_WORKLOAD = {
    "samples": 2,
    "tokensPerSample": 300,
    "repeats": 2,
    "warmupSamples": 0,
    "inputTokens": 16,
}


def paced_qualification(name: str, **spec: Any) -> dict[str, Any]:
    """A ModelQualification to apply, as a developer writes it: random tiny-llama weights,
    the paced workload, claims and every declaration; `spec` keys replace the defaults."""
    body: dict[str, Any] = {
        "apiVersion": "modelgrid.firmus.ai/v1alpha1",
        "kind": "ModelQualification",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "name": f"{name}-model",
                "source": {"randomWeights": {"architecture": "tiny-llama"}},
            },
            "workload": dict(PACED_WORKLOAD),
            "claims": {"avgPowerW": 135.0, "powerCV": 0.05},
            "timeoutSeconds": 300,
            "attestation": {
                "organization": "test",
                "declarations": {
                    "onH200Infrastructure": True,
                    "followsMethodology": True,
                    "typicalWorkload": True,
                    "noManipulation": True,
                    "acceptsVerification": True,
                },
            },
        },
    }
    body["spec"].update(spec)
    return body
