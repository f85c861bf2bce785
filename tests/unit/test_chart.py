"""The Helm chart without a cluster: lint, render (defaults, every value set, every switch off),
the schema, the CRD copies, the RBAC rules, the benchmark namespace and its NetworkPolicy, Pod
Security, the image.

helm comes from $MODELGRID_K8S_BIN (what `make test` sets) or PATH; without it the tests that run
helm skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelgrid_sandbox.chart import (
    CHART,
    CRD_COPIES,
    HOOK_ANNOTATIONS,
    KEEP_ANNOTATION,
    POLICY_COPIES,
    helm_binary,
    stale_copies,
)
from modelgrid_sandbox.controlplane import REPO

VALUES = CHART / "values.yaml"
FULLNAME = "mg-modelgrid-operator"  # the release "mg" of the chart
BENCH_NS = "modelgrid-benchmarks"  # modelgrid_operator.jobs.DEFAULT_BENCHMARK_NAMESPACE
#: Pod Security "restricted", enforced, audited and warned of.
RESTRICTED_LABELS = {
    f"pod-security.kubernetes.io/{mode}{suffix}": value
    for mode in ("enforce", "audit", "warn")
    for suffix, value in (("", "restricted"), ("-version", "latest"))
}
ALL_VALUES = CHART / "ci" / "all-values.yaml"


@pytest.fixture(scope="module")
def helm() -> Path:
    found = helm_binary()
    if found is None:
        message = "no helm binary (set MODELGRID_K8S_BIN, as `make test` does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def _helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, check=False, timeout=60
    )


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    proc = _helm(helm, "template", "mg", str(CHART), "--namespace", "mg-system", *args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


def env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(docs)["env"]}


def leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every value; empty maps and lists are values too."""
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), tree


# -- the copies of crds/ ----------------------------------------------------------------------


def test_the_charts_crds_and_policies_are_copies_of_crds() -> None:
    stale = [str(p.relative_to(REPO)) for p in stale_copies()]
    assert not stale, f"{stale} drifted from crds/: run `python -m modelgrid_sandbox.chart`"


