"""The Helm chart on the real control plane.

`helm install` into a namespace that enforces Pod Security "restricted": the operator's pod is
admitted, runs on the simulated CPU node as the chart's ServiceAccount (the node agent hands it a
token bound to the pod), and with nothing but the chart's ClusterRole and its Role in the
benchmark namespace it qualifies a model end to end, its benchmark Job and pod in the benchmark
namespace (the chart's, "restricted" too), none in the tenant's. It may create Jobs, and read
pods and claims, there and nowhere else. The user roles aggregate into edit and view. `helm
upgrade` mid-run loses nothing; deleting a qualification deletes its Jobs; `helm uninstall`
leaves no operator object and keeps the CRDs and the benchmark namespace.

The release serves one namespace of its own (watchNamespaces) and runs its benchmarks in a
benchmark namespace of its own (`<system>-bench`, never the default one that test_operator.py's
operators use); no other operator serves its namespaces meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelgrid_sandbox.chart import CHART
from modelgrid_sandbox.cluster import Cluster, wait_for_default_service_account
from modelgrid_sandbox.controlplane import REPO, free_port
from tests.controlplane.conftest import wait_for

GROUP, VERSION = "modelgrid.firmus.ai", "v1alpha1"
RELEASE = "mg"
FULLNAME = f"{RELEASE}-modelgrid-operator"  # the chart's fullname for this release name
SIM_POLICY = "model-card-sandbox"
CRD_NAMES = ("modelqualifications.modelgrid.firmus.ai", "tierpolicies.modelgrid.firmus.ai")
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@dataclass
class Release:
    cluster: Cluster
    system: str  # the release namespace
    work: str  # the one namespace the operator serves
    users: str  # where alice (edit) and bob (view) work; not served
    bench: str  # the benchmark namespace (benchmark.namespace), created by the chart
    metrics_port: int
    live_port: int
    home: Path
    installed: bool = True

    @property
    def sa_user(self) -> str:
        return f"system:serviceaccount:{self.system}:{FULLNAME}"

    def run(
        self, tool: str, *args: str, stdin: str | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        kube = self.cluster.kubeconfig
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        return subprocess.run(
            [str(self.cluster.control_plane.bin_dir / tool), "--kubeconfig", str(kube), *args],
            capture_output=True,
            text=True,
            input=stdin,
            env=env,
            check=False,
            timeout=timeout,
        )

    def ok(self, tool: str, *args: str, timeout: float = 180) -> str:
        proc = self.run(tool, *args, timeout=timeout)
        assert proc.returncode == 0, f"{tool} {' '.join(args)}:\n{proc.stderr}{proc.stdout}"
        return proc.stdout

    def can(self, user: str, verb: str, resource: str, *scope: str) -> bool:
        resource, _, sub = resource.partition("/")  # kubectl would read "/x" as a name
        extra = [f"--subresource={sub}"] if sub else []
        proc = self.run("kubectl", "auth", "can-i", verb, resource, f"--as={user}", *extra, *scope)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), proc.stderr
        return answer == "yes"


def _ns(api: client.ApiClient, name: str, labels: dict[str, str] | None = None) -> None:
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels or {}))
    )
    wait_for_default_service_account(api, name)


def _existing_crds(api: client.ApiClient) -> set[str]:
    ext = client.ApiextensionsV1Api(api)
    return {c.metadata.name for c in ext.list_custom_resource_definition().items} & set(CRD_NAMES)


@pytest.fixture(scope="module")
def release(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    api = cluster.api
    suffix = uuid.uuid4().hex[:6]
    r = Release(
        cluster,
        system=f"mg-system-{suffix}",
        work=f"mg-work-{suffix}",
        users=f"mg-users-{suffix}",
        bench=f"mg-system-{suffix}-bench",
        metrics_port=free_port(),
        live_port=free_port(),
        home=tmp_path_factory.mktemp("helm"),
    )
    crds_before = _existing_crds(api)
    env = cluster.agent.extra_env
    saved_env = dict(env)
    # The benchmark pods pace tokens (20 ms a step) instead of running the model on the CPU.
    env.update({"MODELGRID_BACKEND_OVERRIDE": "synthetic", "MODELGRID_SYNTHETIC_STEP_MS": "20"})
    values = {
        "benchmark": {"namespace": r.bench},
        "watchNamespaces": [r.work],
        "maxConcurrentJobs": 2,
        "metrics": {"port": r.metrics_port},  # the pod is a local process: free host ports
        "liveness": {"port": r.live_port},
    }
    values_file = r.home / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    try:
        _ns(api, r.system, RESTRICTED)
        _ns(api, r.work, RESTRICTED)
        _ns(api, r.users)
        r.ok(
            "helm",
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            r.system,
            "--values",
            str(values_file),
            "--wait",
            "--timeout",
            "120s",
            # CRDs another test applied with kubectl become the release's
            "--take-ownership",
        )
        r.ok(
            "kubectl",
            "apply",
            "--server-side",
            "-f",
            str(REPO / "hack/sandbox/model-card-sandbox.yaml"),
        )
        wait_for("the operator's liveness endpoint", lambda: _live(r.live_port), 60)
        yield r
    finally:
        env.clear()
        env.update(saved_env)
        if r.installed:
            r.run("helm", "uninstall", RELEASE, "--namespace", r.system, "--wait")
        core = client.CoreV1Api(api)
        _release_qualifications(api, r.work, r.users)
        # The benchmark namespace outlives the uninstall (helm.sh/resource-policy: keep).
        for ns in (r.work, r.users, r.bench, r.system):
            with contextlib.suppress(ApiException):
                core.delete_namespace(ns, propagation_policy="Background")
        rbac = client.RbacAuthorizationV1Api(api)
        for role in (FULLNAME, "modelgrid-edit", "modelgrid-view"):
            with contextlib.suppress(ApiException):
                rbac.delete_cluster_role(role)
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role_binding(FULLNAME)
        ext = client.ApiextensionsV1Api(api)
        ours = set(CRD_NAMES) - crds_before  # kept by the uninstall; not ours to leave
        for crd in ours:
            with contextlib.suppress(ApiException):
                ext.delete_custom_resource_definition(crd)
        # Gone before the next module applies them again (a terminating CRD takes no objects).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and ours & _existing_crds(api):
            time.sleep(0.3)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            core.list_namespaced_pod(ns).items for ns in (r.work, r.bench, r.system)
        ):
            time.sleep(0.3)


def _release_qualifications(api: client.ApiClient, *namespaces: str) -> None:
    """Drop any finalizer left on qualifications that outlived their operator (none is set
    now; an earlier version's per-object timer set kopf's), as docs/operations.md tells an
    administrator to, so that a teardown never hangs on one."""
    custom = client.CustomObjectsApi(api)
    for ns in namespaces:
        with contextlib.suppress(ApiException):
            listing = custom.list_namespaced_custom_object(
                GROUP, VERSION, ns, "modelqualifications"
            )
            for mq in listing["items"]:
                if mq["metadata"].get("finalizers"):
                    custom.patch_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        ns,
                        "modelqualifications",
                        mq["metadata"]["name"],
                        {"metadata": {"finalizers": None}},
                    )


def _live(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
            return True
    except OSError:
        return False


def _operator_pods(r: Release) -> list[Any]:
    pods = client.CoreV1Api(r.cluster.api).list_namespaced_pod(
        r.system, label_selector=f"app.kubernetes.io/instance={RELEASE}"
    )
    return [p for p in pods.items if p.metadata.deletion_timestamp is None]


def _running_operator(r: Release) -> Any:
    pods = [p for p in _operator_pods(r) if p.status.phase == "Running"]
    return pods[0] if len(pods) == 1 and _live(r.live_port) else None


def _qualification(name: str, namespace: str, samples: int = 2) -> dict[str, Any]:
    """examples/qualification.yaml, priced by the sandbox policy, with a short paced workload."""
    body: dict[str, Any] = yaml.safe_load((REPO / "examples" / "qualification.yaml").read_text())
    body["metadata"] = {"name": name, "namespace": namespace}
    spec = body["spec"]
    spec["policyRef"] = {"name": SIM_POLICY}
    spec["workload"].update(
        {
            "samples": samples,
            "tokensPerSample": 400,
            "repeats": 2,
            "warmupSamples": 0,
            "batchSize": 1,
            "inputTokens": 16,
        }
    )
    spec["timeoutSeconds"] = 300
    return body


def _get_mq(r: Release, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(r.cluster.api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelqualifications", name
    )
    return obj


def _finished(r: Release, namespace: str, name: str) -> dict[str, Any] | None:
    obj = _get_mq(r, namespace, name)
    return obj if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None


def _jobs_of(r: Release, namespace: str, name: str) -> list[Any]:
    """The benchmark Jobs of the qualification `namespace`/`name`: in the benchmark namespace,
    naming it in their annotations (no owner reference crosses namespaces)."""
    want = {f"{GROUP}/qualification": name, f"{GROUP}/qualification-namespace": namespace}
    jobs = client.BatchV1Api(r.cluster.api).list_namespaced_job(r.bench).items
    return [j for j in jobs if want.items() <= (j.metadata.annotations or {}).items()]


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


def _create(r: Release, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(r.cluster.api).create_namespaced_custom_object(
        GROUP, VERSION, body["metadata"]["namespace"], "modelqualifications", body
    )


def _pod_dir(pod: Any) -> Path:
    """The simulated node's directory of a running pod: where its KUBECONFIG and log are."""
    pid = int(pod.status.container_statuses[0].container_id.removeprefix("sim://"))
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    kubeconfig = next(e for e in environ if e.startswith(b"KUBECONFIG=")).split(b"=", 1)[1]
    return Path(kubeconfig.decode()).parent


