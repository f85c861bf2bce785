"""A small OpenAI-compatible server that paces tokens instead of running a model. Does I/O (HTTP).

It stands in for a serving engine (vLLM, SGLang, TGI) wherever no GPU and no engine are at
hand: the sandbox, the control-plane tests, a developer's laptop. It is started exactly as a
real engine is (a child process with a command line, a health endpoint to wait for, a port),
streams completions as server-sent events with usage counts, and says in `/v1/models` that it
is simulated (`owned_by: modelgrid-simulated`), so no result it serves passes for a measured
one. Faults a real engine has are switches: a slow start, never healthy, a crash after so many
tokens, fewer tokens than asked.

    python -m modelgrid_bench.pacedserver --port 8000 --model tiny --step-ms 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from modelgrid_bench import __version__

#: What `/v1/models` says owns the model: the benchmark marks a result served by it simulated.
SIMULATED_OWNER = "modelgrid-simulated"
MAX_TOKENS = 1_000_000


class _State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.model: str = args.model
        self.step_s: float = args.step_ms / 1000.0
        self.short_by: int = args.short_by
        self.crash_after: int | None = args.crash_after_tokens
        self.never_healthy: bool = args.never_healthy
        self.ready_at = time.monotonic() + args.start_delay_s
        self.batch_cost: float = args.batch_cost_pct / 100.0
        self.tokens_served = 0
        self.active = 0
        self.lock = threading.Lock()

    def step_s_now(self) -> float:
        """One decode step with `active` sequences in flight: each one more costs
        `batch_cost` of a step (a batched engine's throughput grows less than linearly)."""
        with self.lock:
            others = max(self.active - 1, 0)
        return self.step_s * (1.0 + self.batch_cost * others)

    def healthy(self) -> bool:
        return not self.never_healthy and time.monotonic() >= self.ready_at

    def count_token(self) -> None:
        with self.lock:
            self.tokens_served += 1
            crash = self.crash_after is not None and self.tokens_served >= self.crash_after
        if crash:
            print(
                f"pacedserver: simulated crash after {self.tokens_served} tokens",
                file=sys.stderr,
                flush=True,
            )
            os._exit(70)  # as an engine dies: at once, mid-stream, no cleanup


class _Handler(BaseHTTPRequestHandler):
    """The routes of the paced server, over the `state` a subclass is given."""

    protocol_version = "HTTP/1.1"
    state: _State

    def log_message(self, format: str, *args: Any) -> None:
        return  # one line a request would drown the engine's own log

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if not self.state.healthy():
            self._json(503, {"error": "starting"})
        elif self.path == "/health":
            self._json(200, {"status": "ok"})
        elif self.path == "/version":
            self._json(200, {"version": f"modelgrid-paced {__version__}"})
        elif self.path == "/v1/models":
            models = [{"id": self.state.model, "object": "model", "owned_by": SIMULATED_OWNER}]
            self._json(200, {"object": "list", "data": models})
        else:
            self._json(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": "the body is not JSON"})
            return
        if self.path != "/v1/completions":
            self._json(404, {"error": f"no route {self.path}"})
        elif not self.state.healthy():
            self._json(503, {"error": "starting"})
        elif body.get("model") != self.state.model:
            self._json(404, {"error": f"model {body.get('model')!r} not found"})
        else:
            self._stream(body)

    def _stream(self, body: dict[str, Any]) -> None:
        prompts = body.get("prompt")
        prompts = prompts if isinstance(prompts, list) else [prompts or ""]
        asked = max(0, min(int(body.get("max_tokens") or 16), MAX_TOKENS))
        given = max(0, asked - self.state.short_by)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with self.state.lock:
            self.state.active += len(prompts)
        try:
            for _ in range(given):
                time.sleep(self.state.step_s_now())  # one decode step serves the whole batch
                for index in range(len(prompts)):
                    self.state.count_token()
                    self._event({"choices": [{"index": index, "text": " tok"}]})
        finally:
            with self.state.lock:
                self.state.active -= len(prompts)
        usage = {
            "prompt_tokens": sum(max(1, len(str(p)) // 4) for p in prompts),
            "completion_tokens": given * len(prompts),
        }
        self._event({"choices": [], "usage": usage})
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _event(self, obj: dict[str, Any]) -> None:
        self._chunk(f"data: {json.dumps(obj)}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    """A handler class serving `state` (one per server)."""
    return type("Handler", (_Handler,), {"state": state})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m modelgrid_bench.pacedserver",
        description="an OpenAI-compatible server that paces tokens (simulated, no model)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default="paced")
    p.add_argument("--step-ms", type=float, default=20.0, help="one decode step (all prompts)")
    p.add_argument("--start-delay-s", type=float, default=0.0, help="unhealthy until then")
    p.add_argument("--never-healthy", action="store_true", help="answer 503 for ever")
    p.add_argument("--crash-after-tokens", type=int, help="exit 70 after serving this many")
    p.add_argument("--short-by", type=int, default=0, help="serve this many tokens fewer")
    p.add_argument(
        "--batch-cost-pct",
        type=float,
        default=2.0,
        help="a decode step grows by this share for every other sequence in flight",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.step_ms, args.short_by, args.start_delay_s, args.batch_cost_pct) < 0:
        print(
            "pacedserver: error: --step-ms, --short-by, --start-delay-s and --batch-cost-pct "
            "must be >= 0",
            file=sys.stderr,
        )
        return 2
    try:
        server = ThreadingHTTPServer((args.host, args.port), _handler(_State(args)))
    except OSError as exc:
        print(f"pacedserver: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    server.daemon_threads = True
    print(
        f"pacedserver: serving {args.model} on {args.host}:{server.server_address[1]} "
        "(simulated: paced tokens, no model)",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
