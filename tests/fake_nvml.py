"""A hand-written fake of the NVML binding (`pynvml` from nvidia-ml-py). Test helper only.

`FakeNvml` is a `types.ModuleType` whose functions are the ones `modelgrid_bench.device` calls,
so it can be passed to `NvmlDevices.open(fake)` or installed as `sys.modules["pynvml"]`.

Per GPU (`FakeGpu`) one configures the name and identity, the power as a function of time
(seconds since the fake was built), which fields and which optional calls are unsupported, the
running processes and the slow telemetry. Like the real counter, the energy counter (mJ since
"driver load") only updates every `energy_update_s` (100 ms). Timestamps are wall-clock
microseconds from `clock` (default `time.time`), as NVML's are.

`fail(call, code, times=None)` makes a call raise `NVMLError(code)` (always, or for the next
`times` calls); `init_error` makes `nvmlInit` raise. `calls` counts every call by name.
"""

from __future__ import annotations

import math
import threading
import time
import types
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999

FI_DEV_TOTAL_ENERGY_CONSUMPTION = 83
FI_DEV_POWER_AVERAGE = 185
FI_DEV_POWER_INSTANT = 186

VALUE_TYPE_DOUBLE = 0
VALUE_TYPE_UNSIGNED_INT = 1
VALUE_TYPE_UNSIGNED_LONG_LONG = 3

CLOCK_SM = 1
CLOCK_MEM = 2
PERF_POLICY_POWER = 0
PERF_POLICY_THERMAL = 1

