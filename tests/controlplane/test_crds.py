"""The CRDs in crds/ on the real apiserver: they apply, default, reject with human messages, and
read well in kubectl; docs/api.md agrees with them.

CRDs and TierPolicies are cluster-scoped and the cluster is shared by the session, so they are
applied idempotently (server-side apply) and test-made TierPolicies get unique names.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelgrid_operator.policy import Tier, tier_order_problems
from modelgrid_sandbox.cluster import Cluster
from tests.controlplane.conftest import wait_for
from tests.factory import tier

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
POLICIES = CRDS / "tierpolicies"
API_DOC = REPO / "docs" / "api.md"
GROUP = "modelgrid.firmus.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
MQ_CRD = CRDS / "modelgrid.firmus.ai_modelqualifications.yaml"
TP_CRD = CRDS / "modelgrid.firmus.ai_tierpolicies.yaml"
PRINTER_HEADERS = [
    "NAME",
    "MODEL",
    "PHASE",
    "TIER",
    "DISCOUNT",
    "CV",
    "AVG POWER",
    "PROGRESS",
    "VERIFIED",
]


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ApiException:
        return None


def _established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    crd = ext.read_custom_resource_definition(name)
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> Cluster:
    """Both CRDs applied, Established and served; the shipped policies applied."""
    out = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    assert "modelqualifications.modelgrid.firmus.ai" in out
    assert "tierpolicies.modelgrid.firmus.ai" in out
    ext = client.ApiextensionsV1Api(cluster.api)
    for name in ("modelqualifications.modelgrid.firmus.ai", "tierpolicies.modelgrid.firmus.ai"):
        wait_for(f"{name} to be established", lambda name=name: _established(ext, name))
    custom = client.CustomObjectsApi(cluster.api)
    # Serving a new type can lag its Established condition by a moment.
    wait_for(
        "the new types to be served",
        lambda: (
            _try(lambda: custom.list_cluster_custom_object(GROUP, VERSION, "tierpolicies"))
            and _try(
                lambda: custom.list_cluster_custom_object(GROUP, VERSION, "modelqualifications")
            )
        ),
    )
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(POLICIES))
    return cluster


def _mq(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelQualification",
        "metadata": {"name": name},
        "spec": spec,
    }


def _create_mq(api: client.ApiClient, ns: str, body: dict[str, Any]) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)
    result: dict[str, Any] = custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, "modelqualifications", body
    )
    return result


MINIMAL_SPEC: dict[str, Any] = {
    "model": {"name": "tiny", "source": {"randomWeights": {"architecture": "tiny-llama"}}}
}


# --------------------------------------------------------------------------- the CRDs


def test_both_crds_are_established_with_their_names(crds: Cluster) -> None:
    ext = client.ApiextensionsV1Api(crds.api)
    mq = ext.read_custom_resource_definition("modelqualifications.modelgrid.firmus.ai")
    assert mq.spec.scope == "Namespaced"
    assert mq.spec.names.kind == "ModelQualification"
    assert mq.spec.names.singular == "modelqualification"
    assert mq.spec.names.short_names == ["mq"]
    assert mq.spec.names.categories == ["modelgrid"]
    [v] = mq.spec.versions
    assert (v.name, v.served, v.storage) == ("v1alpha1", True, True)
    assert v.subresources.status == {}
    tp = ext.read_custom_resource_definition("tierpolicies.modelgrid.firmus.ai")
    assert tp.spec.scope == "Cluster"
    assert tp.spec.names.kind == "TierPolicy"
    assert tp.spec.names.short_names == ["tp"]
    assert tp.spec.names.categories == ["modelgrid"]
    # The apiserver stores the schemas as written (kubectl reads YAML 1.1: a bare `n` is false).
    for path in (MQ_CRD, TP_CRD):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        stored = json.loads(crds.kubectl("get", "crd", name, "-o", "json"))
        [version] = stored["spec"]["versions"]
        assert version["schema"]["openAPIV3Schema"] == _schema(path), name
    # Applying again changes nothing: the shared cluster may see it many times.
    crds.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    assert _established(ext, "modelqualifications.modelgrid.firmus.ai")


def _walk(node: dict[str, Any], path: str, visit: Callable[[str, dict[str, Any]], None]) -> None:
    visit(path, node)
    for key, child in (node.get("properties") or {}).items():
        _walk(child, f"{path}.{key}" if path else key, visit)
    if isinstance(node.get("items"), dict):
        _walk(node["items"], f"{path}[]", visit)
    if isinstance(node.get("additionalProperties"), dict):
        _walk(node["additionalProperties"], f"{path}{{}}", visit)


def _schema(path: Path) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    [version] = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("crd", [MQ_CRD, TP_CRD], ids=["modelqualification", "tierpolicy"])
def test_every_field_is_described_and_bounded(crd: Path) -> None:
    problems: list[str] = []

    def visit(path: str, node: dict[str, Any]) -> None:
        if path == "metadata":  # the apiserver allows nothing on it
            return
        kind = node.get("type")
        if not node.get("description"):
            problems.append(f"{path or '<root>'}: no description")
        if kind == "string" and "maxLength" not in node:
            problems.append(f"{path}: string without maxLength")
        if kind == "array" and "maxItems" not in node:
            problems.append(f"{path}: array without maxItems")
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            problems.append(f"{path}: map without maxProperties")
        bounded = "minimum" in node and "maximum" in node
        if path.startswith("spec.") and kind in ("integer", "number") and not bounded:
            problems.append(f"{path}: number without minimum and maximum")
        for rule in node.get("x-kubernetes-validations", []):
            if not rule.get("message"):
                problems.append(f"{path}: CEL rule {rule['rule']!r} without a message")
        for req in node.get("required", []):
            if req not in (node.get("properties") or {}):
                problems.append(f"{path}: required {req!r} is not a property")

    _walk(_schema(crd), "", visit)
    assert not problems, "\n".join(problems)


def test_crds_apply_leaves_out_the_policies() -> None:
    """`kubectl apply -f crds/` does not recurse: the policies need their CRD first."""
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in CRDS.glob("*.yaml")}
    assert kinds == {"CustomResourceDefinition"}
    assert sorted(p.name for p in POLICIES.glob("*.yaml")) == ["cv-only.yaml", "model-card.yaml"]


# --------------------------------------------------------------------------- the policies


def _policy(api: client.ApiClient, name: str) -> dict[str, Any]:
    result: dict[str, Any] = client.CustomObjectsApi(api).get_cluster_custom_object(
        GROUP, VERSION, "tierpolicies", name
    )
    return result


def test_the_shipped_policies_apply_with_the_tables_of_their_seeds(crds: Cluster) -> None:
    card = _policy(crds.api, "model-card")["spec"]
    assert [
        (
            t["name"],
            t["number"],
            t["label"],
            t["stability"],
            t["discountPercent"],
            t.get("maxCV"),
            t["cvBoundary"],
            t.get("maxAvgPowerW"),
            t["powerBoundary"],
        )
        for t in card["tiers"]
    ] == [
        ("tier-1", 1, "Tier 1 - Low Variance", "Stable", 20, 0.1, "Exclusive", 150, "Exclusive"),
        (
            "tier-2",
            2,
            "Tier 2 - Medium Variance",
            "Moderate",
            10,
            0.15,
            "Exclusive",
            200,
            "Exclusive",
        ),
        (
            "tier-3",
            3,
            "Tier 3 - High Variance",
            "Unstable",
            0,
            None,
            "Exclusive",
            None,
            "Exclusive",
        ),
    ]
    cv_only = _policy(crds.api, "cv-only")["spec"]
    assert [
        (t["name"], t["discountPercent"], t.get("maxCV"), t["cvBoundary"], t.get("maxAvgPowerW"))
        for t in cv_only["tiers"]
    ] == [
        ("tier-1", 20, 0.1, "Inclusive", None),
        ("tier-2", 10, 0.15, "Inclusive", None),
        ("tier-3", 0, None, "Exclusive", None),
    ]
    for spec in (card, cv_only):
        assert spec["tierMetric"] == "power_cv_1s"
        assert spec["tolerancesPercent"] == {
            "avgPowerW": 10,
            "peakPowerW": 15,
            "powerCV": 20,
            "joulesPerToken": 10,
            "tokensPerJoule": 10,
        }
        assert spec["requireAttestation"] is True
        assert spec["discountRequiresClaimsWithinTolerance"] is True
        assert spec["borderline"] == "WorseTier"
        assert spec["allowSimulated"] is False


def test_a_policy_with_only_tiers_gets_every_default(crds: Cluster) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    body = {
        "apiVersion": API_VERSION,
        "kind": "TierPolicy",
        "metadata": {"name": name},
        "spec": {"tiers": [{"name": "only", "number": 1, "discountPercent": 0}]},
    }
    custom = client.CustomObjectsApi(crds.api)
    created = custom.create_cluster_custom_object(
        GROUP, VERSION, "tierpolicies", body, dry_run="All"
    )
    spec = created["spec"]
    assert spec["tiers"] == [
        {
            "name": "only",
            "number": 1,
            "discountPercent": 0,
            "cvBoundary": "Exclusive",
            "powerBoundary": "Exclusive",
        }
    ]
    assert spec["tierMetric"] == "power_cv_1s"
    assert spec["tolerancesPercent"] == {
        "avgPowerW": 10,
        "peakPowerW": 15,
        "powerCV": 20,
        "joulesPerToken": 10,
        "tokensPerJoule": 10,
    }
    assert spec["discountRequiresClaimsWithinTolerance"] is True
    assert spec["requireAttestation"] is True
    assert spec["borderline"] == "WorseTier"
    assert spec["maxReruns"] == 1
    assert spec["allowSimulated"] is False
    assert spec["endpointAccess"] == {
        "allowUnverifiedPlacement": False,
        "allowClusterInternal": False,
        "allowLinkLocal": False,
    }
    assert spec["engineAccess"] == {"allowCustomCommand": False}


# --------------------------------------------------------------------------- ModelQualification


def test_the_served_example_is_accepted(crds: Cluster, namespace: str) -> None:
    doc = yaml.safe_load((REPO / "examples" / "qualification-served.yaml").read_text())
    doc["metadata"] = {"name": "served-example"}
    mq = _create_mq(crds.api, namespace, doc)
    assert mq["spec"]["model"]["source"]["server"]["engine"] == "vllm"
    assert mq["spec"]["workload"]["concurrencyLevels"] == [1, 4, 16]


def test_a_server_source_is_accepted_with_its_defaults(crds: Cluster, namespace: str) -> None:
    spec = _with("model.source", {"server": {**SERVER_VLLM, "args": ["--max-num-seqs", "64"]}})
    mq = _create_mq(crds.api, namespace, _mq("served", spec))
    assert mq["spec"]["model"]["source"]["server"] == {
        "engine": "vllm",
        "model": {"pvc": {"claimName": "models", "path": "/"}},
        "args": ["--max-num-seqs", "64"],
        "port": 8000,
        "startupTimeoutSeconds": 900,
    }


def test_a_minimal_qualification_is_accepted_and_defaulted(crds: Cluster, namespace: str) -> None:
    mq = _create_mq(crds.api, namespace, _mq("minimal", MINIMAL_SPEC))
    spec = mq["spec"]
    assert spec["model"] == MINIMAL_SPEC["model"]
    assert spec["workload"] == {
        "samples": 20,
        "tokensPerSample": 128,
        "batchSize": 1,
        "inputTokens": 128,
        "temperature": 0,
        "topP": 1,
        "promptType": "conversational",
        "warmupSamples": 2,
        "repeats": 3,
        "concurrency": 1,
        "seed": 0,
    }
    assert spec["hardware"] == {"gpuProduct": "NVIDIA-H200", "gpuCount": 1}
    assert spec["samplingIntervalMs"] == 25
    assert spec["timeoutSeconds"] == 3600
    assert spec["reverifyAfter"] == "365d"
    assert "claims" not in spec
    assert "attestation" not in spec
    assert "policyRef" not in spec
    assert "status" not in mq


def test_each_source_kind_is_accepted(crds: Cluster, namespace: str) -> None:
    sources = {
        "pvc": {"pvc": {"claimName": "models"}},
        "cache": {"cache": {"claimName": "hf-cache", "modelId": "Qwen/Qwen2.5-7B-Instruct"}},
        "endpoint": {"endpoint": {"url": "https://vllm.serving.svc:8000", "servedModel": "m"}},
        "random": {"randomWeights": {"architecture": "llama-3.1-70b"}},
    }
    for name, source in sources.items():
        mq = _create_mq(crds.api, namespace, _mq(name, {"model": {"name": "m", "source": source}}))
        assert mq["spec"]["model"]["source"].keys() == source.keys()
    pvc = client.CustomObjectsApi(crds.api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelqualifications", "pvc"
    )
    assert pvc["spec"]["model"]["source"]["pvc"] == {"claimName": "models", "path": "/"}


def _with(path: str, value: Any, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of `base` (the minimal spec) with `value` at the dotted `path`."""
    spec = copy.deepcopy(base if base is not None else MINIMAL_SPEC)
    node = spec
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return spec