def test_the_operator_runs_restricted_as_its_service_account(release: Release) -> None:
    r = release
    ns = client.CoreV1Api(r.cluster.api).read_namespace(r.system)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = wait_for("the operator pod to run", lambda: _running_operator(r), 60)
    assert pod.spec.node_name == "cpu-0"
    assert pod.spec.service_account_name == FULLNAME
    (container,) = pod.spec.containers
    assert container.image == "ghcr.io/firmus/modelgrid-operator:0.1.0"
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.capabilities.drop == ["ALL"]
    assert pod.spec.security_context.run_as_user == 65532
    deploy = client.AppsV1Api(r.cluster.api).read_namespaced_deployment(FULLNAME, r.system)
    assert deploy.spec.strategy.type == "Recreate"
    assert deploy.spec.replicas == 1
    # The process's credentials are the ServiceAccount's, as the apiserver sees them.
    kubeconfig = str(_pod_dir(pod) / "serviceaccount.kubeconfig")
    whoami = json.loads(r.ok("kubectl", "auth", "whoami", "-o", "json", "--kubeconfig", kubeconfig))
    info = whoami["status"]["userInfo"]
    assert info["username"] == r.sa_user
    assert info["extra"]["authentication.kubernetes.io/pod-name"] == [pod.metadata.name]
    denied = r.run("kubectl", "get", "secrets", "-A", "--kubeconfig", kubeconfig)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    env = {e.name: e.value for e in container.env}
    assert env["MODELGRID_BENCHMARK_NAMESPACE"] == r.bench


