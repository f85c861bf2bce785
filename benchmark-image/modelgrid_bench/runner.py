"""Runs one benchmark session: sample, baseline, warm up, run the repeats, analyse. Does I/O.

Order of a session, all on the sampler's clock:
1. identify the GPUs and refuse a wrong product or count before any work;
2. start the sampler, load the model;
3. idle baseline with the model loaded (refuse at once if another process holds the GPU);
4. warm-up requests (recorded, excluded from every metric);
5. `repeats` independent runs of the declared workload, `concurrency` streams each;
6. a short tail so the energy counter has updated past the last request, then stop and analyse.
"""

from __future__ import annotations

import logging
import os
import platform
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from modelgrid_bench import __version__
from modelgrid_bench.analysis import analyze
from modelgrid_bench.backends.base import Backend, GenerationParams
from modelgrid_bench.errors import BenchError, RefusedError
from modelgrid_bench.evidence import write_evidence, write_result
from modelgrid_bench.progress import ProgressReporter
from modelgrid_bench.records import (
    Evidence,
    Interval,
    RequestRecord,
    RunRecord,
    SessionMeta,
    Timeline,
)
from modelgrid_bench.sampler import Sampler
from modelgrid_bench.sources import LoadPhase, PowerSource
from modelgrid_bench.workload import batches, prompts
from modelgrid_contract.progress import Stage
from modelgrid_contract.reasons import Reason
from modelgrid_contract.result import (
    ENGINE_IN_POD_BACKENDS,
    BenchmarkResult,
    Environment,
    GpuInfo,
    SamplerConfig,
    WorkDoneFloors,
    normalise_product,
)
from modelgrid_contract.workload import Workload

log = logging.getLogger(__name__)

TAIL_S = 0.35
#: Backends whose engine runs inside the benchmark's own process, on the measured GPUs.


@dataclass(frozen=True)
class SessionConfig:
    workload: Workload
    sampler: SamplerConfig
    idle_baseline_s: float = 5.0
    expect_gpu: str | None = None
    expect_gpu_count: int | None = None
    allowed_gpu_processes: int | None = None
    output_dir: Path | None = None
    work_floors: WorkDoneFloors = field(default_factory=WorkDoneFloors)
    job_nonce: str | None = None
    #: print progress lines for the operator (modelgrid_contract.progress)
    report_progress: bool = False


def check_gpus(gpus: list[GpuInfo], expect: str | None, count: int | None) -> None:
    if not gpus:
        raise RefusedError(Reason.NO_GPU, "no GPU is visible to the benchmark")
    if expect is not None:
        wrong = [g for g in gpus if normalise_product(g.name) != normalise_product(expect)]
        if wrong:
            raise RefusedError(
                Reason.WRONG_GPU,
                f"GPU {wrong[0].index} is a {wrong[0].name!r}, but the qualification requires "
                f"{expect!r}",
            )
    if count is not None and len(gpus) != count:
        raise RefusedError(
            Reason.WRONG_GPU, f"{len(gpus)} GPU(s) are visible, but {count} were requested"
        )


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(source: PowerSource, gpus: list[GpuInfo]) -> Environment:
    system = source.system()
    return Environment(
        hostname=socket.gethostname(),
        node_name=os.environ.get("NODE_NAME", ""),
        driver_version=system.driver_version,
        cuda_driver_version=system.cuda_driver_version,
        nvml_version=system.nvml_version,
        python_version=platform.python_version(),
        bench_version=__version__,
        torch_version=_version("torch"),
        transformers_version=_version("transformers"),
        gpus=gpus,
    )


