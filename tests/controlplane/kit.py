"""Shared helpers of the operator's control-plane tests: the API installed with the sandbox's
policy, the operator as a restartable local process, paced benchmark pods, and reading and
writing qualifications. Test helper only; every function here talks to the test cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

from modelgrid_sandbox.cluster import Cluster, OperatorProcess, start_operator
from modelgrid_sandbox.controlplane import REPO

GROUP, VERSION = "modelgrid.firmus.ai", "v1alpha1"
PLURAL = "modelqualifications"
#: The sandbox's own policy (hack/sandbox): the model card's table, simulated results accepted.
SIM_POLICY = "model-card-sandbox"
#: What the pods of simulated nodes run instead of the model: a paced synthetic engine.
PACED_ENV = {"MODELGRID_BACKEND_OVERRIDE": "synthetic", "MODELGRID_SYNTHETIC_STEP_MS": "20"}
#: How long a paced qualification may take from apply to verdict on a slow, shared CI machine
#: (about 40 s on a quiet one: two 12 s runs, the idle baseline, pod start-up).
VERDICT_WAIT_S = 600


def install_api(cluster: Cluster) -> None:
    """The CRDs, the shipped policies and the sandbox's policy, applied and established."""
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/modelqualifications.modelgrid.firmus.ai",
        "crd/tierpolicies.modelgrid.firmus.ai",
    )
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "tierpolicies"))
    cluster.kubectl(
        "apply", "--server-side", "-f", str(REPO / "hack" / "sandbox" / f"{SIM_POLICY}.yaml")
    )


@dataclass
class OperatorUnderTest:
    """The operator as a local process that a test may stop, kill and start again, with the
    environment (`extra`) each start gives it."""

    cluster: Cluster
    extra: dict[str, str] = field(default_factory=dict)
    op: OperatorProcess | None = None

    def start(self) -> OperatorProcess:
        self.op = start_operator(
            self.cluster,
            self.cluster.control_plane.log_dir / "operator.log",
            default_policy=SIM_POLICY,
            extra_env=self.extra,
        )
        return self.op

    def stop(self) -> None:
        if self.op is not None:
            self.op.stop()

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as when a node or the OOM killer takes it."""
        if self.op is not None and self.op.alive():
            self.op.proc.kill()
            self.op.proc.wait()


@contextlib.contextmanager
def paced_pods(cluster: Cluster) -> Iterator[None]:
    """Pods on the simulated nodes pace tokens (20 ms a step) instead of running the model, so
    no test depends on how fast this machine runs one; the node agent's environment is restored
    after."""
    env = cluster.agent.extra_env
    saved = dict(env)
    env.update(PACED_ENV)
    try:
        yield
    finally:
        env.clear()
        env.update(saved)


def create_qualification(api: client.ApiClient, ns: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)


def get_qualification(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name
    )
    return obj


def phase_is(api: client.ApiClient, ns: str, name: str, *phases: str) -> Any:
    """The qualification when its phase is one of `phases`, else None (for `wait_for`)."""
    obj = get_qualification(api, ns, name)
    return obj if (obj.get("status") or {}).get("phase") in phases else None
