"""The command line end to end, without a GPU: synthetic inference, replayed power."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from modelgrid_contract.reasons import ExitCode
from modelgrid_contract.result import BenchFailure
from modelgrid_contract.wire import decode_compact
from tests import factory as f

QUICK = [
    "--samples",
    "4",
    "--tokens",
    "30",
    "--repeats",
    "2",
    "--warmup-samples",
    "1",
    "--idle-baseline-s",
    "0.3",
    "--log-level",
    "WARNING",
]


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return f.bench_cli(*args, env=env)


@pytest.fixture(scope="module")
def synthetic_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("run") / "evidence"
    term = out.parent / "termination-log"
    proc = bench(
        "run",
        "--backend",
        "synthetic",
        "--power-source",
        "replay:builtin:h200-decode",
        "--output-dir",
        str(out),
        "--termination-log",
        str(term),
        *QUICK,
    )
    return out, proc


def test_run_prints_only_json_and_marks_the_result_simulated(
    synthetic_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, proc = synthetic_run
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    compact = decode_compact(lines[0])
    assert compact.simulated
    assert compact.source.value == "replay"
    assert compact.backend == "synthetic"
    assert compact.output_tokens == 4 * 30 * 2
    assert compact.gpu.name == "NVIDIA H200"
    assert compact.runs is not None
    assert len(compact.runs.avg_power_w) == 2
    # The replayed trace averages about 128 W (hack/make_replay_traces.py).
    assert compact.avg_power_watts is not None
    assert 100 < compact.avg_power_watts < 160
    assert (out.parent / "termination-log").read_text() == lines[0]
    for name in (
        "trace.csv",
        "telemetry.csv",
        "evidence.json",
        "result.json",
        "result-compact.json",
    ):
        assert (out / name).is_file()
    header = (out / "trace.csv").read_text().splitlines()[0]
    assert header.split(",")[:5] == ["t_s", "gpu", "power_w", "power_avg_w", "energy_j"]


def test_analyze_of_the_same_evidence_gives_the_same_result(
    synthetic_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, proc = synthetic_run
    full = bench("analyze", str(out), "--full")
    assert full.returncode == 0, full.stderr
    assert json.loads(full.stdout) == json.loads((out / "result.json").read_text())
    compact = bench("analyze", str(out))
    assert compact.stdout == proc.stdout


def test_the_programs_own_form_is_accepted(tmp_path: Path) -> None:
    proc = bench(
        "--model",
        "demo",
        "--samples",
        "2",
        "--tokens",
        "10",
        "--synthetic-step-ms",
        "40",
        "--backend",
        "synthetic",
        "--power-source",
        "replay:builtin:h200-busy",
        "--repeats",
        "1",
        "--idle-baseline-s",
        "0.3",
        "--warmup-samples",
        "0",
        "--output-dir",
        str(tmp_path / "o"),
        "--log-level",
        "ERROR",
    )
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["model"] == "demo"
    assert obj["output_tokens"] == 20


def test_no_gpu_and_no_replay_fails_in_one_clear_line(tmp_path: Path) -> None:
    term = tmp_path / "term"
    proc = bench(
        "--model",
        "x",
        "--samples",
        "20",
        "--tokens",
        "10",
        env={"MODELGRID_TERMINATION_LOG": str(term)},
    )
    assert proc.returncode == ExitCode.REFUSED
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "no NVIDIA GPU" in lines[0] or "NVML found no GPU" in lines[0]
    assert "replay" in lines[0]
    failure = BenchFailure.model_validate_json(term.read_text())
    assert failure.reason == "NoGPU"
    assert failure.exit_code == ExitCode.REFUSED


def test_wrong_gpu_is_refused_before_any_work(tmp_path: Path) -> None:
    proc = bench(
        "run",
        "--backend",
        "synthetic",
        "--power-source",
        "replay:builtin:h200-decode",
        "--expect-gpu",
        "NVIDIA-H100-80GB-HBM3",
        "--output-dir",
        str(tmp_path / "o"),
        *QUICK,
    )
    assert proc.returncode == ExitCode.REFUSED
    assert "requires 'NVIDIA-H100-80GB-HBM3'" in proc.stderr
    assert not (tmp_path / "o").exists()
    ok = bench(
        "run",
        "--backend",
        "synthetic",
        "--power-source",
        "replay:builtin:h200-decode",
        "--expect-gpu",
        "NVIDIA-H200",
        "--expect-gpu-count",
        "1",
        "--output-dir",
        str(tmp_path / "p"),
        "--repeats",
        "1",
        "--samples",
        "1",
        "--tokens",
        "20",
        "--synthetic-step-ms",
        "40",
        "--idle-baseline-s",
        "0.3",
        "--warmup-samples",
        "0",
    )
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--interval-ms", "2"], "--interval-ms must be between 5 and 1000"),
        (["--tokens", "0"], "tokens_per_sample"),
        (["--prompt-type", "poetry"], "invalid choice"),
        (["--power-source", "magic"], "unknown power source"),
        (["--power-source", "replay:/nonexistent/trace.csv"], "does not exist"),
        (["--workload-json", '{"samples": 3, "bogus": 1}'], "bogus"),
        (["--job-nonce", "not-a-nonce"], "--job-nonce 'not-a-nonce' is not 32 lowercase hex"),
        (["--job-nonce", "AB" * 16], "is not 32 lowercase hex digits"),
    ],
)
def test_bad_input_exits_2_with_a_message(args: list[str], needle: str, tmp_path: Path) -> None:
    proc = bench(
        "run",
        "--backend",
        "synthetic",
        "--power-source",
        "replay:builtin",
        "--output-dir",
        str(tmp_path / "o"),
        *[a for a in args if a],
        "--idle-baseline-s",
        "0.3",
    )
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    assert needle in proc.stderr
    assert proc.stdout == ""


def test_analyze_of_a_non_evidence_directory_is_bad_input(tmp_path: Path) -> None:
    proc = bench("analyze", str(tmp_path))
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "not an evidence directory" in proc.stderr