ENUM_MESSAGE = (
    'spec.model.source.randomWeights.architecture: Unsupported value: "gpt-5": supported values: '
    '"tiny-llama", "llama-3.2-1b", "llama-3.1-8b", "llama-3.1-70b", "mistral-7b", "qwen2.5-7b"'
)

SERVER_VLLM: dict[str, Any] = {"engine": "vllm", "model": {"pvc": {"claimName": "models"}}}

#: (id, spec, the field path the message is reported on, the exact human message)
INVALID_SPECS: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "tokens-per-sample-0",
        _with("workload.tokensPerSample", 0),
        "spec.workload.tokensPerSample",
        "tokensPerSample must be between 1 and 32768",
    ),
    (
        "two-sources",
        _with("model.source.endpoint", {"url": "http://127.0.0.1:8000"}),
        "spec.model.source",
        "source must set exactly one of pvc, cache, server, endpoint or randomWeights"
        "; it sets endpoint randomWeights",
    ),
    (
        "server-preset-without-model",
        _with("model.source", {"server": {"engine": "vllm"}}),
        "spec.model.source.server",
        "server.model is required for a preset engine (vllm, sglang, tgi)",
    ),
    (
        "server-custom-without-command",
        _with("model.source", {"server": {"engine": "custom"}}),
        "spec.model.source.server",
        "server.command is required for engine custom and not allowed for a preset engine",
    ),
    (
        "server-preset-with-command",
        _with("model.source", {"server": {**SERVER_VLLM, "command": ["sh", "-c", "id"]}}),
        "spec.model.source.server",
        "server.command is required for engine custom and not allowed for a preset engine",
    ),
    (
        "server-trust-remote-code",
        _with("model.source", {"server": {**SERVER_VLLM, "args": ["--trust-remote-code"]}}),
        "spec.model.source.server.args[0]",
        "server.args must not set what the benchmark owns (the model, its address and name, "
        'safetensors weights, no remote code); got "--trust-remote-code"',
    ),
    (
        "server-load-format-pickle",
        _with("model.source", {"server": {**SERVER_VLLM, "args": ["--ok", "--Load_Format=pt"]}}),
        "spec.model.source.server.args[1]",
        'got "--Load_Format=pt"',
    ),
    (
        "server-two-weights",
        _with(
            "model.source",
            {
                "server": {
                    "engine": "sglang",
                    "model": {
                        **SERVER_VLLM["model"],
                        "cache": {"claimName": "c", "modelId": "a/b"},
                    },
                }
            },
        ),
        "spec.model.source.server.model",
        "server.model must set exactly one of pvc or cache",
    ),
    (
        "server-low-port",
        _with("model.source", {"server": {**SERVER_VLLM, "port": 80}}),
        "spec.model.source.server.port",
        "server.port must be between 1024 and 65535",
    ),
    (
        "sweep-not-increasing",
        _with("workload.concurrencyLevels", [4, 1]),
        "spec.workload.concurrencyLevels",
        "concurrencyLevels must increase strictly, like [1, 4, 16]",
    ),
    (
        "sweep-tier-not-a-level",
        _with("workload", {"concurrencyLevels": [1, 4], "tierConcurrency": 8}),
        "spec.workload",
        "workload.tierConcurrency must be one of workload.concurrencyLevels",
    ),
    (
        "sweep-and-concurrency",
        _with("workload", {"concurrencyLevels": [1, 4], "concurrency": 2}),
        "spec.workload",
        "set workload.concurrencyLevels or workload.concurrency, not both",
    ),
    (
        "empty-source",
        _with("model.source", {}),
        "spec.model.source",
        "source must set exactly one of pvc, cache, server, endpoint or randomWeights"
        "; it sets none",
    ),
    (
        "no-source",
        {"model": {"name": "x"}},
        "spec.model.source",
        "Required value",
    ),
    (
        "power-cv-1.5",
        _with("claims", {"powerCV": 1.5}),
        "spec.claims.powerCV",
        "powerCV must be between 0 and 1",
    ),
    (
        "peak-below-avg",
        _with("claims", {"avgPowerW": 150, "peakPowerW": 120}),
        "spec.claims",
        "claims.peakPowerW must be at least claims.avgPowerW",
    ),
    (
        "sampling-interval-2",
        _with("samplingIntervalMs", 2),
        "spec.samplingIntervalMs",
        "samplingIntervalMs must be between 5 and 1000",
    ),
    (
        "batch-over-samples",
        _with("workload", {"samples": 4, "batchSize": 8}),
        "spec.workload",
        "workload.batchSize must not exceed workload.samples",
    ),
    (
        "batch-over-default-samples",
        _with("workload", {"batchSize": 64}),
        "spec.workload",
        "workload.batchSize must not exceed workload.samples",
    ),
    (
        "bad-contact",
        _with("attestation", {"contact": "energy-team"}),
        "spec.attestation.contact",
        'attestation.contact must be an email address like energy@example.ai; got "energy-team"',
    ),
    (
        "gpu-count-9",
        _with("hardware", {"gpuCount": 9}),
        "spec.hardware.gpuCount",
        "gpuCount must be between 1 and 8",
    ),
    (
        "ftp-endpoint",
        _with("model.source", {"endpoint": {"url": "ftp://models.example.com/llama"}}),
        "spec.model.source.endpoint.url",
        "endpoint.url must be an http:// or https:// URL with a host, like"
        ' http://vllm.serving.svc:8000/v1; got "ftp://models.example.com/llama"',
    ),
    (
        "unknown-architecture",
        _with("model.source.randomWeights.architecture", "gpt-5"),
        "spec.model.source.randomWeights.architecture",
        ENUM_MESSAGE,
    ),
    (
        "relative-pvc-path",
        _with("model.source", {"pvc": {"claimName": "m", "path": "models/../etc"}}),
        "spec.model.source.pvc.path",
        "pvc.path must be an absolute path without '..' segments",
    ),
    (
        "signed-before-tested",
        _with("attestation", {"dateTested": "2025-12-14", "signedDate": "2025-12-13"}),
        "spec.attestation",
        "attestation.signedDate must not be before attestation.dateTested",
    ),
    (
        "node-selector-value-with-a-space",
        _with("hardware", {"nodeSelector": {"topology.kubernetes.io/zone": "syd 1a"}}),
        "spec.hardware.nodeSelector",
        'nodeSelector value "syd 1a" of key "topology.kubernetes.io/zone" is not a label value',
    ),
    (
        "node-selector-key-with-a-space",
        _with("hardware", {"nodeSelector": {"bad key": "x"}}),
        "spec.hardware.nodeSelector",
        'nodeSelector key "bad key" is not a label key',
    ),
    (
        "toleration-key-with-punctuation",
        _with("hardware", {"tolerations": [{"key": "bad key!", "operator": "Exists"}]}),
        "spec.hardware.tolerations[0]",
        'toleration key "bad key!" is not a taint key',
    ),
    (
        "toleration-seconds-without-no-execute",
        _with(
            "hardware",
            {"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 30}]},
        ),
        "spec.hardware.tolerations[0]",
        "tolerationSeconds applies only to effect NoExecute",
    ),
    (
        "exists-toleration-with-value",
        _with("hardware", {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}),
        "spec.hardware.tolerations[0]",
        'a toleration with operator Exists must not set a value (key "k")',
    ),
    (
        "reverify-after-1y",
        _with("reverifyAfter", "1y"),
        "spec.reverifyAfter",
        "reverifyAfter must be a whole number of hours or days between 1h and 1826d",
    ),
    (
        "reverify-after-0h",
        _with("reverifyAfter", "0h"),
        "spec.reverifyAfter",
        "between 1h and 1826d (five years), like 72h or 365d; got 0h",
    ),
    (
        "reverify-after-overflow",
        _with("reverifyAfter", "99999999999999d"),
        "spec.reverifyAfter",
        "between 1h and 1826d (five years)",
    ),
    (
        "parameter-count-words",
        _with("model.parameterCount", "8 billion"),
        "spec.model.parameterCount",
        "model.parameterCount must be a number with an optional K, M, B or T suffix, like 8B,"
        ' 70B or 1.5B; got "8 billion"',
    ),
    (
        "samples-0",
        _with("workload.samples", 0),
        "spec.workload.samples",
        "samples must be between 1 and 100000",
    ),
    (
        "repeats-101",
        _with("workload.repeats", 101),
        "spec.workload.repeats",
        "repeats must be between 1 and 100",
    ),
    (
        "temperature-2.5",
        _with("workload.temperature", 2.5),
        "spec.workload.temperature",
        "temperature must be between 0 and 2",
    ),
    (
        "top-p-0",
        _with("workload.topP", 0),
        "spec.workload.topP",
        "topP must be greater than 0 and at most 1",
    ),
    (
        "prompt-type-poetry",
        _with("workload.promptType", "poetry"),
        "spec.workload.promptType",
        'Unsupported value: "poetry"',
    ),
    (
        "warmup-negative",
        _with("workload.warmupSamples", -1),
        "spec.workload.warmupSamples",
        "warmupSamples must be between 0 and 10000",
    ),
    (
        "concurrency-0",
        _with("workload.concurrency", 0),
        "spec.workload.concurrency",
        "concurrency must be between 1 and 1024",
    ),
    (
        "input-tokens-200k",
        _with("workload.inputTokens", 200000),
        "spec.workload.inputTokens",
        "inputTokens must be between 1 and 131072",
    ),
    (
        "seed-negative",
        _with("workload.seed", -1),
        "spec.workload.seed",
        "seed must be between 0 and 2147483647",
    ),
    (
        "timeout-30s",
        _with("timeoutSeconds", 30),
        "spec.timeoutSeconds",
        "timeoutSeconds must be between 60 and 86400",
    ),
    (
        "gpu-product-with-spaces",
        _with("hardware", {"gpuProduct": "NVIDIA H200"}),
        "spec.hardware.gpuProduct",
        "hardware.gpuProduct must be a value of the node label nvidia.com/gpu.product: letters,"
        " digits, -, _ and ., starting and ending with a letter or digit, like NVIDIA-H200;"
        ' got "NVIDIA H200"',
    ),
    (
        "avg-power-0",
        _with("claims", {"avgPowerW": 0}),
        "spec.claims.avgPowerW",
        "avgPowerW must be greater than 0 and at most 10000",
    ),
    (
        "joules-per-token-negative",
        _with("claims", {"joulesPerToken": -1}),
        "spec.claims.joulesPerToken",
        "joulesPerToken must be greater than 0 and at most 1000",
    ),
    (
        "target-tier-0",
        _with("claims", {"targetTier": 0}),
        "spec.claims.targetTier",
        "targetTier must be between 1 and 10",
    ),
    (
        "empty-model-name",
        _with("model.name", ""),
        "spec.model.name",
        "should be at least 1 chars long",
    ),
    (
        "model-name-300",
        _with("model.name", "m" * 300),
        "spec.model.name",
        "Too long: may not be more than 253 bytes",
    ),
    (
        "cache-without-model-id",
        _with("model.source", {"cache": {"claimName": "hf"}}),
        "spec.model.source.cache.modelId",
        "Required value",
    ),
    (
        "pvc-without-claim",
        _with("model.source", {"pvc": {"path": "/m"}}),
        "spec.model.source.pvc.claimName",
        "Required value",
    ),
    (
        "endpoint-without-url",
        _with("model.source", {"endpoint": {"servedModel": "m"}}),
        "spec.model.source.endpoint.url",
        "Required value",
    ),
    (
        "bad-queue-name",
        _with("queueName", "Bad_Queue!"),
        "spec.queueName",
        "queueName must be the name of a Kueue LocalQueue in the benchmark namespace:"
        " lowercase letters, digits, - and ., starting and ending with a letter or digit,"
        " at most 63 characters,"
        ' like gpu-qualification; got "Bad_Queue!"',
    ),
    (
        "policy-ref-without-name",
        _with("policyRef", {}),
        "spec.policyRef.name",
        "Required value",
    ),
    (
        "seventeen-tolerations",
        _with(
            "hardware", {"tolerations": [{"key": f"k{i}", "operator": "Exists"} for i in range(17)]}
        ),
        "spec.hardware.tolerations",
        "Too many: 17: must have at most 16 items",
    ),
    (
        "toleration-bad-effect",
        _with(
            "hardware", {"tolerations": [{"key": "k", "operator": "Exists", "effect": "Sometimes"}]}
        ),
        "spec.hardware.tolerations[0].effect",
        'Unsupported value: "Sometimes"',
    ),
    # ---- names and references: a human message naming the field, never a regex
    (
        "model-id-traversal",
        _with("model.source", {"cache": {"claimName": "hf-cache", "modelId": "../../etc"}}),
        "spec.model.source.cache.modelId",
        "cache.modelId must be a Hugging Face repo id like org/name: letters, digits, -, _ and .,"
        " no '..' or leading '/'",
    ),
    (
        "model-id-dot-dot-inside",
        _with("model.source", {"cache": {"claimName": "hf-cache", "modelId": "org/a..b"}}),
        "spec.model.source.cache.modelId",
        "no '..' or leading '/'",
    ),
    (
        "model-id-leading-slash",
        _with("model.source", {"cache": {"claimName": "hf-cache", "modelId": "/etc/passwd"}}),
        "spec.model.source.cache.modelId",
        '; got "/etc/passwd"',
    ),
    (
        "model-id-three-parts",
        _with("model.source", {"cache": {"claimName": "hf-cache", "modelId": "a/b/c"}}),
        "spec.model.source.cache.modelId",
        "cache.modelId must be a Hugging Face repo id like org/name",
    ),
    (
        "cache-claim-name-uppercase",
        _with("model.source", {"cache": {"claimName": "HF_Cache", "modelId": "org/name"}}),
        "spec.model.source.cache.claimName",
        "cache.claimName must be the name of a PersistentVolumeClaim in the benchmark"
        " namespace: lowercase letters, digits, - and ., starting and ending with a letter"
        " or digit, like hf-cache;"
        ' got "HF_Cache"',
    ),
    (
        "pvc-claim-name-with-a-slash",
        _with("model.source", {"pvc": {"claimName": "../models"}}),
        "spec.model.source.pvc.claimName",
        "pvc.claimName must be the name of a PersistentVolumeClaim in the benchmark namespace",
    ),
    (
        "policy-ref-name-uppercase",
        _with("policyRef", {"name": "Model_Card"}),
        "spec.policyRef.name",
        "policyRef.name must be the name of a TierPolicy: lowercase letters, digits, - and .,"
        ' starting and ending with a letter or digit, like model-card; got "Model_Card"',
    ),
    (
        "gpu-product-with-a-newline",
        _with("hardware", {"gpuProduct": "NVIDIA-H200\n"}),
        "spec.hardware.gpuProduct",
        "hardware.gpuProduct must be a value of the node label nvidia.com/gpu.product"
        ": letters, digits, -, _ and ., starting and ending with a letter or digit, like"
        " NVIDIA-H200 (it contains a control or bidirectional-override character)",
    ),
    # ---- endpoint URLs
    (
        "endpoint-without-host",
        _with("model.source", {"endpoint": {"url": "http://"}}),
        "spec.model.source.endpoint.url",
        "endpoint.url must be an http:// or https:// URL with a host, like"
        ' http://vllm.serving.svc:8000/v1; got "http://"',
    ),
    (
        "endpoint-with-a-space",
        _with("model.source", {"endpoint": {"url": "http://vllm serving:8000"}}),
        "spec.model.source.endpoint.url",
        "endpoint.url must not contain spaces, control or bidirectional-override characters"
        " (percent-encode them in a path, e.g. %20) (found a space)",
    ),
    (
        "endpoint-with-credentials",
        _with("model.source", {"endpoint": {"url": "https://user:secret@example.com"}}),
        "spec.model.source.endpoint.url",
        "endpoint.url must not carry credentials (user:password@): put them in a Secret",
    ),
    (
        "endpoint-with-a-newline",
        _with("model.source", {"endpoint": {"url": "http://vllm.serving.svc:8000/v1\r\nX: y"}}),
        "spec.model.source.endpoint.url",
        "endpoint.url must not contain spaces, control or bidirectional-override characters"
        " (percent-encode them in a path, e.g. %20) (found U+000D)",
    ),
    (
        "endpoint-relative",
        _with("model.source", {"endpoint": {"url": "/v1/completions"}}),
        "spec.model.source.endpoint.url",
        "endpoint.url must be an http:// or https:// URL with a host, like"
        ' http://vllm.serving.svc:8000/v1; got "/v1/completions"',
    ),
    (
        "endpoint-too-long",
        _with("model.source", {"endpoint": {"url": "http://h/" + "a" * 2048}}),
        "spec.model.source.endpoint.url",
        "Too long: may not be more than 2048 bytes",
    ),
    # ---- control and bidirectional-override characters in names and free text
    (
        "model-name-with-a-newline",
        _with("model.name", "llama\nINFO verified"),
        "spec.model.name",
        "model.name must not contain control or bidirectional-override characters (found U+000A)",
    ),
    (
        "model-name-with-a-right-to-left-override",
        _with("model.name", "llama-\u202egnp.exe"),
        "spec.model.name",
        "model.name must not contain control or bidirectional-override characters (found U+202E)",
    ),
    (
        "model-version-with-an-escape",
        _with("model.version", "v1\x1b[2J"),
        "spec.model.version",
        "model.version must not contain control or bidirectional-override characters"
        " (found U+001B)",
    ),
    (
        "architecture-with-an-isolate",
        _with("model.architecture", "Llama\u2066-3"),
        "spec.model.architecture",
        "model.architecture must not contain control or bidirectional-override characters"
        " (found U+2066)",
    ),
    (
        "served-model-with-a-tab",
        _with("model.source", {"endpoint": {"url": "http://a.b", "servedModel": "m\tx"}}),
        "spec.model.source.endpoint.servedModel",
        "endpoint.servedModel must not contain control or bidirectional-override characters"
        " (found U+0009)",
    ),
    (
        "pvc-path-with-a-nul",
        _with("model.source", {"pvc": {"claimName": "models", "path": "/m\x00"}}),
        "spec.model.source.pvc.path",
        "pvc.path must not contain control or bidirectional-override characters (found U+0000)",
    ),
    (
        "contact-with-crlf",
        _with("attestation", {"contact": "energy@example.ai\r\nBcc: all@example.ai"}),
        "spec.attestation.contact",
        "attestation.contact must not contain control or bidirectional-override characters"
        " (found U+000D)",
    ),
    (
        "organization-with-a-mark",
        _with("attestation", {"organization": "Example\u200f AI"}),
        "spec.attestation.organization",
        "attestation.organization must not contain control or bidirectional-override characters"
        " (found U+200F)",
    ),
    (
        "signature-with-a-c1-control",
        _with("attestation", {"signature": "Jane\x85Developer"}),
        "spec.attestation.signature",
        "attestation.signature must not contain control or bidirectional-override characters"
        " (found U+0085)",
    ),
    (
        "account-id-with-a-delete",
        _with("attestation", {"accountId": "acct\x7f"}),
        "spec.attestation.accountId",
        "attestation.accountId must not contain control or bidirectional-override characters"
        " (found U+007F)",
    ),
    (
        "framework-with-an-arabic-mark",
        _with("model.framework", "PyTorch\u061c"),
        "spec.model.framework",
        "model.framework must not contain control or bidirectional-override characters"
        " (found U+061C)",
    ),
    (
        "quantization-with-a-line-feed",
        _with("model.quantization", "FP16\n"),
        "spec.model.quantization",
        "model.quantization must not contain control or bidirectional-override characters"
        " (found U+000A)",
    ),
]


