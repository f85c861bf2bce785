"""Operator settings from the environment (the Helm chart sets them). Pure apart from os.environ."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from modelgrid_operator.jobs import DEFAULT_BENCHMARK_NAMESPACE, JobSettings


def _claims(text: str) -> tuple[tuple[str, str], ...]:
    """`ns=claim,ns2=claim2` (MODELGRID_EVIDENCE_CLAIMS): a claim per tenant namespace."""
    pairs = []
    for item in text.split(","):
        ns, sep, claim = item.partition("=")
        if not sep or not ns.strip():
            if item.strip():
                raise ValueError(
                    f"MODELGRID_EVIDENCE_CLAIMS: {item.strip()!r} is not namespace=claim"
                )
            continue
        pairs.append((ns.strip(), claim.strip()))
    return tuple(pairs)


def _bounded(name: str, default: int, low: int, high: int) -> int:
    value = _int(name, default)
    if not low <= value <= high:
        raise ValueError(f"{name}={value} must be between {low} and {high}")
    return value


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None


@dataclass(frozen=True)
class Settings:
    default_policy: str = "model-card"
    max_concurrent_jobs: int = 4
    namespaces: tuple[str, ...] = ()
    metrics_port: int = 8080
    liveness_endpoint: str = "http://0.0.0.0:8081/healthz"
    resync_interval_s: float = 30.0
    job: JobSettings = field(default_factory=JobSettings)

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            default_policy=env.get("MODELGRID_DEFAULT_POLICY", "model-card"),
            max_concurrent_jobs=_int("MODELGRID_MAX_CONCURRENT_JOBS", 4),
            namespaces=tuple(n for n in env.get("MODELGRID_NAMESPACES", "").split(",") if n),
            metrics_port=_int("MODELGRID_METRICS_PORT", 8080),
            liveness_endpoint=env.get("MODELGRID_LIVENESS_ENDPOINT", "http://0.0.0.0:8081/healthz"),
            resync_interval_s=float(_bounded("MODELGRID_RESYNC_SECONDS", 30, 5, 3600)),
            job=JobSettings(
                namespace=env.get("MODELGRID_BENCHMARK_NAMESPACE") or DEFAULT_BENCHMARK_NAMESPACE,
                image=env.get("MODELGRID_BENCH_IMAGE", JobSettings.image),
                image_pull_policy=env.get("MODELGRID_BENCH_PULL_POLICY", "IfNotPresent"),
                backoff_limit=_int("MODELGRID_BACKOFF_LIMIT", 2),
                ttl_seconds_after_finished=_int("MODELGRID_JOB_TTL_SECONDS", 86400),
                service_account=env.get("MODELGRID_BENCH_SERVICE_ACCOUNT") or None,
                engine_images=tuple(
                    (name, env.get(f"MODELGRID_ENGINE_IMAGE_{name.upper()}", default))
                    for name, default in JobSettings.engine_images
                ),
                evidence_claim=env.get("MODELGRID_EVIDENCE_CLAIM", "").strip(),
                evidence_claims=_claims(env.get("MODELGRID_EVIDENCE_CLAIMS", "")),
            ),
        )