def _strip(doc: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    annotations = doc["metadata"].pop("annotations", {})
    assert set(annotations) == set(keys), annotations
    return doc


def test_rendered_crds_equal_crds_apart_from_the_keep_annotation(helm: Path) -> None:
    docs = render(helm)
    for source in CRD_COPIES:
        want = yaml.safe_load(source.read_text())
        got = one(docs, "CustomResourceDefinition", want["metadata"]["name"])
        assert got["metadata"]["annotations"] == {KEEP_ANNOTATION: "keep"}
        assert _strip(got, (KEEP_ANNOTATION,)) == want
    for source in POLICY_COPIES:
        want = yaml.safe_load(source.read_text())
        got = one(docs, "TierPolicy", want["metadata"]["name"])
        assert got["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
        assert _strip(got, HOOK_ANNOTATIONS) == want
    unkept = render(helm, "--set", "crds.keep=false")
    for source in CRD_COPIES:
        want = yaml.safe_load(source.read_text())
        assert one(unkept, "CustomResourceDefinition", want["metadata"]["name"]) == want


# -- lint, values, schema -----------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, ALL_VALUES], ids=["defaults", "all-values"])
def test_helm_lint_is_clean(helm: Path, values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["--values", str(values)] if values else [])
    proc = _helm(helm, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_every_value_is_documented() -> None:
    """helm-docs style: a `# --` comment right above every key of values.yaml."""
    lines = VALUES.read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not m:
            continue
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and "# --" not in lines[j]:
            j -= 1  # a `# --` comment may go on over several lines
        if j < 0 or not lines[j].strip().startswith("# --"):
            undocumented.append(line.strip())
    assert not undocumented


def test_the_all_values_file_sets_every_value() -> None:
    defaults = dict(leaves(yaml.safe_load(VALUES.read_text())))
    every = dict(leaves(yaml.safe_load(ALL_VALUES.read_text())))
    # An empty map or list of the defaults is set when it has entries.
    unset = [
        p for p in defaults if p not in every and not any(q.startswith(f"{p}.") for q in every)
    ]
    assert not unset
    unchanged = {p for p, v in defaults.items() if every.get(p) == v}
    # Only what must stay as it is for Pod Security "restricted" (and the switches left on).
    allowed = {
        "podSecurityContext.runAsNonRoot",
        "podSecurityContext.seccompProfile.type",
        "securityContext.allowPrivilegeEscalation",
        "securityContext.readOnlyRootFilesystem",
        "securityContext.runAsNonRoot",
        "securityContext.capabilities.drop",
        "securityContext.seccompProfile.type",
        "serviceAccount.create",
        "benchmark.createNamespace",
        "benchmark.networkPolicy.enabled",
        "rbac.create",
        "rbac.userRoles",
        "crds.install",
        "policies.install",
        "metrics.enabled",
    }
    assert unchanged <= allowed, unchanged - allowed


def test_the_schema_documents_every_value() -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def node(path: str) -> dict[str, Any] | None:
        s: dict[str, Any] | None = schema
        for key in path.split("."):
            if s is None:
                return None
            if key in s.get("properties", {}):
                s = s["properties"][key]
            elif isinstance(s.get("additionalProperties"), dict):  # a map: any key
                s = s["additionalProperties"]
            else:
                return None
        return s

    defaults = dict(leaves(yaml.safe_load(VALUES.read_text())))
    missing = [p for p in defaults if node(p) is None]
    assert not missing
    assert all("type" in (node(p) or {}) for p in defaults)


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("maxConcurrentJobs=-1", "/maxConcurrentJobs"),
        ("maxConcurrentJobs=two", "/maxConcurrentJobs"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("watchNamespaces[0]=Not_A_Namespace", "/watchNamespaces/0"),
        ("metrics.port=70000", "/metrics/port"),
        ("crds.keep=maybe", "/crds/keep"),
        ("benchmark.backoffLimit=-3", "/benchmark/backoffLimit"),
        ("benchmark.namespace=Benchmarks", "/benchmark/namespace"),
        ("benchmark.namespace=", "/benchmark/namespace"),
        ("benchmark.createNamespace=maybe", "/benchmark/createNamespace"),
        (
            "benchmark.networkPolicy.deniedCIDRs[0]=10.0.0.0",
            "/benchmark/networkPolicy/deniedCIDRs/0",
        ),
        (
            "benchmark.networkPolicy.deniedCIDRs[0]=256.0.0.0/8",
            "/benchmark/networkPolicy/deniedCIDRs/0",
        ),
        (
            "benchmark.networkPolicy.deniedCIDRs[0]=fe80::/129",
            "/benchmark/networkPolicy/deniedCIDRs/0",
        ),
        ("benchmark.networkPolicy.extra=1", "extra"),
        ("metrics.serviceMonitor.interval=often", "/metrics/serviceMonitor/interval"),
        ("unknownValue=1", "unknownValue"),
    ],
)
def test_the_schema_rejects_bad_values(helm: Path, setting: str, complaint: str) -> None:
    proc = _helm(helm, "template", "mg", str(CHART), "--set", setting)
    assert proc.returncode != 0, f"{setting} was accepted"
    assert complaint in proc.stderr, proc.stderr


# -- rendering --------------------------------------------------------------------------------


def test_the_defaults_render_the_operator(helm: Path) -> None:
    docs = render(helm)
    assert kinds(docs) == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Namespace",
            "NetworkPolicy",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "TierPolicy",
            "TierPolicy",
        ]
    )
    deploy = one(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    pod = deploy["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mg-modelgrid-operator"
    c = container(docs)
    assert c["image"] == "ghcr.io/firmus/modelgrid-operator:0.1.0"
    assert "command" not in c  # the image's entrypoint: python -m modelgrid_operator
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8080, "healthz": 8081}
    assert env(docs) == {
        "MALLOC_ARENA_MAX": "2",
        "PYTHONMALLOC": "malloc",
        "HOME": "/tmp",
        "MODELGRID_BENCHMARK_NAMESPACE": BENCH_NS,
        "MODELGRID_BENCH_IMAGE": "ghcr.io/firmus/modelgrid-bench:0.1.0",
        "MODELGRID_BENCH_PULL_POLICY": "IfNotPresent",
        "MODELGRID_ENGINE_IMAGE_VLLM": "ghcr.io/firmus/modelgrid-bench-vllm:0.1.0",
        "MODELGRID_ENGINE_IMAGE_SGLANG": "ghcr.io/firmus/modelgrid-bench-sglang:0.1.0",
        "MODELGRID_ENGINE_IMAGE_TGI": "ghcr.io/firmus/modelgrid-bench-tgi:0.1.0",
        "MODELGRID_ENGINE_IMAGE_CUSTOM": "",
        "MODELGRID_EVIDENCE_CLAIM": "",
        "MODELGRID_EVIDENCE_CLAIMS": "",
        "MODELGRID_BACKOFF_LIMIT": "2",
        "MODELGRID_JOB_TTL_SECONDS": "86400",
        "MODELGRID_DEFAULT_POLICY": "model-card",
        "MODELGRID_MAX_CONCURRENT_JOBS": "4",
        "MODELGRID_RESYNC_SECONDS": "30",
        "MODELGRID_NAMESPACES": "",
        "MODELGRID_METRICS_PORT": "8080",
        "MODELGRID_LIVENESS_ENDPOINT": "http://0.0.0.0:8081/healthz",
    }
    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert svc["spec"]["selector"] == {
        "app.kubernetes.io/name": "modelgrid-operator",
        "app.kubernetes.io/instance": "mg",
    }
    for d in docs:
        if d["kind"] in ("CustomResourceDefinition", "TierPolicy"):
            continue  # copies of crds/, labelled there
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "modelgrid-operator"
        assert labels["app.kubernetes.io/instance"] == "mg"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "modelgrid"
        assert labels["app.kubernetes.io/component"] == "operator"


def test_the_defaults_meet_pod_security_restricted(helm: Path) -> None:
    pod = one(render(helm), "Deployment")["spec"]["template"]["spec"]
    psc, csc = pod["securityContext"], pod["containers"][0]["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert csc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert "emptyDir" in pod["volumes"][0]
    assert not any(k in pod for k in ("hostNetwork", "hostPID", "hostIPC"))


def test_every_value_reaches_the_manifests(helm: Path) -> None:
    docs = render(helm, "--values", str(ALL_VALUES))
    deploy = one(docs, "Deployment", "mg-operator")
    pod = deploy["spec"]["template"]["spec"]
    c = container(docs)
    assert c["image"] == "registry.example.com/modelgrid-operator:0.1.0-rc1"
    assert c["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert env(docs) == {
        "MALLOC_ARENA_MAX": "2",
        "PYTHONMALLOC": "malloc",
        "HOME": "/tmp",
        "MODELGRID_BENCHMARK_NAMESPACE": "team-benchmarks",
        "MODELGRID_BENCH_IMAGE": "registry.example.com/modelgrid-bench:0.1.0-cuda12",
        "MODELGRID_BENCH_PULL_POLICY": "Always",
        "MODELGRID_ENGINE_IMAGE_VLLM": "registry.example.com/modelgrid-bench-vllm:0.1.0-v0.11",
        "MODELGRID_ENGINE_IMAGE_SGLANG": "registry.example.com/modelgrid-bench-sglang:0.1.0-v0.5",
        "MODELGRID_ENGINE_IMAGE_TGI": "",
        "MODELGRID_ENGINE_IMAGE_CUSTOM": "registry.example.com/modelgrid-bench:0.1.0-cuda12",
        "MODELGRID_BENCH_SERVICE_ACCOUNT": "modelgrid-bench",
        "MODELGRID_EVIDENCE_CLAIM": "modelgrid-evidence",
        "MODELGRID_EVIDENCE_CLAIMS": "team-b=team-b-evidence",
        "MODELGRID_BACKOFF_LIMIT": "1",
        "MODELGRID_JOB_TTL_SECONDS": "3600",
        "MODELGRID_DEFAULT_POLICY": "cv-only",
        "MODELGRID_MAX_CONCURRENT_JOBS": "2",
        "MODELGRID_RESYNC_SECONDS": "60",
        "MODELGRID_NAMESPACES": "team-a,team-b",
        "MODELGRID_METRICS_PORT": "9090",
        "MODELGRID_LIVENESS_ENDPOINT": "http://0.0.0.0:9081/healthz",
    }
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 9090, "healthz": 9081}
    claim = one(docs, "PersistentVolumeClaim", "modelgrid-evidence")
    assert claim["metadata"]["namespace"] == "team-benchmarks"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast-rwx",
        "resources": {"requests": {"storage": "500Gi"}},
    }
    assert c["livenessProbe"] == {
        "httpGet": {"path": "/healthz", "port": "healthz"},
        "initialDelaySeconds": 5,
        "periodSeconds": 10,
        "timeoutSeconds": 2,
        "failureThreshold": 6,
    }
    assert c["resources"] == {
        "requests": {"cpu": "200m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["serviceAccountName"] == "modelgrid-operator-sa"
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["affinity"]
    meta = deploy["spec"]["template"]["metadata"]
    assert meta["annotations"] == {"example.com/scrape": "false"}
    assert meta["labels"]["team"] == "platform"
    assert meta["labels"]["app.kubernetes.io/name"] == "mg"
    sa = one(docs, "ServiceAccount", "modelgrid-operator-sa")
    assert sa["metadata"]["annotations"] == {"example.com/role": "modelgrid"}
    sa_subject = {
        "kind": "ServiceAccount",
        "name": "modelgrid-operator-sa",
        "namespace": "mg-system",
    }
    assert one(docs, "ClusterRoleBinding", "mg-operator")["subjects"] == [sa_subject]
    assert one(docs, "Namespace", "team-benchmarks")
    for kind in ("Role", "RoleBinding"):
        assert one(docs, kind, "mg-operator")["metadata"]["namespace"] == "team-benchmarks"
    assert one(docs, "RoleBinding", "mg-operator")["subjects"] == [sa_subject]
    policy = one(docs, "NetworkPolicy", "mg-operator-benchmarks")
    assert policy["metadata"]["namespace"] == "team-benchmarks"
    v4, v6 = (b["ipBlock"] for b in policy["spec"]["egress"][1]["to"])
    assert v4 == {
        "cidr": "0.0.0.0/0",
        "except": ["169.254.0.0/16", "10.244.0.0/16", "10.96.0.0/12"],
    }
    assert v6 == {"cidr": "::/0", "except": ["fe80::/10", "fd00:10:244::/56"]}
    svc = one(docs, "Service", "mg-operator-metrics")
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"][0]["port"] == 9091
    assert svc["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    monitor = one(docs, "ServiceMonitor", "mg-operator")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["mg-system"]}
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "5s"}
    ]
    for crd in (d for d in docs if d["kind"] == "CustomResourceDefinition"):
        assert "annotations" not in crd["metadata"]  # crds.keep=false
    assert len([d for d in docs if d["kind"] == "TierPolicy"]) == 2


def test_the_notes_follow_the_values(helm: Path) -> None:
    proc = _helm(
        helm,
        "install",
        "mg",
        str(CHART),
        "--dry-run=client",
        "--namespace",
        "mg-system",
        "--values",
        str(ALL_VALUES),
    )
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "the namespaces team-a, team-b" in notes
    assert "runs in the namespace team-benchmarks" in notes
    assert "bind no tenant to any role in it" in notes
    assert "10.244.0.0/16" in notes
    assert "Kueue" in notes
    assert "ServiceMonitor" in notes
    assert "resource-policy: keep" not in notes


@pytest.mark.parametrize(
    ("setting", "gone"),
    [
        ("metrics.enabled=false", {"Service"}),
        ("rbac.create=false", {"ClusterRoleBinding", "Role", "RoleBinding"}),
        ("benchmark.createNamespace=false", {"Namespace"}),
        ("benchmark.networkPolicy.enabled=false", {"NetworkPolicy"}),
        ("crds.install=false", {"CustomResourceDefinition"}),
        ("policies.install=false", {"TierPolicy"}),
        ("serviceAccount.create=false", {"ServiceAccount"}),
    ],
)
def test_each_switch_turns_its_objects_off(helm: Path, setting: str, gone: set[str]) -> None:
    docs = render(helm, "--set", setting)
    assert not gone & set(kinds(docs))
    if setting == "metrics.enabled=false":
        assert env(docs)["MODELGRID_METRICS_PORT"] == "0"
        assert [p["name"] for p in container(docs)["ports"]] == ["healthz"]
    if setting == "rbac.create=false":
        names = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"}
        assert names == {"modelgrid-edit", "modelgrid-view"}
    if setting == "benchmark.createNamespace=false":  # the namespace is yours; the rest is there
        assert one(docs, "Role")["metadata"]["namespace"] == BENCH_NS
        assert one(docs, "NetworkPolicy")["metadata"]["namespace"] == BENCH_NS
        assert env(docs)["MODELGRID_BENCHMARK_NAMESPACE"] == BENCH_NS
    if setting == "serviceAccount.create=false":
        spec = one(docs, "Deployment")["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == "default"
    user_roles_off = render(helm, "--set", "rbac.userRoles=false")
    assert {d["metadata"]["name"] for d in user_roles_off if d["kind"] == "ClusterRole"} == {
        "mg-modelgrid-operator"
    }


def test_the_service_monitor_needs_both_switches(helm: Path) -> None:
    on = ["--set", "metrics.serviceMonitor.enabled=true"]
    assert "ServiceMonitor" in kinds(render(helm, *on))
    assert "ServiceMonitor" not in kinds(render(helm, *on, "--set", "metrics.enabled=false"))


# -- the benchmark namespace ------------------------------------------------------------------


def test_the_benchmark_namespace_enforces_restricted_and_is_kept(helm: Path) -> None:
    ns = one(render(helm), "Namespace")
    assert ns["metadata"]["name"] == BENCH_NS
    labels = ns["metadata"]["labels"]
    assert RESTRICTED_LABELS.items() <= labels.items()
    assert labels["app.kubernetes.io/part-of"] == "modelgrid"
    # Deleting it would delete the running benchmarks and the staged model volumes.
    assert ns["metadata"]["annotations"] == {KEEP_ANNOTATION: "keep"}
    assert "namespace" not in ns["metadata"]


def test_no_namespace_is_rendered_without_create_namespace(helm: Path) -> None:
    docs = render(helm, "--set", "benchmark.createNamespace=false")
    assert "Namespace" not in kinds(docs)
    assert one(docs, "Role")["metadata"]["namespace"] == BENCH_NS


def test_the_benchmark_namespace_is_not_the_release_namespace(helm: Path) -> None:
    proc = _helm(helm, "template", "mg", str(CHART), "--namespace", BENCH_NS)
    assert proc.returncode != 0
    assert "must not be the release namespace" in proc.stderr, proc.stderr
    same = ["--set", "benchmark.namespace=mg-system", "--set", "benchmark.createNamespace=false"]
    proc = _helm(helm, "template", "mg", str(CHART), "--namespace", "mg-system", *same)
    assert proc.returncode != 0
    assert "must not be the release namespace" in proc.stderr, proc.stderr


def test_the_network_policy_isolates_the_benchmark_pods(helm: Path) -> None:
    policy = one(render(helm), "NetworkPolicy")
    assert policy["metadata"]["name"] == f"{FULLNAME}-benchmarks"
    assert policy["metadata"]["namespace"] == BENCH_NS
    spec = policy["spec"]
    # The label modelgrid_operator.jobs gives every benchmark pod.
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "modelgrid-benchmark"}}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in spec  # no connection in
    kube_dns = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
    dns = {
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        "to": [kube_dns],  # DNS only at kube-dns: port 53 is no way to any other host
    }
    private_v4 = ["169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    rest = {
        "to": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": [*private_v4, "100.64.0.0/10"]}},
            {"ipBlock": {"cidr": "::/0", "except": ["fe80::/10", "fc00::/7"]}},
        ]
    }
    assert spec["egress"] == [dns, rest]
    anywhere = one(render(helm, "--set-json", "benchmark.networkPolicy.dnsTo=[]"), "NetworkPolicy")
    assert "to" not in anywhere["spec"]["egress"][0]