def _rejection(exc: ApiException) -> str:
    assert exc.status == 422, exc.body
    body = json.loads(exc.body)
    assert body["reason"] == "Invalid"
    message: str = body["message"]
    return message


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [pytest.param(s, f, m, id=i) for i, s, f, m in INVALID_SPECS],
)
def test_an_invalid_qualification_is_rejected_with_a_human_message(
    crds: Cluster, namespace: str, spec: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ApiException) as exc:
        _create_mq(crds.api, namespace, _mq("bad", spec))
    text = _rejection(exc.value)
    assert message in text
    assert f"{field}: " in text
    assert "should match" not in text, text  # no rule answers with a regular expression
    assert "^[" not in text, text


def _tiers(*tiers: tuple[str, int, float, float | None]) -> list[dict[str, Any]]:
    out = []
    for name, number, discount, max_cv in tiers:
        tier: dict[str, Any] = {"name": name, "number": number, "discountPercent": discount}
        if max_cv is not None:
            tier["maxCV"] = max_cv
        out.append(tier)
    return out


ORDER = (
    "tiers must be listed best first, each with its own number, numbers increasing down the list"
)
LAST = tier("last", 9, 0)

INVALID_POLICIES: list[tuple[str, list[dict[str, Any]], str]] = [
    (
        "numbers-out-of-order",
        _tiers(("b", 2, 10, 0.15), ("a", 1, 20, 0.1), ("c", 3, 0, None)),
        f"spec.tiers: Invalid value: tier a (number 1) is listed after tier b (number 2): {ORDER}",
    ),
    (
        "discount-increasing",
        _tiers(("a", 1, 10, 0.1), ("b", 2, 20, None)),
        "tier b carries a larger discount (20%) than the better tier a (10%): a worse tier"
        " (a higher number) must not carry a larger discount than a better one",
    ),
    (
        "duplicate-number",
        _tiers(("a", 1, 10, 0.1), ("b", 1, 10, None)),
        f"tiers a and b both have number 1: {ORDER}",
    ),
    (
        "duplicate-number-further-down",
        _tiers(("a", 1, 20, 0.1), ("b", 2, 10, 0.2), ("c", 2, 0, None)),
        f"tiers b and c both have number 2: {ORDER}",
    ),
    (
        "tier-2-stricter-on-cv",
        _tiers(("tier-1", 1, 20, 0.1), ("tier-2", 2, 10, 0.05), ("tier-3", 3, 0, None)),
        "tier tier-2 allows CV < 0.05, less than the better tier tier-1 (CV < 0.1): a worse tier"
        " must allow at least the CV every better tier allows",
    ),
    (
        "tier-2-stricter-on-power",
        [
            tier("tier-1", 1, 20, max_cv=0.1, max_power_w=150),
            tier("tier-2", 2, 10, max_cv=0.15, max_power_w=120),
            LAST,
        ],
        "tier tier-2 allows average power < 120 W, less than the better tier tier-1 (average"
        " power < 150 W): a worse tier must allow at least the average power every better tier"
        " allows",
    ),
    (
        "better-tier-without-a-cv-limit",
        [tier("a", 1, 20, max_power_w=150), tier("b", 2, 10, max_cv=0.2, max_power_w=200), LAST],
        "tier b allows CV < 0.2, less than the better tier a (any CV): a worse tier must allow at"
        " least the CV every better tier allows",
    ),
    (
        "equal-limit-narrower-boundary",
        [tier("a", 1, 20, max_cv=0.1, cv_boundary="Inclusive"), tier("b", 2, 10, max_cv=0.1), LAST],
        "tier b allows CV < 0.1, less than the better tier a (CV <= 0.1)",
    ),
    (
        "same-limits-as-a-better-tier",
        [
            tier("a", 1, 20, max_cv=0.1, max_power_w=150),
            tier("b", 2, 10, max_cv=0.1, max_power_w=150),
            LAST,
        ],
        "tier b can never be earned: it has the same maxCV and maxAvgPowerW as the better tier a;"
        " a worse tier (a higher number) must allow more on maxCV or maxAvgPowerW",
    ),
    (
        "ten-tiers-the-ninth-strictest",  # the messages' worst case: every pair is compared
        [tier(f"t{n}-" + "x" * 59, n, 10 - n, max_cv=0.01 * n) for n in range(1, 9)]
        + [tier("t9", 9, 1, max_cv=0.005), tier("t10", 10, 0)],
        f"tier t9 allows CV < 0.005, less than the better tier t1-{'x' * 59} (CV < 0.01)",
    ),
    (
        "cv-below-0",
        [tier("a", 1, 20, max_cv=0), tier("b", 2, 0)],
        "spec.tiers[0]: Invalid value: tier a: maxCV 0 with cvBoundary Exclusive (a CV below 0)"
        " can never be met: set cvBoundary Inclusive or a maxCV above 0",
    ),
    (
        "last-tier-limited",
        _tiers(("a", 1, 20, 0.1), ("b", 2, 0, 0.2)),
        "the last tier must set neither maxCV nor maxAvgPowerW, so that every measurement"
        " earns a tier (b sets a limit)",
    ),
    (
        "duplicate-name",
        _tiers(("a", 1, 20, 0.1), ("a", 2, 0, None)),
        'spec.tiers[1]: Duplicate value: {"name":"a"}',
    ),
    (
        "no-tiers",
        [],
        "spec.tiers: Invalid value: 0: spec.tiers in body should have at least 1 items",
    ),
    (
        "tier-name-with-a-space",
        [tier("Tier 1", 1, 0)],
        'spec.tiers[0].name: Invalid value: "Tier 1": tiers[].name must be lowercase letters,'
        " digits, - and _, starting and ending with a letter or digit, like tier-1;"
        ' got "Tier 1"',
    ),
    (
        "tier-label-with-a-newline",
        [tier("a", 1, 0, label="Tier 1\nDiscount 100%")],
        'spec.tiers[0].label: Invalid value: "Tier 1\\nDiscount 100%": tiers[].label must not'
        " contain control or bidirectional-override characters (found U+000A)",
    ),
    (
        "tier-stability-with-an-override",
        [tier("a", 1, 0, stability="Stable\u202e")],
        "tiers[].stability must not contain control or bidirectional-override characters"
        " (found U+202E)",
    ),
]


