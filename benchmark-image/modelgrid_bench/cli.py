"""Command line: `run` a benchmark, or `analyze` recorded evidence. Does I/O.

Only JSON goes to stdout; logs go to stderr. The program's original form
`python -m modelgrid_bench --model X --samples 20 --tokens 10` is accepted as `run`.
Exit codes (modelgrid_contract.reasons.ExitCode): 0 ok, 1 internal error, 2 bad input,
3 refused measurement (no GPU, wrong GPU, contention, no load on the measured GPUs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from modelgrid_bench.analysis import analyze
from modelgrid_bench.backends.base import BackendOptions, open_backend
from modelgrid_bench.errors import BadInputError, BenchError
from modelgrid_bench.evidence import read_evidence, write_result
from modelgrid_bench.runner import SessionConfig, refusal_error, run_session
from modelgrid_bench.sources import default_source_spec, open_source
from modelgrid_contract.reasons import ExitCode, Reason
from modelgrid_contract.result import (
    JOB_NONCE_PATTERN,
    BenchFailure,
    BenchmarkResult,
    SamplerConfig,
    WorkDoneFloors,
)
from modelgrid_contract.targets import Target
from modelgrid_contract.wire import encode_compact
from modelgrid_contract.workload import PromptType, Workload

log = logging.getLogger("modelgrid_bench")

COMMANDS = ("run", "analyze")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInputError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="modelgrid-bench", description=__doc__.splitlines()[0] if __doc__ else "")
    common = _Parser(add_help=False)
    common.add_argument("--log-level", default=os.environ.get("MODELGRID_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run", parents=[common], help="run the benchmark and print its result as JSON"
    )
    m = run.add_argument_group("model and backend")
    m.add_argument("--model", default="", help="path, cached model id, or random:ARCH")
    m.add_argument(
        "--backend",
        choices=("transformers", "server", "openai", "synthetic"),
        default="transformers",
    )
    m.add_argument("--endpoint", help="OpenAI-compatible base URL (backend openai)")
    m.add_argument("--served-model", help="model name the endpoint serves (default: --model)")
    m.add_argument(
        "--engine-command",
        help="backend server: the engine to start in this pod, one shell-quoted command line "
        "(e.g. 'vllm serve /models/llama --port 8000')",
    )
    m.add_argument(
        "--engine-command-json",
        help="backend server: the custom engine's command as a JSON list of strings",
    )
    m.add_argument(
        "--engine",
        default="custom",
        choices=("vllm", "sglang", "tgi", "custom"),
        help="backend server: a preset engine whose command the benchmark builds, or custom",
    )
    m.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        help="backend server: one extra engine argument (repeat; write --engine-arg=--flag)",
    )
    m.add_argument("--engine-port", type=int, default=8000, help="backend server: its port")
    m.add_argument(
        "--engine-startup-timeout-s",
        type=float,
        default=600.0,
        help="backend server: how long it may take to become healthy",
    )
    m.add_argument(
        "--endpoint-access",
        help="address classes besides public that --endpoint may resolve to, comma-separated: "
        "cluster-internal, link-local, or none (default: unchecked)",
    )
    m.add_argument(
        "--no-engine-extensions",
        action="store_true",
        help="do not send min_tokens/ignore_eos to the endpoint",
    )
    m.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    m.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float16", "float32"))
    m.add_argument(
        "--synthetic-step-ms",
        type=float,
        default=float(os.environ.get("MODELGRID_SYNTHETIC_STEP_MS", "2.0")),
        help="synthetic backend's decode step (default: $MODELGRID_SYNTHETIC_STEP_MS or 2)",
    )
    w = run.add_argument_group("workload (defaults: the program's)")
    w.add_argument("--workload-json", help="the whole workload as JSON (overrides the flags)")
    w.add_argument("--samples", type=int, default=20)
    w.add_argument("--tokens", "--tokens-per-sample", dest="tokens", type=int, default=128)
    w.add_argument("--batch-size", type=int, default=1)
    w.add_argument("--input-tokens", type=int, default=128)
    w.add_argument("--temperature", type=float, default=0.0)
    w.add_argument("--top-p", type=float, default=1.0)
    w.add_argument("--prompt-type", choices=[t.value for t in PromptType], default="conversational")
    w.add_argument("--warmup-samples", type=int, default=2)
    w.add_argument("--repeats", type=int, default=3)
    w.add_argument("--concurrency", type=int, default=1)
    w.add_argument("--seed", type=int, default=0)
    s = run.add_argument_group("measurement")
    s.add_argument(
        "--interval-ms", type=float, default=25.0, help="power sampling interval (5-1000)"
    )
    s.add_argument("--telemetry-interval-ms", type=float, default=500.0)
    s.add_argument(
        "--power-source",
        default=default_source_spec(),
        help="nvml (default) or replay:PATH|builtin:NAME (simulated)",
    )
    s.add_argument("--replay-gpu-name", default=os.environ.get("MODELGRID_REPLAY_GPU_NAME"))
    s.add_argument(
        "--replay-gpus",
        type=int,
        default=int(os.environ["MODELGRID_REPLAY_GPUS"])
        if os.environ.get("MODELGRID_REPLAY_GPUS", "").isdigit()
        else None,
        help="GPUs a replay presents (default: $MODELGRID_REPLAY_GPUS, else the trace's)",
    )
    s.add_argument("--idle-baseline-s", type=float, default=5.0)
    floors = WorkDoneFloors()
    s.add_argument(
        "--min-joules-per-token-above-idle",
        type=float,
        default=floors.min_joules_per_token_above_idle,
        help="work-done gate: energy above the idle baseline per output token, worst run "
        f"(default {floors.min_joules_per_token_above_idle:g} J)",
    )
    s.add_argument(
        "--min-gpu-util-pct",
        type=float,
        default=floors.min_gpu_util_pct,
        help="work-done gate: mean GPU utilisation during every run, least busy GPU "
        f"(default {floors.min_gpu_util_pct:g} %%)",
    )
    s.add_argument(
        "--job-nonce",
        default=os.environ.get("MODELGRID_JOB_NONCE"),
        help="the nonce of the Job this run is for (32 hex digits), echoed in the result",
    )
    s.add_argument("--expect-gpu", help="refuse unless every GPU is this product, e.g. NVIDIA-H200")
    s.add_argument("--expect-gpu-count", type=int)
    s.add_argument(
        "--allowed-gpu-processes",
        type=int,
        help="compute processes tolerated per GPU (default: the backend's own)",
    )
    o = run.add_argument_group("output")
    o.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="evidence and results (default: $MODELGRID_OUTPUT_DIR or "
        "./modelgrid-results, then run-<UTC time>)",
    )
    o.add_argument(
        "--termination-log",
        default=os.environ.get("MODELGRID_TERMINATION_LOG"),
        help="also write the compact result here (e.g. /dev/termination-log)",
    )
    o.add_argument("--full", action="store_true", help="print the full result, not the compact one")

    an = sub.add_parser(
        "analyze", parents=[common], help="re-derive the result from an evidence directory"
    )
    an.add_argument("directory", type=Path)
    an.add_argument("--full", action="store_true")
    an.add_argument("--write", action="store_true", help="rewrite result*.json in the directory")
    an.add_argument(
        "--no-cache",
        action="store_true",
        help="read the trace from trace.csv alone, never from its columnar copy trace.npz",
    )
    return p


def _normalise_argv(argv: list[str]) -> list[str]:
    """Accept the program's own form (flags without a command) as `run`."""
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        return ["run", *argv]
    return argv