def test_the_network_policy_sorts_the_denied_cidrs_by_family(helm: Path) -> None:
    v4_only = one(
        render(helm, "--set", "benchmark.networkPolicy.deniedCIDRs={10.0.0.0/8,169.254.0.0/16}"),
        "NetworkPolicy",
    )
    assert v4_only["spec"]["egress"][1]["to"] == [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "169.254.0.0/16"]}},
        {"ipBlock": {"cidr": "::/0"}},  # an empty except is left out, not rendered empty
    ]
    none = one(
        render(helm, "--set-json", "benchmark.networkPolicy.deniedCIDRs=[]"), "NetworkPolicy"
    )
    assert none["spec"]["egress"][1]["to"] == [
        {"ipBlock": {"cidr": "0.0.0.0/0"}},
        {"ipBlock": {"cidr": "::/0"}},
    ]


def test_the_network_policy_is_off_when_disabled(helm: Path) -> None:
    docs = render(helm, "--set", "benchmark.networkPolicy.enabled=false")
    assert "NetworkPolicy" not in kinds(docs)
    assert "Namespace" in kinds(docs)


# -- permissions ------------------------------------------------------------------------------

#: The operator's ClusterRole, rule by rule (docs/operations.md, "Permissions"): nothing on Jobs,
#: pods or claims cluster-wide, nothing on modelqualifications/finalizers (no owner reference).
MG = "modelgrid.firmus.ai"
OPERATOR_RULES = [
    ([MG], ["modelqualifications", "tierpolicies"], ["get", "list", "watch", "patch"]),
    ([MG], ["modelqualifications/status"], ["patch"]),
    ([""], ["events"], ["create"]),
    (["apiextensions.k8s.io"], ["customresourcedefinitions"], ["list", "watch"]),
]
#: Its Role in the benchmark namespace, rule by rule.
BENCHMARK_RULES = [
    (["batch"], ["jobs"], ["get", "list", "watch", "create", "delete"]),
    ([""], ["pods"], ["list", "watch"]),
    ([""], ["pods/log"], ["get"]),
    ([""], ["persistentvolumeclaims"], ["get"]),
]


