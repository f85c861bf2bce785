"""OpenAI-compatible HTTP backend: measures a model served by vLLM, TGI or Ollama on the same GPU.

Does I/O (HTTP). Requests stream (server-sent events) so the first token's arrival is observed.
Exact output length relies on the engine's extensions `min_tokens` and `ignore_eos` (vLLM);
with `extensions=False` they are not sent, and a short completion shows up as a
`token_mismatch` flag, with the server's own token counts used for every per-token figure.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx

from modelgrid_bench.backends.base import BatchTiming, Clock, GenerationParams
from modelgrid_bench.errors import BackendError, BadInputError
from modelgrid_contract.result import BackendInfo
from modelgrid_contract.targets import Target, address_of, allowed, classify_address

log = logging.getLogger(__name__)

TIMEOUT_S = 600.0
CHARS_PER_TOKEN = 4


def sized_prompt(text: str, tokens: int) -> str:
    """Repeat or cut a prompt to about `tokens` tokens (the server reports the exact count)."""
    want = max(tokens * CHARS_PER_TOKEN, 1)
    out = text
    while len(out) < want:
        out = out + " " + text
    return out[:want]


class OpenAIBackend:
    gpu_processes = 1

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        extensions: bool = True,
        access: frozenset[str] | None = None,
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise BadInputError(f"--endpoint must be an http(s) URL, got {endpoint!r}")
        self._endpoint = endpoint.rstrip("/")
        self._model = model
        self._extensions = extensions
        self._access = access
        self._client: httpx.Client | None = None

    def _check_resolved(self) -> None:
        """Refuse an endpoint whose host resolves to an address class the policy does not
        allow (a public-looking name pointing into the cluster, or at a metadata service)."""
        if self._access is None:
            return
        parts = urlsplit(self._endpoint)
        host = parts.hostname or ""
        literal = address_of(host)
        try:
            if literal is not None:
                addresses = [literal]
            else:
                infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
                addresses = [a for a in (address_of(str(i[4][0])) for i in infos) if a]
        except OSError as exc:
            raise BackendError(f"inference endpoint host {host!r} does not resolve") from exc
        for addr in addresses:
            target = classify_address(addr)
            if not allowed(
                target,
                cluster_internal=Target.CLUSTER_INTERNAL.value in self._access,
                link_local=Target.LINK_LOCAL.value in self._access,
            ):
                raise BadInputError(
                    f"inference endpoint host {host!r} resolves to a {target.value} address, "
                    "which the TierPolicy does not allow (spec.endpointAccess)"
                )

    def info(self) -> BackendInfo:
        return BackendInfo(
            kind="openai",
            model=self._model,
            detail=f"{self._endpoint}/v1/completions, "
            f"extensions={'on' if self._extensions else 'off'}",
            simulated=False,
        )

    def load(self) -> None:
        self._check_resolved()
        self._client = httpx.Client(base_url=self._endpoint, timeout=TIMEOUT_S)
        try:
            resp = self._client.get("/v1/models")
        except httpx.HTTPError as exc:
            # The reason stays in the pod's log: the message reaches the tenant, and must not
            # tell an open port from a closed one on a host it may not probe.
            log.error("GET %s/v1/models: %s", self._endpoint, exc)
            raise BackendError(f"inference endpoint {self._endpoint} is unreachable") from exc
        if resp.status_code != 200:
            raise BackendError(f"{self._endpoint}/v1/models answered HTTP {resp.status_code}")

    def generate(self, prompts: list[str], params: GenerationParams, clock: Clock) -> BatchTiming:
        if self._client is None:
            raise BackendError("generate() before load()")
        sized = [sized_prompt(p, params.input_tokens) for p in prompts]
        body: dict[str, Any] = {
            "model": self._model,
            "prompt": sized[0] if len(sized) == 1 else sized,
            "max_tokens": params.output_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self._extensions:
            body.update(min_tokens=params.output_tokens, ignore_eos=True)
        n = len(prompts)
        first: list[float | None] = [None] * n
        chunks = [0] * n
        usage: dict[str, Any] | None = None
        start = clock()
        try:
            with self._client.stream("POST", "/v1/completions", json=body) as resp:
                if resp.status_code != 200:
                    resp.read()
                    # the body goes to the log only: the message is the tenant's to read
                    log.error("completion HTTP %d: %s", resp.status_code, resp.text[:300])
                    raise BackendError(f"completion request failed: HTTP {resp.status_code}")
                for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    event = json.loads(payload)
                    _count_choices(event, clock(), first, chunks)
                    if event.get("usage"):
                        usage = event["usage"]
        except (httpx.HTTPError, json.JSONDecodeError, ValueError) as exc:
            log.error("streaming completion: %s", exc)
            raise BackendError(
                f"streaming completion failed ({type(exc).__name__}); see the pod's log"
            ) from exc
        end = clock()
        if usage and "completion_tokens" in usage:
            # The server's count is the truth for tokens; chunks may carry several tokens.
            per = int(usage["completion_tokens"]) // n
            out_tokens = [per] * n
            in_tokens = [int(usage.get("prompt_tokens", params.input_tokens * n)) // n] * n
        else:
            out_tokens = chunks
            in_tokens = [params.input_tokens] * n
        return BatchTiming(
            start, [f if f is not None else end for f in first], end, in_tokens, out_tokens
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _count_choices(
    event: dict[str, Any], now: float, first: list[float | None], chunks: list[int]
) -> None:
    """One streamed event: a chunk for each prompt with text in it, and the time of its first."""
    for choice in event.get("choices") or []:
        idx = int(choice.get("index", 0))
        if 0 <= idx < len(chunks) and choice.get("text"):
            chunks[idx] += 1
            if first[idx] is None:
                first[idx] = now
