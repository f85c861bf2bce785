"""Whether a benchmark result is what it says it is: the rungs of `verdict.validate_result`'s
ladder that owe nothing to the policy. Pure: each rung reads the result (and the qualification
it was made for) and raises `ResultRejected` with a reason, or returns.

A result is bound to its Job (it echoes the Job's nonce), was not refused or contended, was
measured on the declared GPUs for the declared workload and backend, and its figures agree with
each other and with the windows they rest on. The policy's own rungs are in `tiering`.
"""

from __future__ import annotations

import math

from modelgrid_contract.reasons import Reason
from modelgrid_contract.result import (
    ENERGY_DISCREPANCY_LIMIT_PCT,
    ENGINE_IN_POD_BACKENDS,
    MAX_EXCLUDED_WINDOW_SHARE,
    MAX_MISSING_READING_SHARE,
    MIN_WINDOWS_FOR_TIER,
    TIER_METRIC,
    TIER_METRIC_TIME_SCALE_S,
    CompactResult,
    Flag,
    normalise_product,
)
from modelgrid_contract.wire import ResultRejected
from modelgrid_contract.workload import Workload
from modelgrid_operator.api import QualificationSpec

#: Relative disagreement tolerated between figures the compact form rounds to 5 digits.
ROUNDING_TOLERANCE = 1e-3
#: Average power must equal energy / duration within this share.
ENERGY_CONSISTENCY = 0.01
#: An interval narrower than this many standard errors of a CV cannot come from `used`
#: windows (the calibrated 95 % interval is about 2 x 1.96 of them wide).
MIN_INTERVAL_HALF_WIDTH_SE = 0.5


def bound(result: CompactResult, expected: str | None) -> None:
    """The result echoes the nonce of the Job it came from: one measured for another Job (a
    replay of another qualification's result) proves nothing about this one."""
    if expected is None:
        raise ResultRejected(
            Reason.NOT_BOUND,
            "the benchmark Job carries no nonce, so no result can be bound to it",
        )
    if result.job_nonce != expected:
        got = "none" if result.job_nonce is None else f"{result.job_nonce[:8]}…"
        raise ResultRejected(
            Reason.NOT_BOUND,
            f"the result echoes nonce {got}, not its Job's {expected[:8]}…: it was not measured "
            "for this Job",
        )


def refused_by_benchmark(result: CompactResult) -> None:
    """The benchmark refused its own measurement."""
    if result.refusal is not None or not result.ok:
        reason = result.refusal.reason if result.refusal else Reason.NOT_OK
        message = result.refusal.message if result.refusal else "the benchmark reported ok=false"
        raise ResultRejected(reason, f"the benchmark refused its own measurement: {message}")


def contended(result: CompactResult) -> None:
    """Another workload shared the GPU: never priced, whatever the policy."""
    if Flag.CONTENTION in result.flags or Flag.GPU_NOT_IDLE in result.flags:
        raise ResultRejected(
            Reason.CONTENTION, "another workload shared the GPU during the measurement"
        )


def identity(result: CompactResult, spec: QualificationSpec, workload: Workload) -> None:
    """Measured on the declared GPUs, for the declared workload (`workload`, the one the
    qualification's Job runs)."""
    want = spec.hardware.gpu_product
    if normalise_product(result.gpu.name) != normalise_product(want):
        raise ResultRejected(
            Reason.WRONG_GPU, f"measured on {result.gpu.name!r}, but {want!r} was required"
        )
    if result.gpu.count != spec.hardware.gpu_count:
        raise ResultRejected(
            Reason.WRONG_GPU,
            f"measured on {result.gpu.count} GPU(s), but {spec.hardware.gpu_count} were required",
        )
    expected = workload.digest()
    if result.workload_digest != expected:
        raise ResultRejected(
            Reason.WORKLOAD_MISMATCH,
            f"the result is for workload {result.workload_digest}, not the declared {expected}",
        )


def _expected_backend(spec: QualificationSpec) -> str:
    """The backend a model source runs on; a result of another was not made for this spec."""
    src = spec.model.source
    if src.server is not None:
        return "server"
    if src.endpoint is not None:
        return "openai"
    return "transformers"


