"""A backend that only paces tokens, for tests and the sandbox. Simulated. Sleeps; no GPU."""

from __future__ import annotations

import time

from modelgrid_bench.backends.base import BatchTiming, Clock, GenerationParams
from modelgrid_contract.result import BackendInfo


class SyntheticBackend:
    gpu_processes = 0

    def __init__(self, model: str, step_s: float, prefill_s_per_token: float) -> None:
        self._model = model or "synthetic"
        self._step_s = step_s
        self._prefill_s_per_token = prefill_s_per_token

    def info(self) -> BackendInfo:
        return BackendInfo(
            kind="synthetic",
            model=self._model,
            detail=f"paced tokens: {self._step_s * 1000:g} ms/step, "
            f"{self._prefill_s_per_token * 1e6:g} us/prefill token",
            simulated=True,
        )

    def load(self) -> None:
        return None

    def generate(self, prompts: list[str], params: GenerationParams, clock: Clock) -> BatchTiming:
        start = clock()
        time.sleep(self._prefill_s_per_token * params.input_tokens * len(prompts))
        first = clock()
        time.sleep(self._step_s * max(params.output_tokens - 1, 0))
        end = clock()
        n = len(prompts)
        return BatchTiming(
            start, [first] * n, end, [params.input_tokens] * n, [params.output_tokens] * n
        )

    def close(self) -> None:
        return None
