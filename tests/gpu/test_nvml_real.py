"""GPU tier: the device layer and sampler against a real NVIDIA GPU. Skipped where NVML has none."""

from __future__ import annotations

import math
import time

import pytest

from modelgrid_bench.errors import BenchError
from modelgrid_bench.sampler import Sampler
from modelgrid_bench.sources import NvmlSource


def _source() -> NvmlSource:
    try:
        return NvmlSource.open()
    except BenchError as exc:
        pytest.skip(f"no usable NVIDIA GPU: {exc.message}")


pytestmark = pytest.mark.gpu


def test_real_readings_are_physical() -> None:
    src = _source()
    try:
        info = src.info()
        readings = src.read_fast()
        assert readings
        for r in readings:
            assert 5.0 < r.power_w < 2000.0
            if info.energy_counter:
                assert r.energy_j > 0
        gpus = src.gpus()
        assert all(g.uuid.startswith(("GPU-", "MIG-")) for g in gpus)
        assert src.system().driver_version
    finally:
        src.close()


def test_real_sampler_keeps_its_rate_and_the_counter_advances() -> None:
    src = _source()
    try:
        s = Sampler(src, interval_s=0.025)
        s.start()
        time.sleep(2.0)
        s.stop()
        tr = s.trace().for_gpu(0)
        assert tr.t_s.size > 40
        if src.info().energy_counter:
            assert tr.energy_j[-1] > tr.energy_j[0]
        assert all(math.isfinite(x) for x in tr.power_w)
    finally:
        src.close()