def served_as_declared(result: CompactResult, spec: QualificationSpec) -> None:
    """The model ran the way the spec declared: in-process, through the declared engine in
    the pod, or against the endpoint (a synthetic backend is the sandbox's stand-in and is
    simulated, which the policy has already accepted or refused)."""
    want = _expected_backend(spec)
    if result.backend in ("synthetic", want):
        server = spec.model.source.server
        engine = result.engine
        if (
            server is not None
            and result.backend == "server"
            and (engine is None or engine.name != server.engine.value)
        ):
            got = engine.name if engine is not None else "none"
            raise ResultRejected(
                Reason.WORKLOAD_MISMATCH,
                f"the result was served by engine {got!r}, not the declared "
                f"{server.engine.value!r}",
            )
        return
    raise ResultRejected(
        Reason.WORKLOAD_MISMATCH,
        f"the result was measured with backend {result.backend!r}, but the model source "
        f"runs on {want!r}",
    )


def sweep_as_declared(result: CompactResult, workload: Workload) -> None:
    """The sweep the result reports is the declared one, priced at the declared level (the
    workload digest covers the levels; this names what is wrong in words)."""
    sw = result.sweep
    if workload.concurrency_levels is None:
        if sw is not None:
            raise ResultRejected(
                Reason.WORKLOAD_MISMATCH, "the result reports a sweep, but none was declared"
            )
        return
    if sw is None and "sweep" not in result.truncated:
        raise ResultRejected(
            Reason.WORKLOAD_MISMATCH,
            "a concurrency sweep was declared, but the result reports none",
        )
    if sw is not None and (
        tuple(sw.levels) != workload.concurrency_levels
        or sw.tier_concurrency != workload.tier_level()
    ):
        raise ResultRejected(
            Reason.WORKLOAD_MISMATCH,
            f"the result's sweep has levels {sw.levels} priced at {sw.tier_concurrency}, not "
            f"the declared {list(workload.concurrency_levels)} at {workload.tier_level()}",
        )


def sweep_consistent(result: CompactResult) -> None:
    """The priced runs are the tier level's: its row of the sweep is the mean of the result's
    per-run figures (when the compact form still carries them)."""
    sw, runs = result.sweep, result.runs
    if sw is None or runs is None or not runs.tokens_per_s:
        return
    i = sw.levels.index(sw.tier_concurrency)
    pairs = (
        ("avg_power_w", sw.avg_power_w[i], runs.avg_power_w),
        ("tokens_per_s", sw.tokens_per_s[i], runs.tokens_per_s),
    )
    for name, row, values in pairs:
        mean = sum(values) / len(values)
        if sw.runs[i] != len(values) or abs(row - mean) > ROUNDING_TOLERANCE * max(mean, 1e-9):
            raise ResultRejected(
                Reason.INCONSISTENT_RESULT,
                f"the sweep's {name} at concurrency {sw.tier_concurrency} ({row:g} over "
                f"{sw.runs[i]} runs) is not the priced runs' ({mean:g} over {len(values)})",
            )


