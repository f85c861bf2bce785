"""The device layer: the one module that imports `pynvml` (from nvidia-ml-py). Does I/O (NVML).

Per GPU, one `nvmlDeviceGetFieldValues` call reads instant power (NVML_FI_DEV_POWER_INSTANT),
the one-second average (NVML_FI_DEV_POWER_AVERAGE) and the energy counter (mJ since driver
load), each with NVML's own timestamp. `nvmlDeviceGetPowerUsage` is deliberately not the
primary reading: on Ampere and newer GPUs it returns a one-second average, which hides exactly
the variance modelgrid measures. Where a field is unsupported the reading falls back (with a
recorded note) and says which fallback it used.

Every NVML failure surfaces as `modelgrid_bench.errors.DeviceError` with the call that failed.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

from modelgrid_bench.errors import DeviceError

T = TypeVar("T")

# NVML field ids and enum values (nvml.h). Kept here so the rest of the package never needs
# the binding to interpret a reading.
FI_DEV_TOTAL_ENERGY_CONSUMPTION = 83
FI_DEV_POWER_AVERAGE = 185
FI_DEV_POWER_INSTANT = 186
NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_DRIVER_NOT_LOADED = 9
VALUE_TYPE_DOUBLE = 0
VALUE_TYPE_UNSIGNED_INT = 1
VALUE_TYPE_UNSIGNED_LONG = 2
VALUE_TYPE_UNSIGNED_LONG_LONG = 3
VALUE_TYPE_SIGNED_LONG_LONG = 4
VALUE_TYPE_SIGNED_INT = 5
CLOCK_SM = 1
CLOCK_MEM = 2
TEMPERATURE_GPU = 0
PERF_POLICY_POWER = 0
PERF_POLICY_THERMAL = 1


def _nvml_distribution_check() -> None:
    """Refuse the deprecated `pynvml` PyPI shim: its module shadows nvidia-ml-py's."""
    try:
        importlib.metadata.distribution("pynvml")
    except importlib.metadata.PackageNotFoundError:
        pass
    else:
        raise DeviceError(
            "import",
            "the deprecated 'pynvml' package is installed and shadows the official binding; "
            "run 'pip uninstall -y pynvml' and keep 'nvidia-ml-py'",
        )
    try:
        importlib.metadata.distribution("nvidia-ml-py")
    except importlib.metadata.PackageNotFoundError as exc:
        raise DeviceError("import", "the 'nvidia-ml-py' package is not installed") from exc


def load_nvml() -> ModuleType:
    """Import the NVML binding (the single import site of `pynvml` in the project)."""
    _nvml_distribution_check()
    try:
        import pynvml  # the one import site (enforced by import-linter)
    except ImportError as exc:
        raise DeviceError("import", f"cannot import the NVML binding: {exc}") from exc
    module: ModuleType = pynvml
    return module


@dataclass(frozen=True)
class FastReading:
    """One GPU's power and energy at one read. NaN marks a value the GPU does not provide."""

    gpu: int
    power_w: float
    power_avg_w: float
    energy_j: float
    power_ts_us: int | None
    energy_ts_us: int | None


@dataclass(frozen=True)
class SlowReading:
    """Lower-rate telemetry of one GPU."""

    gpu: int
    sm_clock_mhz: float
    mem_clock_mhz: float
    temperature_c: float
    clocks_event_reasons: int
    power_violation_ns: float
    thermal_violation_ns: float
    power_limit_w: float
    gpu_util_pct: float
    process_count: int


@dataclass(frozen=True)
class Identity:
    index: int
    name: str
    uuid: str
    vbios_version: str | None
    power_limit_w: float | None
    memory_total_mib: float | None
    mig_mode: str


