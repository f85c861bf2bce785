"""The `server` backend: a serving engine the benchmark starts in its own pod, on the GPUs it
measures, driven over its OpenAI-compatible API. Does I/O (a process, HTTP).

The engine is a child process (`modelgrid_bench.engine`): started on `load()`, healthy within
its start-up time or refused, watched after every batch (a crash is reported with its last
lines), stopped on `close()`. Requests go to it on the loopback interface. A model the engine
says is `modelgrid-simulated` (the paced server) makes the result simulated.
"""

from __future__ import annotations

import httpx

from modelgrid_bench.backends.base import BatchTiming, Clock, GenerationParams
from modelgrid_bench.backends.openai import OpenAIBackend
from modelgrid_bench.engine import HEALTH_PATH, EngineProcess, engine_version
from modelgrid_bench.errors import BackendError
from modelgrid_bench.pacedserver import SIMULATED_OWNER
from modelgrid_contract.engines import EngineName
from modelgrid_contract.result import BackendInfo, EngineInfo

#: After a failed request, how long the engine has to show that it died.
FAILED_REQUEST_GRACE_S = 5.0


class ServerBackend:
    #: The engine's own processes on each GPU (one a GPU for vLLM, SGLang and TGI workers).
    gpu_processes = 1

    def __init__(
        self,
        command: list[str],
        *,
        port: int,
        model: str,
        startup_timeout_s: float,
        engine: EngineName = EngineName.CUSTOM,
        args: tuple[str, ...] = (),
        health_path: str = HEALTH_PATH,
        extensions: bool = True,
    ) -> None:
        self._name = engine
        self._args = list(args)
        self._version = ""
        self._base = f"http://127.0.0.1:{port}"
        self._engine = EngineProcess(
            command, f"{self._base}{health_path}", startup_timeout_s=startup_timeout_s
        )
        self._client = OpenAIBackend(self._base, model, extensions=extensions)
        self._model = model
        self._served_by = ""
        self._startup_s = 0.0

    def info(self) -> BackendInfo:
        simulated = self._served_by == SIMULATED_OWNER
        return BackendInfo(
            kind="server",
            model=self._model,
            detail=f"engine {self._name.value} ({self._engine.command[0]}) on {self._base}",
            simulated=simulated,
            engine=EngineInfo(
                name=self._name.value,
                version=self._version,
                command=self._engine.command[:96],
                args=self._args[:32],
                served_by=self._served_by,
                startup_s=round(self._startup_s, 3),
            ),
        )

    def load(self) -> None:
        self._engine.start()
        self._startup_s = self._engine.wait_healthy()
        self._client.load()
        self._served_by = self._owner()
        self._version = engine_version(self._base, self._name)

    def _owner(self) -> str:
        try:
            data = httpx.get(f"{self._base}/v1/models", timeout=10.0).json()
            models = data.get("data") or []
            mine = [m for m in models if isinstance(m, dict) and m.get("id") == self._model]
            return str((mine or models or [{}])[0].get("owned_by") or "")
        except (httpx.HTTPError, ValueError, AttributeError, IndexError):
            return ""

    def generate(self, prompts: list[str], params: GenerationParams, clock: Clock) -> BatchTiming:
        try:
            timing = self._client.generate(prompts, params, clock)
        except BackendError as exc:
            # a dead engine says so, with its last lines; a live one leaves the request's error
            self._engine.check_alive(grace_s=FAILED_REQUEST_GRACE_S)
            raise exc
        self._engine.check_alive()
        return timing

    def close(self) -> None:
        self._client.close()
        self._engine.stop()
