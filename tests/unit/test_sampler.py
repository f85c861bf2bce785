"""The background sampler over NvmlSource(fake NVML) and over a tiny fake power source.

Timing on CI machines is noisy: these tests assert on counts and structure with generous
bounds, and each runs well under a few seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from modelgrid_bench.device import FastReading, NvmlDevices, SlowReading
from modelgrid_bench.errors import DeviceError
from modelgrid_bench.sampler import MAX_CONSECUTIVE_ERRORS, Sampler
from modelgrid_bench.sources import NvmlSource, SystemInfo
from modelgrid_contract.result import GpuInfo, PowerSourceInfo, PowerSourceKind
from tests.fake_nvml import FakeGpu, FakeNvml, constant

NAN = float("nan")


class TinySource:
    """A minimal PowerSource: fixed readings, optionally failing on chosen reads (1-based)."""

    kind = PowerSourceKind.SYNTHETIC

    def __init__(
        self,
        gpus: int = 1,
        fail_fast: set[int] | None = None,
        fail_all: bool = False,
        stall: dict[int, float] | None = None,
    ) -> None:
        self.n_gpus = gpus
        self.stall = stall or {}
        self.fail_fast = fail_fast or set()
        self.fail_all = fail_all
        self.fast_calls = 0
        self.slow_calls = 0
        self.lock = threading.Lock()

    def info(self) -> PowerSourceInfo:
        return PowerSourceInfo(kind=self.kind, instant_power_field=True, energy_counter=True)

    def system(self) -> SystemInfo:
        return SystemInfo("tiny", "tiny", "tiny")

    def gpus(self) -> list[GpuInfo]:
        return []

    def read_fast(self) -> list[FastReading]:
        with self.lock:
            self.fast_calls += 1
            n = self.fast_calls
        if n in self.stall:
            time.sleep(self.stall[n])
        if self.fail_all or n in self.fail_fast:
            raise DeviceError("nvmlDeviceGetFieldValues", "GPU is lost", 15)
        return [FastReading(g, 100.0 + g, 99.0, float(n), None, None) for g in range(self.n_gpus)]

    def read_slow(self) -> list[SlowReading]:
        with self.lock:
            self.slow_calls += 1
        return [
            SlowReading(g, 1500.0, 2600.0, 40.0, 0, 0.0, 0.0, 700.0, 50.0, 1)
            for g in range(self.n_gpus)
        ]

    def close(self) -> None:
        return None


def run_for(sampler: Sampler, seconds: float) -> float:
    """Start, sleep, stop; returns the elapsed wall time between start and stop."""
    t0 = time.monotonic()
    sampler.start()
    time.sleep(seconds)
    sampler.stop()
    return time.monotonic() - t0


def wait_until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.005)


def test_interval_bounds_are_enforced() -> None:
    src = TinySource()
    for bad in (0.0, 0.004, 0.0049, 1.001, 5.0, -0.025, NAN):
        with pytest.raises(ValueError, match="between 5 and 1000 ms"):
            Sampler(src, interval_s=bad)
    for ok in (0.005, 0.025, 1.0):
        assert Sampler(src, interval_s=ok).interval_s == ok


def test_achieved_interval_and_no_catch_up_bursts() -> None:
    interval = 0.01
    s = Sampler(TinySource(), interval_s=interval, telemetry_interval_s=0.1)
    elapsed = run_for(s, 0.5)
    tr = s.trace()
    n = tr.t_s.size
    # Never more reads than the schedule allows (no bursts), and not starved either.
    assert n <= elapsed / interval + 2
    assert n >= 0.3 * 0.5 / interval
    assert np.all(np.diff(tr.t_s) > 0)
    assert 0.5 * interval <= float(np.median(np.diff(tr.t_s))) <= 3 * interval
    assert tr.t_s[0] >= 0.0
    assert tr.t_s[-1] <= s.now_s()
    assert s.read_errors == 0
    assert s.error is None


def test_a_stall_shows_as_a_gap_not_a_catch_up_burst() -> None:
    interval = 0.02
    src = TinySource(stall={5: 0.3})
    s = Sampler(src, interval_s=interval, telemetry_interval_s=1.0)
    s.start()
    wait_until(lambda: src.fast_calls >= 20)
    s.stop()
    dt = np.diff(s.trace().t_s)
    assert dt.max() >= 0.25  # the stall is visible in the timestamps
    # After falling behind the sampler resumes from now: at most one immediate read (plus
    # scheduler noise), not the ~15 back-to-back reads a catch-up would make.
    assert int(np.sum(dt < 0.3 * interval)) <= 4


def test_telemetry_at_its_lower_rate() -> None:
    src = TinySource(gpus=2)
    s = Sampler(src, interval_s=0.01, telemetry_interval_s=0.1)
    run_for(s, 0.6)
    tr, tel = s.trace(), s.telemetry()
    fast_t = np.unique(tr.t_s)
    slow_t = np.unique(tel.get("t_s"))
    assert src.slow_calls == slow_t.size
    assert 2 <= slow_t.size < fast_t.size / 3
    # Slow reads happen in the same iteration as a fast read, at its timestamp ...
    assert np.isin(slow_t, fast_t).all()
    # ... and never closer together than the telemetry interval.
    assert np.all(np.diff(slow_t) >= 0.1 - 1e-9)
    # One row per GPU per read, on both paths.
    assert tr.t_s.size == 2 * fast_t.size
    assert tel.size == 2 * slow_t.size
    assert sorted(set(tel.get("gpu").tolist())) == [0.0, 1.0]
    assert tel.get("sm_clock_mhz")[0] == 1500.0
    assert tel.get("process_count")[0] == 1.0
    assert [r.gpu for r in s.last_slow()][-2:] == [0, 1]


def test_trace_over_nvml_source_maps_nvml_timestamps_onto_the_sampler_clock() -> None:
    fake = FakeNvml([FakeGpu(power_w=constant(300.0)), FakeGpu(power_w=lambda t: 400.0 + 10.0 * t)])
    src = NvmlSource(NvmlDevices.open(fake))
    s = Sampler(src, interval_s=0.01, telemetry_interval_s=0.2)
    run_for(s, 0.5)
    src.close()
    tr = s.trace()
    assert tr.gpus == [0, 1]
    g0, g1 = tr.for_gpu(0), tr.for_gpu(1)
    assert g0.t_s.size == g1.t_s.size >= 10
    assert np.allclose(g0.power_w, 300.0)
    assert np.all((g1.power_w >= 400.0) & (g1.power_w <= 420.0))
    # Power is stamped when read: within a second (in practice milliseconds) of t_s.
    assert np.all(np.isfinite(tr.power_ts_s))
    assert np.all(np.abs(tr.power_ts_s - tr.t_s) < 1.0)
    assert float(np.median(np.abs(tr.power_ts_s - tr.t_s))) < 0.1
    # The energy counter is stamped at its last update, at most ~100 ms before the read.
    lag = tr.t_s - tr.energy_ts_s
    assert np.all(lag > -0.05)
    assert np.all(lag < 1.0)
    assert np.all(np.diff(g0.energy_j) >= 0)
    assert g0.energy_j[-1] > g0.energy_j[0]
    assert s.telemetry().size >= 2


def test_source_without_nvml_timestamps_gives_nan() -> None:
    s = Sampler(TinySource(), interval_s=0.01)
    run_for(s, 0.1)
    tr = s.trace()
    assert tr.t_s.size >= 1
    assert np.all(np.isnan(tr.power_ts_s))
    assert np.all(np.isnan(tr.energy_ts_s))


def test_some_read_errors_are_counted_and_sampling_continues() -> None:
    src = TinySource(fail_fast={2, 5, 6, 9})
    s = Sampler(src, interval_s=0.005, telemetry_interval_s=0.1)
    s.start()
    wait_until(lambda: src.fast_calls >= 30)
    s.stop()
    assert src.fast_calls >= 30
    assert s.read_errors == 4
    assert s.error is None
    assert s.trace().t_s.size == src.fast_calls - 4
    # The failed reads' energy values (the call number) are missing from the trace.
    assert not {2.0, 5.0, 6.0, 9.0} & set(s.trace().energy_j.tolist())


def test_transient_nvml_errors_are_counted_and_sampling_continues() -> None:
    fake = FakeNvml([FakeGpu()])
    src = NvmlSource(NvmlDevices.open(fake))
    s = Sampler(src, interval_s=0.005, telemetry_interval_s=0.1)
    fake.fail("nvmlDeviceGetFieldValues", 15, times=3)
    s.start()
    wait_until(lambda: fake.calls["nvmlDeviceGetFieldValues"] >= 25)
    s.stop()
    src.close()
    assert s.read_errors == 3
    assert s.error is None
    assert s.trace().t_s.size >= 20


def test_consecutive_errors_below_the_limit_do_not_stop_the_sampler() -> None:
    limit = MAX_CONSECUTIVE_ERRORS
    # Two runs of limit-1 failures separated by one good read: 2 * (limit - 1) errors in all.
    fail = set(range(1, limit)) | set(range(limit + 1, 2 * limit))
    src = TinySource(fail_fast=fail)
    s = Sampler(src, interval_s=0.005)
    s.start()
    wait_until(lambda: src.fast_calls >= 2 * limit + 5)
    s.stop()
    assert s.error is None
    assert s.read_errors == 2 * (limit - 1)
    assert s.trace().t_s.size == src.fast_calls - 2 * (limit - 1)


def test_persistent_errors_stop_the_sampler() -> None:
    src = TinySource(fail_all=True)
    s = Sampler(src, interval_s=0.005)
    s.start()
    wait_until(lambda: s.error is not None)
    assert isinstance(s.error, DeviceError)
    assert s.error.call == "nvmlDeviceGetFieldValues"
    assert s._thread is not None
    s._thread.join(timeout=2.0)
    assert not s._thread.is_alive()
    assert s.read_errors == MAX_CONSECUTIVE_ERRORS
    assert src.fast_calls == MAX_CONSECUTIVE_ERRORS
    assert s.trace().t_s.size == 0
    s.stop()


def test_stop_joins_the_thread_and_reading_stops() -> None:
    src = TinySource()
    s = Sampler(src, interval_s=0.05)
    s.start()
    wait_until(lambda: src.fast_calls >= 2)
    t0 = time.monotonic()
    s.stop()
    assert time.monotonic() - t0 < 1.0  # stop interrupts the wait, it does not sleep it out
    assert s._thread is not None
    assert not s._thread.is_alive()
    calls = src.fast_calls
    time.sleep(0.15)
    assert src.fast_calls == calls
    assert s.trace().t_s.size == calls


def test_start_twice_is_an_error() -> None:
    s = Sampler(TinySource(), interval_s=0.05)
    s.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            s.start()
    finally:
        s.stop()


def test_empty_sampler_gives_empty_trace_and_telemetry() -> None:
    s = Sampler(TinySource())
    assert s.trace().t_s.size == 0
    assert s.telemetry().size == 0
    assert s.last_slow() == []
    assert not math.isnan(s.now_s())
