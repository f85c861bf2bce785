"""The device layer and NvmlSource against a hand-written fake NVML (tests/fake_nvml.py)."""

from __future__ import annotations

import importlib.metadata
import math
import sys
from collections.abc import Callable
from typing import Any

import pytest

from modelgrid_bench import device
from modelgrid_bench.device import NvmlDevices
from modelgrid_bench.errors import DeviceError, RefusedError
from modelgrid_bench.sources import NvmlSource, SystemInfo
from modelgrid_contract.reasons import ExitCode, Reason
from modelgrid_contract.result import PowerSourceKind
from tests.fake_nvml import (
    FI_DEV_POWER_AVERAGE,
    FI_DEV_POWER_INSTANT,
    FI_DEV_TOTAL_ENERGY_CONSUMPTION,
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NO_PERMISSION,
    FakeGpu,
    FakeNvml,
    ManualClock,
    ProcessInfo,
    constant,
)

T0 = 1_700_000_000.0


def ramp(t: float) -> float:
    return 200.0 + 100.0 * t


def two_gpus(**kw: Any) -> list[FakeGpu]:
    return [
        FakeGpu(name="NVIDIA H200", uuid="GPU-aaaa", power_w=ramp, **kw),
        FakeGpu(name="NVIDIA H200", uuid="GPU-bbbb", power_w=constant(450.0)),
    ]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def fake(clock: ManualClock) -> FakeNvml:
    return FakeNvml(two_gpus(), clock=clock)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch, fake: FakeNvml) -> FakeNvml:
    """The fake as the module `load_nvml()` imports."""
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


# -- (a) one read: instant, 1-s average, energy, from one call per GPU --------------------


def test_read_fast_values_units_and_timestamps(fake: FakeNvml, clock: ManualClock) -> None:
    dev = NvmlDevices.open(fake)
    clock.advance(0.35)
    r0, r1 = dev.read_fast(0), dev.read_fast(1)

    assert (r0.gpu, r1.gpu) == (0, 1)
    assert r0.power_w == pytest.approx(235.0, abs=1e-3)  # 200 + 100 * 0.35, mW -> W
    assert r0.power_avg_w == pytest.approx(217.5, abs=1e-2)  # mean of the ramp over [0, 0.35]
    # The counter last updated at 0.3 s: offset 5000 J + integral of the ramp over [0, 0.3].
    assert r0.energy_j == pytest.approx(5000.0 + 60.0 + 4.5, abs=1e-3)
    assert r0.power_ts_us == round((T0 + 0.35) * 1e6)
    assert r0.energy_ts_us == round((T0 + 0.3) * 1e6)

    assert r1.power_w == pytest.approx(450.0)
    assert r1.power_avg_w == pytest.approx(450.0)
    assert r1.energy_j == pytest.approx(5000.0 + 450.0 * 0.3, abs=1e-3)


def test_read_fast_is_one_field_values_call_per_gpu(fake: FakeNvml, clock: ManualClock) -> None:
    dev = NvmlDevices.open(fake)
    fake.calls.clear()
    clock.advance(0.2)
    src = NvmlSource(dev)
    readings = src.read_fast()
    assert [r.gpu for r in readings] == [0, 1]
    assert fake.calls == {"nvmlDeviceGetFieldValues": 2}
    src.read_fast()
    assert fake.calls == {"nvmlDeviceGetFieldValues": 4}


def test_energy_counter_steps_every_100ms(fake: FakeNvml, clock: ManualClock) -> None:
    dev = NvmlDevices.open(fake)
    clock.advance(0.31)
    a = dev.read_fast(1)
    clock.advance(0.07)  # 0.38 s: same counter update as 0.31 s
    b = dev.read_fast(1)
    clock.advance(0.04)  # 0.42 s: one update later
    c = dev.read_fast(1)
    assert a.energy_j == b.energy_j
    assert a.energy_ts_us == b.energy_ts_us
    assert a.power_ts_us is not None
    assert b.power_ts_us is not None
    assert b.power_ts_us > a.power_ts_us
    assert c.energy_j - b.energy_j == pytest.approx(450.0 * 0.1, abs=1e-3)
    assert c.energy_ts_us is not None
    assert b.energy_ts_us is not None
    assert c.energy_ts_us - b.energy_ts_us == 100_000


