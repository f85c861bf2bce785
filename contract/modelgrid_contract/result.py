"""The benchmark's result: versioned pydantic models for the full and the compact form. Pure.

`BenchmarkResult` is the full record written next to the raw evidence; `CompactResult` is what
travels through the pod's termination message (see `modelgrid_contract.wire`). Every figure
carries its unit in its name. The keys of the program's original JSON that a benchmark can know
(`power_cv`, `avg_power_watts`, `peak_power_watts`, `joules_per_token`, `tokens_per_joule`) are
kept verbatim in the compact form.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    ConfigDict,
    Field,
    computed_field,
    field_validator,
    model_validator,
)

from modelgrid_contract._model import Strict as _Strict
from modelgrid_contract._model import Wire as _Wire
from modelgrid_contract.workload import Workload

SCHEMA_FULL: Final = "modelgrid.bench/full/v1"
SCHEMA_COMPACT: Final = "modelgrid.bench/v1"
TERMINATION_MESSAGE_LIMIT_BYTES = 4096

#: Sources whose figures did not come from a real GPU's NVML counters.
SIMULATED_SOURCES = frozenset({"replay", "synthetic"})


def normalise_product(name: str) -> str:
    """'NVIDIA-H200' (a node label) and 'NVIDIA H200' (NVML's name) compare equal."""
    return " ".join(name.replace("-", " ").replace("_", " ").split()).casefold()


# --------------------------------------------------------------------------- environment


class GpuInfo(_Strict):
    index: int
    name: str
    uuid: str
    vbios_version: str | None = None
    power_limit_w: float | None = None
    memory_total_mib: float | None = None
    mig_mode: Literal["enabled", "disabled", "unsupported"] = "unsupported"


class PowerSourceKind(StrEnum):
    NVML = "nvml"
    REPLAY = "replay"
    SYNTHETIC = "synthetic"


class PowerSourceInfo(_Strict):
    kind: PowerSourceKind
    detail: str = ""
    instant_power_field: bool = Field(
        description="True when instant power came from NVML_FI_DEV_POWER_INSTANT"
    )
    energy_counter: bool = Field(description="True when the NVML energy counter was available")
    notes: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def simulated(self) -> bool:
        return self.kind.value in SIMULATED_SOURCES

    @model_validator(mode="before")
    @classmethod
    def _check_derived(cls, data: Any) -> Any:
        # `simulated` is derived from the kind; a serialized copy may carry it, never override it.
        if isinstance(data, dict) and "simulated" in data:
            data = dict(data)
            claimed = data.pop("simulated")
            if bool(claimed) != (str(data.get("kind")) in SIMULATED_SOURCES):
                raise ValueError("'simulated' contradicts the power source kind")
        return data


class Environment(_Strict):
    hostname: str = ""
    node_name: str = ""
    driver_version: str = ""
    cuda_driver_version: str = ""
    nvml_version: str = ""
    python_version: str = ""
    bench_version: str = ""
    torch_version: str | None = None
    transformers_version: str | None = None
    gpus: list[GpuInfo] = Field(default_factory=list)


#: How the benchmark ran inference: in its own process (transformers), against an engine it
#: started in its pod (server), against a server elsewhere (openai), or paced (synthetic).
BackendKind = Literal["transformers", "server", "openai", "synthetic"]
#: Backends whose engine runs in the benchmark pod, on the measured GPUs: their processes
#: must be there during the runs (the work-done gate).
ENGINE_IN_POD_BACKENDS = frozenset({"transformers", "server"})


class EngineInfo(_Strict):
    """The serving engine a `server` backend started in the pod, as it ran."""

    name: str = Field("custom", max_length=16, description="vllm, sglang, tgi or custom")
    version: str = Field("", max_length=64, description="What the engine reports ('' if none)")
    command: list[str] = Field(max_length=96, description="Its whole command line")
    args: list[str] = Field(default_factory=list, max_length=32, description="The spec's extras")
    served_by: str = Field("", description="`owned_by` of the model in the engine's /v1/models")
    startup_s: float = Field(ge=0)


class BackendInfo(_Strict):
    kind: BackendKind
    model: str
    detail: str = ""
    simulated: bool
    engine: EngineInfo | None = None


class SamplerConfig(_Strict):
    interval_s: Annotated[float, Field(ge=0.005, le=1.0)] = 0.025
    telemetry_interval_s: Annotated[float, Field(ge=0.05, le=10.0)] = 0.5


# --------------------------------------------------------------------------- metrics


class SamplerHealth(_Strict):
    requested_interval_s: float
    achieved_interval_s: float
    achieved_rate_hz: float
    longest_gap_s: float
    gaps_over_2x: int
    samples: int
    read_errors: int
    healthy: bool


class Spread(_Wire):
    """Run-to-run statistics of one metric (sample std, ddof=1, as in the per-run reports)."""

    n: int = Field(ge=0, le=1000)
    mean: float
    std: float = Field(ge=0)
    min: float
    max: float
    range: float = Field(ge=0)
    cv: float | None


class PowerStats(_Strict):
    """Time-weighted statistics of total instant power over a window."""

    avg_power_w: float
    peak_power_w: float
    min_power_w: float
    power_std_w: float
    power_variance_w2: float
    power_range_w: float
    p5_power_w: float
    p50_power_w: float
    p95_power_w: float
    power_cv_instant: float | None


class RunMetrics(_Strict):
    run: int
    window_start_s: float
    window_end_s: float
    duration_s: float
    requests: int
    input_tokens: int
    output_tokens: int
    energy_j: float = Field(description="From the energy counter (or the fallback method)")
    energy_integral_j: float | None = Field(description="Trapezoid integral of instant power")
    energy_discrepancy_pct: float | None
    avg_power_w: float = Field(description="energy_j / duration_s")
    instant: PowerStats | None
    power_cv_1s: float | None = Field(description="CV of 1 s energy-counter window powers")
    windows_1s: int
    joules_per_token: float | None
    tokens_per_joule: float | None
    wh_per_1k_queries: float | None
    tokens_per_s: float
    ttft_mean_s: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    prefill_energy_j: float | None
    decode_energy_j: float | None
    prefill_time_s: float
    decode_time_s: float
    prefill_avg_power_w: float | None
    decode_avg_power_w: float | None
    energy_above_idle_j: float | None
    joules_per_token_above_idle: float | None
    throttled_s: float
    windows_excluded: int = Field(
        0, description="1 s windows a sampler gap overlapped, left out of power_cv_1s"
    )
    missing_readings: int = Field(0, description="NaN or absent power/energy reads in the run")
    readings: int = Field(0, description="power reads in the run, all GPUs")
    gpu_util_pct: float | None = Field(
        None, description="Mean GPU utilisation during the run, of the least busy GPU"
    )
    engine_processes_min: int | None = Field(
        None, description="Fewest compute processes seen on any measured GPU during the run"
    )
    max_temperature_c: float | None
    mean_sm_clock_mhz: float | None


class PooledMetrics(_Strict):
    runs: int
    duration_s: float
    energy_j: float
    output_tokens: int
    requests: int
    avg_power_w: float
    peak_power_w: float | None
    min_power_w: float | None
    power_std_w: float | None
    p5_power_w: float | None
    p50_power_w: float | None
    p95_power_w: float | None
    power_cv: float | None = Field(description="The tier metric (see tier_metric)")
    power_cv_ci95: tuple[float, float] | None
    power_cv_instant: float | None
    joules_per_token: float | None
    tokens_per_joule: float | None
    wh_per_1k_queries: float | None
    tokens_per_query: float
    tokens_per_s: float
    ttft_p50_s: float | None
    prefill_energy_j: float | None
    decode_energy_j: float | None
    energy_discrepancy_pct: float | None
    idle_power_w: float | None
    joules_per_token_above_idle: float | None
    throttled_s: float
    power_cv_ci_method: str = ""
    windows_used: int = 0
    windows_excluded: int = 0
    missing_readings: int = 0
    readings: int = 0


#: A run of a concurrency sweep is marked contended when its efficiency is below this share
#: of its level's median efficiency (seed 002's "Contention" column, made a stated rule).
CONTENTION_SHARE_OF_MEDIAN = 0.85


class SweepRun(_Strict):
    """One run of one level of a concurrency sweep, against the same run of the first level."""

    concurrency: int = Field(ge=1, le=1024)
    run: int = Field(ge=1, description="1-based, within its level")
    tokens_per_s: float = Field(ge=0)
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    avg_power_w: float = Field(ge=0)
    power_cv: float | None
    joules_per_token: float | None
    speedup: float | None = Field(description="tokens/s over the first level's same run")
    efficiency_pct: float | None = Field(description="speedup / (level / first level), in %")
    throughput_delta_tok_s: float | None = Field(description="tokens/s minus the first level's")
    ttft_delta_ms: float | None = Field(description="TTFT p50 minus the first level's, in ms")
    contention: bool


class SweepLevel(_Strict):
    """One level's runs summarised: means, the median TTFT, and seed 002's efficiency
    statistics (mean, std, min, max, range, CV of the per-run efficiency)."""

    concurrency: int = Field(ge=1, le=1024)
    runs: int = Field(ge=0)
    tokens_per_s: float = Field(ge=0)
    ttft_p50_ms: float | None
    avg_power_w: float = Field(ge=0)
    power_cv: float | None
    joules_per_token: float | None
    speedup: float | None
    efficiency: Spread | None
    contended_runs: int = Field(ge=0)


class Sweep(_Strict):
    """A concurrency sweep: every run of every level, each level summarised, and the level
    the tier was decided at (the result's runs and pooled figures are that level's)."""

    levels: list[int]
    tier_concurrency: int
    contention_share_of_median: float = CONTENTION_SHARE_OF_MEDIAN
    runs: list[SweepRun]
    per_level: list[SweepLevel]


class WorkDoneFloors(_Strict):
    """The floors a measurement must clear to count as work done (defaults: TierPolicy's)."""

    min_joules_per_token_above_idle: float = Field(0.005, ge=0)
    min_gpu_util_pct: float = Field(20.0, ge=0, le=100)


class WorkDone(_Strict):
    """The work-done gate's figures: did the declared work run on the measured GPUs?

    Each is the worst over the runs (and over the GPUs), so one idle run or one idle GPU shows.
    """

    joules_per_token_above_idle_min: float | None = Field(
        description="Energy above the idle baseline per output token, worst run (J)"
    )
    gpu_util_pct_min: float | None = Field(
        description="GPU utilisation during the runs, worst run and least busy GPU (%)"
    )
    engine_processes_min: int | None = Field(
        description="Fewest compute processes seen on a measured GPU during the runs"
    )
    engine_on_gpu_expected: bool = Field(
        description="The engine runs in the benchmark pod, so its processes must be on every GPU"
    )
    floors: WorkDoneFloors
    passed: bool
    message: str = ""


class EvidenceDigests(_Wire):
    """sha256 of the evidence files a result was derived from, so a status is tied to them."""

    trace_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    telemetry_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    columns_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of trace.npz when the trace was read from that columnar copy "
        "(checked against trace.csv by sampled rows); None when trace.csv was parsed",
    )


