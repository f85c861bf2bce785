"""A serving engine as the benchmark's child process, with the paced server standing in for
vLLM: start, health wait, streaming with usage, and the faults an engine has (it crashes, it
never becomes healthy, it serves fewer tokens than asked)."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import pytest

from modelgrid_bench.backends.base import BackendOptions, GenerationParams, open_backend
from modelgrid_bench.engine import EngineError, EngineProcess
from modelgrid_bench.errors import BackendError

pytestmark = pytest.mark.timeout(180)

#: A start on a slow, shared machine: generous, it only bounds a hang.
STARTUP_S = 120.0
PARAMS = GenerationParams(input_tokens=8, output_tokens=6, temperature=0.0, top_p=1.0, seed=0)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _engine(*flags: str, startup_s: float = STARTUP_S) -> tuple[EngineProcess, str]:
    port = _port()
    command = [
        sys.executable,
        "-m",
        "modelgrid_bench.pacedserver",
        "--port",
        str(port),
        "--model",
        "tiny",
        "--step-ms",
        "5",
        *flags,
    ]
    base = f"http://127.0.0.1:{port}"
    return EngineProcess(command, f"{base}/health", startup_timeout_s=startup_s), base


@pytest.fixture
def stopped() -> Iterator[list[EngineProcess]]:
    engines: list[EngineProcess] = []
    yield engines
    for e in engines:
        e.stop()


def _clock() -> float:
    return time.monotonic()


def test_the_engine_starts_serves_streams_and_stops(stopped: list[EngineProcess]) -> None:
    engine, base = _engine("--start-delay-s", "0.5")
    stopped.append(engine)
    engine.start()
    took_s = engine.wait_healthy()
    assert took_s >= 0.5  # unhealthy until its start-up was over
    backend = open_backend(BackendOptions(kind="openai", model="tiny", endpoint=base))
    backend.load()
    timing = backend.generate(["a prompt", "another"], PARAMS, _clock)
    backend.close()
    assert timing.output_tokens == [6, 6]  # the server's usage counts
    assert all(timing.start_s < ft <= timing.end_s for ft in timing.first_token_s)
    engine.check_alive()
    code = engine.stop()
    assert code is not None
    assert any("simulated" in line for line in engine.tail())


def test_an_engine_that_never_becomes_healthy_fails_within_its_startup_time(
    stopped: list[EngineProcess],
) -> None:
    engine, _ = _engine("--never-healthy", startup_s=2.0)
    stopped.append(engine)
    engine.start()
    started = time.monotonic()
    with pytest.raises(EngineError) as err:
        engine.wait_healthy()
    assert time.monotonic() - started < 2.0 + 10.0  # bounded by its timeout, not a hang
    assert "was not healthy" in str(err.value)
    assert "within 2 s" in str(err.value)
    assert "pacedserver: serving tiny" in str(err.value)  # the engine's own last words


def test_an_engine_that_crashes_mid_run_is_reported_with_its_last_lines(
    stopped: list[EngineProcess],
) -> None:
    engine, base = _engine("--crash-after-tokens", "3")
    stopped.append(engine)
    engine.start()
    engine.wait_healthy()
    backend = open_backend(BackendOptions(kind="openai", model="tiny", endpoint=base))
    backend.load()
    with pytest.raises(BackendError):
        backend.generate(["a prompt"], PARAMS, _clock)
    backend.close()
    with pytest.raises(EngineError) as err:
        engine.check_alive()
    assert "exited with code 70 during the run" in str(err.value)
    assert "simulated crash after 3 tokens" in str(err.value)


def test_an_engine_that_exits_at_start_says_so(stopped: list[EngineProcess]) -> None:
    engine = EngineProcess(
        [sys.executable, "-c", "import sys; print('no CUDA device'); sys.exit(3)"],
        "http://127.0.0.1:9/health",
        startup_timeout_s=STARTUP_S,
    )
    stopped.append(engine)
    engine.start()
    with pytest.raises(EngineError) as err:
        engine.wait_healthy()
    assert "exited with code 3 before it became healthy" in str(err.value)
    assert "no CUDA device" in str(err.value)


def test_an_engine_serving_fewer_tokens_than_asked_is_counted_honestly(
    stopped: list[EngineProcess],
) -> None:
    engine, base = _engine("--short-by", "2")
    stopped.append(engine)
    engine.start()
    engine.wait_healthy()
    backend = open_backend(BackendOptions(kind="openai", model="tiny", endpoint=base))
    backend.load()
    timing = backend.generate(["a prompt"], PARAMS, _clock)
    backend.close()
    assert timing.output_tokens == [4]  # what it served, which the token_mismatch flag sees


def test_a_command_that_cannot_start_is_an_engine_error() -> None:
    engine = EngineProcess(["/nonexistent/vllm"], "http://127.0.0.1:9/health", startup_timeout_s=1)
    with pytest.raises(EngineError, match="cannot start the engine"):
        engine.start()