def _tier_policy(tiers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "TierPolicy",
        "metadata": {"name": f"t-{uuid.uuid4().hex[:8]}"},
        "spec": {"tiers": tiers, **spec},
    }


@pytest.mark.parametrize(
    ("tiers", "message"), [pytest.param(t, m, id=i) for i, t, m in INVALID_POLICIES]
)
def test_an_invalid_tier_policy_is_rejected_with_a_human_message(
    crds: Cluster, tiers: list[dict[str, Any]], message: str
) -> None:
    body = _tier_policy(tiers)
    name = body["metadata"]["name"]
    custom = client.CustomObjectsApi(crds.api)
    try:
        with pytest.raises(ApiException) as exc:
            custom.create_cluster_custom_object(GROUP, VERSION, "tierpolicies", body)
    finally:
        _try(lambda: custom.delete_cluster_custom_object(GROUP, VERSION, "tierpolicies", name))
    text = _rejection(exc.value)
    assert message in text
    assert "should match" not in text, text
    assert "^[" not in text, text
    # The operator refuses a policy stored before these rules with the apiserver's words.
    try:
        models = [Tier.model_validate(t) for t in tiers]
    except ValueError:
        return  # a tier the operator's model refuses on its own (a bad name is not one)
    for problem in tier_order_problems(models):
        assert problem in text, (problem, text)