def _run_requests(
    backend: Backend,
    items: list[str],
    workload: Workload,
    sampler: Sampler,
    concurrency: int | None = None,
    progress: ProgressReporter | None = None,
) -> list[RequestRecord]:
    """Run prompts in batches over `concurrency` streams (default: the workload's); one
    record per prompt."""
    streams = concurrency or workload.concurrency
    params = GenerationParams(
        input_tokens=workload.input_tokens,
        output_tokens=workload.tokens_per_sample,
        temperature=workload.temperature,
        top_p=workload.top_p,
        seed=workload.seed,
    )
    work: queue.Queue[list[str]] = queue.Queue()
    for b in batches(items, workload.batch_size):
        work.put(b)
    records: list[RequestRecord] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def stream(index: int) -> None:
        while not errors:
            try:
                batch = work.get_nowait()
            except queue.Empty:
                return
            try:
                timing = backend.generate(batch, params, sampler.now_s)
            except BaseException as exc:
                errors.append(exc)
                return
            if progress is not None:
                progress.done(len(batch))
            with lock:
                for i in range(len(batch)):
                    records.append(
                        RequestRecord(
                            start_s=timing.start_s,
                            first_token_s=timing.first_token_s[i],
                            end_s=timing.end_s,
                            input_tokens=timing.input_tokens[i],
                            output_tokens=timing.output_tokens[i],
                            stream=index,
                        )
                    )

    threads = [
        threading.Thread(target=stream, args=(i,), name=f"stream-{i}")
        for i in range(min(streams, max(work.qsize(), 1)))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    records.sort(key=lambda r: (r.start_s, r.stream))
    return records


def _idle_baseline(
    seconds: float, sampler: Sampler, allowed: int, progress: ProgressReporter | None
) -> Interval:
    """The idle baseline: the model loaded, no request; refused (contention) when more compute
    processes than the engine's own are on a GPU before the load starts."""
    if progress is not None:
        progress.stage(Stage.IDLE_BASELINE)
    b0 = sampler.now_s()
    time.sleep(seconds)
    baseline = Interval(start_s=b0, end_s=sampler.now_s())
    crowded = [r for r in sampler.last_slow() if r.process_count > allowed]
    if crowded:
        raise RefusedError(
            Reason.CONTENTION,
            f"{crowded[0].process_count} compute processes on GPU {crowded[0].gpu} "
            f"before the load started, where {allowed} was expected",
        )
    return baseline


def _measured_runs(
    backend: Backend, workload: Workload, sampler: Sampler, progress: ProgressReporter | None
) -> list[RunRecord]:
    """Every measured run, interleaved (run 1 at every level, then run 2...): a drift of the
    node over the session falls on every level alike, and run i of one level is compared with
    run i of the first, close in time (seed 002's per-run deltas)."""
    levels = workload.levels()
    measured = prompts(workload)
    runs: list[RunRecord] = []
    for r in range(workload.repeats):
        for j, level in enumerate(levels):
            log.info(
                "run %d/%d, level %d/%d (concurrency %d): %d samples",
                r + 1,
                workload.repeats,
                j + 1,
                len(levels),
                level,
                workload.samples,
            )
            if progress is not None:
                progress.stage(
                    Stage.MEASURING,
                    run=r + 1,
                    runs=workload.repeats,
                    level=j + 1,
                    levels=len(levels),
                )
            start = sampler.now_s()
            reqs = _run_requests(backend, measured, workload, sampler, level, progress)
            runs.append(
                RunRecord(
                    index=len(runs),
                    start_s=start,
                    end_s=sampler.now_s(),
                    requests=reqs,
                    concurrency=level,
                )
            )
    return runs


def run_session(
    config: SessionConfig, source: PowerSource, backend: Backend
) -> tuple[Evidence, BenchmarkResult]:
    gpus = source.gpus()
    check_gpus(gpus, config.expect_gpu, config.expect_gpu_count)
    env = environment(source, gpus)
    workload = config.workload
    allowed = (
        config.allowed_gpu_processes
        if config.allowed_gpu_processes is not None
        else backend.gpu_processes
    )
    sampler = Sampler(source, config.sampler.interval_s, config.sampler.telemetry_interval_s)
    timeline = Timeline()
    levels = workload.levels()
    progress = (
        ProgressReporter(
            workload.warmup_samples + workload.samples * workload.repeats * len(levels)
        )
        if config.report_progress
        else None
    )
    if progress is not None:
        progress.start()
    sampler.start()
    try:
        log.info("loading model %s", backend.info().model)
        if progress is not None and backend.info().kind == "server":
            progress.stage(Stage.ENGINE_STARTUP)
        backend.load()
        # The engine is loaded: its processes are on the GPUs, idle until the first request.
        source.set_phase(LoadPhase.IDLE, allowed)
        if config.idle_baseline_s > 0:
            timeline.baseline = _idle_baseline(config.idle_baseline_s, sampler, allowed, progress)
        source.set_phase(LoadPhase.LOAD, allowed)
        if workload.warmup_samples:
            log.info("warm-up: %d samples", workload.warmup_samples)
            # at the level that is priced: an engine's batch shapes are warm for it
            if progress is not None:
                progress.stage(Stage.WARMUP)
            timeline.warmup = _run_requests(
                backend,
                prompts(workload, warmup=True),
                workload,
                sampler,
                workload.tier_level(),
                progress,
            )
        timeline.runs = _measured_runs(backend, workload, sampler, progress)
        source.set_phase(LoadPhase.IDLE, allowed)
        # Long enough for the counter to update past the last request and for one more
        # telemetry read, which stands for a run too short to hold one (utilisation, processes).
        time.sleep(
            max(TAIL_S, 3 * config.sampler.interval_s, 1.2 * config.sampler.telemetry_interval_s)
        )
        if progress is not None:
            progress.stage(Stage.ANALYSING)
    finally:
        sampler.stop()
        backend.close()
        if progress is not None:
            progress.stop()
    if sampler.error is not None:
        raise sampler.error
    meta = SessionMeta(
        workload=workload,
        backend=backend.info(),
        power_source=source.info(),
        sampler=config.sampler,
        environment=env,
        sampler_read_errors=sampler.read_errors,
        allowed_gpu_processes=allowed,
        expected_output_tokens_per_request=workload.tokens_per_sample,
        work_floors=config.work_floors,
        job_nonce=config.job_nonce,
        engine_on_gpu=backend.info().kind in ENGINE_IN_POD_BACKENDS,
        notes=list(sampler.notes),
    )
    evidence = Evidence(meta, timeline, sampler.trace(), sampler.telemetry())
    if config.output_dir is not None:
        # Evidence first (so it survives a failing analysis), its digests from the bytes written.
        evidence.digests = write_evidence(config.output_dir, evidence)
    result = analyze(evidence)
    if config.output_dir is not None:
        write_result(config.output_dir, result)
    return evidence, result


def refusal_error(result: BenchmarkResult) -> BenchError | None:
    """The error a refused result exits with (after its evidence has been written)."""
    if result.refusal is None:
        return None
    reason = Reason(result.refusal.reason)
    return RefusedError(reason, result.refusal.message)
