"""Background power sampler on a monotonic clock. Does I/O (reads the power source in a thread).

The sampler reads every GPU at `interval_s` (default 25 ms, allowed 5-1000 ms) and the slower
telemetry every `telemetry_interval_s`. All times are seconds since the sampler started, on
`time.monotonic_ns`; the timeline of requests uses `now_s()` so both share one clock. NVML's own
per-field timestamps (wall-clock microseconds) are mapped onto that clock for diagnostics.
The sampler measures its own achieved rate and gaps from the timestamps it recorded.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from modelgrid_bench.device import FastReading, SlowReading
from modelgrid_bench.errors import BenchError, DeviceError
from modelgrid_bench.records import TELEMETRY_COLUMNS, Telemetry, Trace
from modelgrid_bench.sources import PowerSource

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.005
MAX_INTERVAL_S = 1.0
MAX_CONSECUTIVE_ERRORS = 20


class Sampler:
    def __init__(
        self, source: PowerSource, interval_s: float = 0.025, telemetry_interval_s: float = 0.5
    ) -> None:
        if not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:
            raise ValueError(
                f"sampling interval must be between {MIN_INTERVAL_S * 1000:.0f} and "
                f"{MAX_INTERVAL_S * 1000:.0f} ms, got {interval_s * 1000:g} ms"
            )
        self.source = source
        self.interval_s = interval_s
        self.telemetry_interval_s = telemetry_interval_s
        self._t0_ns = time.monotonic_ns()
        # Offset that maps NVML's wall-clock timestamps onto the monotonic clock.
        self._wall_minus_mono_ns = time.time_ns() - time.monotonic_ns()
        self._fast: list[tuple[float, FastReading]] = []
        self._slow: list[tuple[float, SlowReading]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.read_errors = 0
        self.error: BenchError | None = None
        self.notes: list[str] = []

    def now_s(self) -> float:
        return (time.monotonic_ns() - self._t0_ns) / 1e9

    def _nvml_ts_s(self, ts_us: int | None) -> float:
        if ts_us is None:
            return float("nan")
        return (ts_us * 1000 - self._wall_minus_mono_ns - self._t0_ns) / 1e9

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        self._thread = threading.Thread(target=self._loop, name="power-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        next_fast = self.now_s()
        next_slow = next_fast
        consecutive = 0
        while not self._stop.is_set():
            try:
                readings = self.source.read_fast()
                t = self.now_s()
                slow: list[SlowReading] = []
                if t >= next_slow:
                    slow = self.source.read_slow()
                    next_slow = t + self.telemetry_interval_s
                with self._lock:
                    self._fast.extend((t, r) for r in readings)
                    self._slow.extend((t, r) for r in slow)
                consecutive = 0
            except DeviceError as exc:
                self.read_errors += 1
                consecutive += 1
                if consecutive == 1:
                    log.warning("sampler read failed: %s", exc.message)
                if consecutive >= MAX_CONSECUTIVE_ERRORS:
                    self.error = exc
                    return
            next_fast += self.interval_s
            now = self.now_s()
            # Fell behind (a descheduled thread, a slow read)? Resume from now instead of
            # bursting to catch up, so the gap shows in the timestamps rather than vanishing.
            next_fast = max(next_fast, now)
            self._stop.wait(max(0.0, next_fast - now))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def trace(self) -> Trace:
        with self._lock:
            fast = list(self._fast)
        if not fast:
            return Trace.empty()
        return Trace(
            t_s=np.array([t for t, _ in fast], dtype=np.float64),
            gpu=np.array([r.gpu for _, r in fast], dtype=np.int64),
            power_w=np.array([r.power_w for _, r in fast], dtype=np.float64),
            power_avg_w=np.array([r.power_avg_w for _, r in fast], dtype=np.float64),
            energy_j=np.array([r.energy_j for _, r in fast], dtype=np.float64),
            power_ts_s=np.array([self._nvml_ts_s(r.power_ts_us) for _, r in fast]),
            energy_ts_s=np.array([self._nvml_ts_s(r.energy_ts_us) for _, r in fast]),
        )

    def telemetry(self) -> Telemetry:
        with self._lock:
            slow = list(self._slow)
        cols: dict[str, np.ndarray] = {name: np.zeros(0) for name in TELEMETRY_COLUMNS}
        if slow:
            cols["t_s"] = np.array([t for t, _ in slow], dtype=np.float64)
            for name in TELEMETRY_COLUMNS[1:]:
                cols[name] = np.array([float(getattr(r, name)) for _, r in slow], dtype=np.float64)
        return Telemetry(cols)

    def last_slow(self) -> list[SlowReading]:
        with self._lock:
            return [r for _, r in self._slow[-8:]]