@pytest.mark.parametrize(
    "tiers",
    [
        pytest.param(
            [
                tier("a", 1, 20, max_cv=0.1),
                tier("b", 2, 10, max_cv=0.1, cv_boundary="Inclusive"),
                tier("c", 3, 0),
            ],
            id="equal-limit-wider-boundary",
        ),
        pytest.param([tier("a", 1, 20, max_cv=0.1), tier("b", 5, 0)], id="numbers-with-a-gap"),
        pytest.param(
            [tier("a", 1, 20, max_cv=0.0, cv_boundary="Inclusive"), tier("b", 2, 0)],
            id="cv-zero-inclusive",
        ),
        pytest.param(
            [
                tier("a", 1, 20, max_cv=0.1, max_power_w=150),
                tier("b", 2, 20, max_cv=0.1),
                tier("c", 3, 0),
            ],
            id="same-discount-power-limit-dropped",
        ),
        pytest.param(
            [tier(f"t{n}", n, 10 - n, max_cv=0.01 * n) for n in range(1, 10)]
            + [tier("t10", 10, 0, label="Tier 10 - «Unstable» ✓")],
            id="ten-tiers-and-a-unicode-label",
        ),
    ],
)
def test_an_ordered_tier_policy_is_accepted(crds: Cluster, tiers: list[dict[str, Any]]) -> None:
    custom = client.CustomObjectsApi(crds.api)
    created: dict[str, Any] = custom.create_cluster_custom_object(
        GROUP, VERSION, "tierpolicies", _tier_policy(tiers), dry_run="All"
    )
    assert [t["name"] for t in created["spec"]["tiers"]] == [t["name"] for t in tiers]
    assert tier_order_problems([Tier.model_validate(t) for t in tiers]) == []


