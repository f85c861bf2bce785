"""The backend interface and the factory that picks one. Pure apart from the factory's imports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from modelgrid_bench.errors import BadInputError
from modelgrid_contract.result import BackendInfo

Clock = Callable[[], float]


@dataclass(frozen=True)
class GenerationParams:
    input_tokens: int
    output_tokens: int
    temperature: float
    top_p: float
    seed: int


@dataclass(frozen=True)
class BatchTiming:
    """One batch on the sampler clock. Per prompt: first token time and token counts."""

    start_s: float
    first_token_s: list[float]
    end_s: float
    input_tokens: list[int]
    output_tokens: list[int]


class Backend(Protocol):
    #: Compute processes this backend expects on each GPU (its own, or the server's).
    gpu_processes: int

    def info(self) -> BackendInfo: ...

    def load(self) -> None: ...

    def generate(
        self, prompts: list[str], params: GenerationParams, clock: Clock
    ) -> BatchTiming: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendOptions:
    kind: str
    model: str
    endpoint: str | None = None
    served_model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    engine_extensions: bool = True
    synthetic_step_s: float = 0.002
    synthetic_prefill_s_per_token: float = 0.00002
    #: Address classes besides public that an endpoint may resolve to ("cluster-internal",
    #: "link-local"); None leaves it unchecked (a developer's local run).
    endpoint_access: frozenset[str] | None = None
    #: The `server` backend's engine: its command line, port and start-up time.
    engine_command: tuple[str, ...] = ()
    engine_port: int = 8000
    engine_startup_timeout_s: float = 600.0
    #: a preset engine (vllm, sglang, tgi) whose command the benchmark builds, or custom
    engine: str = "custom"
    engine_args: tuple[str, ...] = ()
    #: GPUs the engine shards the model over (one tensor-parallel rank each)
    engine_gpus: int = 1


def open_backend(opts: BackendOptions) -> Backend:
    if opts.kind == "synthetic":
        from modelgrid_bench.backends.synthetic import SyntheticBackend

        return SyntheticBackend(
            opts.model, opts.synthetic_step_s, opts.synthetic_prefill_s_per_token
        )
    if opts.kind == "transformers":
        from modelgrid_bench.backends.hf import TransformersBackend

        return TransformersBackend(opts.model, device=opts.device, dtype=opts.dtype)
    if opts.kind == "openai":
        from modelgrid_bench.backends.openai import OpenAIBackend

        if not opts.endpoint:
            raise BadInputError(
                "the openai backend needs --endpoint URL (e.g. http://127.0.0.1:8000)"
            )
        return OpenAIBackend(
            opts.endpoint,
            opts.served_model or opts.model,
            extensions=opts.engine_extensions,
            access=opts.endpoint_access,
        )
    if opts.kind == "server":
        from modelgrid_bench.backends.server import ServerBackend
        from modelgrid_bench.engine import preset_command
        from modelgrid_contract.engines import EngineName

        try:
            engine = EngineName(opts.engine)
        except ValueError:
            raise BadInputError(
                f"--engine {opts.engine!r}: use vllm, sglang, tgi or custom"
            ) from None
        if engine is EngineName.CUSTOM and not opts.engine_command:
            raise BadInputError("the server backend needs --engine-command (the engine to start)")
        if not 1 <= opts.engine_port <= 65535 or opts.engine_startup_timeout_s <= 0:
            raise BadInputError(
                "--engine-port must be 1-65535 and --engine-startup-timeout-s positive"
            )
        served = opts.served_model or opts.model
        command = preset_command(
            engine,
            model=opts.model,
            served_model=served,
            port=opts.engine_port,
            gpus=max(opts.engine_gpus, 1),
            args=opts.engine_args,
            command=opts.engine_command,
        )
        return ServerBackend(
            command,
            port=opts.engine_port,
            model=served,
            startup_timeout_s=opts.engine_startup_timeout_s,
            engine=engine,
            args=opts.engine_args,
            extensions=opts.engine_extensions,
        )
    raise BadInputError(
        f"unknown backend {opts.kind!r}: use transformers, server, openai or synthetic"
    )