def test_the_chart_makes_the_benchmark_namespace(release: Release) -> None:
    r = release
    api = r.cluster.api
    ns = client.CoreV1Api(api).read_namespace(r.bench)
    for mode in ("enforce", "audit", "warn"):
        assert ns.metadata.labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    assert ns.metadata.labels["app.kubernetes.io/part-of"] == "modelgrid"
    assert ns.metadata.annotations["helm.sh/resource-policy"] == "keep"
    rbac = client.RbacAuthorizationV1Api(api)
    role = rbac.read_namespaced_role(FULLNAME, r.bench)
    assert sorted((rule.resources[0], tuple(rule.verbs)) for rule in role.rules) == [
        ("jobs", ("get", "list", "watch", "create", "delete")),
        ("persistentvolumeclaims", ("get",)),
        ("pods", ("list", "watch")),
        ("pods/log", ("get",)),
    ]
    # The operator is the only subject bound to anything in the benchmark namespace.
    bindings = rbac.list_namespaced_role_binding(r.bench).items
    assert [
        (b.metadata.name, [(s.kind, s.namespace, s.name) for s in b.subjects]) for b in bindings
    ] == [(FULLNAME, [("ServiceAccount", r.system, FULLNAME)])]
    (policy,) = client.NetworkingV1Api(api).list_namespaced_network_policy(r.bench).items
    assert policy.metadata.name == f"{FULLNAME}-benchmarks"
    assert policy.spec.pod_selector.match_labels == {
        "app.kubernetes.io/name": "modelgrid-benchmark"
    }
    assert policy.spec.policy_types == ["Ingress", "Egress"]
    assert not policy.spec.ingress


