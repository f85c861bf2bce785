"""Fixtures for tests on the real control plane: one cluster per session, a namespace per test.

When CI=true, a control plane that cannot start fails the run; elsewhere it skips these tests
with the reason. Component logs go to build/test-logs/<session>/; they are removed after a
fully green session and named in the report of every failing control-plane test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelgrid_operator.jobs import DEFAULT_BENCHMARK_NAMESPACE
from modelgrid_sandbox.cluster import Cluster, start_cluster, wait_for_default_service_account
from modelgrid_sandbox.controlplane import REPO
from modelgrid_sandbox.nodeagent import NodeSpec

#: Small on purpose, so that "every GPU taken" is reachable: 2 H200 GPUs, 4 H100 GPUs.
TEST_FLEET = [
    NodeSpec("gpu-h200-0", "NVIDIA-H200", 2, 143771),
    NodeSpec("gpu-h100-0", "NVIDIA-H100-80GB-HBM3", 4, 81559, replay_trace="builtin:h200-busy"),
    NodeSpec("cpu-0", None, 0, 0),
]

#: Where the operator under test runs benchmark Jobs (the sandbox creates it as the chart does).
BENCHMARK_NAMESPACE = DEFAULT_BENCHMARK_NAMESPACE
_QUALIFICATION_NS = "modelgrid.firmus.ai/qualification-namespace"

LOG_ROOT = REPO / "build" / "test-logs"
_state: dict[str, Any] = {"failed": False, "log_dir": None}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.controlplane)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and item.get_closest_marker("controlplane") and _state["log_dir"]:
        _state["failed"] = True
        report.sections.append(("control-plane logs", f"component logs are in {_state['log_dir']}"))
    return report


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    log_dir = LOG_ROOT / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    _state["log_dir"] = log_dir
    try:
        c = start_cluster(TEST_FLEET, log_dir=log_dir)
    except Exception as exc:
        message = f"the control plane did not start: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        _wait_nodes_ready(c)
        yield c
    finally:
        c.stop()
        if not _state["failed"]:
            shutil.rmtree(log_dir, ignore_errors=True)


def _wait_nodes_ready(c: Cluster, timeout_s: float = 60) -> None:
    core = client.CoreV1Api(c.api)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        nodes = core.list_node().items
        # Ready, and the node lifecycle controller has lifted its not-ready taint.
        ready = [
            n
            for n in nodes
            if any(x.type == "Ready" and x.status == "True" for x in n.status.conditions or [])
            and not any(t.key.startswith("node.kubernetes.io/") for t in n.spec.taints or [])
        ]
        if len(ready) >= len(TEST_FLEET):
            return
        time.sleep(0.3)
    raise TimeoutError("simulated nodes did not become Ready")


@pytest.fixture
def api(cluster: Cluster) -> client.ApiClient:
    return cluster.api


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(cluster.api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for_default_service_account(cluster.api, name)
    yield name
    with contextlib.suppress(ApiException):
        core.delete_namespace(name, propagation_policy="Background")
    # Let the namespace's pods, and its benchmark pods, go before the next test needs the GPUs
    # they held (the operator deletes the Jobs of deleted qualifications).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        core.list_namespaced_pod(name).items or benchmark_pods(cluster.api, name)
    ):
        time.sleep(0.3)


def _of_namespace(list_fn: Callable[..., Any], qualification_ns: str) -> list[Any]:
    """What `list_fn` lists in the benchmark namespace for qualifications in
    `qualification_ns` (nothing while that namespace does not exist yet)."""
    with contextlib.suppress(ApiException):
        selector = f"{_QUALIFICATION_NS}={qualification_ns}"
        return list(list_fn(BENCHMARK_NAMESPACE, label_selector=selector).items)
    return []


def benchmark_jobs(api: client.ApiClient, qualification_ns: str) -> list[Any]:
    """Benchmark Jobs made for qualifications in `qualification_ns`."""
    return _of_namespace(client.BatchV1Api(api).list_namespaced_job, qualification_ns)


def benchmark_pods(api: client.ApiClient, qualification_ns: str) -> list[Any]:
    """Benchmark pods made for qualifications in `qualification_ns`."""
    return _of_namespace(client.CoreV1Api(api).list_namespaced_pod, qualification_ns)


def wait_for(
    what: str, probe: Callable[[], Any], timeout_s: float = 60.0, interval_s: float = 0.3
) -> Any:
    """Poll until `probe()` returns something truthy; fail with `what` otherwise."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")
