"""A serving engine as a child process of the benchmark: start, wait healthy, watch, stop.
Does I/O (a process, HTTP).

The benchmark measures the GPUs its own pod was given, so an engine that serves the model
must run in that pod. It runs as a child of the benchmark (not a sidecar): the benchmark knows
exactly when it starts and stops, its processes are the ones the work-done gate expects on the
measured GPUs, and its exit is seen at once. The last lines of its output are kept, so a crash
or a start that never becomes healthy is reported with the engine's own words.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

import httpx

from modelgrid_bench.errors import BackendError

log = logging.getLogger(__name__)

#: How many of the engine's last output lines a failure message carries, and how long.
TAIL_LINES = 20
TAIL_CHARS = 600
POLL_S = 0.25
STOP_GRACE_S = 10.0


class EngineError(BackendError):
    """The engine could not start, never became healthy, or died: its last lines included."""


class EngineProcess:
    """One engine: `command` started in its own process group, healthy when `health_url`
    answers 200 within `startup_timeout_s`."""

    def __init__(
        self, command: Sequence[str], health_url: str, *, startup_timeout_s: float
    ) -> None:
        if not command:
            raise EngineError("the engine has no command")
        self.command = list(command)
        self.health_url = health_url
        self.startup_timeout_s = startup_timeout_s
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._proc = subprocess.Popen(
                self.command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: stop() reaches its workers too
            )
        except OSError as exc:
            raise EngineError(f"cannot start the engine {self.command[0]!r}: {exc}") from exc
        self._reader = threading.Thread(target=self._read, name="engine-log", daemon=True)
        self._reader.start()

    def wait_healthy(self) -> float:
        """Seconds it took; EngineError if it exits first or is not healthy in time."""
        start = time.monotonic()
        deadline = start + self.startup_timeout_s
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                self.check_alive("before it became healthy")
                try:
                    if client.get(self.health_url).status_code == 200:
                        return time.monotonic() - start
                except httpx.HTTPError:
                    pass  # not listening yet
                time.sleep(POLL_S)
        raise EngineError(
            f"the engine was not healthy at {self.health_url} within "
            f"{self.startup_timeout_s:g} s{self._tail_text()}"
        )

    def check_alive(self, when: str = "during the run", *, grace_s: float = 0.0) -> None:
        """EngineError if the engine has exited, or exits within `grace_s` (after a failed
        request: a dying engine drops its connections a moment before its process ends)."""
        if self._proc is None:
            raise EngineError("the engine was not started")
        if grace_s > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=grace_s)
        code = self._proc.poll()
        if code is not None:
            if self._reader is not None:
                self._reader.join(timeout=2.0)  # its last words are still in the pipe
            raise EngineError(f"the engine exited with code {code} {when}{self._tail_text()}")

    def stop(self) -> int | None:
        """Stop the engine (SIGTERM to its group, SIGKILL after a grace); its exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def tail(self) -> list[str]:
        return list(self._tail)

    # -- internals ------------------------------------------------------------------------

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):  # it is gone already
            os.killpg(self._proc.pid, sig)

    def _read(self) -> None:
        out = self._proc.stdout if self._proc is not None else None
        if out is None:
            return
        for raw in out:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._tail.append(line)
                log.info("engine: %s", line)

    def _tail_text(self) -> str:
        lines = list(self._tail)
        if not lines:
            return " (it printed nothing)"
        text = " | ".join(lines)
        if len(text) > TAIL_CHARS:
            text = "…" + text[-(TAIL_CHARS - 1) :]
        return f"; its last lines: {text}"
