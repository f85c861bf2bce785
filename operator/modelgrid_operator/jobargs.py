"""The benchmark container's command line for a qualification. Pure: builds a list of strings.

The workload travels as JSON (its digest is what the result must echo back), followed by the
backend and model the source names, the GPUs the benchmark must find, the work-done floors of
the policy that will price the result, the Job's nonce and, for an endpoint, the address
classes its host may resolve to. `jobs.build_job` puts it in the pod.
"""

from __future__ import annotations

import json

from modelgrid_contract.result import WorkDoneFloors
from modelgrid_operator.api import CacheSource, PvcSource, QualificationSpec
from modelgrid_operator.policy import EndpointAccess
from modelgrid_operator.verdict import bench_workload

#: Where the pod's results directory and the model's claim are mounted.
RESULTS_DIR = "/results"
MODEL_DIR = "/models"


def benchmark_args(
    spec: QualificationSpec,
    floors: WorkDoneFloors | None = None,
    nonce: str | None = None,
    access: EndpointAccess | None = None,
) -> list[str]:
    """The benchmark's command line: the workload, the model, the GPUs it must find, the
    work-done gate's floors of the policy that will price the result, the Job's nonce, and
    for an endpoint the address classes the policy lets its host resolve to."""
    gate = floors or WorkDoneFloors()
    # unset sweep fields stay out, so an older benchmark image reads the same workload
    workload = bench_workload(spec).model_dump(mode="json", exclude_none=True)
    src = spec.model.source
    args = ["run", "--workload-json", json.dumps(workload, separators=(",", ":"))]
    if src.random_weights is not None:
        args += [
            "--backend",
            "transformers",
            "--model",
            f"random:{src.random_weights.architecture}",
        ]
    elif src.pvc is not None or src.cache is not None:
        args += ["--backend", "transformers", "--model", _model_arg(src.pvc or src.cache)]
    elif src.server is not None:
        server = src.server
        weights = server.model.pvc or server.model.cache
        args += [
            "--backend",
            "server",
            "--engine",
            server.engine.value,
            "--model",
            _model_arg(weights) if weights is not None else spec.model.name,
            "--served-model",
            server.served_model or spec.model.name,
            "--engine-port",
            str(server.port),
            "--engine-startup-timeout-s",
            str(server.startup_timeout_seconds),
        ]
        if server.command:
            args += ["--engine-command-json", json.dumps(server.command, separators=(",", ":"))]
        args += [f"--engine-arg={a}" for a in server.args]
    elif src.endpoint is not None:
        args += [
            "--backend",
            "openai",
            "--endpoint",
            src.endpoint.url,
            "--model",
            src.endpoint.served_model or spec.model.name,
            "--endpoint-access",
            _access_words(access or EndpointAccess()),
        ]
    args += [
        "--expect-gpu",
        spec.hardware.gpu_product,
        "--expect-gpu-count",
        str(spec.hardware.gpu_count),
        "--interval-ms",
        str(spec.sampling_interval_ms),
        "--output-dir",
        RESULTS_DIR,
        "--min-joules-per-token-above-idle",
        repr(gate.min_joules_per_token_above_idle),
        "--min-gpu-util-pct",
        repr(gate.min_gpu_util_pct),
    ]
    if nonce is not None:
        args += ["--job-nonce", nonce]
    return args


def _model_arg(weights: PvcSource | CacheSource | None) -> str:
    """The model as the engine names it: a directory in the mounted claim, or a hub id that
    the offline cache under HF_HOME resolves."""
    if isinstance(weights, PvcSource):
        return f"{MODEL_DIR}/{weights.path.strip('/')}".rstrip("/")
    if isinstance(weights, CacheSource):
        return weights.model_id
    raise ValueError("the model source names no weights")


def _access_words(access: EndpointAccess) -> str:
    words = [
        word
        for word, on in (
            ("cluster-internal", access.allow_cluster_internal),
            ("link-local", access.allow_link_local),
        )
        if on
    ]
    return ",".join(words) or "none"
