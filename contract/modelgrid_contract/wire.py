"""The compact wire format of a result: the termination message. Pure.

`encode_compact` always returns at most `TERMINATION_MESSAGE_LIMIT_BYTES` bytes of ASCII JSON,
dropping the least important detail first and naming what it dropped in `truncated`.
`decode_compact` is the one way to read it back; it refuses (with a `ResultRejected` reason)
anything oversized, malformed, of an unknown schema, or internally inconsistent.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from pydantic import (
    ValidationError,
)

from modelgrid_contract.reasons import Reason
from modelgrid_contract.result import (
    SCHEMA_COMPACT,
    TERMINATION_MESSAGE_LIMIT_BYTES,
    BenchmarkResult,
    CompactResult,
)


class ResultRejected(Exception):
    """The result cannot be trusted or priced; `reason` is a word of the one vocabulary."""

    def __init__(self, reason: Reason | str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = str(reason)
        self.message = message


def _round(value: float | None, digits: int = 5) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return float(f"{value:.{digits}g}")


def _cut(text: str, limit: int) -> str:
    """Shorten text to `limit` characters, keeping a hash of the whole so it stays unique."""
    if len(text) <= limit:
        return text
    tail = hashlib.sha256(text.encode()).hexdigest()[:8]
    return text[: limit - 10] + "~" + tail


def _compact_dict(result: BenchmarkResult, level: int) -> dict[str, Any]:
    pooled = result.pooled
    env = result.environment
    name_limit = 200 if level < 3 else 63
    gpus = env.gpus
    uuids = [g.uuid for g in gpus] if level < 4 else []
    truncated: list[str] = []
    if level >= 1:
        truncated.append("runs")
    if level >= 2:
        truncated.append("run_stats")
    if level >= 3 and result.sweep is not None:
        truncated.append("sweep")
    if level >= 4:
        truncated.append("uuids")

    def _truncate(text: str, limit: int) -> str:
        cut = _cut(text, limit)
        if cut != text and "names" not in truncated:
            truncated.append("names")
        return cut

    runs: dict[str, Any] | None = None
    if level < 1 and result.runs:
        runs = {
            "power_cv": [_round(r.power_cv_1s, 4) for r in result.runs],
            "avg_power_w": [_round(r.avg_power_w, 5) for r in result.runs],
            "joules_per_token": [_round(r.joules_per_token, 4) for r in result.runs],
            "tokens_per_s": [_round(r.tokens_per_s, 4) for r in result.runs],
        }
    run_stats: dict[str, Any] | None = None
    if level < 2 and result.run_to_run:
        run_stats = {
            key: {
                "n": s.n,
                "mean": _round(s.mean),
                "std": _round(s.std),
                "min": _round(s.min),
                "max": _round(s.max),
                "range": _round(s.range),
                "cv": _round(s.cv),
            }
            for key, s in result.run_to_run.items()
        }
    ci = pooled.power_cv_ci95 if pooled else None
    return {
        "schema": SCHEMA_COMPACT,
        "ok": result.refusal is None,
        "simulated": result.simulated,
        "source": result.power_source.kind.value,
        "backend": result.backend.kind,
        "model": _truncate(result.backend.model, name_limit),
        "workload_digest": result.workload_digest,
        "node": _truncate(env.node_name or env.hostname, name_limit),
        "gpu": {
            "name": _truncate(gpus[0].name if gpus else "", name_limit),
            "count": len(gpus),
            "driver": _truncate(env.driver_version, 32),
            "cuda": _truncate(env.cuda_driver_version, 16),
            "uuids": [_truncate(u, 64) for u in uuids],
        },
        "tier_metric": result.tier_metric,
        "cv_time_scale_s": result.cv_time_scale_s,
        "sample_interval_s": result.sampler.interval_s,
        "power_cv": _round(pooled.power_cv) if pooled else None,
        "power_cv_ci95": [_round(ci[0]), _round(ci[1])] if ci else None,
        "power_cv_instant": _round(pooled.power_cv_instant) if pooled else None,
        "avg_power_watts": _round(pooled.avg_power_w) if pooled else None,
        "peak_power_watts": _round(pooled.peak_power_w) if pooled else None,
        "power_std_w": _round(pooled.power_std_w) if pooled else None,
        "p95_power_w": _round(pooled.p95_power_w) if pooled else None,
        "joules_per_token": _round(pooled.joules_per_token) if pooled else None,
        "tokens_per_joule": _round(pooled.tokens_per_joule) if pooled else None,
        "tokens_per_s": _round(pooled.tokens_per_s) if pooled else None,
        "ttft_p50_s": _round(pooled.ttft_p50_s) if pooled else None,
        "energy_j": _round(pooled.energy_j, 7) if pooled else None,
        "duration_s": _round(pooled.duration_s, 6) if pooled else None,
        "output_tokens": pooled.output_tokens if pooled else None,
        "idle_power_w": _round(pooled.idle_power_w) if pooled else None,
        "wh_per_1k_queries": _round(pooled.wh_per_1k_queries) if pooled else None,
        "energy_discrepancy_pct": _round(pooled.energy_discrepancy_pct, 3) if pooled else None,
        "runs": runs,
        "run_stats": run_stats,
        "flags": [f.value for f in result.flags],
        "refusal": (
            {
                "reason": result.refusal.reason,
                "message": _truncate(result.refusal.message, 300 if level < 3 else 120),
            }
            if result.refusal
            else None
        ),
        "truncated": truncated,
        "work": _work(result),
        "windows": _windows(result),
        "evidence": result.evidence.model_dump() if result.evidence else None,
        "job_nonce": result.job_nonce,
        "engine": _engine(result),
        "sweep": _sweep(result) if level < 3 else None,
    }


def _sweep(result: BenchmarkResult) -> dict[str, Any] | None:
    sw = result.sweep
    if sw is None:
        return None
    lv = sw.per_level

    def eff(attr: str) -> list[float | None]:
        return [_round(getattr(x.efficiency, attr), 4) if x.efficiency else None for x in lv]

    return {
        "levels": list(sw.levels),
        "tier_concurrency": sw.tier_concurrency,
        "runs": [x.runs for x in lv],
        "tokens_per_s": [_round(x.tokens_per_s, 5) for x in lv],
        "ttft_p50_ms": [_round(x.ttft_p50_ms, 4) for x in lv],
        "avg_power_w": [_round(x.avg_power_w, 5) for x in lv],
        "power_cv": [_round(x.power_cv, 4) for x in lv],
        "joules_per_token": [_round(x.joules_per_token, 4) for x in lv],
        "speedup": [_round(x.speedup, 4) for x in lv],
        "efficiency_mean_pct": eff("mean"),
        "efficiency_std_pct": eff("std"),
        "efficiency_min_pct": eff("min"),
        "efficiency_max_pct": eff("max"),
        "contended_runs": [x.contended_runs for x in lv],
    }


def _engine(result: BenchmarkResult) -> dict[str, Any] | None:
    e = result.backend.engine
    if result.backend.kind != "server" or e is None:
        return None
    command = json.dumps(e.command, separators=(",", ":"), ensure_ascii=True)
    return {
        "name": _cut(e.name, 16),
        "version": _cut(e.version, 64),
        "startup_s": _round(e.startup_s, 4),
        "command_sha256": hashlib.sha256(command.encode()).hexdigest()[:16],
    }


def _work(result: BenchmarkResult) -> dict[str, Any] | None:
    w = result.work_done
    if w is None:
        return None
    return {
        "j_per_token_above_idle_min": _round(w.joules_per_token_above_idle_min),
        "gpu_util_pct_min": _round(w.gpu_util_pct_min),
        "engine_processes_min": w.engine_processes_min,
        "engine_on_gpu_expected": w.engine_on_gpu_expected,
        "passed": w.passed,
    }


def _windows(result: BenchmarkResult) -> dict[str, Any] | None:
    p = result.pooled
    if p is None:
        return None
    return {
        "used": p.windows_used,
        "excluded": p.windows_excluded,
        "min_per_run": min((r.windows_1s - r.windows_excluded for r in result.runs), default=0),
        "missing_readings": p.missing_readings,
        "readings": p.readings,
        "ci_method": p.power_cv_ci_method,
    }


def encode_compact(
    result: BenchmarkResult, limit_bytes: int = TERMINATION_MESSAGE_LIMIT_BYTES
) -> str:
    """Serialize the compact form, shedding detail until it fits in `limit_bytes`."""
    for level in range(5):
        text = json.dumps(_compact_dict(result, level), separators=(",", ":"), ensure_ascii=True)
        if len(text) <= limit_bytes:
            return text
    raise ValueError(f"compact result does not fit in {limit_bytes} bytes even when reduced")


def compact_of(result: BenchmarkResult) -> CompactResult:
    """The compact model exactly as the operator will see it after a round trip."""
    return decode_compact(encode_compact(result))


#: An oversized message is still read this far to tell a newer schema from a broken result.
SCHEMA_PEEK_LIMIT_BYTES = 65536


def _refuse_unknown_schema(data: bytes) -> None:
    """A result too large for our schema may be a newer schema's: say so, not 'oversized'."""
    if len(data) > SCHEMA_PEEK_LIMIT_BYTES:
        return
    try:
        obj = json.loads(data, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return
    schema = obj.get("schema") if isinstance(obj, dict) else None
    if isinstance(schema, str) and schema != SCHEMA_COMPACT:
        raise ResultRejected(
            Reason.UNKNOWN_SCHEMA,
            f"schema {schema[:64]!r} is not understood; expected {SCHEMA_COMPACT!r}",
        )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A key given twice is ambiguous (parsers disagree on which wins): malformed."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears twice")
        out[key] = value
    return out