def _rules(role: dict[str, Any]) -> list[tuple[list[str], list[str], list[str]]]:
    return [(r["apiGroups"], r["resources"], r["verbs"]) for r in role["rules"]]


def test_the_operator_role_is_exactly_what_it_uses(helm: Path) -> None:
    role = one(render(helm), "ClusterRole", FULLNAME)
    assert _rules(role) == OPERATOR_RULES
    flat = [x for rule in _rules(role) for part in rule for x in part]
    assert "*" not in flat
    assert "secrets" not in flat


def test_the_operator_may_touch_jobs_pods_and_claims_only_in_the_benchmark_namespace(
    helm: Path,
) -> None:
    docs = render(helm)
    role = one(docs, "Role", FULLNAME)
    assert role["metadata"]["namespace"] == BENCH_NS
    assert _rules(role) == BENCHMARK_RULES
    binding = one(docs, "RoleBinding", FULLNAME)
    assert binding["metadata"]["namespace"] == BENCH_NS
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": FULLNAME,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": "mg-system"}
    ]
    # Nothing else is bound in the benchmark namespace, and no cluster-wide rule reaches it.
    bench = [d for d in docs if d["metadata"].get("namespace") == BENCH_NS]
    assert sorted(d["kind"] for d in bench) == ["NetworkPolicy", "Role", "RoleBinding"]
    cluster_resources = {r for d in docs if d["kind"] == "ClusterRole" for r in _resources(d)}
    assert not cluster_resources & {"jobs", "pods", "persistentvolumeclaims"}
    renamed = render(helm, "--set", "benchmark.namespace=gpu-bench")
    assert {
        d["metadata"]["namespace"] for d in renamed if d["kind"] in ("Role", "RoleBinding")
    } == {"gpu-bench"}
    assert one(renamed, "Namespace")["metadata"]["name"] == "gpu-bench"
    assert env(renamed)["MODELGRID_BENCHMARK_NAMESPACE"] == "gpu-bench"