class Flag(StrEnum):
    SIMULATED = "simulated"
    CONTENTION = "contention"
    GPU_NOT_IDLE = "gpu_not_idle"
    THROTTLED = "throttled"
    ENERGY_DISCREPANCY = "energy_discrepancy"
    ENERGY_FALLBACK = "energy_fallback"
    ENERGY_COUNTER_RESET = "energy_counter_reset"
    SAMPLER_DEGRADED = "sampler_degraded"
    SHORT_WINDOW = "short_window"
    TOKEN_MISMATCH = "token_mismatch"
    NO_INSTANT_POWER = "no_instant_power"
    MISSING_READINGS = "missing_readings"
    NO_INTERVAL = "no_interval"


class Refusal(_Wire):
    reason: str
    message: str


TIER_METRIC = "power_cv_1s"
TIER_METRIC_TIME_SCALE_S = 1.0

# The limits behind the flags, shared so that the operator can check a result's figures
# against the same numbers the benchmark flagged them with.
#: Counter energy and the instant-power integral may disagree by this much (%).
ENERGY_DISCREPANCY_LIMIT_PCT = 3.0
#: Usable 1 s windows a run needs for the tier metric to be priced.
MIN_WINDOWS_FOR_TIER = 10
#: Above this share of a run's 1 s windows excluded by sampler gaps, the run is not priced.
MAX_EXCLUDED_WINDOW_SHARE = 0.10
#: Above this share of a run's reads missing (NaN), the run is not priced.
MAX_MISSING_READING_SHARE = 0.01