def _workload(args: argparse.Namespace) -> Workload:
    try:
        if args.workload_json:
            return Workload.model_validate_json(args.workload_json)
        return Workload(
            samples=args.samples,
            tokens_per_sample=args.tokens,
            batch_size=args.batch_size,
            input_tokens=args.input_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            prompt_type=PromptType(args.prompt_type),
            warmup_samples=args.warmup_samples,
            repeats=args.repeats,
            concurrency=args.concurrency,
            seed=args.seed,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "workload"
        raise BadInputError(f"invalid workload: {field}: {err['msg']}") from exc


def _engine_command(text: str | None, as_json: str | None = None) -> list[str]:
    if as_json is not None:
        try:
            command = json.loads(as_json)
        except ValueError as exc:
            raise BadInputError(f"--engine-command-json is not JSON: {exc}") from exc
        if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
            raise BadInputError("--engine-command-json must be a non-empty list of strings")
        return command
    if not text:
        return []
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise BadInputError(f"--engine-command is not a valid command line: {exc}") from exc


def _endpoint_access(text: str | None) -> frozenset[str] | None:
    if text is None:
        return None
    words = frozenset(w.strip() for w in text.split(",") if w.strip()) - {"none"}
    bad = sorted(words - {Target.CLUSTER_INTERNAL.value, Target.LINK_LOCAL.value})
    if bad:
        raise BadInputError(
            f"--endpoint-access: unknown {', '.join(bad)}; use cluster-internal, link-local or none"
        )
    return words


def _nonce(args: argparse.Namespace) -> str | None:
    nonce: str | None = args.job_nonce
    if nonce is not None and not re.fullmatch(JOB_NONCE_PATTERN, nonce):
        raise BadInputError(f"--job-nonce {nonce[:40]!r} is not 32 lowercase hex digits")
    return nonce


def _floors(args: argparse.Namespace) -> WorkDoneFloors:
    try:
        return WorkDoneFloors(
            min_joules_per_token_above_idle=args.min_joules_per_token_above_idle,
            min_gpu_util_pct=args.min_gpu_util_pct,
        )
    except ValidationError as exc:
        raise BadInputError(
            "--min-joules-per-token-above-idle must be >= 0 and --min-gpu-util-pct 0-100"
        ) from exc


def _emit(result: BenchmarkResult, full: bool) -> str:
    compact = encode_compact(result)
    sys.stdout.write((result.model_dump_json(indent=1, by_alias=True) if full else compact) + "\n")
    sys.stdout.flush()
    return compact


def _write_termination(path: str | None, text: str) -> None:
    if not path:
        return
    try:
        Path(path).write_text(text)
    except OSError as exc:
        log.error("cannot write the termination log %s: %s", path, exc)


def _cmd_run(args: argparse.Namespace) -> int:
    workload = _workload(args)
    nonce = _nonce(args)
    floors = _floors(args)
    try:
        sampler = SamplerConfig(
            interval_s=args.interval_ms / 1000.0,
            telemetry_interval_s=args.telemetry_interval_ms / 1000.0,
        )
    except ValidationError as exc:
        raise BadInputError(
            "--interval-ms must be between 5 and 1000 and --telemetry-interval-ms between 50 "
            "and 10000"
        ) from exc
    override = os.environ.get("MODELGRID_BACKEND_OVERRIDE", "")
    # A server source starts its own engine (in the sandbox, the paced server): nothing to
    # replace, and replacing it would skip the path under test.
    if override and args.backend != "server":
        # A simulated node without the hardware for the declared model paces tokens instead;
        # the synthetic backend marks the result simulated, so this never passes for real.
        if override != "synthetic":
            raise BadInputError("MODELGRID_BACKEND_OVERRIDE may only be 'synthetic'")
        log.warning("inference replaced by the synthetic backend (%s)", override)
        args.backend = "synthetic"
    if args.backend != "synthetic" and not args.model:
        raise BadInputError("--model is required (a path, a cached model id, or random:ARCH)")
    if args.idle_baseline_s < 0:
        raise BadInputError("--idle-baseline-s must not be negative")
    out = args.output_dir
    if out is None:
        root = Path(os.environ.get("MODELGRID_OUTPUT_DIR", "modelgrid-results"))
        out = root / time.strftime("run-%Y%m%dT%H%M%SZ", time.gmtime())
    backend = open_backend(
        BackendOptions(
            kind=args.backend,
            model=args.model or "synthetic",
            endpoint=args.endpoint,
            endpoint_access=_endpoint_access(args.endpoint_access),
            engine_command=tuple(_engine_command(args.engine_command, args.engine_command_json)),
            engine=args.engine,
            engine_args=tuple(args.engine_arg),
            engine_gpus=args.expect_gpu_count or 1,
            engine_port=args.engine_port,
            engine_startup_timeout_s=args.engine_startup_timeout_s,
            served_model=args.served_model,
            device=args.device,
            dtype=args.dtype,
            engine_extensions=not args.no_engine_extensions,
            synthetic_step_s=args.synthetic_step_ms / 1000.0,
        )
    )
    source = open_source(args.power_source, gpu_name=args.replay_gpu_name, gpus=args.replay_gpus)
    try:
        _, result = run_session(
            SessionConfig(
                workload=workload,
                sampler=sampler,
                idle_baseline_s=args.idle_baseline_s,
                expect_gpu=args.expect_gpu,
                expect_gpu_count=args.expect_gpu_count,
                allowed_gpu_processes=args.allowed_gpu_processes,
                output_dir=out,
                work_floors=floors,
                job_nonce=nonce,
                report_progress=True,
            ),
            source,
            backend,
        )
    finally:
        source.close()
    log.info("evidence written to %s", out)
    compact = _emit(result, args.full)
    _write_termination(args.termination_log, compact)
    refused = refusal_error(result)
    if refused is not None:
        log.error("measurement refused: %s", refused.message)
        return int(refused.exit_code)
    return int(ExitCode.OK)


def _cmd_analyze(args: argparse.Namespace) -> int:
    result = analyze(read_evidence(args.directory, use_cache=not args.no_cache))
    if args.write:
        write_result(args.directory, result)
    _emit(result, args.full)
    refused = refusal_error(result)
    return int(refused.exit_code) if refused is not None else int(ExitCode.OK)


def _stop_on_sigterm() -> None:
    """The kubelet stops a pod with SIGTERM: unwind (so a started engine is stopped and the
    sampler closed) instead of dying where the signal lands."""
    if threading.current_thread() is threading.main_thread():

        def _raise(signum: int, _frame: object) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, _raise)


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    termination = os.environ.get("MODELGRID_TERMINATION_LOG")
    _stop_on_sigterm()
    try:
        args = _parser().parse_args(_normalise_argv(raw))
        termination = getattr(args, "termination_log", None) or termination
        logging.basicConfig(
            level=str(args.log_level).upper(),
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        if args.command == "analyze":
            return _cmd_analyze(args)
        return _cmd_run(args)
    except BenchError as exc:
        message = " ".join(exc.message.splitlines())  # one line, whatever the message holds
        sys.stderr.write(f"modelgrid-bench: error: {message}\n")
        _write_termination(
            termination,
            BenchFailure(
                reason=exc.reason, message=message[:1024], exit_code=int(exc.exit_code)
            ).encode(),
        )
        return int(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("modelgrid-bench: interrupted\n")
        return int(ExitCode.INTERNAL)
    except Exception as exc:
        log.exception("internal error")
        sys.stderr.write(f"modelgrid-bench: internal error: {type(exc).__name__}: {exc}\n")
        _write_termination(
            termination,
            BenchFailure(
                reason=Reason.INTERNAL_ERROR.value,
                message=f"{type(exc).__name__}: {exc}"[:1024],
                exit_code=int(ExitCode.INTERNAL),
            ).encode(),
        )
        return int(ExitCode.INTERNAL)
