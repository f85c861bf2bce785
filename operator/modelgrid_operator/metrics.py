"""Prometheus metrics of the operator. Does I/O only in `serve` (an HTTP listener)."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()
QUALIFICATIONS = Gauge(
    "modelgrid_qualifications",
    "ModelQualifications by phase and tier",
    ["phase", "tier"],
    registry=REGISTRY,
)
BENCHMARK_SECONDS = Histogram(
    "modelgrid_benchmark_duration_seconds",
    "Wall time from Job creation to verdict",
    buckets=(60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
    registry=REGISTRY,
)
REFUSED = Counter(
    "modelgrid_refused_results_total",
    "Benchmark results refused, by reason",
    ["reason"],
    registry=REGISTRY,
)
RECONCILES = Counter(
    "modelgrid_reconciles_total", "Reconciles by outcome", ["outcome"], registry=REGISTRY
)

_lock = threading.Lock()
_state: dict[tuple[str, str], tuple[str, str]] = {}


def observe(namespace: str, name: str, phase: str, tier: str) -> None:
    """Record one qualification's phase and tier; the gauge is recomputed from all of them."""
    with _lock:
        _state[(namespace, name)] = (phase, tier)
        counts: dict[tuple[str, str], int] = {}
        for value in _state.values():
            counts[value] = counts.get(value, 0) + 1
        QUALIFICATIONS.clear()
        for (p, t), n in counts.items():
            QUALIFICATIONS.labels(phase=p, tier=t).set(n)


def forget(namespace: str, name: str) -> None:
    with _lock:
        _state.pop((namespace, name), None)


def serve(port: int) -> None:
    start_http_server(port, registry=REGISTRY)