@dataclass
class NvmlDevices:
    """Every GPU visible to this process, read through NVML.

    `nvml` is the binding module; tests pass a hand-written fake with the same functions.
    """

    nvml: ModuleType
    handles: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    instant_supported: list[bool] = field(default_factory=list)
    average_supported: list[bool] = field(default_factory=list)
    energy_supported: list[bool] = field(default_factory=list)
    _closed: bool = False

    @classmethod
    def open(cls, nvml: ModuleType | None = None) -> NvmlDevices:
        lib = nvml if nvml is not None else load_nvml()
        dev = cls(lib)
        dev._call("nvmlInit", lib.nvmlInit)
        try:
            count = int(dev._call("nvmlDeviceGetCount", lib.nvmlDeviceGetCount))
            dev.handles = [
                dev._call("nvmlDeviceGetHandleByIndex", lib.nvmlDeviceGetHandleByIndex, i)
                for i in range(count)
            ]
            for i in range(count):
                dev._probe_fields(i)
        except DeviceError:
            dev.close()
            raise
        return dev

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):  # best effort on the way out
                self.nvml.nvmlShutdown()

    # -- errors ---------------------------------------------------------------------------

    def _call(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        error_type: type[BaseException] = getattr(self.nvml, "NVMLError", Exception)
        try:
            return fn(*args)
        except error_type as exc:
            code = getattr(exc, "value", None)
            raise DeviceError(name, str(exc) or "unknown NVML error", code) from exc

    def _optional(self, name: str, fn: Callable[..., T], *args: Any) -> T | None:
        """A call whose absence is normal on some GPUs: None when unsupported."""
        try:
            return self._call(name, fn, *args)
        except DeviceError as exc:
            if exc.code in (NVML_ERROR_NOT_SUPPORTED, None) or "Not Supported" in str(exc):
                return None
            raise

    # -- identity -------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return len(self.handles)

    def driver_version(self) -> str:
        return str(self._call("nvmlSystemGetDriverVersion", self.nvml.nvmlSystemGetDriverVersion))

    def cuda_driver_version(self) -> str:
        raw = int(
            self._call("nvmlSystemGetCudaDriverVersion", self.nvml.nvmlSystemGetCudaDriverVersion)
        )
        return f"{raw // 1000}.{(raw % 1000) // 10}"

    def nvml_version(self) -> str:
        fn = getattr(self.nvml, "nvmlSystemGetNVMLVersion", None)
        return str(self._call("nvmlSystemGetNVMLVersion", fn)) if fn else ""

    def identity(self, i: int) -> Identity:
        lib, h = self.nvml, self.handles[i]
        limit_mw = self._optional(
            "nvmlDeviceGetEnforcedPowerLimit", lib.nvmlDeviceGetEnforcedPowerLimit, h
        )
        mem = self._optional("nvmlDeviceGetMemoryInfo", lib.nvmlDeviceGetMemoryInfo, h)
        mig = self._optional("nvmlDeviceGetMigMode", lib.nvmlDeviceGetMigMode, h)
        return Identity(
            index=i,
            name=str(self._call("nvmlDeviceGetName", lib.nvmlDeviceGetName, h)),
            uuid=str(self._call("nvmlDeviceGetUUID", lib.nvmlDeviceGetUUID, h)),
            vbios_version=self._optional(
                "nvmlDeviceGetVbiosVersion", lib.nvmlDeviceGetVbiosVersion, h
            ),
            power_limit_w=None if limit_mw is None else float(limit_mw) / 1000.0,
            memory_total_mib=None if mem is None else float(mem.total) / 2**20,
            mig_mode="unsupported" if mig is None else ("enabled" if mig[0] else "disabled"),
        )

    # -- fast path ------------------------------------------------------------------------

    def _probe_fields(self, i: int) -> None:
        values = self._call(
            "nvmlDeviceGetFieldValues",
            self.nvml.nvmlDeviceGetFieldValues,
            self.handles[i],
            [FI_DEV_POWER_INSTANT, FI_DEV_POWER_AVERAGE, FI_DEV_TOTAL_ENERGY_CONSUMPTION],
        )
        ok = [int(v.nvmlReturn) == NVML_SUCCESS for v in values]
        self.instant_supported.append(ok[0])
        self.average_supported.append(ok[1])
        self.energy_supported.append(ok[2])
        if not ok[0]:
            self.notes.append(
                f"GPU {i}: NVML_FI_DEV_POWER_INSTANT unsupported; instant power falls back to "
                "nvmlDeviceGetPowerUsage, which is a one-second average on Ampere and newer"
            )
        if not ok[2]:
            self.notes.append(
                f"GPU {i}: energy counter unsupported; energy falls back to the integral of power"
            )

    def read_fast(self, i: int) -> FastReading:
        lib, h = self.nvml, self.handles[i]
        values = self._call(
            "nvmlDeviceGetFieldValues",
            lib.nvmlDeviceGetFieldValues,
            h,
            [FI_DEV_POWER_INSTANT, FI_DEV_POWER_AVERAGE, FI_DEV_TOTAL_ENERGY_CONSUMPTION],
        )
        inst, avg, energy = values[0], values[1], values[2]
        power_w = _field_number(inst) / 1000.0 if int(inst.nvmlReturn) == NVML_SUCCESS else None
        power_ts = int(inst.timestamp) if power_w is not None else None
        if power_w is None:
            power_w = float(self._call("nvmlDeviceGetPowerUsage", lib.nvmlDeviceGetPowerUsage, h))
            power_w /= 1000.0
        avg_w = _field_number(avg) / 1000.0 if int(avg.nvmlReturn) == NVML_SUCCESS else float("nan")
        if int(energy.nvmlReturn) == NVML_SUCCESS:
            energy_j, energy_ts = _field_number(energy) / 1000.0, int(energy.timestamp)
        else:
            energy_j, energy_ts = float("nan"), None
        return FastReading(i, power_w, avg_w, energy_j, power_ts, energy_ts)

    # -- slow path ------------------------------------------------------------------------

    def read_slow(self, i: int) -> SlowReading:
        lib, h = self.nvml, self.handles[i]
        nan = float("nan")
        sm = self._optional("nvmlDeviceGetClockInfo", lib.nvmlDeviceGetClockInfo, h, CLOCK_SM)
        mem = self._optional("nvmlDeviceGetClockInfo", lib.nvmlDeviceGetClockInfo, h, CLOCK_MEM)
        temp = self._optional(
            "nvmlDeviceGetTemperature", lib.nvmlDeviceGetTemperature, h, TEMPERATURE_GPU
        )
        reasons_fn = (
            getattr(lib, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or lib.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        reasons = self._optional("nvmlDeviceGetCurrentClocksEventReasons", reasons_fn, h)
        pviol = self._optional(
            "nvmlDeviceGetViolationStatus", lib.nvmlDeviceGetViolationStatus, h, PERF_POLICY_POWER
        )
        tviol = self._optional(
            "nvmlDeviceGetViolationStatus", lib.nvmlDeviceGetViolationStatus, h, PERF_POLICY_THERMAL
        )
        limit = self._optional(
            "nvmlDeviceGetEnforcedPowerLimit", lib.nvmlDeviceGetEnforcedPowerLimit, h
        )
        util = self._optional("nvmlDeviceGetUtilizationRates", lib.nvmlDeviceGetUtilizationRates, h)
        procs = self._optional(
            "nvmlDeviceGetComputeRunningProcesses", lib.nvmlDeviceGetComputeRunningProcesses, h
        )
        return SlowReading(
            gpu=i,
            sm_clock_mhz=nan if sm is None else float(sm),
            mem_clock_mhz=nan if mem is None else float(mem),
            temperature_c=nan if temp is None else float(temp),
            clocks_event_reasons=0 if reasons is None else int(reasons),
            power_violation_ns=nan if pviol is None else float(pviol.violationTime),
            thermal_violation_ns=nan if tviol is None else float(tviol.violationTime),
            power_limit_w=nan if limit is None else float(limit) / 1000.0,
            gpu_util_pct=nan if util is None else float(util.gpu),
            process_count=-1 if procs is None else len(procs),
        )


def _field_number(value: Any) -> float:
    """The numeric payload of an nvmlFieldValue_t, whatever its declared type."""
    kind = int(value.valueType)
    union = value.value
    if kind == VALUE_TYPE_DOUBLE:
        return float(union.dVal)
    if kind == VALUE_TYPE_UNSIGNED_INT:
        return float(union.uiVal)
    if kind == VALUE_TYPE_UNSIGNED_LONG:
        return float(union.ulVal)
    if kind == VALUE_TYPE_UNSIGNED_LONG_LONG:
        return float(union.ullVal)
    if kind == VALUE_TYPE_SIGNED_LONG_LONG:
        return float(union.sllVal)
    if kind == VALUE_TYPE_SIGNED_INT:
        return float(union.siVal)
    raise DeviceError("nvmlDeviceGetFieldValues", f"unexpected value type {kind}")