def test_allowed_namespaces_must_be_namespace_names(crds: Cluster) -> None:
    custom = client.CustomObjectsApi(crds.api)
    good = _tier_policy([tier("only", 1, 0)], allowedNamespaces=["team-a", "team-b"])
    created: dict[str, Any] = custom.create_cluster_custom_object(
        GROUP, VERSION, "tierpolicies", good, dry_run="All"
    )
    assert created["spec"]["allowedNamespaces"] == ["team-a", "team-b"]
    bad = _tier_policy([tier("only", 1, 0)], allowedNamespaces=["Team A"])
    with pytest.raises(ApiException) as exc:
        custom.create_cluster_custom_object(GROUP, VERSION, "tierpolicies", bad, dry_run="All")
    text = _rejection(exc.value)
    assert "allowedNamespaces entries must be namespace names" in text
    assert 'got "Team A"' in text


def test_endpoint_access_is_stored_as_given(crds: Cluster) -> None:
    custom = client.CustomObjectsApi(crds.api)
    body = _tier_policy([tier("only", 1, 0)], endpointAccess={"allowLinkLocal": True})
    created: dict[str, Any] = custom.create_cluster_custom_object(
        GROUP, VERSION, "tierpolicies", body, dry_run="All"
    )
    assert created["spec"]["endpointAccess"] == {
        "allowUnverifiedPlacement": False,
        "allowClusterInternal": False,
        "allowLinkLocal": True,
    }


