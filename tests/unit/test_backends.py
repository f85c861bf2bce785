"""Inference backends: OpenAI-compatible HTTP (against a fake engine on 127.0.0.1), synthetic,
and transformers on CPU with a tiny random-weights model where torch is installed."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from modelgrid_bench.backends.base import BackendOptions, GenerationParams, open_backend
from modelgrid_bench.errors import BackendError, BadInputError
from modelgrid_bench.workload import prompts
from modelgrid_contract.workload import PromptType, Workload

PARAMS = GenerationParams(input_tokens=32, output_tokens=6, temperature=0.0, top_p=1.0, seed=3)


class _FakeEngine(BaseHTTPRequestHandler):
    """Speaks just enough of the OpenAI completions API, streaming one token per event."""

    bodies: ClassVar[list[dict[str, Any]]] = []
    honour_min_tokens: ClassVar[bool] = True

    def log_message(self, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json({"data": [{"id": "fake-model"}]})
        else:
            self.send_error(404)

    def _json(self, obj: object) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if body.get("model") != "fake-model":
            self.send_error(404, "model not found")
            return
        prompts_in = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        n_tokens = body["max_tokens"] if self.honour_min_tokens else max(1, body["max_tokens"] // 2)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        time.sleep(0.03)  # prefill
        for _ in range(n_tokens):
            for i in range(len(prompts_in)):
                event = {"choices": [{"index": i, "text": " tok"}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.005)
        usage = {
            "prompt_tokens": 32 * len(prompts_in),
            "completion_tokens": n_tokens * len(prompts_in),
        }
        self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def engine() -> Iterator[str]:
    _FakeEngine.bodies = []
    _FakeEngine.honour_min_tokens = True
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeEngine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _clock() -> float:
    return time.monotonic()


def test_openai_backend_streams_and_times_the_first_token(engine: str) -> None:
    b = open_backend(BackendOptions(kind="openai", model="fake-model", endpoint=engine))
    b.load()
    try:
        timing = b.generate(["hello there", "second prompt"], PARAMS, _clock)
    finally:
        b.close()
    assert timing.output_tokens == [6, 6]
    assert timing.input_tokens == [32, 32]
    assert all(timing.start_s + 0.025 < ft < timing.end_s for ft in timing.first_token_s)
    body = _FakeEngine.bodies[-1]
    assert body["max_tokens"] == body["min_tokens"] == 6
    assert body["ignore_eos"] is True
    assert body["stream"] is True
    assert len(body["prompt"]) == 2
    assert len(body["prompt"][0]) == 32 * 4  # sized to about input_tokens


def test_openai_backend_reports_short_completions_honestly(engine: str) -> None:
    _FakeEngine.honour_min_tokens = False
    b = open_backend(
        BackendOptions(kind="openai", model="fake-model", endpoint=engine, engine_extensions=False)
    )
    b.load()
    timing = b.generate(["hi"], PARAMS, _clock)
    b.close()
    assert timing.output_tokens == [3]
    assert "min_tokens" not in _FakeEngine.bodies[-1]


def test_openai_backend_errors_are_typed(engine: str) -> None:
    b = open_backend(BackendOptions(kind="openai", model="other-model", endpoint=engine))
    b.load()
    with pytest.raises(BackendError, match="HTTP 404"):
        b.generate(["hi"], PARAMS, _clock)
    b.close()
    dead = open_backend(BackendOptions(kind="openai", model="m", endpoint="http://127.0.0.1:9"))
    with pytest.raises(BackendError, match="unreachable"):
        dead.load()
    with pytest.raises(BadInputError, match="--endpoint"):
        open_backend(BackendOptions(kind="openai", model="m"))


def test_an_engines_error_body_stays_in_the_log_not_in_the_message(engine: str) -> None:
    # The message reaches the tenant's status: what an internal server answers must not.
    b = open_backend(BackendOptions(kind="openai", model="other-model", endpoint=engine))
    b.load()
    with pytest.raises(BackendError) as err:
        b.generate(["hi"], PARAMS, _clock)
    b.close()
    assert str(err.value) == "completion request failed: HTTP 404"
    dead = open_backend(BackendOptions(kind="openai", model="m", endpoint="http://127.0.0.1:9"))
    with pytest.raises(BackendError) as err:
        dead.load()
    assert str(err.value) == "inference endpoint http://127.0.0.1:9 is unreachable"


@pytest.mark.parametrize(
    ("endpoint", "access", "refused_as"),
    [
        ("http://127.0.0.1:9", frozenset(), "cluster-internal"),
        ("http://localhost:9", frozenset(), "cluster-internal"),  # a name: resolved, then judged
        ("http://169.254.169.254", frozenset({"cluster-internal"}), "link-local"),
        ("http://[::ffff:10.0.0.1]:9", frozenset({"link-local"}), "cluster-internal"),
    ],
)
def test_an_endpoint_resolving_where_the_policy_forbids_is_refused_before_any_request(
    endpoint: str, access: frozenset[str], refused_as: str
) -> None:
    b = open_backend(
        BackendOptions(kind="openai", model="m", endpoint=endpoint, endpoint_access=access)
    )
    with pytest.raises(BadInputError, match=f"resolves to a {refused_as} address"):
        b.load()


def test_an_allowed_internal_endpoint_is_called(engine: str) -> None:
    b = open_backend(
        BackendOptions(
            kind="openai",
            model="fake-model",
            endpoint=engine,
            endpoint_access=frozenset({"cluster-internal"}),
        )
    )
    b.load()
    b.close()


def test_end_to_end_against_an_engine_over_http(engine: str, tmp_path: Path) -> None:
    from modelgrid_bench.cli import main

    code = main(
        [
            "run",
            "--backend",
            "openai",
            "--endpoint",
            engine,
            "--model",
            "fake-model",
            "--power-source",
            "replay:builtin:h200-busy",
            "--samples",
            "6",
            "--tokens",
            "100",
            "--batch-size",
            "2",
            "--concurrency",
            "3",
            "--repeats",
            "1",
            "--warmup-samples",
            "0",
            "--idle-baseline-s",
            "0.3",
            "--output-dir",
            str(tmp_path / "o"),
            "--log-level",
            "ERROR",
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert result["pooled"]["output_tokens"] == 600
    assert result["pooled"]["requests"] == 6
    streams = {
        q["stream"]
        for q in json.loads((tmp_path / "o" / "evidence.json").read_text())["timeline"]["runs"][0][
            "requests"
        ]
    }
    assert len(streams) > 1  # the three streams really ran side by side
    assert result["backend"]["simulated"] is False
    assert result["simulated"] is True  # ...but the power was replayed


def test_prompts_are_deterministic_and_typed() -> None:
    w = Workload(samples=5, warmup_samples=2, prompt_type=PromptType.CODE, seed=11)
    assert prompts(w) == prompts(w)
    assert prompts(w) != prompts(w.model_copy(update={"seed": 12}))
    assert all("function" in p for p in prompts(w))
    assert set(prompts(w, warmup=True)).isdisjoint(prompts(w)) or len(prompts(w, warmup=True)) == 2
    t = prompts(w.model_copy(update={"prompt_type": PromptType.TRANSLATION}))
    assert all(p.startswith("Translate into") for p in t)


HAS_TORCH = (
    importlib.util.find_spec("torch") is not None
    and importlib.util.find_spec("transformers") is not None
)


@pytest.mark.torch
@pytest.mark.skipif(not HAS_TORCH, reason="torch and transformers are not installed")
@pytest.mark.timeout(300)
def test_transformers_backend_on_cpu_with_random_weights() -> None:
    b = open_backend(BackendOptions(kind="transformers", model="random:tiny-llama", device="cpu"))
    b.load()
    try:
        greedy = b.generate(["a", "b", "c"], PARAMS, _clock)
        sampled = b.generate(
            ["a"],
            GenerationParams(input_tokens=16, output_tokens=9, temperature=0.8, top_p=0.9, seed=1),
            _clock,
        )
    finally:
        b.close()
    assert greedy.output_tokens == [6, 6, 6]  # exact: EOS cannot end a request early
    assert greedy.input_tokens == [32, 32, 32]
    assert greedy.start_s < greedy.first_token_s[0] < greedy.end_s
    assert sampled.output_tokens == [9]
    info = b.info()
    assert info.kind == "transformers"
    assert not info.simulated
    assert "random weights" in info.detail


@pytest.mark.torch
@pytest.mark.skipif(not HAS_TORCH, reason="torch and transformers are not installed")
def test_transformers_backend_refuses_unknown_architectures_and_remote_code(tmp_path: Path) -> None:
    b = open_backend(BackendOptions(kind="transformers", model="random:gpt-17", device="cpu"))
    with pytest.raises(BadInputError, match="unknown architecture"):
        b.load()
    missing = open_backend(BackendOptions(kind="transformers", model=str(tmp_path), device="cpu"))
    with pytest.raises(BadInputError, match="cannot load model"):
        missing.load()
