"""Hugging Face transformers backend: real inference in this process. Does I/O (loads weights).

Models come from a local directory, from a mounted Hugging Face cache (offline: nothing is
downloaded at run time), or as random weights of a named architecture (`random:llama-3.1-8b`):
power depends on tensor shapes, not on weight values, so the infrastructure can be qualified
without access to the weights. `trust_remote_code` is never enabled and weights load only as
safetensors. Output length is exact: min_new_tokens = max_new_tokens, so EOS cannot end a
request early.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from typing import Any

from modelgrid_bench.backends.base import BatchTiming, Clock, GenerationParams
from modelgrid_bench.errors import BackendError, BadInputError
from modelgrid_contract.result import BackendInfo

RANDOM_PREFIX = "random:"

#: Shapes of real architectures (from their published configs) plus a tiny one for CPU tests.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "tiny-llama": {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 172,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1024,
        "max_position_embeddings": 4096,
    },
    "llama-3.2-1b": {
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": True,
    },
    "llama-3.1-8b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
    },
    "llama-3.1-70b": {
        "model_type": "llama",
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
    },
    "mistral-7b": {
        "model_type": "mistral",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 32768,
        "max_position_embeddings": 32768,
    },
    "qwen2.5-7b": {
        "model_type": "qwen2",
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "max_position_embeddings": 32768,
    },
}


class _FirstToken:
    """A generation streamer that notes when the first generated token arrives.

    transformers calls `put` once with the prompt and then once per step with the new tokens
    (moved to the CPU, which synchronises the device), so the second call is the first token.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._calls = 0
        self.first_token_s: float | None = None

    def put(self, value: Any) -> None:
        self._calls += 1
        if self._calls == 2 and self.first_token_s is None:
            self.first_token_s = self._clock()

    def end(self) -> None:
        return None


class TransformersBackend:
    gpu_processes = 1

    def __init__(self, model: str, *, device: str = "auto", dtype: str = "auto") -> None:
        if not model:
            raise BadInputError(
                "the transformers backend needs --model (a path, a cached id, or random:ARCH)"
            )
        self._model_ref = model
        self._device_pref = device
        self._dtype_pref = dtype
        self._model: Any = None
        self._tokenizer: Any = None
        self._torch: Any = None
        self._device = "cpu"
        self._detail = ""

    def info(self) -> BackendInfo:
        return BackendInfo(
            kind="transformers", model=self._model_ref, detail=self._detail, simulated=False
        )

    def load(self) -> None:
        try:
            # Typed as Any: the engine is an optional dependency and its typing varies by version.
            torch: Any = importlib.import_module("torch")
            transformers: Any = importlib.import_module("transformers")
        except ImportError as exc:
            raise BadInputError(
                "the transformers backend needs torch and transformers: "
                "pip install 'modelgrid[inference]'"
            ) from exc
        self._torch = torch
        want = self._device_pref
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda" and not torch.cuda.is_available():
            raise BadInputError("--device cuda was asked for but torch sees no CUDA device")
        self._device = want
        dtype = {
            "auto": torch.bfloat16 if want == "cuda" else torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
            "float32": torch.float32,
        }.get(self._dtype_pref)
        if dtype is None:
            raise BadInputError(f"unknown --dtype {self._dtype_pref!r}")
        ref = self._model_ref
        try:
            if ref.startswith(RANDOM_PREFIX):
                arch = ref[len(RANDOM_PREFIX) :]
                if arch not in ARCHITECTURES:
                    raise BadInputError(
                        f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}"
                    )
                shape = dict(ARCHITECTURES[arch])
                config = transformers.AutoConfig.for_model(shape.pop("model_type"), **shape)
                torch.manual_seed(0)
                with torch.device(want):
                    self._model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
                self._detail = f"random weights, {arch} shape, {dtype}, {want}"
            else:
                local = os.path.isdir(ref)
                kwargs: dict[str, Any] = {
                    "trust_remote_code": False,
                    "use_safetensors": True,
                    "local_files_only": True,
                }
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(
                    ref, **{k: v for k, v in kwargs.items() if k != "use_safetensors"}
                )
                self._model = transformers.AutoModelForCausalLM.from_pretrained(
                    ref, dtype=dtype, **kwargs
                ).to(want)
                self._detail = f"{'local path' if local else 'model cache'}, {dtype}, {want}"
        except BadInputError:
            raise
        except (OSError, ValueError) as exc:
            raise BadInputError(f"cannot load model {ref!r}: {exc}") from exc
        except Exception as exc:
            raise BackendError(f"loading {ref!r} failed: {exc}") from exc
        self._model.eval()

    def _input_ids(self, prompts: list[str], n_tokens: int, seed: int) -> Any:
        torch = self._torch
        rows = []
        vocab = int(self._model.config.vocab_size)
        for text in prompts:
            if self._tokenizer is not None:
                ids = list(self._tokenizer(text, add_special_tokens=True)["input_ids"])
                if not ids:
                    ids = [0]
                while len(ids) < n_tokens:
                    ids = ids + ids
                ids = ids[:n_tokens]
            else:
                # Random weights have no tokenizer: ids are seeded by the prompt text, so the
                # prompt type and seed still determine the input exactly.
                digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
                gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
                ids = torch.randint(3, vocab, (n_tokens,), generator=gen).tolist()
            rows.append(ids)
        return torch.tensor(rows, dtype=torch.long, device=self._device)

    def generate(self, prompts: list[str], params: GenerationParams, clock: Clock) -> BatchTiming:
        if self._model is None:
            raise BackendError("generate() before load()")
        torch = self._torch
        input_ids = self._input_ids(prompts, params.input_tokens, params.seed)
        streamer = _FirstToken(clock)
        sample = params.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.output_tokens,
            "min_new_tokens": params.output_tokens,
            "do_sample": sample,
            "pad_token_id": 0,
            "streamer": streamer,
        }
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        # Concurrent streams call this from their own threads; torch releases the GIL inside
        # kernels, so batches overlap on the device as they would in a simple server.
        with torch.inference_mode():
            if sample:
                torch.manual_seed(params.seed)
            start = clock()
            try:
                out = self._model.generate(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs
                )
            except Exception as exc:
                raise BackendError(f"generation failed: {exc}") from exc
            if self._device == "cuda":
                torch.cuda.synchronize()
            end = clock()
        produced = int(out.shape[1] - input_ids.shape[1])
        first = streamer.first_token_s if streamer.first_token_s is not None else end
        n = len(prompts)
        return BatchTiming(start, [first] * n, end, [params.input_tokens] * n, [produced] * n)

    def close(self) -> None:
        self._model = None
        if self._torch is not None and self._device == "cuda":
            self._torch.cuda.empty_cache()