#: A Job's nonce: 32 lowercase hex digits the operator draws for each benchmark Job and the
#: result echoes, so a result measured for one Job cannot be passed off as another's.
JOB_NONCE_PATTERN = r"^[0-9a-f]{32}$"
JobNonce = Annotated[str, Field(pattern=JOB_NONCE_PATTERN)]


class BenchmarkResult(_Strict):
    """The full result. `simulated` is derived, never stored, so nothing can set it to false."""

    schema_: Literal["modelgrid.bench/full/v1"] = Field(default=SCHEMA_FULL, alias="schema")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    workload: Workload
    workload_digest: str
    backend: BackendInfo
    power_source: PowerSourceInfo
    sampler: SamplerConfig
    environment: Environment
    tier_metric: str = TIER_METRIC
    cv_time_scale_s: float = TIER_METRIC_TIME_SCALE_S
    runs: list[RunMetrics]
    pooled: PooledMetrics | None
    run_to_run: dict[str, Spread]
    sampler_health: SamplerHealth
    per_gpu_avg_power_w: list[float]
    flags: list[Flag]
    refusal: Refusal | None = None
    notes: list[str] = Field(default_factory=list)
    work_done: WorkDone | None = None
    evidence: EvidenceDigests | None = None
    job_nonce: JobNonce | None = None
    sweep: Sweep | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def simulated(self) -> bool:
        return self.power_source.simulated or self.backend.simulated

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, data: Any) -> Any:
        # `simulated` is computed; a serialized copy carries it, and it must agree, not override.
        if isinstance(data, dict) and "simulated" in data:
            data = dict(data)
            claimed = data.pop("simulated")
            source = data.get("power_source")
            backend = data.get("backend")
            kind = source.get("kind") if isinstance(source, dict) else None
            backend_sim = backend.get("simulated") if isinstance(backend, dict) else None
            derived = (kind in SIMULATED_SOURCES) or bool(backend_sim)
            if bool(claimed) != derived:
                raise ValueError("'simulated' contradicts the power source and backend")
        return data