def test_open_probes_the_three_fields_once_per_gpu(fake: FakeNvml) -> None:
    dev = NvmlDevices.open(fake)
    assert dev.count == 2
    assert fake.calls["nvmlDeviceGetFieldValues"] == 2
    assert dev.instant_supported == [True, True]
    assert dev.average_supported == [True, True]
    assert dev.energy_supported == [True, True]
    assert dev.notes == []
    info = NvmlSource(dev).info()
    assert info.kind == PowerSourceKind.NVML
    assert info.instant_power_field is True
    assert info.energy_counter is True
    assert info.simulated is False
    assert "2 GPU" in info.detail


# -- (b) fallbacks ------------------------------------------------------------------------


def test_instant_unsupported_falls_back_to_power_usage(clock: ManualClock) -> None:
    fake = FakeNvml(
        [
            FakeGpu(power_w=constant(300.0)),
            FakeGpu(power_w=ramp, unsupported_fields={FI_DEV_POWER_INSTANT}),
        ],
        clock=clock,
    )
    dev = NvmlDevices.open(fake)
    clock.advance(0.5)
    fake.calls.clear()
    r0, r1 = dev.read_fast(0), dev.read_fast(1)
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 1  # only for GPU 1
    assert fake.calls["nvmlDeviceGetFieldValues"] == 2
    assert r0.power_w == pytest.approx(300.0)
    assert r0.power_ts_us is not None
    # nvmlDeviceGetPowerUsage is the one-second average: 225 W for the ramp over [0, 0.5].
    assert r1.power_w == pytest.approx(225.0, abs=1e-2)
    assert r1.power_ts_us is None
    assert not math.isnan(r1.energy_j)

    assert dev.instant_supported == [True, False]
    assert len(dev.notes) == 1
    assert "GPU 1" in dev.notes[0]
    assert "NVML_FI_DEV_POWER_INSTANT" in dev.notes[0]
    assert "nvmlDeviceGetPowerUsage" in dev.notes[0]
    info = NvmlSource(dev).info()
    assert info.instant_power_field is False
    assert info.energy_counter is True
    assert info.notes == dev.notes


def test_energy_unsupported_is_nan_with_a_note(clock: ManualClock) -> None:
    fake = FakeNvml(
        [FakeGpu(), FakeGpu(unsupported_fields={FI_DEV_TOTAL_ENERGY_CONSUMPTION})], clock=clock
    )
    dev = NvmlDevices.open(fake)
    clock.advance(0.25)
    r0, r = dev.read_fast(0), dev.read_fast(1)
    assert r0.energy_j == pytest.approx(5000.0 + 300.0 * 0.2, abs=1e-3)
    assert math.isnan(r.energy_j)
    assert r.energy_ts_us is None
    assert r.power_w == pytest.approx(300.0)
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 0
    assert dev.energy_supported == [True, False]
    assert len(dev.notes) == 1
    assert "GPU 1" in dev.notes[0]
    assert "energy counter unsupported" in dev.notes[0]
    info = NvmlSource(dev).info()
    assert info.energy_counter is False
    assert info.instant_power_field is True


def test_average_unsupported_is_nan(clock: ManualClock) -> None:
    fake = FakeNvml([FakeGpu(unsupported_fields={FI_DEV_POWER_AVERAGE})], clock=clock)
    dev = NvmlDevices.open(fake)
    clock.advance(0.15)
    r = dev.read_fast(0)
    assert math.isnan(r.power_avg_w)
    assert r.power_w == pytest.approx(300.0)
    assert r.energy_j == pytest.approx(5000.0 + 30.0, abs=1e-3)
    assert dev.average_supported == [False]


# -- (c) identity ----------------------------------------------------------------------


def test_identity(clock: ManualClock) -> None:
    fake = FakeNvml(
        [
            FakeGpu(
                name="NVIDIA H100 80GB HBM3",
                uuid="GPU-1234",
                vbios_version="96.00.74.00.01",
                power_limit_mw=700_000,
                memory_total_bytes=80 * 2**30,
                mig_mode=(1, 1),
            ),
            FakeGpu(uuid="GPU-5678", power_limit_mw=350_500, mig_mode=(0, 1)),
        ],
        clock=clock,
    )
    dev = NvmlDevices.open(fake)
    a, b = dev.identity(0), dev.identity(1)
    assert a.index == 0
    assert a.name == "NVIDIA H100 80GB HBM3"
    assert a.uuid == "GPU-1234"
    assert a.vbios_version == "96.00.74.00.01"
    assert a.power_limit_w == pytest.approx(700.0)
    assert a.memory_total_mib == pytest.approx(81920.0)
    assert a.mig_mode == "enabled"
    assert b.index == 1
    assert b.uuid == "GPU-5678"
    assert b.power_limit_w == pytest.approx(350.5)
    assert b.memory_total_mib == pytest.approx(144 * 1024.0)
    assert b.mig_mode == "disabled"  # current mode, not the pending one

    gpus = NvmlSource(dev).gpus()
    assert [g.uuid for g in gpus] == ["GPU-1234", "GPU-5678"]
    assert gpus[0].mig_mode == "enabled"
    assert gpus[0].power_limit_w == pytest.approx(700.0)