def test_the_operator_may_do_what_it_does_and_nothing_else(release: Release) -> None:
    r, sa = release, release.sa_user
    allowed = [
        ("get", "modelqualifications.modelgrid.firmus.ai", "-A"),
        ("list", "modelqualifications.modelgrid.firmus.ai", "-A"),
        ("watch", "modelqualifications.modelgrid.firmus.ai", "-A"),
        ("patch", "modelqualifications.modelgrid.firmus.ai", "-n", r.work),
        ("patch", "modelqualifications.modelgrid.firmus.ai/status", "-n", r.work),
        ("get", "tierpolicies.modelgrid.firmus.ai"),
        ("patch", "tierpolicies.modelgrid.firmus.ai"),
        # Jobs, pods and claims: in the benchmark namespace only.
        ("create", "jobs.batch", "-n", r.bench),
        ("get", "jobs.batch", "-n", r.bench),
        ("list", "jobs.batch", "-n", r.bench),
        ("watch", "jobs.batch", "-n", r.bench),
        ("delete", "jobs.batch", "-n", r.bench),
        ("list", "pods", "-n", r.bench),
        ("watch", "pods", "-n", r.bench),
        ("get", "persistentvolumeclaims", "-n", r.bench),
        ("get", "pods/log", "-n", r.bench),  # a running benchmark's progress
        ("create", "events", "-n", r.work),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
        ("list", "namespaces"),  # watchNamespaces is set: kopf matches them
        ("watch", "namespaces"),
    ]
    denied = [
        ("get", "secrets", "-n", r.system),
        ("get", "secrets", "-n", r.bench),
        ("list", "secrets", "-A"),
        ("watch", "secrets", "-A"),
        ("create", "deployments.apps", "-n", r.work),
        ("patch", "namespaces"),
        ("get", "namespaces"),
        ("delete", "namespaces"),
        # No owner reference crosses namespaces: nothing on the qualifications' finalizers.
        ("update", "modelqualifications.modelgrid.firmus.ai/finalizers", "-n", r.work),
        # No Job, pod or claim outside the benchmark namespace: not the tenant's, not any.
        ("create", "jobs.batch", "-n", r.work),
        ("create", "jobs.batch", "-n", r.users),
        ("create", "jobs.batch", "-n", r.system),
        ("create", "jobs.batch", "-n", "default"),
        ("create", "jobs.batch", "-A"),
        ("delete", "jobs.batch", "-n", r.work),
        ("get", "jobs.batch", "-n", r.work),
        ("list", "jobs.batch", "-A"),
        ("watch", "jobs.batch", "-A"),
        ("list", "pods", "-A"),
        ("watch", "pods", "-A"),
        ("list", "pods", "-n", r.work),
        ("get", "pods/log", "-n", r.work),
        ("get", "pods/log", "-A"),
        ("get", "persistentvolumeclaims", "-n", r.work),
        ("get", "persistentvolumeclaims", "-A"),
        ("create", "pods", "-n", r.work),
        ("delete", "pods", "-n", r.work),
        ("update", "jobs.batch", "-n", r.work),
        # In the benchmark namespace, exactly the Role's verbs.
        ("update", "jobs.batch", "-n", r.bench),
        ("patch", "jobs.batch", "-n", r.bench),
        ("get", "pods", "-n", r.bench),
        ("create", "pods", "-n", r.bench),
        ("delete", "pods", "-n", r.bench),
        ("create", "pods/exec", "-n", r.bench),
        ("list", "persistentvolumeclaims", "-n", r.bench),
        ("create", "persistentvolumeclaims", "-n", r.bench),
        ("delete", "persistentvolumeclaims", "-n", r.bench),
        ("patch", "networkpolicies.networking.k8s.io", "-n", r.bench),
        ("create", "rolebindings.rbac.authorization.k8s.io", "-n", r.bench),
        ("create", "modelqualifications.modelgrid.firmus.ai", "-n", r.work),
        ("delete", "modelqualifications.modelgrid.firmus.ai", "-n", r.work),
        ("update", "modelqualifications.modelgrid.firmus.ai/status", "-n", r.work),
        ("create", "tierpolicies.modelgrid.firmus.ai"),
        ("delete", "tierpolicies.modelgrid.firmus.ai"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("create", "serviceaccounts/token", "-n", r.work),
        ("impersonate", "users"),
    ]
    wrong = [a for a in allowed if not r.can(sa, *a)] + [d for d in denied if r.can(sa, *d)]
    assert not wrong, f"{sa}: wrong answers for {wrong}"
    rbac = client.RbacAuthorizationV1Api(r.cluster.api)
    for role in (rbac.read_cluster_role(FULLNAME), rbac.read_namespaced_role(FULLNAME, r.bench)):
        for rule in role.rules:
            assert "*" not in (rule.verbs + rule.resources + (rule.api_groups or [])), rule
            assert "secrets" not in rule.resources


@pytest.mark.timeout(240)
def test_a_qualification_succeeds_with_only_the_charts_permissions(release: Release) -> None:
    r = release
    _create(r, _qualification("q-chart", r.work))
    obj = wait_for("the qualification's verdict", lambda: _finished(r, r.work, "q-chart"), 180)
    st = obj["status"]
    assert st["phase"] == "Succeeded", st
    assert st["policy"]["name"] == SIM_POLICY
    assert st["environment"]["simulated"] is True
    assert st["tier"]["number"] in (1, 2, 3)
    (job,) = _jobs_of(r, r.work, "q-chart")
    assert job.metadata.namespace == r.bench
    assert not job.metadata.owner_references  # none can cross namespaces
    assert job.metadata.labels[f"{GROUP}/qualification-uid"] == obj["metadata"]["uid"]
    # The benchmark pod was admitted under "restricted" (the benchmark namespace's) and ran to
    # completion; nothing ran in the tenant's namespace.
    core = client.CoreV1Api(r.cluster.api)
    pods = core.list_namespaced_pod(r.bench, label_selector=f"job-name={job.metadata.name}")
    assert [p.status.phase for p in pods.items] == ["Succeeded"]
    assert pods.items[0].metadata.labels["app.kubernetes.io/name"] == "modelgrid-benchmark"
    assert not client.BatchV1Api(r.cluster.api).list_namespaced_job(r.work).items
    assert not core.list_namespaced_pod(r.work).items
    events = core.list_namespaced_event(r.work).items
    reasons = {e.reason for e in events if e.involved_object.name == "q-chart"}
    assert "JobCreated" in reasons
    assert not [e for e in events if e.reason == "FailedCreate"]
    # Nothing the operator tried was refused.
    log = (_pod_dir(_running_operator(r)) / "operator.log").read_text()
    refused = [line for line in log.splitlines() if "forbidden" in line.lower()]
    assert not refused, refused[:5]
    with urllib.request.urlopen(f"http://127.0.0.1:{r.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert 'modelgrid_qualifications{phase="Succeeded"' in text


@pytest.mark.timeout(120)
def test_the_operator_reads_model_claims_in_the_benchmark_namespace(release: Release) -> None:
    """A claim there that is not shared with the tenant's namespace blocks the qualification:
    the operator read it (a refused read would leave no status), and made no Job."""
    r = release
    core = client.CoreV1Api(r.cluster.api)
    core.create_namespaced_persistent_volume_claim(
        r.bench,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(
                name="models", annotations={f"{GROUP}/shared-with": "someone-else"}
            ),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadOnlyMany"],
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )
    body = _qualification("q-volume", r.work)
    body["spec"]["model"]["source"] = {"pvc": {"claimName": "models"}}
    _create(r, body)
    stalled = wait_for(
        "the qualification to stall on its claim",
        lambda: (
            _condition(_get_mq(r, r.work, "q-volume"), "Stalled").get("status") == "True"
            and _get_mq(r, r.work, "q-volume")
        ),
        60,
    )
    assert _condition(stalled, "Stalled")["reason"] == "ModelVolumeNotShared", stalled["status"]
    assert not _jobs_of(r, r.work, "q-volume")
    log = (_pod_dir(_running_operator(r)) / "operator.log").read_text()
    refused = [line for line in log.splitlines() if "forbidden" in line.lower()]
    assert not refused, refused[:5]


def test_editors_ask_for_qualifications_but_cannot_write_verdicts(release: Release) -> None:
    r = release
    for user, role in (("alice", "edit"), ("bob", "view")):
        r.ok(
            "kubectl",
            "create",
            "rolebinding",
            f"{user}-{role}",
            f"--clusterrole={role}",
            f"--user={user}",
            "-n",
            r.users,
        )
    # The aggregation controller folds modelgrid-edit/-view into edit and view.
    wait_for(
        "modelgrid-edit aggregated into edit",
        lambda: r.can("alice", "create", "modelqualifications.modelgrid.firmus.ai", "-n", r.users),
        30,
    )
    wait_for(
        "modelgrid-view aggregated into view",
        lambda: r.can("bob", "get", "modelqualifications.modelgrid.firmus.ai", "-n", r.users),
        30,
    )
    manifest = yaml.safe_dump(_qualification("q-alice", r.users))
    created = r.run("kubectl", "create", "-f", "-", "--as=alice", stdin=manifest)
    assert created.returncode == 0, created.stderr
    forged = r.run(
        "kubectl",
        "patch",
        "mq",
        "q-alice",
        "-n",
        r.users,
        "--as=alice",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Succeeded"}}',
    )
    assert forged.returncode != 0
    assert "forbidden" in forged.stderr.lower(), forged.stderr
    assert "status" not in _get_mq(r, r.users, "q-alice")
    assert not r.can(
        "alice", "update", "modelqualifications.modelgrid.firmus.ai/status", "-n", r.users
    )
    assert r.can("alice", "delete", "modelqualifications.modelgrid.firmus.ai", "-n", r.users)
    seen = r.run("kubectl", "get", "mq", "q-alice", "-n", r.users, "--as=bob", "-o", "name")
    assert seen.returncode == 0, seen.stderr
    assert r.can("bob", "get", "modelqualifications.modelgrid.firmus.ai/status", "-n", r.users)
    assert not r.can("bob", "create", "modelqualifications.modelgrid.firmus.ai", "-n", r.users)
    assert not r.can("bob", "patch", "modelqualifications.modelgrid.firmus.ai", "-n", r.users)
    # An editor of a tenant namespace has nothing in the benchmark namespace: no pod to plant.
    for verb, resource in (
        ("create", "pods"),
        ("patch", "pods"),
        ("list", "pods"),
        ("create", "jobs.batch"),
        ("get", "persistentvolumeclaims"),
        ("create", "persistentvolumeclaims"),
    ):
        assert not r.can("alice", verb, resource, "-n", r.bench), (verb, resource)


@pytest.mark.timeout(300)
def test_an_upgrade_mid_run_keeps_the_qualification(release: Release) -> None:
    r = release
    before = wait_for("the operator pod to run", lambda: _running_operator(r), 60)
    _create(r, _qualification("q-upgrade", r.work, samples=3))
    wait_for(
        "the benchmark Job to start",
        lambda: [j for j in _jobs_of(r, r.work, "q-upgrade") if (j.status.active or 0) > 0],
        60,
    )
    r.ok(
        "helm",
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        r.system,
        "--reuse-values",
        "--set",
        "maxConcurrentJobs=3",
        "--wait",
        "--timeout",
        "120s",
    )
    (job,) = _jobs_of(r, r.work, "q-upgrade")
    assert not job.status.succeeded, "the benchmark ended before the upgrade did: make it longer"
    after = wait_for("the upgraded operator pod to run", lambda: _running_operator(r), 60)
    assert after.metadata.uid != before.metadata.uid
    env = {e.name: e.value for e in after.spec.containers[0].env}
    assert env["MODELGRID_MAX_CONCURRENT_JOBS"] == "3"
    assert env["MODELGRID_NAMESPACES"] == r.work
    obj = wait_for("the verdict after the upgrade", lambda: _finished(r, r.work, "q-upgrade"), 180)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    assert [j.metadata.name for j in _jobs_of(r, r.work, "q-upgrade")] == [job.metadata.name]
    history = json.loads(r.ok("helm", "history", RELEASE, "-n", r.system, "-o", "json"))
    assert [(h["revision"], h["status"]) for h in history][-1] == (2, "deployed")
    assert env["MODELGRID_BENCHMARK_NAMESPACE"] == r.bench
    # No owner reference: the operator itself deletes the Jobs of a deleted qualification.
    client.CustomObjectsApi(r.cluster.api).delete_namespaced_custom_object(
        GROUP, VERSION, r.work, "modelqualifications", "q-upgrade"
    )
    wait_for(
        "the deleted qualification's Job to go", lambda: not _jobs_of(r, r.work, "q-upgrade"), 90
    )


def test_uninstall_leaves_no_operator_object_and_keeps_the_crds(release: Release) -> None:
    r = release
    api = r.cluster.api
    r.ok("helm", "uninstall", RELEASE, "--namespace", r.system, "--wait", "--timeout", "120s")
    r.installed = False
    selector = f"app.kubernetes.io/instance={RELEASE}"
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    assert not apps.list_namespaced_deployment(r.system, label_selector=selector).items
    assert not core.list_namespaced_service(r.system, label_selector=selector).items
    assert not core.list_namespaced_service_account(r.system, label_selector=selector).items
    assert not [
        c.metadata.name
        for c in rbac.list_cluster_role().items
        if c.metadata.name in (FULLNAME, "modelgrid-edit", "modelgrid-view")
    ]
    assert not [
        b.metadata.name
        for b in rbac.list_cluster_role_binding().items
        if b.metadata.name == FULLNAME
    ]
    wait_for("the operator pod to go", lambda: not _operator_pods(r), 60)
    # The benchmark namespace stays (keep), without the operator's Role, binding or policy.
    assert core.read_namespace(r.bench).status.phase == "Active"
    assert not rbac.list_namespaced_role(r.bench, label_selector=selector).items
    assert not rbac.list_namespaced_role_binding(r.bench, label_selector=selector).items
    networking = client.NetworkingV1Api(api)
    assert not networking.list_namespaced_network_policy(r.bench, label_selector=selector).items
    assert _jobs_of(r, r.work, "q-chart")  # the finished benchmark's Job, left to its TTL
    # The API and its data stay: helm.sh/resource-policy: keep.
    ext = client.ApiextensionsV1Api(api)
    for name in CRD_NAMES:
        crd = ext.read_custom_resource_definition(name)
        assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
    kept = _get_mq(r, r.work, "q-chart")
    assert kept["status"]["phase"] == "Succeeded"
    # No finalizer: with no operator installed, deleting it completes at once
    # (docs/operations.md, "Uninstalling").
    assert not kept["metadata"].get("finalizers")
    custom = client.CustomObjectsApi(api)
    custom.delete_namespaced_custom_object(GROUP, VERSION, r.work, "modelqualifications", "q-chart")

    def gone() -> bool:
        try:
            _get_mq(r, r.work, "q-chart")
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for("q-chart to be deleted with no operator installed", gone, 30)
