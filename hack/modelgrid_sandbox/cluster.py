"""A whole local cluster: control plane + simulated GPU nodes, and what the sandbox installs.

Does I/O. Used by the pytest fixtures (tests/controlplane/conftest.py) and by the sandbox
command (`python -m modelgrid_sandbox`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelgrid_operator.jobs import DEFAULT_BENCHMARK_NAMESPACE
from modelgrid_sandbox.controlplane import REPO, ControlPlane, free_port
from modelgrid_sandbox.nodeagent import NodeAgent, NodeSpec, default_fleet


@dataclass
class Cluster:
    control_plane: ControlPlane
    agent: NodeAgent
    api: client.ApiClient

    @property
    def kubeconfig(self) -> Path:
        assert self.control_plane.kubeconfig is not None
        return self.control_plane.kubeconfig

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [
                str(self.control_plane.bin_dir / "kubectl"),
                "--kubeconfig",
                str(self.kubeconfig),
                *args,
            ],
            capture_output=True,
            text=True,
            input=stdin,
            check=False,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def stop(self) -> None:
        try:
            self.agent.stop(delete_nodes=False)
        finally:
            self.api.close()
            self.control_plane.stop()


def api_client(kubeconfig: Path) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


def start_cluster(
    fleet: list[NodeSpec] | None = None,
    *,
    log_dir: Path | None = None,
    bin_dir: Path | None = None,
    synthetic_inference: bool = False,
) -> Cluster:
    cp = ControlPlane.start(bin_dir, log_dir=log_dir)
    try:
        api = api_client(cp.kubeconfig)
        agent = NodeAgent(
            api,
            fleet or default_fleet(),
            cp.workdir / "nodes",
            synthetic_inference=synthetic_inference,
        )
        (cp.workdir / "nodes").mkdir(exist_ok=True)
        agent.start()
        return Cluster(cp, agent, api)
    except BaseException:
        cp.stop()
        raise


def wait_for_default_service_account(
    api: client.ApiClient, namespace: str, timeout_s: float = 30
) -> None:
    """Pods cannot be created before the namespace's `default` ServiceAccount exists."""
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ApiException):
            core.read_namespaced_service_account("default", namespace)
            return
        time.sleep(0.2)
    raise TimeoutError(f"no default ServiceAccount in {namespace} after {timeout_s} s")


SANDBOX_POLICY = "model-card-sandbox"


def ensure_benchmark_namespace(cluster: Cluster, name: str = DEFAULT_BENCHMARK_NAMESPACE) -> str:
    """The operator's benchmark namespace, as the chart makes it: Pod Security "restricted"
    enforced, and no tenant bound to any role in it."""
    core = client.CoreV1Api(cluster.api)
    body = client.V1Namespace(
        metadata=client.V1ObjectMeta(
            name=name,
            labels={
                "pod-security.kubernetes.io/enforce": "restricted",
                "app.kubernetes.io/part-of": "modelgrid",
            },
        )
    )
    try:
        core.create_namespace(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
    wait_for_default_service_account(cluster.api, name)
    return name


#: The sandbox's evidence claim in the benchmark namespace (the chart's evidence.claimName).
EVIDENCE_CLAIM = "modelgrid-evidence"


def ensure_evidence_volume(
    cluster: Cluster, namespace: str, claim: str = EVIDENCE_CLAIM, size: str = "10Gi"
) -> Path:
    """A PersistentVolume on a local folder and the claim bound to it in `namespace`, as a
    platform team would provision one (here a hostPath volume, which the simulated kubelet
    maps to the folder). The controller-manager binds them; returns the folder."""
    folder = cluster.control_plane.workdir / "evidence" / namespace
    folder.mkdir(parents=True, exist_ok=True)
    core = client.CoreV1Api(cluster.api)
    pv_name = f"{namespace}-{claim}"[:253]
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "labels": {"app.kubernetes.io/part-of": "modelgrid"}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": size}},
        },
    }
    for create in (
        lambda: core.create_persistent_volume(pv),
        lambda: core.create_namespaced_persistent_volume_claim(namespace, pvc),
    ):
        try:
            create()
        except ApiException as exc:
            if exc.status != 409:
                raise
    return folder


def install_project(cluster: Cluster) -> list[str]:
    """Apply the CRDs, the shipped TierPolicies and the sandbox's policy (simulated allowed)."""
    applied = []
    crds = REPO / "crds"
    if crds.is_dir() and any(crds.glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "-f", str(crds))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        applied.append("crds")
    policies = crds / "tierpolicies"
    if policies.is_dir():
        cluster.kubectl("apply", "--server-side", "-f", str(policies))
        cluster.kubectl(
            "apply",
            "--server-side",
            "-f",
            str(REPO / "hack" / "sandbox" / f"{SANDBOX_POLICY}.yaml"),
        )
        applied.append("tierpolicies")
    return applied


@dataclass
class OperatorProcess:
    """The operator as a local process with the admin kubeconfig (the chart runs it in-cluster
    as its own ServiceAccount)."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    live_port: int

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_operator(
    cluster: Cluster,
    log_path: Path,
    *,
    default_policy: str = SANDBOX_POLICY,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = 60,
) -> OperatorProcess:
    metrics_port, live_port = free_port(), free_port()
    bench_ns = (extra_env or {}).get("MODELGRID_BENCHMARK_NAMESPACE", DEFAULT_BENCHMARK_NAMESPACE)
    ensure_benchmark_namespace(cluster, bench_ns)
    # Kept evidence, as the chart configures it, unless the caller says otherwise ("" = none).
    evidence_claim = (extra_env or {}).get("MODELGRID_EVIDENCE_CLAIM", EVIDENCE_CLAIM)
    if evidence_claim:
        ensure_evidence_volume(cluster, bench_ns, evidence_claim)
    env = {
        **os.environ,
        # after the environment: the claim the sandbox just provisioned is the one to use
        "MODELGRID_EVIDENCE_CLAIM": evidence_claim,
        "KUBECONFIG": str(cluster.kubeconfig),
        "MODELGRID_BENCHMARK_NAMESPACE": bench_ns,
        "MODELGRID_DEFAULT_POLICY": default_policy,
        "MODELGRID_METRICS_PORT": str(metrics_port),
        "MODELGRID_LIVENESS_ENDPOINT": f"http://127.0.0.1:{live_port}/healthz",
        "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),  # as the chart sets it
        "PYTHONMALLOC": os.environ.get("PYTHONMALLOC", "malloc"),  # as the chart sets it
        **(extra_env or {}),
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelgrid_operator"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    op = OperatorProcess(proc, log_path, metrics_port, live_port)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not op.alive():
            raise RuntimeError(f"the operator exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{live_port}/healthz", timeout=2):
                return op
        except OSError:
            time.sleep(0.3)
    op.stop()
    raise TimeoutError(f"the operator was not live after {timeout_s} s; see {log_path}")