# The strings nvmlErrorString returns (and so str(NVMLError(code)) in the real binding).
_ERROR_STRINGS = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """Like pynvml.NVMLError: `.value` is the NVML return code, str() is nvmlErrorString."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _ERROR_STRINGS.get(self.value, "Unknown Error")


def constant(w: float) -> Callable[[float], float]:
    return lambda _t: w


@dataclass
class FakeGpu:
    name: str = "NVIDIA H200"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    vbios_version: str = "96.00.9F.00.01"
    power_limit_mw: int = 700_000
    memory_total_bytes: int = 144 * 2**30
    mig_mode: tuple[int, int] = (0, 0)
    # Power (W) as a function of seconds since the fake was built.
    power_w: Callable[[float], float] = field(default_factory=lambda: constant(300.0))
    energy_update_s: float = 0.1
    energy_offset_mj: int = 5_000_000
    # Field ids answered with nvmlReturn = NOT_SUPPORTED.
    unsupported_fields: set[int] = field(default_factory=set)
    # Call names (e.g. "nvmlDeviceGetTemperature") that raise NVMLError(NOT_SUPPORTED).
    unsupported_calls: set[str] = field(default_factory=set)
    processes: list[Any] = field(default_factory=list)
    sm_clock_mhz: int = 1980
    mem_clock_mhz: int = 2619
    temperature_c: int = 45
    clocks_event_reasons: int = 0
    power_violation_ns: int = 1_000
    thermal_violation_ns: int = 2_000
    gpu_util_pct: int = 97


@dataclass
class _Handle:
    index: int


@dataclass
class _Union:
    dVal: float = 0.0
    uiVal: int = 0
    ulVal: int = 0
    ullVal: int = 0
    sllVal: int = 0
    siVal: int = 0


@dataclass
class FieldValue:
    fieldId: int
    scopeId: int = 0
    timestamp: int = 0
    latencyUsec: int = 0
    valueType: int = VALUE_TYPE_DOUBLE
    nvmlReturn: int = NVML_SUCCESS
    value: _Union = field(default_factory=_Union)


@dataclass
class MemoryInfo:
    total: int
    free: int
    used: int


@dataclass
class Utilization:
    gpu: int
    memory: int


@dataclass
class ViolationTime:
    referenceTime: int
    violationTime: int


@dataclass
class ProcessInfo:
    pid: int
    usedGpuMemory: int = 0


class _EnergyCounter:
    """The integral of power (mJ), advanced only at `update_s` boundaries, kept incrementally."""

    def __init__(self, gpu: FakeGpu) -> None:
        self.gpu = gpu
        self.step = 0
        self.mj = float(gpu.energy_offset_mj)

    def at(self, t: float) -> tuple[int, float]:
        """(counter in mJ, time in s of its last update) for a read at time t."""
        period = self.gpu.energy_update_s
        k = max(0, math.floor(t / period + 1e-9))
        while self.step < k:
            a = self.step * period
            n = 100
            h = period / n
            self.mj += sum(self.gpu.power_w(a + (j + 0.5) * h) for j in range(n)) * h * 1000.0
            self.step += 1
        return round(self.mj), self.step * period


class FakeNvml(types.ModuleType):
    NVMLError = NVMLError

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        driver_version: str = "550.54.15",
        cuda_driver_version: int = 12040,
        nvml_version: str = "12.550.54.15",
    ) -> None:
        super().__init__("pynvml")
        self.gpus = [FakeGpu()] if gpus is None else gpus
        self.clock = clock
        self.t0 = clock()
        self.driver = driver_version
        self.cuda_driver = cuda_driver_version
        self.nvml = nvml_version
        self.init_error: int | None = None
        self.initialized = False
        self.calls: Counter[str] = Counter()
        self._failures: dict[str, tuple[int, int | None]] = {}
        self._energy = [_EnergyCounter(g) for g in self.gpus]
        self._lock = threading.Lock()

    # -- configuration ---------------------------------------------------------------------

    def fail(self, call: str, code: int, times: int | None = None) -> None:
        """Make `call` raise NVMLError(code): always (times=None) or for the next `times` calls."""
        self._failures[call] = (code, times)

    def heal(self, call: str) -> None:
        self._failures.pop(call, None)

    # -- helpers ---------------------------------------------------------------------------

    def _enter(self, call: str, handle: _Handle | None = None) -> FakeGpu | None:
        with self._lock:
            self.calls[call] += 1
            failure = self._failures.get(call)
            if failure is not None:
                code, times = failure
                if times is not None:
                    if times <= 1:
                        del self._failures[call]
                    else:
                        self._failures[call] = (code, times - 1)
                raise NVMLError(code)
        if call not in ("nvmlInit", "nvmlShutdown") and not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if handle is None:
            return None
        if not isinstance(handle, _Handle) or not 0 <= handle.index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[handle.index]
        if call in gpu.unsupported_calls:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _t(self) -> float:
        return self.clock() - self.t0

    def _us(self, t: float) -> int:
        return round((self.t0 + t) * 1e6)

    @staticmethod
    def _avg_w(gpu: FakeGpu, t: float) -> float:
        """The mean power over the last second (or since start), like NVML's one-second average."""
        a = max(0.0, t - 1.0)
        if t <= a:
            return gpu.power_w(t)
        n = 50
        h = (t - a) / n
        return sum(gpu.power_w(a + (j + 0.5) * h) for j in range(n)) / n

    # -- library ---------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        self.initialized = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._enter("nvmlSystemGetCudaDriverVersion")
        return self.cuda_driver

    def nvmlSystemGetNVMLVersion(self) -> str:
        self._enter("nvmlSystemGetNVMLVersion")
        return self.nvml

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    # -- fast path -------------------------------------------------------------------------

    def nvmlDeviceGetFieldValues(self, handle: _Handle, fieldIds: list[int]) -> list[FieldValue]:
        gpu = self._enter("nvmlDeviceGetFieldValues", handle)
        assert gpu is not None
        t = self._t()
        now_us = self._us(t)
        out = []
        for fid in fieldIds:
            v = FieldValue(fieldId=int(fid), timestamp=now_us, latencyUsec=10)
            if fid in gpu.unsupported_fields or fid not in (
                FI_DEV_POWER_INSTANT,
                FI_DEV_POWER_AVERAGE,
                FI_DEV_TOTAL_ENERGY_CONSUMPTION,
            ):
                v.nvmlReturn = NVML_ERROR_NOT_SUPPORTED
                v.timestamp = 0
            elif fid == FI_DEV_POWER_INSTANT:
                v.valueType = VALUE_TYPE_UNSIGNED_INT
                v.value.uiVal = round(gpu.power_w(t) * 1000.0)
            elif fid == FI_DEV_POWER_AVERAGE:
                v.valueType = VALUE_TYPE_UNSIGNED_INT
                v.value.uiVal = round(self._avg_w(gpu, t) * 1000.0)
            else:
                mj, updated = self._energy[handle.index].at(t)
                v.valueType = VALUE_TYPE_UNSIGNED_LONG_LONG
                v.value.ullVal = mj
                v.timestamp = self._us(updated)
            out.append(v)
        return out

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        """mW; a one-second average, as on Ampere and newer."""
        gpu = self._enter("nvmlDeviceGetPowerUsage", handle)
        assert gpu is not None
        return round(self._avg_w(gpu, self._t()) * 1000.0)

    # -- identity --------------------------------------------------------------------------

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        gpu = self._enter("nvmlDeviceGetName", handle)
        assert gpu is not None
        return gpu.name

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        gpu = self._enter("nvmlDeviceGetUUID", handle)
        assert gpu is not None
        return gpu.uuid

    def nvmlDeviceGetVbiosVersion(self, handle: _Handle) -> str:
        gpu = self._enter("nvmlDeviceGetVbiosVersion", handle)
        assert gpu is not None
        return gpu.vbios_version

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        gpu = self._enter("nvmlDeviceGetEnforcedPowerLimit", handle)
        assert gpu is not None
        return gpu.power_limit_mw

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> MemoryInfo:
        gpu = self._enter("nvmlDeviceGetMemoryInfo", handle)
        assert gpu is not None
        return MemoryInfo(gpu.memory_total_bytes, gpu.memory_total_bytes, 0)

    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        gpu = self._enter("nvmlDeviceGetMigMode", handle)
        assert gpu is not None
        return list(gpu.mig_mode)

    # -- slow path -------------------------------------------------------------------------

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock_type: int) -> int:
        gpu = self._enter("nvmlDeviceGetClockInfo", handle)
        assert gpu is not None
        if clock_type == CLOCK_SM:
            return gpu.sm_clock_mhz
        if clock_type == CLOCK_MEM:
            return gpu.mem_clock_mhz
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        gpu = self._enter("nvmlDeviceGetTemperature", handle)
        assert gpu is not None
        if sensor != 0:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temperature_c

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: _Handle) -> int:
        gpu = self._enter("nvmlDeviceGetCurrentClocksEventReasons", handle)
        assert gpu is not None
        return gpu.clocks_event_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: _Handle) -> int:
        """The older name of the same call (bindings before 12.535)."""
        gpu = self._enter("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        assert gpu is not None
        return gpu.clocks_event_reasons

    def nvmlDeviceGetViolationStatus(self, handle: _Handle, policy: int) -> ViolationTime:
        gpu = self._enter("nvmlDeviceGetViolationStatus", handle)
        assert gpu is not None
        ref = self._us(self._t()) * 1000
        if policy == PERF_POLICY_POWER:
            return ViolationTime(ref, gpu.power_violation_ns)
        if policy == PERF_POLICY_THERMAL:
            return ViolationTime(ref, gpu.thermal_violation_ns)
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Utilization:
        gpu = self._enter("nvmlDeviceGetUtilizationRates", handle)
        assert gpu is not None
        return Utilization(gpu.gpu_util_pct, 0)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Handle) -> list[Any]:
        gpu = self._enter("nvmlDeviceGetComputeRunningProcesses", handle)
        assert gpu is not None
        return list(gpu.processes)


class ManualClock:
    """A wall clock that only moves when told to (seconds)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        self.now += dt
