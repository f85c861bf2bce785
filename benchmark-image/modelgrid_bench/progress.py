"""The benchmark's live progress lines (`modelgrid_contract.progress`). Does I/O (stderr, a
heartbeat thread, the monotonic clock).

A line at every stage and run, and the current one again every `HEARTBEAT_S`, so the operator
finds one in the last lines of the log whenever it looks. The time left is estimated from the
requests done so far and the time they took (none before the first request has finished).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from modelgrid_contract.progress import HEARTBEAT_S, Progress, Stage


class ProgressReporter:
    def __init__(self, total_requests: int, out: TextIO | None = None) -> None:
        self._out = out if out is not None else sys.stderr
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._current = Progress(stage=Stage.LOADING, total=total_requests)
        self._work_started: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._emit()
        self._thread = threading.Thread(target=self._beat, name="progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def stage(
        self, stage: Stage, *, run: int = 0, runs: int = 0, level: int = 0, levels: int = 0
    ) -> None:
        """Enter `stage` (for a measured run: run i of n, level j of m, 1-based)."""
        with self._lock:
            if stage in (Stage.WARMUP, Stage.MEASURING) and self._work_started is None:
                self._work_started = time.monotonic()
            self._current = self._current.model_copy(
                update={"stage": stage, "run": run, "runs": runs, "level": level, "levels": levels}
            )
        self._emit()

    def done(self, requests: int) -> None:
        """`requests` more requests finished."""
        with self._lock:
            done = self._current.done + requests
            self._current = self._current.model_copy(update={"done": done})

    def current(self) -> Progress:
        with self._lock:
            return self._current.model_copy(update={"eta_s": self._eta_s()})

    def _eta_s(self) -> float | None:
        p = self._current
        if self._work_started is None or p.done == 0 or p.total == 0:
            return None
        per_request_s = (time.monotonic() - self._work_started) / p.done
        return round(max(p.total - p.done, 0) * per_request_s, 1)

    def _emit(self) -> None:
        line = self.current().line()
        with self._lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (OSError, ValueError):  # a closed stream must not end the measurement
                pass

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._emit()