@pytest.mark.parametrize(
    "url",
    [
        "http://vllm.serving.svc:8000/v1",
        "https://api.example.com",
        "http://127.0.0.1:8000",
        "http://[fd00::1]:8000/v1",
        "https://api.example.com/v1?key=a@b",  # an @ after the host is not a credential
        "HTTPS://API.EXAMPLE.COM/v1",
    ],
)
def test_an_http_endpoint_with_a_host_is_accepted(crds: Cluster, namespace: str, url: str) -> None:
    """Admission accepts any host; cluster-internal and link-local ones are the operator's call."""
    spec = _with("model.source", {"endpoint": {"url": url, "servedModel": "llama"}})
    created: dict[str, Any] = client.CustomObjectsApi(crds.api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelqualifications", _mq("ep", spec), dry_run="All"
    )
    assert created["spec"]["model"]["source"]["endpoint"]["url"] == url


def test_names_and_free_text_outside_ascii_are_accepted(crds: Cluster, namespace: str) -> None:
    """Only control and bidirectional-formatting characters are refused, not other Unicode."""
    spec = _with("model.name", "modèle-llama-日本語")
    spec = _with("attestation", {"organization": "Société Ω", "signature": "Zoë O’Neil"}, spec)
    spec = _with("model.source", {"cache": {"claimName": "hf.cache-1", "modelId": "gpt2"}}, spec)
    created = _create_mq(crds.api, namespace, _mq("unicode", spec))
    assert created["spec"]["model"]["name"] == "modèle-llama-日本語"


def test_server_side_dry_run_rejects_what_create_would(crds: Cluster, namespace: str) -> None:
    bad = yaml.safe_dump(_mq("bad", _with("workload.tokensPerSample", 0)))
    with pytest.raises(RuntimeError, match="tokensPerSample must be between 1 and 32768"):
        crds.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=bad)
    good = yaml.safe_dump(_mq("good", MINIMAL_SPEC))
    out = crds.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=good)
    assert "(server dry run)" in out


# --------------------------------------------------------------------------- kubectl