def consistent(result: CompactResult) -> None:
    """Figures that contradict each other: the result was not produced by the benchmark."""
    if result.tier_metric != TIER_METRIC or result.cv_time_scale_s != TIER_METRIC_TIME_SCALE_S:
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT,
            f"the result's tier metric is {result.tier_metric!r} over "
            f"{result.cv_time_scale_s:g} s, not {TIER_METRIC!r} over "
            f"{TIER_METRIC_TIME_SCALE_S:g} s",
        )
    avg, e, d = result.avg_power_watts, result.energy_j, result.duration_s
    if avg is not None and (e is None or d is None or d <= 0):
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT,
            "an average power needs the energy and a positive duration it was derived from",
        )
    jpt, tokens = result.joules_per_token, result.output_tokens
    if jpt is not None and e is not None:
        if not tokens:
            raise ResultRejected(
                Reason.INCONSISTENT_RESULT, "energy per token without any output token"
            )
        if abs(jpt - e / tokens) > ENERGY_CONSISTENCY * max(e / tokens, 1e-9):
            raise ResultRejected(
                Reason.INCONSISTENT_RESULT,
                f"{jpt:.4g} J per token contradicts energy / output tokens = {e / tokens:.4g}",
            )
    if avg is not None and e is not None and d is not None and d > 0:
        derived = e / d
        if abs(avg - derived) > ENERGY_CONSISTENCY * max(abs(derived), 1e-9):
            raise ResultRejected(
                Reason.INCONSISTENT_RESULT,
                f"average power {avg:.4g} W contradicts energy / duration = {derived:.4g} W",
            )
    ci, cv = result.power_cv_ci95, result.power_cv
    if ci is not None and cv is not None:
        slack = ROUNDING_TOLERANCE * max(cv, 1e-6)
        if not (ci[0] <= ci[1] and ci[0] - slack <= cv <= ci[1] + slack):
            raise ResultRejected(
                Reason.INCONSISTENT_RESULT,
                f"the 95% interval [{ci[0]:.4g}, {ci[1]:.4g}] does not contain the power CV "
                f"{cv:.4g}",
            )
    replay_marks = result.gpu.driver == "replay" or any(
        u.startswith("GPU-REPLAY") for u in result.gpu.uuids
    )
    if replay_marks and not result.simulated:
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT,
            "the result says it is not simulated, but its GPU identity is a replay's",
        )
    work = result.work
    if (
        work is not None
        and result.backend in ENGINE_IN_POD_BACKENDS
        and not work.engine_on_gpu_expected
    ):
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT,
            f"the {result.backend} engine runs in the benchmark pod, but the result does not "
            "expect its processes on the GPUs",
        )


def complete(result: CompactResult) -> None:
    """A priceable result says what it rests on: its windows, and (when measured on a real
    GPU) the digests of its evidence."""
    win = result.windows
    if win is None:
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT, "the result does not say which windows it rests on"
        )
    if not result.simulated and result.evidence is None:
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT, "a measured result must carry its evidence digests"
        )
    if result.power_cv is not None and win.used < 2:
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT,
            f"a power CV from {win.used} 1 s windows is not a measurement",
        )


def implied_flags(result: CompactResult) -> list[Flag]:
    """Flags the result's own figures call for, whether or not the benchmark raised them:
    the operator prices the figures, not the benchmark's word about them."""
    out: list[Flag] = []
    disc = result.energy_discrepancy_pct
    if disc is not None and abs(disc) > ENERGY_DISCREPANCY_LIMIT_PCT:
        out.append(Flag.ENERGY_DISCREPANCY)
    win = result.windows
    if win is not None:
        total = win.used + win.excluded
        if win.min_per_run < MIN_WINDOWS_FOR_TIER:
            out.append(Flag.SHORT_WINDOW)
        if total and win.excluded / total > MAX_EXCLUDED_WINDOW_SHARE:
            out.append(Flag.SAMPLER_DEGRADED)
        if win.readings and win.missing_readings / win.readings > MAX_MISSING_READING_SHARE:
            out.append(Flag.MISSING_READINGS)
    return out


def plausible_interval(result: CompactResult) -> None:
    """An interval too narrow for the windows it rests on was not computed from them."""
    ci, cv, win = result.power_cv_ci95, result.power_cv, result.windows
    if ci is None or cv is None or win is None or cv == 0:
        return
    runs = len(result.runs.power_cv) if result.runs is not None else 1
    dof = max(win.used - max(runs, 1), 1)
    # Width only: a real interval may be lopsided (a CV near its lower bound of 0, or the
    # bias correction), so neither side alone says anything.
    half = MIN_INTERVAL_HALF_WIDTH_SE * cv / math.sqrt(2.0 * dof)
    if ci[1] - ci[0] < 2.0 * half:
        raise ResultRejected(
            Reason.INCONSISTENT_RESULT,
            f"the 95% interval [{ci[0]:.4g}, {ci[1]:.4g}] is too narrow for a CV of {cv:.4g} "
            f"from {win.used} 1 s windows",
        )
