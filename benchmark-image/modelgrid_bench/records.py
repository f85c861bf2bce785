"""In-memory evidence of one benchmark session: the power trace, telemetry and timeline. Pure.

These are the inputs of `modelgrid_bench.analysis`. `modelgrid_bench.evidence` writes and reads
them; a float written there reads back bit-identical, so `analyze DIR` reproduces a run's result
exactly. All times are seconds on the sampler's monotonic clock (zero at sampler start).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelgrid_bench.stats import FloatArray
from modelgrid_contract.result import (
    BackendInfo,
    Environment,
    EvidenceDigests,
    JobNonce,
    PowerSourceInfo,
    SamplerConfig,
    WorkDoneFloors,
)
from modelgrid_contract.workload import Workload

#: Clock-event reasons that mean the GPU was held back (not "idle" or "application clocks").
THROTTLE_REASONS_MASK = (
    0x0000_0004  # SW power cap
    | 0x0000_0008  # HW slowdown
    | 0x0000_0020  # SW thermal slowdown
    | 0x0000_0040  # HW thermal slowdown
    | 0x0000_0080  # HW power brake slowdown
)

TRACE_COLUMNS = ("t_s", "gpu", "power_w", "power_avg_w", "energy_j", "power_ts_s", "energy_ts_s")
TELEMETRY_COLUMNS = (
    "t_s",
    "gpu",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "temperature_c",
    "clocks_event_reasons",
    "power_violation_ns",
    "thermal_violation_ns",
    "power_limit_w",
    "gpu_util_pct",
    "process_count",
)


@dataclass
class Trace:
    """Fast samples, one row per GPU per read. NaN marks a value the source did not provide."""

    t_s: FloatArray
    gpu: np.ndarray
    power_w: FloatArray
    power_avg_w: FloatArray
    energy_j: FloatArray
    power_ts_s: FloatArray
    energy_ts_s: FloatArray

    @classmethod
    def empty(cls) -> Trace:
        z = np.zeros(0)
        return cls(z, np.zeros(0, dtype=np.int64), z, z, z, z, z)

    def for_gpu(self, gpu: int) -> Trace:
        """This GPU's rows. When every row is its (one GPU), the arrays are shared, not copied:
        treat them as read-only, as the analysis does."""
        m = self.gpu == gpu
        if bool(np.all(m)):
            return Trace(
                self.t_s,
                self.gpu,
                self.power_w,
                self.power_avg_w,
                self.energy_j,
                self.power_ts_s,
                self.energy_ts_s,
            )
        return Trace(
            self.t_s[m],
            self.gpu[m],
            self.power_w[m],
            self.power_avg_w[m],
            self.energy_j[m],
            self.power_ts_s[m],
            self.energy_ts_s[m],
        )

    @property
    def gpus(self) -> list[int]:
        # A Python set over a million rows costs a fifth of a second, np.unique (a hash) 30 ms;
        # GPU indices are small integers, so counting them is faster still. The set over the
        # few distinct values keeps int()'s meaning for any dtype of `gpu`.
        g = self.gpu
        if g.size and np.issubdtype(g.dtype, np.integer):
            lo, hi = int(np.min(g)), int(np.max(g))
            if hi - lo < 1 << 16:
                return [lo + int(i) for i in np.flatnonzero(np.bincount((g - lo).astype(np.intp)))]
        return sorted({int(x) for x in np.unique(g).tolist()})


@dataclass
class Telemetry:
    """Slow samples: clocks, temperature, throttling, limits, utilisation, processes."""

    columns: dict[str, FloatArray] = field(default_factory=dict)

    def get(self, name: str) -> FloatArray:
        return self.columns.get(name, np.zeros(0))

    @property
    def size(self) -> int:
        return int(self.get("t_s").size)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestRecord(_Strict):
    """One request (a prompt; a batch shares its times) on the sampler clock."""

    start_s: float
    first_token_s: float
    end_s: float
    input_tokens: int
    output_tokens: int
    stream: int = 0


class RunRecord(_Strict):
    index: int
    start_s: float
    end_s: float
    requests: list[RequestRecord]
    #: Request streams in flight during the run (a concurrency sweep's level).
    concurrency: int = Field(1, ge=1, le=1024)


class Interval(_Strict):
    start_s: float
    end_s: float


class Timeline(_Strict):
    baseline: Interval | None = None
    warmup: list[RequestRecord] = Field(default_factory=list)
    runs: list[RunRecord] = Field(default_factory=list)


class SessionMeta(_Strict):
    """Everything about a session that is not a sample: what was asked and what ran it."""

    workload: Workload
    backend: BackendInfo
    power_source: PowerSourceInfo
    sampler: SamplerConfig
    environment: Environment
    sampler_read_errors: int = Field(0, ge=0)
    allowed_gpu_processes: int = Field(
        1, ge=0, le=64, description="Compute processes expected on each GPU (the engine's own)"
    )
    expected_output_tokens_per_request: int | None = None
    notes: list[str] = Field(default_factory=list)
    work_floors: WorkDoneFloors = Field(default_factory=WorkDoneFloors)
    job_nonce: JobNonce | None = Field(
        None, description="The nonce of the Job this session ran for, echoed in the result"
    )
    engine_on_gpu: bool = Field(
        False,
        description="The engine runs in this pod (transformers, or a server started for the "
        "benchmark), so its processes must be on every measured GPU during the runs",
    )


@dataclass
class Evidence:
    meta: SessionMeta
    timeline: Timeline
    trace: Trace
    telemetry: Telemetry
    #: sha256 of trace.csv and telemetry.csv as read or written; None when there are no files.
    digests: EvidenceDigests | None = None
