"""A serving engine as the benchmark's child process, with the paced server standing in for
vLLM: start, health wait, streaming with usage, and the faults an engine has (it crashes, it
never becomes healthy, it serves fewer tokens than asked)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelgrid_bench.backends.base import (
    Backend,
    BackendOptions,
    GenerationParams,
    open_backend,
)
from modelgrid_bench.engine import EngineError, EngineProcess, preset_command
from modelgrid_bench.errors import BackendError, BadInputError
from modelgrid_contract.engines import EngineName, engine_arg_problems, flag_name
from modelgrid_contract.reasons import ExitCode
from modelgrid_contract.result import BenchFailure
from tests import factory as f

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


def _serving(stopped: list[EngineProcess], *flags: str) -> tuple[EngineProcess, Backend]:
    """A paced engine started, healthy, and an OpenAI backend loaded against it."""
    engine, base = _engine(*flags)
    stopped.append(engine)
    engine.start()
    engine.wait_healthy()
    backend = open_backend(BackendOptions(kind="openai", model="tiny", endpoint=base))
    backend.load()
    return engine, backend


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
    engine, backend = _serving(stopped, "--crash-after-tokens", "3")
    with pytest.raises(BackendError):
        backend.generate(["a prompt"], PARAMS, _clock)
    backend.close()
    with pytest.raises(EngineError) as err:
        engine.check_alive(grace_s=30.0)
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
    _, backend = _serving(stopped, "--short-by", "2")
    timing = backend.generate(["a prompt"], PARAMS, _clock)
    backend.close()
    assert timing.output_tokens == [4]  # what it served, which the token_mismatch flag sees


def test_a_command_that_cannot_start_is_an_engine_error() -> None:
    engine = EngineProcess(["/nonexistent/vllm"], "http://127.0.0.1:9/health", startup_timeout_s=1)
    with pytest.raises(EngineError, match="cannot start the engine"):
        engine.start()


def _bench_with_engine(
    tmp_path: Path, *flags: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    port = _port()
    engine = f"{sys.executable} -m modelgrid_bench.pacedserver --port {port} --model tiny"
    out = tmp_path / "ev"
    term = tmp_path / "termination-log"
    proc = f.bench_cli(
        "run",
        "--backend",
        "server",
        "--engine-command",
        " ".join([engine, "--step-ms", "5", *flags]),
        "--engine-port",
        str(port),
        "--engine-startup-timeout-s",
        str(STARTUP_S),
        "--model",
        "tiny",
        *f.workload_flags(2, 20),
        "--termination-log",
        str(term),
        "--output-dir",
        str(out),
        "--power-source",
        "replay:builtin:h200-decode",
        "--log-level",
        "WARNING",
        timeout_s=STARTUP_S + 60,
    )
    return proc, term


def test_the_benchmark_starts_the_engine_in_its_pod_and_records_it(tmp_path: Path) -> None:
    proc, _ = _bench_with_engine(tmp_path)
    assert proc.returncode in (0, 3), proc.stderr  # a refusal of so short a run is fine here
    full = json.loads((tmp_path / "ev" / "result.json").read_text())
    backend = full["backend"]
    assert backend["kind"] == "server"
    assert backend["simulated"] is True  # the paced server says it is simulated
    assert backend["engine"]["served_by"] == "modelgrid-simulated"
    assert backend["engine"]["command"][1:3] == ["-m", "modelgrid_bench.pacedserver"]
    assert backend["engine"]["startup_s"] >= 0
    assert backend["engine"]["name"] == "custom"
    assert backend["engine"]["version"] == "modelgrid-paced 0.1.0"  # from its /version
    assert full["simulated"] is True
    assert sum(r["output_tokens"] for r in full["runs"]) == 2 * 20
    compact = json.loads(proc.stdout.strip().splitlines()[-1])
    assert compact["backend"] == "server"
    assert compact["engine"]["name"] == "custom"
    assert compact["engine"]["version"] == "modelgrid-paced 0.1.0"
    assert re.fullmatch(r"[0-9a-f]{16}", compact["engine"]["command_sha256"])


def test_an_engine_crash_mid_run_fails_the_benchmark_with_its_last_lines(tmp_path: Path) -> None:
    proc, term = _bench_with_engine(tmp_path, "--crash-after-tokens", "5")
    assert proc.returncode == int(ExitCode.INTERNAL), proc.stderr
    failure = BenchFailure.model_validate_json(term.read_text())
    assert failure.reason == "EngineCrashed"
    assert "exited with code 70 during the run" in failure.message
    assert "simulated crash after 5 tokens" in failure.message


def test_an_engine_that_never_becomes_healthy_fails_the_benchmark(tmp_path: Path) -> None:
    port = _port()
    proc = f.bench_cli(
        "run",
        "--backend",
        "server",
        "--engine-command",
        f"{sys.executable} -m modelgrid_bench.pacedserver --port {port} --never-healthy",
        "--engine-port",
        str(port),
        "--engine-startup-timeout-s",
        "2",
        "--model",
        "paced",
        "--power-source",
        "replay:builtin",
        "--output-dir",
        str(tmp_path / "ev"),
        "--termination-log",
        str(tmp_path / "term"),
        timeout_s=120,
    )
    # A configuration that cannot start fails at once: a retry would hold the GPUs as long.
    assert proc.returncode == int(ExitCode.BAD_INPUT), proc.stderr
    failure = BenchFailure.model_validate_json((tmp_path / "term").read_text())
    assert failure.reason == "EngineNotHealthy"
    assert "was not healthy" in failure.message
    assert "within 2 s" in failure.message


# -- presets and the arguments a spec may add ---------------------------------------------


def _preset(engine: EngineName, *args: str) -> list[str]:
    return preset_command(
        engine, model="/models/llama", served_model="llama", port=8123, gpus=8, args=args
    )


@pytest.mark.parametrize(
    ("engine", "head", "shards"),
    [
        (EngineName.VLLM, ["vllm", "serve", "/models/llama"], ["--tensor-parallel-size", "8"]),
        (EngineName.SGLANG, ["-m", "sglang.launch_server"], ["--tp-size", "8"]),
        (EngineName.TGI, ["text-generation-launcher", "--model-id"], ["--num-shard", "8"]),
    ],
)
def test_a_preset_listens_on_loopback_and_shards_over_every_measured_gpu(
    engine: EngineName, head: list[str], shards: list[str]
) -> None:
    cmd = _preset(engine, "--max-num-seqs=64")
    joined = " ".join(cmd)
    assert " ".join(head) in joined
    assert " ".join(shards) in joined  # its processes on every GPU the gate looks at
    assert "127.0.0.1" in cmd
    assert "8123" in cmd
    assert cmd[-1] == "--max-num-seqs=64"  # the spec's extras come last, as given
    if engine is not EngineName.TGI:  # TGI has no pickle loader to switch off
        assert cmd[cmd.index("--load-format") + 1] == "safetensors"
    assert "--trust-remote-code" not in cmd


def test_a_spec_that_chooses_its_own_sharding_keeps_it() -> None:
    cmd = _preset(EngineName.VLLM, "--tensor-parallel-size", "4")
    assert cmd.count("--tensor-parallel-size") == 1
    assert cmd[-2:] == ["--tensor-parallel-size", "4"]


@pytest.mark.parametrize(
    "arg",
    [
        "--trust-remote-code",
        "--trust_remote_code",
        "--Trust-Remote-Code=true",
        "--load-format=pt",
        "--port=9999",
        "--host",
        "--served-model-name=other",
        "--model=/elsewhere",
        "-port",
    ],
)
def test_arguments_that_set_what_the_benchmark_owns_are_refused(arg: str) -> None:
    problems = engine_arg_problems([arg])
    assert problems
    assert "which the benchmark owns" in problems[0]
    with pytest.raises(BadInputError, match="engine arguments refused"):
        _preset(EngineName.VLLM, arg)


def test_bounds_and_unprintable_characters_are_refused_with_the_argument_named() -> None:
    assert engine_arg_problems(["--ok"] * 33)[0].startswith("at most 32 engine arguments")
    assert "args[1]" in engine_arg_problems(["--ok", "x" * 257])[0]
    assert "control or bidirectional" in engine_arg_problems(["--a\u202eb"])[0]
    assert engine_arg_problems(["--max-model-len", "8192", "--enable-prefix-caching"]) == []
    assert flag_name("8192") is None
    assert flag_name("--Max_Model_Len=1") == "max-model-len"


def test_a_custom_engine_is_its_command_and_python_is_this_interpreter() -> None:
    cmd = preset_command(
        EngineName.CUSTOM,
        model="m",
        served_model="m",
        port=1,
        gpus=1,
        command=["python", "-m", "modelgrid_bench.pacedserver"],
        args=("--step-ms", "5"),
    )
    assert cmd == [sys.executable, "-m", "modelgrid_bench.pacedserver", "--step-ms", "5"]
    with pytest.raises(BadInputError, match="needs its command"):
        preset_command(EngineName.CUSTOM, model="m", served_model="m", port=1, gpus=1)


def test_the_paced_server_batches_less_than_linearly(stopped: list[EngineProcess]) -> None:
    """Each extra sequence in flight costs a share of a step, as a batched engine's does, so a
    concurrency sweep against it shows an efficiency below 100 %. A lower bound only: sleeps
    are never shorter than asked, however slow the machine."""
    _, backend = _serving(stopped, "--batch-cost-pct", "20")
    many = backend.generate(["a"] * 16, PARAMS, _clock)
    backend.close()
    step_s = 0.005 * (1 + 0.20 * 15)
    assert many.end_s - many.start_s >= PARAMS.output_tokens * step_s
