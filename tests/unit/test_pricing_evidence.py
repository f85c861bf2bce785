"""The paths of the analysis that change a price, against traces whose truths are known.

An idle GPU must never be priced; a sampler stall must not move the tier metric; a NaN reading
must not switch a check off; an energy disagreement is flagged with its figure. Each case is
built from an analytic power signal (tests/factory.py), so the right answer is known exactly.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from modelgrid_bench.analysis import MAX_EXCLUDED_WINDOW_SHARE, analyze
from modelgrid_bench.records import Evidence, Trace
from modelgrid_bench.stats import counter_knots, update_period_s
from modelgrid_contract.reasons import ExitCode, Reason
from modelgrid_contract.result import Flag, WorkDoneFloors
from tests import factory as f

pytestmark = pytest.mark.timeout(120)

RUN = (1.0, 21.0)  # one 20 s run after a 1 s idle baseline
IDLE_W = 70.0


def _stalled(start_s: float, length_s: float, *, end_s: float = 21.5) -> np.ndarray:
    """Read times every 25 ms with no read in [start_s, start_s + length_s)."""
    t = np.arange(f.READ_PHASE_S, end_s, 0.025)
    return t[(t < start_s) | (t >= start_s + length_s)]


# ------------------------------------------------------------------------ the work-done gate


def test_an_idle_gpu_is_refused_with_its_figures() -> None:
    # The reference script's fault: a flat 75 W GPU (nothing running) reads as perfectly stable.
    ev = f.evidence(
        f.constant(75.0),
        [RUN],
        baseline=(0.0, 1.0),
        tel=f.telemetry(22.0, util_pct=lambda t: 0.0),
    )
    r = analyze(ev)
    assert r.runs[0].power_cv_1s == pytest.approx(0.0, abs=1e-3)  # "Tier 1" if it were priced
    assert r.refusal is not None
    assert r.refusal.reason == Reason.NO_LOAD_ON_GPU
    assert "J per output token" in r.refusal.message
    assert "GPU utilisation averaged 0.0 %" in r.refusal.message
    assert r.work_done is not None
    assert not r.work_done.passed
    assert r.work_done.joules_per_token_above_idle_min == pytest.approx(0.0, abs=0.01)


def test_load_on_another_gpu_is_refused_by_utilisation() -> None:
    # Power rises (someone else's load on the node's rail?) but the measured GPU is not busy.
    ev = f.evidence(
        f.constant(300.0), [RUN], idle_w=IDLE_W, tel=f.telemetry(22.0, util_pct=lambda t: 3.0)
    )
    r = analyze(ev)
    assert r.refusal is not None
    assert r.refusal.reason == Reason.NO_LOAD_ON_GPU
    assert "GPU utilisation averaged 3.0 %" in r.refusal.message
    assert "floor 20 %" in r.refusal.message


def test_an_in_pod_engine_must_be_on_every_measured_gpu() -> None:
    # Two GPUs; the engine's process is only on GPU 0.
    tel = f.telemetry(22.0, gpus=2, util_pct=f.busy_in([RUN]))
    gpu = tel.get("gpu")
    tel.columns["process_count"] = np.where(gpu == 1, 0.0, 1.0)
    ev = f.evidence(f.constant(300.0), [RUN], idle_w=IDLE_W, gpus=2, tel=tel)
    r = analyze(ev)
    assert r.refusal is not None
    assert r.refusal.reason == Reason.NO_LOAD_ON_GPU
    assert "processes were not seen on every measured GPU" in r.refusal.message
    assert r.work_done is not None
    assert r.work_done.engine_processes_min == 0


def test_real_load_passes_the_gate_with_known_figures() -> None:
    tokens = 10 * 10  # 10 requests of 10 tokens
    r = analyze(f.evidence(f.constant(300.0), [RUN], idle_w=IDLE_W))
    assert r.refusal is None
    assert r.work_done is not None
    assert r.work_done.passed
    # (300 - 70) W x 20 s / 100 tokens; the counter's 0.1 s steps blur the idle-to-load edge
    assert r.work_done.joules_per_token_above_idle_min == pytest.approx(
        230.0 * 20.0 / tokens, rel=0.02
    )
    assert r.work_done.gpu_util_pct_min == pytest.approx(90.0, abs=3.0)  # one idle row at t=1
    assert r.work_done.engine_processes_min == 1


def test_the_floors_are_the_sessions_own() -> None:
    ev = f.evidence(f.constant(300.0), [RUN], idle_w=IDLE_W)
    strict = ev.meta.model_copy(update={"work_floors": WorkDoneFloors(min_gpu_util_pct=95.0)})
    r = analyze(f.Evidence(strict, ev.timeline, ev.trace, ev.telemetry))
    assert r.refusal is not None
    assert "floor 95 %" in r.refusal.message


def test_no_idle_baseline_means_no_proof() -> None:
    r = analyze(f.evidence(f.constant(300.0), [RUN]))
    assert r.refusal is not None
    assert "no idle baseline" in r.refusal.message


def _flat_trace_csv(path: Path, power_w: float, seconds: float = 30.0) -> Path:
    t = np.arange(0.0, seconds, 0.01)
    energy = 1.0e6 + power_w * np.floor(t / 0.1) * 0.1
    rows = ["t_s,gpu,power_w,power_avg_w,energy_j,power_ts_s,energy_ts_s"]
    p = repr(float(power_w))
    rows += [f"{float(x)!r},0,{p},{p},{float(e)!r},nan,nan" for x, e in zip(t, energy, strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return f.bench_cli(*args, timeout_s=100)


def test_a_flat_replay_is_refused_by_the_cli_and_so_is_its_relabelled_evidence(
    tmp_path: Path,
) -> None:
    trace = _flat_trace_csv(tmp_path / "flat.csv", 75.0)
    out = tmp_path / "run"
    proc = _bench(
        "run",
        "--backend",
        "synthetic",
        "--power-source",
        f"replay:{trace}",
        "--samples",
        "2",
        "--tokens",
        "50",
        "--synthetic-step-ms",
        "20",
        "--repeats",
        "1",
        "--warmup-samples",
        "0",
        "--idle-baseline-s",
        "1",
        "--output-dir",
        str(out),
        "--log-level",
        "ERROR",
    )
    assert proc.returncode == ExitCode.REFUSED, proc.stderr
    compact = json.loads(proc.stdout)
    assert compact["refusal"]["reason"] == "NoLoadOnGPU"
    assert compact["work"]["passed"] is False
    # The same evidence relabelled as an NVML run of an OpenAI-compatible server: still refused.
    doc = json.loads((out / "evidence.json").read_text())
    doc["meta"]["power_source"].update(kind="nvml", notes=[], simulated=False)
    doc["meta"]["backend"] = {"kind": "openai", "model": "m", "detail": "", "simulated": False}
    (out / "evidence.json").write_text(json.dumps(doc))
    for stale in ("trace.npz",):
        (out / stale).unlink(missing_ok=True)
    again = _bench("analyze", str(out))
    assert again.returncode == ExitCode.REFUSED, again.stderr
    relabelled = json.loads(again.stdout)
    assert relabelled["simulated"] is False
    assert relabelled["refusal"]["reason"] == "NoLoadOnGPU"
    assert "J per output token" in relabelled["refusal"]["message"]


#: Read times of the sampler in the priced flat replay: every 25 ms from 4.4 ms.
_READS_S = 0.0044 + 0.025 * np.arange(141)


def _stepped_trace(
    power_w: float, updates_s: np.ndarray, *, load_w: float | None = None, load_from_s: float = 99.0
) -> Trace:
    """A GPU read at `_READS_S` whose energy counter, counting from 4.5 ms (when the replay's
    phase began), steps at `updates_s` to the energy drawn so far: `power_w`, and `load_w` from
    `load_from_s` on."""
    reads_s = _READS_S.copy()
    load = power_w if load_w is None else load_w

    def drawn_j(t_s: np.ndarray) -> np.ndarray:
        return power_w * (t_s - 0.0045) + (load - power_w) * np.maximum(t_s - load_from_s, 0.0)

    seen = np.searchsorted(updates_s, reads_s, side="right") - 1
    energy = 1.0e6 + np.where(seen >= 0, drawn_j(updates_s[np.maximum(seen, 0)]), 0.0)
    power = np.where(reads_s > load_from_s, load, power_w)
    nan = np.full(reads_s.size, np.nan)
    zeros = np.zeros(reads_s.size, dtype=np.int64)
    return Trace(reads_s, zeros, power, power.copy(), energy, nan, nan.copy())


def _replayed_flat(
    trace: Trace, baseline: tuple[float, float], run: tuple[float, float]
) -> Evidence:
    """Evidence of the CLI's flat replay (synthetic backend, 2 requests of 50 tokens, 95 %
    utilisation during the run) with `trace` for power."""
    ev = f.evidence(
        f.constant(75.0),
        [run],
        baseline=baseline,
        run_requests=[f.requests_evenly(*run, 2, ttft_s=0.003, tokens=50)],
        tel=f.telemetry(
            3.5, every_s=0.5, util_pct=f.busy_in([run], 95.0), process_count=lambda t: 0
        ),
        simulated_backend=True,
    )
    return Evidence(ev.meta, ev.timeline, trace, ev.telemetry)


#: Where the counter of the priced replay stepped: every 100 ms from 4.5 ms, the first step
#: 0.2 ms early. That step lands just before a read and the next just after one, so their knots
#: are 125 ms apart and the 88 ms of baseline before the first knot are extrapolated at 60 W.
_HEAD_UPDATES_S = np.concatenate(([0.1043], 0.2045 + 0.1 * np.arange(33)))
#: A counter that steps just before a read around the baseline's start and the run's end, just
#: after one around the run's start: each knot 12.5 ms off, always the way that inflates the run.
_JITTER_UPDATES_S = np.concatenate(
    (0.1043 + 0.1 * np.arange(10), 1.0045 + 0.1 * np.arange(15), 2.5043 + 0.1 * np.arange(10))
)


@pytest.mark.parametrize(
    ("updates_s", "baseline", "run"),
    [
        # the priced CLI run (its evidence.json read idle 71.8 W and +0.053 J per token)
        (_HEAD_UPDATES_S, (0.0045, 1.0046), (1.0050, 2.9743)),
        # no extrapolation at all: the knots' placement alone
        (_JITTER_UPDATES_S, (0.25, 1.25), (1.25, 3.22)),
    ],
    ids=["extrapolated-baseline-start", "knot-placement"],
)
def test_a_flat_gpu_is_refused_wherever_its_counter_steps_fall(
    updates_s: np.ndarray, baseline: tuple[float, float], run: tuple[float, float]
) -> None:
    ev = _replayed_flat(_stepped_trace(75.0, updates_s), baseline, run)
    r = analyze(ev)
    assert r.pooled is not None
    assert r.pooled.idle_power_w is not None
    # The counter's figures of a flat 75 W GPU: a baseline read low, so the run reads as work
    # well above the per-token floor; the old gate priced both cases on these figures.
    assert r.pooled.idle_power_w < 74.0
    counter_j_per_token = r.runs[0].joules_per_token_above_idle
    assert counter_j_per_token is not None
    assert counter_j_per_token > 5 * ev.meta.work_floors.min_joules_per_token_above_idle
    assert r.refusal is not None
    assert r.refusal.reason == Reason.NO_LOAD_ON_GPU
    assert "instant power above the idle baseline (75.0 W) is 0 J per output token" in (
        r.refusal.message
    )
    assert r.work_done is not None
    assert not r.work_done.passed


def test_load_on_the_same_counter_steps_passes_the_gate() -> None:
    # The same reads and counter steps with 150 W during the run: both witnesses see ~148 J.
    trace = _stepped_trace(75.0, _HEAD_UPDATES_S, load_w=150.0, load_from_s=1.0050)
    r = analyze(_replayed_flat(trace, (0.0045, 1.0046), (1.0050, 2.9743)))
    assert r.refusal is None, r.refusal
    assert r.work_done is not None
    assert r.work_done.passed
    assert r.runs[0].energy_above_idle_j == pytest.approx(75.0 * 1.97, rel=0.1)


# ------------------------------------------------------------------------------ sampler gaps


def test_a_2s_gap_in_a_constant_run_is_excluded_and_refuses_pricing() -> None:
    ev = f.evidence(f.constant(300.0), [RUN], idle_w=IDLE_W, t_s=_stalled(8.3, 2.0))
    r = analyze(ev)
    run = r.runs[0]
    assert run.power_cv_1s is not None
    assert run.power_cv_1s < 0.01  # was 0.39 with the knot at the gap's midpoint
    assert run.windows_excluded >= 2
    assert run.windows_excluded / run.windows_1s > MAX_EXCLUDED_WINDOW_SHARE
    assert Flag.SAMPLER_DEGRADED in r.flags  # disqualifying under the default policy
    assert any("sampler gaps overlapped" in n for n in r.notes)


@pytest.mark.parametrize("length_s", [0.1, 0.15, 0.19, 0.25, 0.3])
@pytest.mark.parametrize("start_s", [5.02, 9.51, 14.77])
def test_short_stalls_barely_move_a_constant_traces_cv(start_s: float, length_s: float) -> None:
    clean = analyze(f.evidence(f.constant(300.0), [RUN], idle_w=IDLE_W))
    stalled = analyze(
        f.evidence(f.constant(300.0), [RUN], idle_w=IDLE_W, t_s=_stalled(start_s, length_s))
    )
    a, b = clean.runs[0].power_cv_1s, stalled.runs[0].power_cv_1s
    assert a is not None
    assert b is not None
    assert abs(b - a) < 0.002
    assert stalled.runs[0].energy_j == pytest.approx(300.0 * 20.0, rel=2e-3)


def test_a_stall_in_a_varying_trace_leaves_the_cv_near_its_truth() -> None:
    power = f.square(250.0, 350.0, 4.0)  # 1 s windows alternate: CV of windows is known
    clean = analyze(f.evidence(power, [RUN], idle_w=IDLE_W))
    stalled = analyze(f.evidence(power, [RUN], idle_w=IDLE_W, t_s=_stalled(9.4, 1.2)))
    a, b = clean.runs[0].power_cv_1s, stalled.runs[0].power_cv_1s
    assert a is not None
    assert b is not None
    assert a == pytest.approx(50.0 / 300.0, rel=0.02)
    assert abs(b - a) < 0.01


def test_the_first_knot_after_a_gap_is_within_one_update_of_the_read() -> None:
    # Counter updates every 0.1 s; reads every 25 ms with nothing between 2.0 and 4.0 s.
    t = _stalled(2.0, 2.0, end_s=6.0)
    counter = f.energy_counter(f.constant(100.0), t, 0.1, 6.0)
    knots = counter_knots(t, counter, interval_s=0.025)
    first_after = float(t[t >= 4.0][0])
    k = knots.t_s[knots.t_s > 2.0][0]
    assert knots.median_update_s == pytest.approx(0.1, abs=0.01)
    assert first_after - 0.1 <= k <= first_after  # not the gap's midpoint (3.0 s)
    assert knots.gaps
    g0, g1 = knots.gaps[0]
    assert g0 < 2.0
    assert g1 > 4.0


def test_the_update_period_is_measured_despite_stalls() -> None:
    t = _stalled(3.0, 0.7, end_s=10.0)
    counter = f.energy_counter(f.constant(100.0), t, 0.1, 10.0)
    assert update_period_s(t, counter) == pytest.approx(0.1, abs=0.005)


def test_health_covers_the_idle_baseline_too() -> None:
    # A 1.5 s stall inside the baseline: the runs are clean, but the idle power rests on it.
    t = _stalled(0.2, 0.7)
    r = analyze(f.evidence(f.constant(300.0), [RUN], idle_w=IDLE_W, t_s=t))
    assert r.sampler_health.longest_gap_s > 0.7


# --------------------------------------------------------------------------------- NaN reads


def test_one_nan_power_reading_keeps_the_cross_check_alive() -> None:
    runs = [(1.0, 12.0), (12.5, 23.5), (24.0, 35.0)]
    ev = f.evidence(f.constant(300.0), runs, idle_w=IDLE_W)
    i = int(np.searchsorted(ev.trace.t_s, 5.0))
    ev.trace.power_w[i] = np.nan
    r = analyze(ev)
    assert [run.energy_discrepancy_pct is not None for run in r.runs] == [True, True, True]
    assert all(abs(run.energy_discrepancy_pct or 99.0) < 1.0 for run in r.runs)
    assert r.runs[0].missing_readings == 1
    assert r.pooled is not None
    assert r.pooled.energy_discrepancy_pct is not None
    assert Flag.MISSING_READINGS not in r.flags  # 1 of 440 reads: counted, within the limit
    assert Flag.ENERGY_FALLBACK not in r.flags


def test_a_nan_energy_reading_does_not_switch_the_counter_off() -> None:
    ev = f.evidence(f.constant(300.0), [RUN], idle_w=IDLE_W)
    ev.trace.energy_j[100] = np.nan
    r = analyze(ev)
    assert Flag.ENERGY_FALLBACK not in r.flags
    assert r.runs[0].energy_j == pytest.approx(6000.0, rel=2e-3)
    assert r.runs[0].missing_readings == 1


def test_too_many_missing_readings_refuse_the_run_for_pricing() -> None:
    ev = f.evidence(f.constant(300.0), [RUN], idle_w=IDLE_W)
    in_run = np.flatnonzero((ev.trace.t_s > 2.0) & (ev.trace.t_s < 20.0))
    ev.trace.power_w[in_run[::20]] = np.nan  # 5 % of the run's reads
    r = analyze(ev)
    assert Flag.MISSING_READINGS in r.flags
    assert r.runs[0].missing_readings == in_run[::20].size
    assert any("reads had no value" in n for n in r.notes)


# ---------------------------------------------------------------------- energy disagreement


def test_a_10_percent_counter_discrepancy_is_flagged_with_its_figure() -> None:
    ev = f.evidence(f.constant(300.0), [RUN], idle_w=IDLE_W)
    ev.trace.power_w[:] = ev.trace.power_w * 0.9  # instant power reads 10 % low
    r = analyze(ev)
    assert Flag.ENERGY_DISCREPANCY in r.flags
    assert r.runs[0].energy_discrepancy_pct == pytest.approx(10.0, abs=0.5)
    assert any("differ by +10" in n for n in r.notes)


def test_utilisation_missing_in_most_reads_fails_the_gate() -> None:
    # One 95 % read per run, NaN in all the others: that one read cannot stand for the run.
    tel = f.telemetry(22.0, util_pct=lambda t: 95.0 if abs(t - 10.0) < 0.01 else float("nan"))
    r = analyze(f.evidence(f.constant(300.0), [RUN], idle_w=IDLE_W, tel=tel))
    assert r.refusal is not None
    assert r.refusal.reason == Reason.NO_LOAD_ON_GPU
    assert "utilisation was not reported" in r.refusal.message


def test_process_counts_missing_in_most_reads_refuse_for_contention() -> None:
    tel = f.telemetry(22.0, process_count=lambda t: 1 if t < 2.0 else -1, util_pct=f.busy_in([RUN]))
    ev = f.evidence(f.constant(300.0), [RUN], idle_w=IDLE_W, tel=tel)
    r = analyze(
        ev.__class__(
            ev.meta.model_copy(update={"engine_on_gpu": False}), ev.timeline, ev.trace, tel
        )
    )
    assert r.refusal is not None
    assert r.refusal.reason == Reason.CONTENTION
    assert "contention could not be checked" in r.refusal.message
