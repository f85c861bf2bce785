"""Generates the built-in replay traces shipped in modelgrid_bench/data. Writes files.

These traces are SYNTHETIC (a seeded model of an H200's power under LLM decode), not recordings:
they exist so the sandbox and the tests have a power source on machines without a GPU, and every
result made from them is marked simulated. The model: a base load with AR(1) ripple (decode
steps), periodic prefill bursts, a slow thermal drift; the energy counter integrates the true
power at 1 ms and, like NVML's, only updates every 100 ms; `power_avg_w` is a trailing 1 s mean.

Usage: python hack/make_replay_traces.py  (deterministic; rerun after changing the model)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "benchmark-image" / "modelgrid_bench" / "data"

IDLE_W = {"h200-decode": 76.0, "h200-busy": 92.0}
LOAD_UTIL_PCT = {"h200-decode": 88.0, "h200-busy": 96.0}
PROFILES = {
    # name: (base W, ripple sigma W, burst W, burst every s, burst length s, drift W, seed)
    "h200-decode": (128.0, 5.0, 40.0, 1.6, 0.05, 4.0, 1),
    "h200-busy": (455.0, 18.0, 190.0, 0.9, 0.08, 15.0, 2),
}
DURATION_S = 30.0
FINE_S = 0.001
SAMPLE_S = 0.01
COUNTER_UPDATE_S = 0.1


def make(name: str) -> None:
    base, sigma, burst, every, length, drift, seed = PROFILES[name]
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, DURATION_S, FINE_S)
    ripple = np.zeros_like(t)
    phi = 0.995
    noise = rng.normal(0.0, sigma * np.sqrt(1 - phi**2), t.size)
    for i in range(1, t.size):
        ripple[i] = phi * ripple[i - 1] + noise[i]
    bursts = np.where((t % every) < length, burst, 0.0)
    power = base + ripple + bursts + drift * np.sin(2 * np.pi * t / DURATION_S)
    energy = np.concatenate(([0.0], np.cumsum(power[1:] * FINE_S)))
    energy += 5.0e6  # the counter counts since driver load, not since the trace began
    sample_idx = np.arange(0, t.size, int(SAMPLE_S / FINE_S))
    rows = []
    for i in sample_idx:
        ts = t[i]
        last_update = np.floor(ts / COUNTER_UPDATE_S) * COUNTER_UPDATE_S
        counter_mj = np.floor(energy[round(last_update / FINE_S)] * 1000.0)
        lo = max(0, i - int(1.0 / FINE_S))
        avg = float(np.mean(power[lo : i + 1]))
        rows.append(
            (round(ts, 6), 0, round(float(power[i]), 3), round(avg, 3), counter_mj / 1000.0)
        )
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / f"{name}.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["t_s", "gpu", "power_w", "power_avg_w", "energy_j", "power_ts_s", "energy_ts_s"]
        )
        for r in rows:
            w.writerow([*r, "nan", "nan"])
    meta = {
        "gpu_name": "NVIDIA H200",
        "synthetic": True,
        "generator": "hack/make_replay_traces.py",
        "profile": dict(
            zip(
                (
                    "base_w",
                    "ripple_sigma_w",
                    "burst_w",
                    "burst_every_s",
                    "burst_length_s",
                    "drift_w",
                    "seed",
                ),
                PROFILES[name],
                strict=True,
            )
        ),
        "sample_interval_s": SAMPLE_S,
        "counter_update_s": COUNTER_UPDATE_S,
        # What the GPU draws with the model loaded and nothing running, and its utilisation
        # under this load: a replay plays the first while the session is idle.
        "idle_w": IDLE_W[name],
        "load_util_pct": LOAD_UTIL_PCT[name],
    }
    (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    for profile in PROFILES:
        make(profile)
        print(OUT / f"{profile}.csv")
