"""A whole local cluster: control plane + simulated GPU nodes, and what the sandbox installs.

Does I/O. Used by the pytest fixtures (tests/controlplane/conftest.py) and by the sandbox
command (`python -m modelgrid_sandbox`).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelgrid_sandbox.controlplane import REPO, ControlPlane
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


def install_project(cluster: Cluster) -> list[str]:
    """Apply what the project has so far: CRDs from crds/ (the operator comes with its chart)."""
    applied = []
    crds = REPO / "crds"
    if crds.is_dir() and any(crds.glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "-f", str(crds))
        applied.append("crds")
    return applied
