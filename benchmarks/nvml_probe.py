"""Real NVML behaviour on this GPU: update periods, read ages and read cost. Needs a GPU. I/O.

Samples every GPU at 5 ms for `--seconds` while an optional load runs elsewhere, then reports
how often instant power, the one-second average and the energy counter actually change, how old
a value is when read (NVML's field timestamp against the read time), and what one fast and one
slow read cost. Prints JSON; the figures go into docs/measurement.md, section 6.

    python benchmarks/nvml_probe.py --seconds 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from modelgrid_bench.sampler import Sampler
from modelgrid_bench.sources import NvmlSource


def _period_ms(t: np.ndarray, v: np.ndarray) -> float | None:
    ok = np.isfinite(v)
    t, v = t[ok], v[ok]
    changed = np.flatnonzero(np.diff(v) != 0) + 1
    return float(np.median(np.diff(t[changed])) * 1000) if changed.size > 2 else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    source = NvmlSource.open()
    sampler = Sampler(source, interval_s=0.005)
    sampler.start()
    time.sleep(args.seconds)
    sampler.stop()
    trace = sampler.trace()
    gpus = []
    for g in trace.gpus:
        tr = trace.for_gpu(g)
        gpus.append(
            {
                "gpu": g,
                "instant_period_ms": _period_ms(tr.t_s, tr.power_w),
                "average_period_ms": _period_ms(tr.t_s, tr.power_avg_w),
                "energy_period_ms": _period_ms(tr.t_s, tr.energy_j),
                "instant_age_ms": float(np.nanmedian(tr.t_s - tr.power_ts_s) * 1000),
                "energy_age_ms": float(np.nanmedian(tr.t_s - tr.energy_ts_s) * 1000),
            }
        )
    costs = {}
    for name, fn, n in (
        ("read_fast_us", source.read_fast, 2000),
        ("read_slow_us", source.read_slow, 100),
    ):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        costs[name] = (time.perf_counter() - t0) / n * 1e6
    report = {"gpus": [g.name for g in source.gpus()], "per_gpu": gpus, **costs}
    source.close()
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