# --------------------------------------------------------------------------- compact form


class CompactEngine(_Wire):
    """The engine a `server` source started, as the operator records it in status."""

    name: str = Field(max_length=16)
    version: str = Field(max_length=64)
    startup_s: Annotated[float, Field(ge=0)]
    command_sha256: str = Field(pattern=r"^[0-9a-f]{16}$", description="Of the command line")


#: A figure that cannot be negative (power, energy, time, a rate).
NonNegative = Annotated[float, Field(ge=0)]


class CompactSweep(_Wire):
    """A sweep's per-level summary, one entry a level in each list (the per-run table lives
    in the evidence's result.json and in `modelgrid verdict` output)."""

    levels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(min_length=2, max_length=8)
    tier_concurrency: int = Field(ge=1, le=1024)
    runs: list[Annotated[int, Field(ge=0, le=100)]]
    tokens_per_s: list[NonNegative]
    ttft_p50_ms: list[NonNegative | None]
    avg_power_w: list[NonNegative]
    power_cv: list[NonNegative | None]
    joules_per_token: list[NonNegative | None]
    speedup: list[NonNegative | None]
    efficiency_mean_pct: list[NonNegative | None]
    efficiency_std_pct: list[NonNegative | None]
    efficiency_min_pct: list[NonNegative | None]
    efficiency_max_pct: list[NonNegative | None]
    contended_runs: list[Annotated[int, Field(ge=0, le=100)]]

    @model_validator(mode="after")
    def _one_value_per_level(self) -> CompactSweep:
        n = len(self.levels)
        lists = [v for k, v in self.__dict__.items() if isinstance(v, list) and k != "levels"]
        if any(len(v) != n for v in lists):
            raise ValueError("every per-level list must have one value per level")
        if any(b <= a for a, b in zip(self.levels, self.levels[1:], strict=False)):
            raise ValueError("sweep levels must increase strictly")
        if self.tier_concurrency not in self.levels:
            raise ValueError("the tier's concurrency must be one of the sweep's levels")
        return self


class CompactGpu(_Wire):
    name: str
    count: int = Field(ge=0, le=64)
    driver: str
    cuda: str
    uuids: list[str]


