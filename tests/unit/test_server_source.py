"""The `server` model source on the operator's side: the Job that starts the engine in the
benchmark pod, what keeps one from starting (a custom command the policy does not trust, an
argument that sets what the benchmark owns, an engine without an image), how an engine's
failure ends, and which results a server or endpoint source may be priced from."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelgrid_bench.cli import _normalise_argv, _parser
from modelgrid_contract.result import BenchFailure, CompactResult
from modelgrid_contract.wire import ResultRejected, decode_compact
from modelgrid_operator.api import QualificationSpec
from modelgrid_operator.jobs import JobSettings, build_job
from modelgrid_operator.outcome import ActionKind
from modelgrid_operator.policy import TierPolicySpec
from modelgrid_operator.reconcile import decide
from modelgrid_operator.verdict import validate_result, workload_digest
from tests import factory as f
from tests.unit.test_reconcile import (
    SETTINGS,
    cond,
    failed,
    failed_pod,
    job_object,
    observe,
    policy,
    spec_dict,
)

pytestmark = pytest.mark.timeout(60)

SHARED = {"metadata": {"name": "models", "annotations": {"modelgrid.firmus.ai/shared-with": "*"}}}
VLLM = {
    "engine": "vllm",
    "model": {"pvc": {"claimName": "models", "path": "/llama/8b"}},
    "args": ["--max-num-seqs", "64"],
}
PACED = {
    "engine": "custom",
    "command": ["python", "-m", "modelgrid_bench.pacedserver", "--port", "8000"],
}


def server_spec(server: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return spec_dict(model={"name": "llama-8b", "source": {"server": server}}, **fields)


def _job(server: dict[str, Any], settings: JobSettings = SETTINGS) -> dict[str, Any]:
    spec = QualificationSpec.model_validate(server_spec(server))
    return build_job(
        name="q",
        namespace="team-a",
        uid="u-1",
        generation=1,
        spec=spec,
        settings=settings,
        nonce=f.JOB_NONCE,
    )


def _container(job: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return c


# -- the Job ------------------------------------------------------------------------------


def test_a_preset_engine_runs_in_its_image_with_the_model_mounted_read_only() -> None:
    job = _job(VLLM)
    c = _container(job)
    assert c["image"] == "ghcr.io/firmus/modelgrid-bench-vllm:0.1.0"
    assert c["command"] == ["python", "-m", "modelgrid_bench"]  # not the image's vllm entrypoint
    args = c["args"]
    assert args[args.index("--backend") + 1] == "server"
    assert args[args.index("--engine") + 1] == "vllm"
    assert args[args.index("--model") + 1] == "/models/llama/8b"
    assert args[args.index("--served-model") + 1] == "llama-8b"
    assert "--engine-arg=--max-num-seqs" in args
    assert "--engine-arg=64" in args
    assert {"name": "model", "mountPath": "/models", "readOnly": True} in c["volumeMounts"]
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    sc = c["securityContext"]  # still Pod Security "restricted"
    assert sc["readOnlyRootFilesystem"]
    assert not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]}


def test_the_benchmark_cli_accepts_the_jobs_server_arguments() -> None:
    """What the operator writes is what the benchmark parses (one argv, both sides)."""
    args = _parser().parse_args(_normalise_argv(_container(_job(VLLM))["args"]))
    assert args.backend == "server"
    assert args.engine == "vllm"
    assert args.engine_arg == ["--max-num-seqs", "64"]
    assert args.engine_port == 8000
    assert args.engine_startup_timeout_s == 900
    custom = _parser().parse_args(_normalise_argv(_container(_job(PACED))["args"]))
    assert json.loads(custom.engine_command_json)[:3] == [
        "python",
        "-m",
        "modelgrid_bench.pacedserver",
    ]


def test_a_custom_engine_runs_in_the_benchmark_image_unless_one_is_named() -> None:
    assert _container(_job(PACED))["image"] == SETTINGS.image
    named = JobSettings(engine_images=(("custom", "registry.example/engine:1"),))
    assert _container(_job(PACED, named))["image"] == "registry.example/engine:1"


# -- what keeps a Job from starting --------------------------------------------------------


def test_a_custom_command_waits_for_a_policy_that_trusts_it() -> None:
    d = decide(observe(spec=server_spec(PACED)), SETTINGS)
    assert d.job is None
    stalled = cond(d.status, "Stalled")
    assert stalled["reason"] == "EngineNotAllowed"
    assert "spec.engineAccess.allowCustomCommand" in stalled["message"]
    trusting = policy(2, engineAccess={"allowCustomCommand": True})
    ok = decide(observe(spec=server_spec(PACED), status=d.status, tier_policy=trusting), SETTINGS)
    assert ok.action is ActionKind.CREATE_JOB


def test_a_preset_starts_where_its_volume_is_shared() -> None:
    d = decide(observe(spec=server_spec(VLLM), volumes={"models": SHARED}), SETTINGS)
    assert d.action is ActionKind.CREATE_JOB
    missing = decide(observe(spec=server_spec(VLLM), volumes={"models": None}), SETTINGS)
    assert cond(missing.status, "Stalled")["reason"] == "ModelVolumeMissing"


@pytest.mark.parametrize("arg", ["--trust-remote-code", "--load-format=pt", "--port=9"])
def test_a_stored_spec_whose_arguments_set_what_the_benchmark_owns_never_starts(arg: str) -> None:
    """The CRD refuses these at admission; an object stored before its rules still must not
    run (and the benchmark refuses them a third time)."""
    spec = server_spec({**VLLM, "args": [arg]})
    d = decide(observe(spec=spec, volumes={"models": SHARED}), SETTINGS)
    assert d.job is None
    stalled = cond(d.status, "Stalled")
    assert stalled["reason"] == "EngineNotAllowed"
    assert "which the benchmark owns" in stalled["message"]


def test_an_engine_without_an_image_in_this_installation_waits_with_the_chart_value() -> None:
    settings = JobSettings(engine_images=(("vllm", ""),))
    d = decide(observe(spec=server_spec(VLLM), volumes={"models": SHARED}), settings)
    stalled = cond(d.status, "Stalled")
    assert stalled["reason"] == "EngineNotAllowed"
    assert "benchmark.engineImages.vllm" in stalled["message"]


# -- how an engine's failure ends ----------------------------------------------------------


def _failed_with(code: int, reason: str, message: str, job_reason: str) -> dict[str, Any]:
    trusting = policy(1, engineAccess={"allowCustomCommand": True})
    first = decide(observe(spec=server_spec(PACED), tier_policy=trusting), SETTINGS)
    assert first.job is not None
    job = job_object(first.job, *failed(job_reason, "limit"))
    term = BenchFailure(reason=reason, message=message, exit_code=code).encode()
    pods = [failed_pod(job["metadata"]["name"], code, term)]
    d = decide(
        observe(
            spec=server_spec(PACED), status=first.status, tier_policy=trusting, job=job, pods=pods
        ),
        SETTINGS,
    )
    assert d.status["phase"] == "Failed"
    return cond(d.status, "Stalled")


def test_an_engine_that_crashed_on_every_try_fails_with_its_own_words() -> None:
    stalled = _failed_with(
        1,
        "EngineCrashed",
        "the engine exited with code 70 during the run; its last lines: CUDA error",
        "BackoffLimitExceeded",
    )
    assert stalled["reason"] == "EngineCrashed"
    assert "CUDA error" in stalled["message"]
    assert "tried 3 times" in stalled["message"]


def test_an_engine_that_never_became_healthy_fails_at_once() -> None:
    stalled = _failed_with(
        2,
        "EngineNotHealthy",
        "the engine was not healthy at http://127.0.0.1:8000/health within 10 s",
        "PodFailurePolicy",
    )
    assert stalled["reason"] == "EngineNotHealthy"
    assert "within 10 s" in stalled["message"]
    assert "tried" not in stalled["message"]


# -- which results such a source may be priced from ---------------------------------------

SIM = TierPolicySpec.model_validate(f.shipped_policy_spec(allowSimulated=True))


def _served(spec: QualificationSpec, backend: str, engine: dict[str, Any] | None) -> str:
    obj = f.priced_compact(backend=backend, engine=engine)
    obj["workload_digest"] = workload_digest(spec)
    return json.dumps(obj)


ENGINE = {"name": "vllm", "version": "0.11.0", "startup_s": 41.2, "command_sha256": "0" * 16}


def test_a_server_result_names_its_engine_in_status() -> None:
    spec = QualificationSpec.model_validate(server_spec(VLLM))
    result = validate_result(_served(spec, "server", ENGINE), spec, SIM)
    assert result.engine is not None
    assert result.engine.version == "0.11.0"


@pytest.mark.parametrize(
    ("backend", "engine", "says"),
    [
        ("transformers", None, "backend 'transformers'"),
        ("server", {**ENGINE, "name": "sglang"}, "engine 'sglang', not the declared 'vllm'"),
    ],
)
def test_a_result_served_otherwise_than_declared_is_refused(
    backend: str, engine: dict[str, Any] | None, says: str
) -> None:
    spec = QualificationSpec.model_validate(server_spec(VLLM))
    with pytest.raises(ResultRejected) as exc:
        validate_result(_served(spec, backend, engine), spec, SIM)
    assert exc.value.reason == "WorkloadMismatch"
    assert says in exc.value.message


def test_an_endpoints_result_is_priced_only_where_the_policy_takes_unverified_placement() -> None:
    spec = QualificationSpec.model_validate(
        spec_dict(model={"name": "llama-8b", "source": {"endpoint": {"url": "https://x.example"}}})
    )
    raw = _served(spec, "openai", None)
    with pytest.raises(ResultRejected) as exc:
        validate_result(raw, spec, SIM)
    assert exc.value.reason == "EngineInPodRequired"
    takes = SIM.model_copy(
        update={
            "endpoint_access": SIM.endpoint_access.model_copy(
                update={"allow_unverified_placement": True}
            )
        }
    )
    assert validate_result(raw, spec, takes).backend == "openai"


def test_the_compact_form_names_an_engine_exactly_for_a_server_backend() -> None:
    with pytest.raises(ResultRejected, match="exactly when the backend is 'server'"):
        decode_compact(json.dumps(f.priced_compact(backend="server")))
    with pytest.raises(ResultRejected, match="exactly when the backend is 'server'"):
        decode_compact(json.dumps(f.priced_compact(engine=ENGINE)))
    ok: CompactResult = decode_compact(
        json.dumps(f.priced_compact(backend="server", engine=ENGINE))
    )
    assert ok.engine is not None


def test_the_served_example_is_a_valid_vllm_sweep_and_its_job_starts_vllm() -> None:
    from pathlib import Path

    import yaml

    doc = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "examples" / "qualification-served.yaml").read_text()
    )
    spec = QualificationSpec.model_validate(doc["spec"])
    assert spec.model.source.server is not None
    assert spec.workload.levels() == (1, 4, 16)
    args = _container(
        build_job(
            name="q",
            namespace="ns",
            uid="u",
            generation=1,
            spec=spec,
            settings=SETTINGS,
            nonce=f.JOB_NONCE,
        )
    )["args"]
    assert args[args.index("--engine") + 1] == "vllm"
    assert json.loads(args[args.index("--workload-json") + 1])["concurrency_levels"] == [1, 4, 16]