def test_identity_optional_calls_unsupported(clock: ManualClock) -> None:
    unsupported = {
        "nvmlDeviceGetVbiosVersion",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetMigMode",
    }
    fake = FakeNvml([FakeGpu(name="Tesla T4", unsupported_calls=unsupported)], clock=clock)
    ident = NvmlDevices.open(fake).identity(0)
    assert ident.name == "Tesla T4"
    assert ident.vbios_version is None
    assert ident.power_limit_w is None
    assert ident.memory_total_mib is None
    assert ident.mig_mode == "unsupported"


@pytest.mark.parametrize(
    ("raw", "text"), [(12040, "12.4"), (11080, "11.8"), (12020, "12.2"), (13000, "13.0")]
)
def test_cuda_driver_version_formatting(clock: ManualClock, raw: int, text: str) -> None:
    fake = FakeNvml([FakeGpu()], clock=clock, cuda_driver_version=raw)
    assert NvmlDevices.open(fake).cuda_driver_version() == text


def test_system_versions(fake: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    src = NvmlSource(NvmlDevices.open(fake))
    assert src.system() == SystemInfo("550.54.15", "12.4", "12.550.54.15")
    # A binding without nvmlSystemGetNVMLVersion gives an empty NVML version, not an error.
    monkeypatch.setattr(fake, "nvmlSystemGetNVMLVersion", None)
    assert src.system() == SystemInfo("550.54.15", "12.4", "")


# -- (d) slow readings ----------------------------------------------------------------------


def test_read_slow(clock: ManualClock) -> None:
    fake = FakeNvml(
        [
            FakeGpu(
                sm_clock_mhz=1755,
                mem_clock_mhz=2619,
                temperature_c=61,
                clocks_event_reasons=0x4 | 0x20,
                power_violation_ns=123_456,
                thermal_violation_ns=789,
                power_limit_mw=650_000,
                gpu_util_pct=88,
                processes=[ProcessInfo(101), ProcessInfo(202)],
            ),
            FakeGpu(),
        ],
        clock=clock,
    )
    src = NvmlSource(NvmlDevices.open(fake))
    s0, s1 = src.read_slow()
    assert s0.gpu == 0
    assert s0.sm_clock_mhz == 1755.0
    assert s0.mem_clock_mhz == 2619.0
    assert s0.temperature_c == 61.0
    assert s0.clocks_event_reasons == 0x24
    assert s0.power_violation_ns == 123_456.0
    assert s0.thermal_violation_ns == 789.0
    assert s0.power_limit_w == pytest.approx(650.0)
    assert s0.gpu_util_pct == 88.0
    assert s0.process_count == 2
    assert s1.gpu == 1
    assert s1.process_count == 0
    assert s1.power_limit_w == pytest.approx(700.0)


def test_read_slow_unsupported_calls_give_nan_and_defaults(clock: ManualClock) -> None:
    unsupported = {
        "nvmlDeviceGetClockInfo",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlDeviceGetViolationStatus",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetComputeRunningProcesses",
    }
    fake = FakeNvml([FakeGpu(unsupported_calls=unsupported)], clock=clock)
    s = NvmlDevices.open(fake).read_slow(0)
    for name in (
        "sm_clock_mhz",
        "mem_clock_mhz",
        "temperature_c",
        "power_violation_ns",
        "thermal_violation_ns",
        "power_limit_w",
        "gpu_util_pct",
    ):
        assert math.isnan(getattr(s, name)), name
    assert s.clocks_event_reasons == 0
    assert s.process_count == -1
    for call in unsupported:
        assert fake.calls[call] >= 1, call


def test_read_slow_uses_throttle_reasons_on_older_bindings(
    fake: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.gpus[0].clocks_event_reasons = 0x8
    monkeypatch.setattr(fake, "nvmlDeviceGetCurrentClocksEventReasons", None)
    s = NvmlDevices.open(fake).read_slow(0)
    assert s.clocks_event_reasons == 0x8
    assert fake.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 1


# -- (e) every NVML error is a DeviceError naming the call ------------------------------------

Action = Callable[[NvmlDevices], object]

RUNTIME_CALLS: list[tuple[str, Action]] = [
    ("nvmlDeviceGetFieldValues", lambda d: d.read_fast(0)),
    ("nvmlSystemGetDriverVersion", lambda d: d.driver_version()),
    ("nvmlSystemGetCudaDriverVersion", lambda d: d.cuda_driver_version()),
    ("nvmlSystemGetNVMLVersion", lambda d: d.nvml_version()),
    ("nvmlDeviceGetName", lambda d: d.identity(0)),
    ("nvmlDeviceGetUUID", lambda d: d.identity(0)),
    ("nvmlDeviceGetVbiosVersion", lambda d: d.identity(0)),
    ("nvmlDeviceGetEnforcedPowerLimit", lambda d: d.identity(0)),
    ("nvmlDeviceGetMemoryInfo", lambda d: d.identity(0)),
    ("nvmlDeviceGetMigMode", lambda d: d.identity(0)),
    ("nvmlDeviceGetClockInfo", lambda d: d.read_slow(0)),
    ("nvmlDeviceGetTemperature", lambda d: d.read_slow(0)),
    ("nvmlDeviceGetCurrentClocksEventReasons", lambda d: d.read_slow(0)),
    ("nvmlDeviceGetViolationStatus", lambda d: d.read_slow(0)),
    ("nvmlDeviceGetUtilizationRates", lambda d: d.read_slow(0)),
    ("nvmlDeviceGetComputeRunningProcesses", lambda d: d.read_slow(0)),
]


@pytest.mark.parametrize(("call", "action"), RUNTIME_CALLS, ids=[c for c, _ in RUNTIME_CALLS])
def test_runtime_nvml_errors_become_device_errors(
    fake: FakeNvml, call: str, action: Action
) -> None:
    dev = NvmlDevices.open(fake)
    fake.fail(call, NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(DeviceError) as info:
        action(dev)
    err = info.value
    assert err.call == call
    assert err.code == NVML_ERROR_GPU_IS_LOST
    assert str(err) == f"NVML {call} failed: GPU is lost (NVML error 15)"
    assert isinstance(err.__cause__, fake.NVMLError)


def test_power_usage_fallback_error_is_a_device_error(clock: ManualClock) -> None:
    fake = FakeNvml([FakeGpu(unsupported_fields={FI_DEV_POWER_INSTANT})], clock=clock)
    dev = NvmlDevices.open(fake)
    fake.fail("nvmlDeviceGetPowerUsage", NVML_ERROR_NO_PERMISSION)
    with pytest.raises(DeviceError, match="nvmlDeviceGetPowerUsage") as info:
        dev.read_fast(0)
    assert info.value.code == NVML_ERROR_NO_PERMISSION
    assert "Insufficient Permissions" in str(info.value)


@pytest.mark.parametrize(
    "call",
    ["nvmlInit", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetFieldValues"],
)
def test_open_nvml_errors_become_device_errors(fake: FakeNvml, call: str) -> None:
    fake.fail(call, NVML_ERROR_NO_PERMISSION)
    with pytest.raises(DeviceError) as info:
        NvmlDevices.open(fake)
    assert info.value.call == call
    assert info.value.code == NVML_ERROR_NO_PERMISSION
    assert call in str(info.value)
    assert "(NVML error 4)" in str(info.value)


# -- (f) NvmlSource.open refusals ---------------------------------------------------------------


@pytest.mark.parametrize("code", [NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_DRIVER_NOT_LOADED])
def test_open_without_library_or_driver_refuses_no_gpu(installed: FakeNvml, code: int) -> None:
    installed.init_error = code
    with pytest.raises(RefusedError) as info:
        NvmlSource.open()
    err = info.value
    assert err.reason == "NoGPU"
    assert err.refusal == Reason.NO_GPU
    assert err.exit_code == ExitCode.REFUSED
    assert "\n" not in err.message
    assert "replay" in err.message
    assert f"NVML error {code}" in err.message
    assert isinstance(err.__cause__, DeviceError)


def test_open_other_init_errors_are_not_refusals(installed: FakeNvml) -> None:
    installed.init_error = NVML_ERROR_NO_PERMISSION
    with pytest.raises(DeviceError) as info:
        NvmlSource.open()
    assert not isinstance(info.value, RefusedError)
    assert info.value.call == "nvmlInit"


def test_open_with_zero_gpus_refuses_and_shuts_down(
    monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    fake = FakeNvml([], clock=clock)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(RefusedError) as info:
        NvmlSource.open()
    assert info.value.reason == "NoGPU"
    assert "\n" not in info.value.message
    assert "replay" in info.value.message
    assert fake.calls["nvmlShutdown"] == 1
    assert fake.initialized is False


def test_open_when_the_binding_cannot_be_imported_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    with pytest.raises(RefusedError) as info:
        NvmlSource.open()
    assert info.value.reason == "NoGPU"
    assert "cannot import the NVML binding" in info.value.message


def test_open_uses_the_installed_binding(installed: FakeNvml) -> None:
    src = NvmlSource.open()
    assert installed.calls["nvmlInit"] == 1
    assert installed.initialized is True
    assert [g.uuid for g in src.gpus()] == ["GPU-aaaa", "GPU-bbbb"]
    src.close()
    assert installed.initialized is False


# -- (g) the deprecated pynvml shim -----------------------------------------------------------


def _distribution_with(installed_names: set[str]) -> Callable[[str], object]:
    def distribution(name: str) -> object:
        if name in installed_names:
            return object()
        raise importlib.metadata.PackageNotFoundError(name)

    return distribution


def test_deprecated_pynvml_shim_is_refused(
    monkeypatch: pytest.MonkeyPatch, installed: FakeNvml
) -> None:
    monkeypatch.setattr(
        importlib.metadata, "distribution", _distribution_with({"pynvml", "nvidia-ml-py"})
    )
    with pytest.raises(DeviceError) as info:
        device.load_nvml()
    assert info.value.call == "import"
    assert "pip uninstall -y pynvml" in str(info.value)
    with pytest.raises(DeviceError, match="pip uninstall -y pynvml"):
        NvmlDevices.open()
    with pytest.raises(RefusedError, match="pip uninstall -y pynvml"):
        NvmlSource.open()
    assert installed.calls["nvmlInit"] == 0


def test_missing_nvidia_ml_py_is_refused(
    monkeypatch: pytest.MonkeyPatch, installed: FakeNvml
) -> None:
    monkeypatch.setattr(importlib.metadata, "distribution", _distribution_with(set()))
    with pytest.raises(DeviceError, match="'nvidia-ml-py' package is not installed"):
        device.load_nvml()
    assert installed.calls["nvmlInit"] == 0


def test_load_nvml_imports_the_module_in_sys_modules(installed: FakeNvml) -> None:
    # nvidia-ml-py is installed in the test environment and the shim is not.
    assert device.load_nvml() is installed


# -- (h) nvmlShutdown ----------------------------------------------------------------------------


def test_close_shuts_down_once(fake: FakeNvml) -> None:
    src = NvmlSource(NvmlDevices.open(fake))
    assert fake.calls["nvmlShutdown"] == 0
    src.close()
    assert fake.calls["nvmlShutdown"] == 1
    assert fake.initialized is False
    src.close()
    assert fake.calls["nvmlShutdown"] == 1


@pytest.mark.parametrize(
    "call", ["nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetFieldValues"]
)
def test_failed_open_shuts_down(fake: FakeNvml, call: str) -> None:
    fake.fail(call, NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(DeviceError):
        NvmlDevices.open(fake)
    assert fake.calls["nvmlShutdown"] == 1
    assert fake.initialized is False


def test_failed_init_does_not_leave_the_library_initialised(fake: FakeNvml) -> None:
    fake.init_error = NVML_ERROR_DRIVER_NOT_LOADED
    with pytest.raises(DeviceError):
        NvmlDevices.open(fake)
    assert fake.initialized is False
    assert fake.calls["nvmlDeviceGetCount"] == 0


def test_shutdown_error_on_close_is_swallowed(fake: FakeNvml) -> None:
    dev = NvmlDevices.open(fake)
    fake.fail("nvmlShutdown", NVML_ERROR_GPU_IS_LOST)
    dev.close()
    assert fake.calls["nvmlShutdown"] == 1