class CompactWork(_Wire):
    """The work-done gate's figures in the compact form (see `WorkDone`)."""

    j_per_token_above_idle_min: float | None
    gpu_util_pct_min: Annotated[float, Field(ge=0, le=100)] | None
    engine_processes_min: Annotated[int, Field(ge=0, le=1024)] | None
    engine_on_gpu_expected: bool
    passed: bool


class CompactWindows(_Wire):
    """How much of the measurement the tier metric rests on."""

    used: int = Field(ge=0)
    excluded: int = Field(ge=0)
    min_per_run: int = Field(ge=0)
    missing_readings: int = Field(ge=0)
    readings: int = Field(ge=0)
    ci_method: str


class CompactRuns(_Wire):
    power_cv: list[Annotated[float, Field(ge=0)] | None]
    avg_power_w: list[Annotated[float, Field(ge=0)]]
    joules_per_token: list[Annotated[float, Field(ge=0)] | None]
    tokens_per_s: list[Annotated[float, Field(ge=0)]]

    @model_validator(mode="after")
    def _one_value_per_run(self) -> CompactRuns:
        n = {len(self.power_cv), len(self.avg_power_w), len(self.joules_per_token)}
        if n != {len(self.tokens_per_s)}:
            raise ValueError("every per-run list must have one value per run")
        return self


class CompactResult(_Strict):
    """What the operator reads. Keys of the program's original JSON are kept verbatim."""

    schema_: Literal["modelgrid.bench/v1"] = Field(alias="schema")
    # Strict: a number must be a JSON number (never "90"), and never NaN or Infinity.
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, strict=True, allow_inf_nan=False
    )

    ok: bool
    simulated: bool
    source: PowerSourceKind
    backend: BackendKind
    model: str
    workload_digest: str
    node: str
    gpu: CompactGpu
    tier_metric: str
    cv_time_scale_s: Annotated[float, Field(gt=0)]
    sample_interval_s: Annotated[float, Field(gt=0)]
    power_cv: float | None
    power_cv_ci95: tuple[float, float] | None
    power_cv_instant: NonNegative | None
    avg_power_watts: NonNegative | None
    peak_power_watts: NonNegative | None
    power_std_w: NonNegative | None
    p95_power_w: NonNegative | None
    joules_per_token: NonNegative | None
    tokens_per_joule: NonNegative | None
    tokens_per_s: NonNegative | None
    ttft_p50_s: NonNegative | None
    energy_j: NonNegative | None
    duration_s: NonNegative | None
    output_tokens: Annotated[int, Field(ge=0)] | None
    idle_power_w: NonNegative | None
    wh_per_1k_queries: NonNegative | None
    energy_discrepancy_pct: float | None
    runs: CompactRuns | None
    run_stats: dict[str, Spread] | None
    flags: list[Flag]
    refusal: Refusal | None
    truncated: list[str]
    work: CompactWork | None = None
    windows: CompactWindows | None = None
    evidence: EvidenceDigests | None = None
    job_nonce: JobNonce | None = None
    engine: CompactEngine | None = None
    sweep: CompactSweep | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CompactResult:
        if self.source.value in SIMULATED_SOURCES and not self.simulated:
            raise ValueError(f"a result from the {self.source.value} source must be simulated")
        if self.backend == "synthetic" and not self.simulated:
            raise ValueError("a result from the synthetic backend must be simulated")
        if self.simulated and Flag.SIMULATED not in self.flags:
            raise ValueError("a simulated result must carry the 'simulated' flag")
        if self.ok and self.refusal is not None:
            raise ValueError("a result cannot be both ok and refused")
        if (self.engine is not None) != (self.backend == "server"):
            raise ValueError("a result names its engine exactly when the backend is 'server'")
        return self

    @field_validator("power_cv", "power_cv_instant")
    @classmethod
    def _cv_range(cls, v: float | None) -> float | None:
        if v is not None and not (0.0 <= v < 100.0):
            raise ValueError("a coefficient of variation must be a finite non-negative number")
        return v


SCHEMA_FAILURE: Final = "modelgrid.bench/failure/v1"


class BenchFailure(_Strict):
    """What a benchmark that could not produce a result leaves in its termination message."""

    schema_: Literal["modelgrid.bench/failure/v1"] = Field(default=SCHEMA_FAILURE, alias="schema")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    reason: str = Field(max_length=64)
    message: str = Field(max_length=1024)
    exit_code: int

    def encode(self) -> str:
        return self.model_dump_json(by_alias=True)