def _resources(role: dict[str, Any]) -> set[str]:
    return {r for rule in role["rules"] for r in rule["resources"]}


def test_serving_named_namespaces_adds_reading_namespaces(helm: Path) -> None:
    role = one(render(helm, "--set", "watchNamespaces={a,b}"), "ClusterRole", FULLNAME)
    assert _rules(role) == [*OPERATOR_RULES, ([""], ["namespaces"], ["list", "watch"])]


def test_the_user_roles_aggregate_and_never_grant_the_status(helm: Path) -> None:
    docs = render(helm)
    edit = one(docs, "ClusterRole", "modelgrid-edit")
    view = one(docs, "ClusterRole", "modelgrid-view")
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert _rules(edit) == [
        (
            ["modelgrid.firmus.ai"],
            ["modelqualifications"],
            ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"],
        )
    ]
    assert _rules(view) == [
        (
            ["modelgrid.firmus.ai"],
            ["modelqualifications", "modelqualifications/status"],
            ["get", "list", "watch"],
        )
    ]


def test_the_permissions_are_documented() -> None:
    ops = (REPO / "docs" / "operations.md").read_text()
    rows = [line for line in ops.splitlines() if line.startswith("| `")]
    for groups, resources, verbs in [*OPERATOR_RULES, *BENCHMARK_RULES]:
        row = next((line for line in rows if line.startswith(f"| `{resources[0]}`")), None)
        assert row is not None, resources
        assert all(f"`{v}`" in row for v in verbs), row
        assert groups[0] in row or groups == [""], row
    granted = [line for line in rows if line.startswith("| `modelqualifications/finalizers`")]
    assert not granted, "the operator no longer needs modelqualifications/finalizers"
    defaults = dict(leaves(yaml.safe_load(VALUES.read_text())))
    missing = [p for p in defaults if f"`{p}`" not in ops]
    assert not missing, f"values missing from docs/operations.md: {missing}"


# -- the image --------------------------------------------------------------------------------


def test_the_operator_image_is_slim_non_root_and_runs_the_operator() -> None:
    text = (REPO / "operator" / "Dockerfile").read_text()
    assert "ARG BASE=python:3.11-slim" in text
    assert "USER 65532:65532" in text
    assert 'ENTRYPOINT ["python", "-m", "modelgrid_operator"]' in text
    assert "pip install --no-cache-dir '.[operator]'" in text
    run = text.split("RUN", 1)[1]
    assert "inference" not in run
    assert "[bench" not in run
    assert "COPY benchmark-image" not in text
    assert "HOME=/tmp" in text
