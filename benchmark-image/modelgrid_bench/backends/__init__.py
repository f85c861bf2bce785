"""Inference backends behind one interface (`modelgrid_bench.backends.base.Backend`).

`transformers` runs a local model in this process, `openai` drives an OpenAI-compatible server
on the same GPU, `synthetic` only paces tokens (simulated). Heavy imports happen in `load()`.
"""

from modelgrid_bench.backends.base import Backend, BatchTiming, GenerationParams, open_backend

__all__ = ["Backend", "BatchTiming", "GenerationParams", "open_backend"]
