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
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from modelgrid_bench.errors import BackendError, BadInputError
from modelgrid_contract.engines import EngineName, engine_arg_problems
from modelgrid_contract.reasons import ExitCode, Reason

log = logging.getLogger(__name__)

#: How many of the engine's last output lines a failure message carries, and how long.
TAIL_LINES = 20
TAIL_CHARS = 600
POLL_S = 0.25
STOP_GRACE_S = 10.0


try:  # loaded here, so that the forked child only calls it (no dlopen between fork and exec)
    _PRCTL: Any = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: the engine is stopped by stop() alone
    _PRCTL = None


def _die_with_parent() -> None:
    """In the engine's child: SIGKILL when the benchmark dies without stopping it (a killed
    benchmark must not leave an engine holding the GPUs)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class EngineError(BackendError):
    """The engine could not start, never became healthy, or died: its last lines included."""

    reason = Reason.ENGINE_CRASHED.value


class EngineNotHealthyError(EngineError):
    """The engine did not start or answer its health endpoint within its start-up time. Its
    exit code is BAD_INPUT: a configuration that cannot start does not start on a retry, and
    each retry would hold the GPUs for the whole start-up time again."""

    reason = Reason.ENGINE_NOT_HEALTHY.value
    exit_code = ExitCode.BAD_INPUT


#: Where each engine says it is healthy, and where it tells its version (first that answers).
HEALTH_PATH = "/health"
VERSION_PATHS: dict[EngineName, tuple[str, ...]] = {
    EngineName.VLLM: ("/version",),
    EngineName.SGLANG: ("/get_server_info", "/version"),
    EngineName.TGI: ("/info",),
    EngineName.CUSTOM: ("/version", "/info", "/get_server_info"),
}


def preset_command(
    engine: EngineName,
    *,
    model: str,
    served_model: str,
    port: int,
    gpus: int,
    args: Sequence[str] = (),
    command: Sequence[str] = (),
) -> list[str]:
    """The engine's command line: the benchmark's own flags (model, loopback address, port,
    served name, safetensors weights, one tensor-parallel shard per measured GPU unless the
    arguments choose) and then the spec's extra `args`, which may not set the benchmark's.

    A custom engine is its `command` and `args` as given; `python` there means this
    interpreter (in an engine image they are the same one)."""
    problems = engine_arg_problems(list(args))
    if engine is not EngineName.CUSTOM and problems:
        raise BadInputError(f"engine arguments refused: {'; '.join(problems)}")
    given = {a.split("=", 1)[0] for a in args}
    if engine is EngineName.VLLM:
        cmd = ["vllm", "serve", model, "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--served-model-name", served_model, "--load-format", "safetensors"]
        if not given & {"--tensor-parallel-size", "-tp", "--pipeline-parallel-size"}:
            cmd += ["--tensor-parallel-size", str(gpus)]
    elif engine is EngineName.SGLANG:
        cmd = ["python", "-m", "sglang.launch_server", "--model-path", model]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", served_model]
        cmd += ["--load-format", "safetensors"]
        if not given & {"--tp-size", "--tp", "--tensor-parallel-size"}:
            cmd += ["--tp-size", str(gpus)]
    elif engine is EngineName.TGI:
        cmd = ["text-generation-launcher", "--model-id", model]
        cmd += ["--hostname", "127.0.0.1", "--port", str(port)]
        if "--num-shard" not in given:
            cmd += ["--num-shard", str(gpus)]
    else:
        if not command:
            raise BadInputError("a custom engine needs its command")
        cmd = list(command)
    cmd += list(args)
    if cmd[0] in ("python", "python3"):
        cmd[0] = sys.executable
    return cmd


def engine_version(base_url: str, engine: EngineName) -> str:
    """The version the running engine reports ("" when it tells none)."""
    with httpx.Client(timeout=5.0) as client:
        for path in VERSION_PATHS[engine]:
            try:
                data = client.get(f"{base_url}{path}").json()
            except (httpx.HTTPError, ValueError):
                continue
            version = data.get("version") if isinstance(data, dict) else None
            if isinstance(version, str) and version:
                return version[:64]
    return ""


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
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - it calls only a preloaded prctl
            )
        except OSError as exc:
            raise EngineNotHealthyError(
                f"cannot start the engine {self.command[0]!r}: {exc}"
            ) from exc
        self._reader = threading.Thread(target=self._read, name="engine-log", daemon=True)
        self._reader.start()

    def wait_healthy(self) -> float:
        """Seconds it took; EngineError if it exits first or is not healthy in time."""
        start = time.monotonic()
        deadline = start + self.startup_timeout_s
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                self.check_alive("before it became healthy", before_healthy=True)
                try:
                    if client.get(self.health_url).status_code == 200:
                        return time.monotonic() - start
                except httpx.HTTPError:
                    pass  # not listening yet
                time.sleep(POLL_S)
        raise EngineNotHealthyError(
            f"the engine was not healthy at {self.health_url} within "
            f"{self.startup_timeout_s:g} s{self._tail_text()}"
        )

    def check_alive(
        self, when: str = "during the run", *, grace_s: float = 0.0, before_healthy: bool = False
    ) -> None:
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
            error = EngineNotHealthyError if before_healthy else EngineError
            raise error(f"the engine exited with code {code} {when}{self._tail_text()}")

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