def _no_constants(name: str) -> float:
    """JSON has no NaN or Infinity: a result that carries them is malformed."""
    raise ValueError(f"{name} is not a number")


def decode_compact(
    raw: str | bytes, limit_bytes: int = TERMINATION_MESSAGE_LIMIT_BYTES
) -> CompactResult:
    """Parse and validate a termination message. Raises `ResultRejected` with a reason."""
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) == 0:
        raise ResultRejected(Reason.EMPTY_RESULT, "the benchmark left no termination message")
    if len(data) > limit_bytes:
        _refuse_unknown_schema(data)
        raise ResultRejected(
            Reason.OVERSIZED_RESULT,
            f"the result is {len(data)} bytes; at most {limit_bytes} are allowed",
        )
    try:
        obj = json.loads(data, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ResultRejected(Reason.MALFORMED_RESULT, f"the result is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ResultRejected(Reason.MALFORMED_RESULT, "the result is not a JSON object")
    schema = obj.get("schema")
    if schema != SCHEMA_COMPACT:
        raise ResultRejected(
            Reason.UNKNOWN_SCHEMA,
            f"schema {schema!r} is not understood; expected {SCHEMA_COMPACT!r}",
        )
    try:
        return CompactResult.model_validate_json(data, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "result"
        raise ResultRejected(
            Reason.MALFORMED_RESULT,
            f"{where}: {first.get('msg', 'invalid')} ({exc.error_count()} errors)",
        ) from exc
