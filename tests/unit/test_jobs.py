"""The benchmark Job manifest: name, placement, security, failure policy, and the CLI it drives."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from modelgrid_bench.cli import _normalise_argv, _parser
from modelgrid_contract.reasons import ExitCode
from modelgrid_contract.workload import Workload as BenchWorkload
from modelgrid_operator.api import QualificationSpec
from modelgrid_operator.jobs import JobSettings, build_job, job_name, job_nonce, qualification_of
from modelgrid_operator.policy import EndpointAccess
from modelgrid_operator.verdict import workload_digest

NAME = "llama-8b"
NS = "team-a"
UID = "5b0e7c1a-3f2d-4c8e-9a61-0d2f4b7e9c13"
NONCE = "0123456789abcdef" * 2
# A DNS-1123 subdomain: what a Job's metadata.name must be.
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

SOURCES: dict[str, dict[str, Any]] = {
    "randomWeights": {"randomWeights": {"architecture": "llama-3.1-8b"}},
    "pvc": {"pvc": {"claimName": "models", "path": "/llama/8b-instruct/"}},
    "cache": {"cache": {"claimName": "hf-cache", "modelId": "meta-llama/Llama-3.1-8B"}},
    "endpoint": {"endpoint": {"url": "http://127.0.0.1:8000", "servedModel": "llama-8b-awq"}},
}


def make_spec(source: str = "randomWeights", **fields: Any) -> QualificationSpec:
    body: dict[str, Any] = {"model": {"name": "llama-8b", "source": SOURCES[source]}}
    body.update(fields)
    return QualificationSpec.model_validate(body)


def make_job(
    spec: QualificationSpec | None = None,
    settings: JobSettings | None = None,
    *,
    name: str = NAME,
    uid: str = UID,
    generation: int = 3,
    attempt: int = 0,
) -> dict[str, Any]:
    return build_job(
        name=name,
        namespace=NS,
        uid=uid,
        generation=generation,
        spec=spec or make_spec(),
        settings=settings or JobSettings(),
        nonce=NONCE,
        attempt=attempt,
    )


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


def flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} appears {args.count(name)} times in {args}"
    return args[args.index(name) + 1]


def parse_cli(job: dict[str, Any]) -> Any:
    """The benchmark's own argument parser applied to the container's args."""
    return _parser().parse_args(_normalise_argv(list(container(job)["args"])))


# --------------------------------------------------------------------------- name


def test_the_name_is_deterministic_and_changes_with_generation_attempt_and_uid() -> None:
    first = make_job()["metadata"]["name"]
    assert make_job()["metadata"]["name"] == first
    assert first == job_name(NAME, UID, 3, 0)
    assert first.startswith(f"{NAME}-g3-")
    others = {
        make_job(generation=4)["metadata"]["name"],
        make_job(attempt=1)["metadata"]["name"],
        make_job(attempt=2)["metadata"]["name"],
        # a qualification deleted and recreated under the same name must not adopt old Jobs
        make_job(uid="9d3c1f7e-0000-4000-8000-000000000000")["metadata"]["name"],
    }
    assert first not in others
    assert len(others) == 4


@pytest.mark.parametrize(
    "name",
    [
        "q" * 253,
        "a" * 52 + "-" + "b" * 200,  # the cut lands on a dash
        "a" * 52 + "." + "b" * 200,  # the cut lands on a dot
        "a" * 51 + "-." + "b" * 200,
        "model.v2.qualification-" + "x" * 230,
    ],
)
@pytest.mark.parametrize(("generation", "attempt"), [(1, 0), (12345, 3), (2**53, 5)])
def test_the_name_fits_63_characters_and_ends_alphanumeric(
    name: str, generation: int, attempt: int
) -> None:
    got = make_job(name=name, generation=generation, attempt=attempt)["metadata"]["name"]
    assert len(got) <= 63
    assert got[-1].isalnum()
    assert DNS1123_SUBDOMAIN.fullmatch(got), got
    assert got.startswith(name[:20])
    assert f"-g{generation}" in got


def test_the_job_runs_in_the_benchmark_namespace_not_the_tenants() -> None:
    meta = make_job()["metadata"]
    assert meta["namespace"] == "modelgrid-benchmarks"
    assert make_job(settings=JobSettings(namespace="gpu-bench"))["metadata"]["namespace"] == (
        "gpu-bench"
    )
    # an owner reference cannot cross namespaces (the garbage collector would delete the Job
    # at once): the qualification is named in labels and annotations instead
    assert "ownerReferences" not in meta
    assert qualification_of(make_job()) == (NS, NAME, UID)


def test_the_job_carries_its_nonce_and_the_benchmark_echoes_it() -> None:
    job = make_job()
    assert job_nonce(job) == NONCE
    assert parse_cli(job).job_nonce == NONCE
    # the nonce is not on the pod template's metadata, which more readers see
    assert "modelgrid.firmus.ai/job-nonce" not in job["spec"]["template"]["metadata"]["annotations"]


def test_labels_name_the_qualification_generation_and_attempt() -> None:
    job = make_job(generation=7, attempt=2)
    for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
        labels = meta["labels"]
        assert meta["annotations"]["modelgrid.firmus.ai/qualification"] == NAME
        assert meta["annotations"]["modelgrid.firmus.ai/qualification-namespace"] == NS
        assert labels["modelgrid.firmus.ai/qualification-uid"] == UID
        assert labels["modelgrid.firmus.ai/qualification-namespace"] == NS
        assert labels["modelgrid.firmus.ai/generation"] == "7"
        assert labels["modelgrid.firmus.ai/attempt"] == "2"
        assert labels["app.kubernetes.io/managed-by"] == "modelgrid-operator"


def test_label_values_fit_63_characters_for_a_long_qualification_name() -> None:
    job = make_job(name="q" * 253)
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        for value in labels.values():
            assert len(value) <= 63


# --------------------------------------------------------------------------- placement


@pytest.mark.parametrize("count", [1, 4, 8])
def test_the_pod_requests_and_limits_gpu_count_gpus(count: int) -> None:
    res = container(make_job(make_spec(hardware={"gpuCount": count})))["resources"]
    assert res["requests"]["nvidia.com/gpu"] == str(count)
    assert res["limits"]["nvidia.com/gpu"] == str(count)


def test_the_node_selector_selects_the_gpu_product_and_adds_the_users_labels() -> None:
    spec = make_spec(
        hardware={
            "gpuProduct": "NVIDIA-H100-80GB-HBM3",
            "nodeSelector": {"topology.kubernetes.io/zone": "syd-1a", "pool": "bench"},
        }
    )
    pod = make_job(spec)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "topology.kubernetes.io/zone": "syd-1a",
        "pool": "bench",
    }
    default = make_job()["spec"]["template"]["spec"]
    assert default["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H200"}


def test_a_user_node_selector_on_the_product_label_overrides_the_product() -> None:
    # What the code does: hardware.nodeSelector is merged last, so a user who sets the product
    # label schedules elsewhere. The benchmark still gets --expect-gpu gpuProduct and the operator
    # rejects a result from another product (WrongGPU), so this wastes a run but cannot mis-price.
    spec = make_spec(hardware={"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100"}})
    job = make_job(spec)
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-A100"
    }
    assert flag(container(job)["args"], "--expect-gpu") == "NVIDIA-H200"


def test_the_gpu_taint_is_tolerated_beside_the_users_tolerations() -> None:
    spec = make_spec(
        hardware={
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "bench", "effect": "NoSchedule"},
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 30,
                },
            ]
        }
    )
    tolerations = make_job(spec)["spec"]["template"]["spec"]["tolerations"]
    assert tolerations == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "bench", "effect": "NoSchedule"},
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 30,
        },
    ]
    assert make_job()["spec"]["template"]["spec"]["tolerations"] == [tolerations[0]]


# --------------------------------------------------------------------------- security


def test_the_pod_meets_the_restricted_pod_security_profile() -> None:
    job = make_job(make_spec("pvc"))
    pod = job["spec"]["template"]["spec"]
    c = container(job)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    assert "hostNetwork" not in pod
    assert "hostPID" not in pod
    assert "privileged" not in sc
    # restricted allows only these volume types
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= {"emptyDir", "persistentVolumeClaim"}


def test_a_read_only_root_still_has_writable_results_and_tmp() -> None:
    job = make_job()
    c = container(job)
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for path in ("/results", "/tmp"):
        assert "emptyDir" in volumes[mounts[path]["name"]]
        assert not mounts[path].get("readOnly", False)
    assert env_of(job)["HOME"] == "/tmp"
    out = str(parse_cli(job).output_dir)
    assert out == "/results"  # the pod's own directory when evidence is kept


def test_the_service_account_is_set_only_when_configured() -> None:
    assert "serviceAccountName" not in make_job()["spec"]["template"]["spec"]
    job = make_job(settings=JobSettings(service_account="modelgrid-bench"))
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "modelgrid-bench"


# --------------------------------------------------------------------------- Job spec


def test_deadline_backoff_and_ttl_come_from_the_spec_and_settings() -> None:
    job = make_job(
        make_spec(timeoutSeconds=5400),
        JobSettings(backoff_limit=5, ttl_seconds_after_finished=600, image="reg/bench:9"),
    )
    assert job["spec"]["activeDeadlineSeconds"] == 5400
    assert job["spec"]["backoffLimit"] == 5
    assert job["spec"]["ttlSecondsAfterFinished"] == 600
    assert container(job)["image"] == "reg/bench:9"
    defaults = make_job()["spec"]
    assert defaults["activeDeadlineSeconds"] == 3600
    assert defaults["backoffLimit"] == JobSettings().backoff_limit == 2


def test_the_pod_failure_policy_fails_at_once_on_bad_input_and_ignores_disruptions() -> None:
    rules = make_job()["spec"]["podFailurePolicy"]["rules"]
    fail_job = [r for r in rules if r["action"] == "FailJob"]
    ignore = [r for r in rules if r["action"] == "Ignore"]
    assert fail_job == [
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "benchmark", "operator": "In", "values": [2]},
        }
    ]
    assert int(ExitCode.BAD_INPUT) == 2
    assert fail_job[0]["onExitCodes"]["containerName"] == container(make_job())["name"]
    assert ignore == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]
    # refused measurements (exit 3) and internal errors (exit 1) are retried
    codes = {v for r in fail_job for v in r["onExitCodes"]["values"]}
    assert int(ExitCode.REFUSED) not in codes
    assert int(ExitCode.INTERNAL) not in codes
    # a podFailurePolicy is only accepted with restartPolicy Never
    assert make_job()["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_without_a_queue_the_job_starts_at_once_and_has_no_kueue_label() -> None:
    job = make_job()
    assert job["spec"]["suspend"] is False
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]


def test_a_queue_name_labels_the_job_for_kueue_and_suspends_it() -> None:
    job = make_job(make_spec(queueName="gpu-bench"))
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-bench"


def test_the_result_travels_through_the_termination_log(monkeypatch: pytest.MonkeyPatch) -> None:
    job = make_job()
    c = container(job)
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert env_of(job)["MODELGRID_TERMINATION_LOG"] == "/dev/termination-log"
    # the benchmark takes its --termination-log default from that variable
    monkeypatch.setenv("MODELGRID_TERMINATION_LOG", env_of(job)["MODELGRID_TERMINATION_LOG"])
    assert parse_cli(job).termination_log == c["terminationMessagePath"]


# --------------------------------------------------------------------------- arguments


def test_the_workload_json_is_the_declared_workload_with_the_same_digest() -> None:
    workload = {
        "samples": 50,
        "tokensPerSample": 256,
        "batchSize": 8,
        "inputTokens": 512,
        "temperature": 0.7,
        "topP": 0.9,
        "promptType": "code",
        "warmupSamples": 4,
        "repeats": 5,
        "concurrency": 2,
        "seed": 42,
    }
    spec = make_spec(workload=workload)
    args = container(make_job(spec))["args"]
    sent = json.loads(flag(args, "--workload-json"))
    assert sent == {
        "samples": 50,
        "tokens_per_sample": 256,
        "batch_size": 8,
        "input_tokens": 512,
        "temperature": 0.7,
        "top_p": 0.9,
        "prompt_type": "code",
        "warmup_samples": 4,
        "repeats": 5,
        "concurrency": 2,
        "seed": 42,
    }
    bench = BenchWorkload.model_validate_json(parse_cli(make_job(spec)).workload_json)
    assert bench.digest() == workload_digest(spec)
    assert bench.digest() != workload_digest(make_spec())
    # the default workload too (the digest the operator will demand)
    default = BenchWorkload.model_validate_json(
        flag(container(make_job())["args"], "--workload-json")
    )
    assert default.digest() == workload_digest(make_spec())


def test_random_weights_run_the_transformers_backend() -> None:
    job = make_job(make_spec("randomWeights"))
    args = container(job)["args"]
    assert flag(args, "--backend") == "transformers"
    assert flag(args, "--model") == "random:llama-3.1-8b"
    assert "--endpoint" not in args
    assert all(v["name"] != "model" for v in job["spec"]["template"]["spec"]["volumes"])


def test_a_pvc_is_mounted_read_only_at_models_and_the_model_path_is_under_it() -> None:
    job = make_job(make_spec("pvc"))
    pod = job["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "model"]
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    (mount,) = [m for m in container(job)["volumeMounts"] if m["name"] == "model"]
    assert mount == {"name": "model", "mountPath": "/models", "readOnly": True}
    args = container(job)["args"]
    assert flag(args, "--model") == "/models/llama/8b-instruct"
    assert flag(args, "--backend") == "transformers"


def test_a_pvc_at_its_root_is_the_models_directory() -> None:
    spec = QualificationSpec.model_validate(
        {"model": {"name": "m", "source": {"pvc": {"claimName": "models"}}}}
    )
    assert flag(container(make_job(spec))["args"], "--model") == "/models"


def test_a_cache_is_mounted_and_used_offline() -> None:
    job = make_job(make_spec("cache"))
    pod = job["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "model"]
    assert volume["persistentVolumeClaim"] == {"claimName": "hf-cache", "readOnly": True}
    (mount,) = [m for m in container(job)["volumeMounts"] if m["name"] == "model"]
    assert mount["mountPath"] == "/models"
    assert mount["readOnly"] is True
    env = env_of(job)
    assert env["HF_HOME"].startswith("/models")
    assert env["HF_HUB_OFFLINE"] == "1"
    args = container(job)["args"]
    assert flag(args, "--model") == "meta-llama/Llama-3.1-8B"
    assert flag(args, "--backend") == "transformers"


def test_only_a_cache_sets_the_hugging_face_environment() -> None:
    for source in ("randomWeights", "pvc", "endpoint"):
        env = env_of(make_job(make_spec(source)))
        assert "HF_HOME" not in env
        assert "HF_HUB_OFFLINE" not in env


def test_an_endpoint_runs_the_openai_backend_against_its_url() -> None:
    args = container(make_job(make_spec("endpoint")))["args"]
    assert flag(args, "--backend") == "openai"
    assert flag(args, "--endpoint") == "http://127.0.0.1:8000"
    assert flag(args, "--model") == "llama-8b-awq"
    spec = QualificationSpec.model_validate(
        {"model": {"name": "served-name", "source": {"endpoint": {"url": "https://x.example"}}}}
    )
    args = container(make_job(spec))["args"]
    assert flag(args, "--model") == "served-name"  # servedModel defaults to the model's name


@pytest.mark.parametrize(
    ("access", "words"),
    [
        ({}, "none"),
        ({"allowClusterInternal": True}, "cluster-internal"),
        ({"allowClusterInternal": True, "allowLinkLocal": True}, "cluster-internal,link-local"),
    ],
)
def test_the_benchmark_checks_resolved_addresses_under_the_policys_endpoint_access(
    access: dict[str, bool], words: str
) -> None:
    job = build_job(
        name=NAME,
        namespace=NS,
        uid=UID,
        generation=1,
        spec=make_spec("endpoint"),
        settings=JobSettings(),
        nonce=NONCE,
        endpoint_access=EndpointAccess.model_validate(access),
    )
    assert flag(container(job)["args"], "--endpoint-access") == words
    assert parse_cli(job).endpoint_access == words


def test_the_expected_gpu_and_sampling_interval_are_passed() -> None:
    spec = make_spec(
        hardware={"gpuProduct": "NVIDIA-H100-80GB-HBM3", "gpuCount": 4}, samplingIntervalMs=10
    )
    args = container(make_job(spec))["args"]
    assert flag(args, "--expect-gpu") == "NVIDIA-H100-80GB-HBM3"
    assert flag(args, "--expect-gpu-count") == "4"
    assert flag(args, "--interval-ms") == "10"


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_the_benchmarks_own_parser_accepts_the_args(source: str) -> None:
    spec = make_spec(
        source,
        hardware={"gpuProduct": "NVIDIA-H200", "gpuCount": 2},
        samplingIntervalMs=50,
        workload={"samples": 7, "seed": 3},
    )
    job = make_job(spec)
    ns = parse_cli(job)
    assert ns.command == "run"
    assert ns.expect_gpu == "NVIDIA-H200"
    assert ns.expect_gpu_count == 2
    assert ns.interval_ms == 50.0
    assert BenchWorkload.model_validate_json(ns.workload_json).digest() == workload_digest(spec)
    want = {
        "randomWeights": ("transformers", "random:llama-3.1-8b", None),
        "pvc": ("transformers", "/models/llama/8b-instruct", None),
        "cache": ("transformers", "meta-llama/Llama-3.1-8B", None),
        "endpoint": ("openai", "llama-8b-awq", "http://127.0.0.1:8000"),
    }[source]
    assert (ns.backend, ns.model, ns.endpoint) == want
    # never simulated: the operator always measures with the real power source
    assert "--power-source" not in container(job)["args"]