def test_kubectl_explain_describes_a_field_with_its_default_and_bounds(crds: Cluster) -> None:
    def explained() -> str | None:
        out = crds.kubectl(
            "explain", "modelqualification.spec.workload.tokensPerSample", check=False
        )
        return out if "DESCRIPTION" in out else None

    out = wait_for("kubectl explain to know the new type", explained)
    assert "FIELD: tokensPerSample <integer>" in out
    assert "Tokens generated per prompt" in out
    assert "Default: 128. From 1 to 32768." in out
    # Every field of the spec has a description, so the listing has text under each one.
    spec = crds.kubectl("explain", "mq.spec")
    for field in ("model", "claims", "workload", "hardware", "samplingIntervalMs", "policyRef"):
        assert re.search(rf"^  {field}\t<\S+>.*\n    \S", spec, re.M), field
    tiers = crds.kubectl("explain", "tierpolicy.spec.tiers.maxCV")
    assert "Unset: no CV limit" in tiers


def test_kubectl_get_shows_the_printer_columns(crds: Cluster, namespace: str) -> None:
    _create_mq(crds.api, namespace, _mq("cols", MINIMAL_SPEC))
    out = crds.kubectl("get", "mq", "-n", namespace)
    header, row = out.splitlines()[:2]
    assert re.split(r"\s{2,}", header.strip()) == [*PRINTER_HEADERS, "AGE"]
    assert row.split()[:2] == ["cols", "tiny"]
    # The category lists the kind too.
    assert "modelqualification.modelgrid.firmus.ai/cols" in crds.kubectl(
        "get", "modelgrid", "-n", namespace
    )
    tp = crds.kubectl("get", "tp", "model-card")
    assert re.split(r"\s{2,}", tp.splitlines()[0].strip()) == [
        "NAME",
        "METRIC",
        "BORDERLINE",
        "AGE",
    ]


# --------------------------------------------------------------------------- docs/api.md


def _yaml_blocks(after_heading: str) -> list[Any]:
    text = API_DOC.read_text()
    start = text.index(f"\n{after_heading}\n")
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text[start:], re.S)]


def test_the_documented_example_and_its_status_round_trip(crds: Cluster, namespace: str) -> None:
    example, status_doc = _yaml_blocks("## Example")[:2]
    custom = client.CustomObjectsApi(crds.api)
    status = status_doc["status"]
    # Status goes through its subresource only: sent with the object, it is dropped.
    created = _create_mq(crds.api, namespace, {**example, "status": status})
    assert "status" not in created
    # Every field of the example was set explicitly: defaulting adds nothing, pruning drops nothing.
    assert created["spec"] == example["spec"]
    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "modelqualifications",
        example["metadata"]["name"],
        {"status": {**status, "notAField": 1}},
    )
    got = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelqualifications", example["metadata"]["name"]
    )
    assert got["status"] == status  # typed through and through: the unknown field is pruned
    out = crds.kubectl("get", "mq", "-n", namespace, example["metadata"]["name"])
    row = re.split(r"\s{2,}", out.splitlines()[1].strip())
    assert row[:8] == [
        "my-custom-llama-8b",
        "my-custom-llama-8b",
        "Succeeded",
        "Tier 1 - Low Variance",
        "20",
        "0.0812",
        "139.6",
        "Verified",  # PROGRESS is empty: it is shown only while a benchmark runs
    ]
    # The minimal example of the spec section is valid too.
    [minimal] = _yaml_blocks("### spec")[:1]
    assert _create_mq(crds.api, namespace, minimal)["spec"]["workload"]["tokensPerSample"] == 128


def _doc_rows() -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in API_DOC.read_text().splitlines():
        m = re.match(r"^\| `([^`]+)` \|", line)
        if m:
            rows.setdefault(m.group(1), line)
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@pytest.mark.parametrize(("crd", "kind"), [(MQ_CRD, "ModelQualification"), (TP_CRD, "TierPolicy")])
def test_the_api_doc_lists_every_spec_field_with_its_default_and_bounds(
    crd: Path, kind: str
) -> None:
    rows = _doc_rows()
    problems: list[str] = []

    def visit(path: str, node: dict[str, Any]) -> None:
        if not path.startswith("spec.") or "{}" in path:
            return
        if node.get("type") in ("object", "array") and (
            "properties" in node or isinstance(node.get("items"), dict)
        ):
            return  # documented through its fields
        field = path.removeprefix("spec.")
        row = rows.get(field)
        if row is None:
            problems.append(f"{kind} {field}: no row in docs/api.md")
            return
        if "default" in node and f"`{_fmt(node['default'])}`" not in row:
            problems.append(f"{field}: default {node['default']!r} not in {row!r}")
        for bound in ("minimum", "maximum"):
            if bound in node and _fmt(node[bound]) not in row:
                problems.append(f"{field}: {bound} {node[bound]!r} not in its row")
        for value in node.get("enum", []):
            if f"`{value}`" not in row:
                problems.append(f"{field}: enum value {value!r} not in its row")
        plain = "enum" not in node and "format" not in node
        if plain and "maxLength" in node and str(node["maxLength"]) not in row:
            problems.append(f"{field}: maxLength {node['maxLength']} not in its row")

    _walk(_schema(crd), "", visit)
    assert not problems, "\n".join(problems)


def test_an_imported_model_card_is_a_qualification_the_apiserver_accepts(
    crds: Cluster, namespace: str, tmp_path: Path
) -> None:
    """`modelgrid card import` of the filled example card: what it writes is created as is
    (no field pruned, nothing refused); the unfilled template writes nothing."""
    from modelgrid_report.cli import main as modelgrid

    out = tmp_path / "mq.yaml"
    card = REPO / "tests" / "data" / "cards" / "filled.md"
    assert modelgrid(["card", "import", str(card), "--pvc", "models:/llama", "-o", str(out)]) == 0
    doc = yaml.safe_load(out.read_text())
    created = _create_mq(crds.api, namespace, doc)
    # everything the card declared is there as written (the apiserver only adds defaults)
    assert _within(doc["spec"], created["spec"])
    assert created["metadata"]["labels"]["modelgrid.firmus.ai/target-tier"] == "1"
    template = REPO / "tests" / "data" / "cards" / "template.md"
    refused = tmp_path / "template.yaml"
    assert modelgrid(["card", "import", str(template), "--pvc", "models", "-o", str(refused)]) == 2
    assert not refused.exists()


def _within(small: Any, big: Any) -> bool:
    """Whether every field of `small` is in `big` with the same value (dicts recursively)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            k in big and _within(v, big[k]) for k, v in small.items()
        )
    return bool(small == big)
