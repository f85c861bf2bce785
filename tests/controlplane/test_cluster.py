"""The real control plane and the simulated GPU nodes do what the operator will rely on."""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from modelgrid_contract.wire import decode_compact
from modelgrid_sandbox.cluster import Cluster
from tests.controlplane.conftest import wait_for

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
PY = sys.executable


def _container(cmd: list[str], gpus: int = 0, **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": "main", "image": "python:3.11", "command": cmd, **extra}
    if gpus:
        c["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    return c


def _gpu_pod_spec(cmd: list[str], product: str = "NVIDIA-H200", gpus: int = 1) -> dict[str, Any]:
    return {
        "restartPolicy": "Never",
        "nodeSelector": {"nvidia.com/gpu.product": product},
        "tolerations": [GPU_TOLERATION],
        "containers": [_container(cmd, gpus)],
    }


def _job(name: str, pod_spec: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": pod_spec}, **spec},
    }


def _job_condition(api: client.ApiClient, ns: str, name: str, kind: str) -> Any:
    job = client.BatchV1Api(api).read_namespaced_job(name, ns)
    for c in job.status.conditions or []:
        if c.type == kind and c.status == "True":
            return c
    return None


def _pods(api: client.ApiClient, ns: str, selector: str = "") -> list[Any]:
    return list(client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=selector).items)


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_nodes_look_like_gpu_nodes(api: client.ApiClient) -> None:
    node = client.CoreV1Api(api).read_node("gpu-h200-0")
    assert node.status.capacity["nvidia.com/gpu"] == "2"
    assert node.status.allocatable["nvidia.com/gpu"] == "2"
    assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H200"
    assert node.metadata.labels["nvidia.com/gpu.count"] == "2"
    assert [(t.key, t.effect) for t in node.spec.taints] == [("nvidia.com/gpu", "NoSchedule")]
    lease = client.CoordinationV1Api(api).read_namespaced_lease("gpu-h200-0", "kube-node-lease")
    assert lease.spec.holder_identity == "gpu-h200-0"


def test_gpu_job_runs_on_h200_and_never_on_the_other_model(
    api: client.ApiClient, namespace: str
) -> None:
    cmd = [PY, "-c", "import os; print(os.environ['MODELGRID_SIMULATED_NODE'])"]
    body = _job("place", _gpu_pod_spec(cmd), completions=4, parallelism=2, backoffLimit=0)
    client.BatchV1Api(api).create_namespaced_job(namespace, body)
    wait_for("the Job to complete", lambda: _job_condition(api, namespace, "place", "Complete"))
    pods = _pods(api, namespace, "job-name=place")
    assert len(pods) == 4
    assert {p.spec.node_name for p in pods} == {"gpu-h200-0"}
    # The other model would have had room: it has 4 free GPUs, and it was never used.
    h100 = client.CoreV1Api(api).read_node("gpu-h100-0")
    assert h100.status.allocatable["nvidia.com/gpu"] == "4"


def test_with_every_gpu_taken_the_pod_is_unschedulable(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    sleeper = [PY, "-c", "import time; time.sleep(600)"]
    for i in range(2):
        core.create_namespaced_pod(
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"hold-{i}"},
                "spec": _gpu_pod_spec(sleeper),
            },
        )
    for i in range(2):
        wait_for(
            f"hold-{i} to run",
            lambda i=i: core.read_namespaced_pod(f"hold-{i}", namespace).status.phase == "Running",
        )
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "one-too-many"},
            "spec": _gpu_pod_spec(sleeper),
        },
    )

    def unschedulable() -> Any:
        pod = core.read_namespaced_pod("one-too-many", namespace)
        for c in pod.status.conditions or []:
            if c.type == "PodScheduled" and c.status == "False":
                return c
        return None

    cond = wait_for("PodScheduled=False", unschedulable)
    assert cond.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in cond.message
    assert "0/3 nodes are available" in cond.message


def test_job_retries_a_failing_pod_up_to_its_backoff_limit(
    api: client.ApiClient, namespace: str
) -> None:
    body = _job("flaky", _gpu_pod_spec([PY, "-c", "raise SystemExit(3)"]), backoffLimit=2)
    client.BatchV1Api(api).create_namespaced_job(namespace, body)
    cond = wait_for(
        "the Job to fail", lambda: _job_condition(api, namespace, "flaky", "Failed"), 120
    )
    assert cond.reason == "BackoffLimitExceeded"
    pods = _pods(api, namespace, "job-name=flaky")
    assert len(pods) == 3  # the first try and two retries
    for p in pods:
        term = p.status.container_statuses[0].state.terminated
        assert term.exit_code == 3


def test_active_deadline_fails_a_job_that_runs_too_long(
    api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    cmd = [
        PY,
        "-c",
        f"import os,time; open({str(pidfile)!r},'w').write(str(os.getpid())); time.sleep(600)",
    ]
    body = _job("slow", _gpu_pod_spec(cmd), activeDeadlineSeconds=4, backoffLimit=0)
    client.BatchV1Api(api).create_namespaced_job(namespace, body)
    wait_for("the pod to start", lambda: pidfile.exists() and pidfile.read_text())
    cond = wait_for("the deadline", lambda: _job_condition(api, namespace, "slow", "Failed"))
    assert cond.reason == "DeadlineExceeded"
    pid = int(pidfile.read_text())
    wait_for("the pod's process to stop", lambda: _pid_gone(pid), 30)


def test_deleting_an_owner_garbage_collects_its_jobs_and_pods(
    api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "owner"}, "data": {"a": "b"}}
    )
    pidfile = tmp_path / "pid"
    cmd = [
        PY,
        "-c",
        f"import os,time; open({str(pidfile)!r},'w').write(str(os.getpid())); time.sleep(600)",
    ]
    body = _job("owned", _gpu_pod_spec(cmd), backoffLimit=0)
    body["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "owner",
            "uid": owner.metadata.uid,
            "blockOwnerDeletion": True,
            "controller": True,
        }
    ]
    client.BatchV1Api(api).create_namespaced_job(namespace, body)
    wait_for("the owned pod to run", lambda: pidfile.exists() and pidfile.read_text())
    pid = int(pidfile.read_text())
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Foreground")
    wait_for(
        "the Job to be collected",
        lambda: not client.BatchV1Api(api).list_namespaced_job(namespace).items,
    )
    wait_for("its pods to be collected", lambda: not _pods(api, namespace))
    wait_for("the pod's process to stop", lambda: _pid_gone(pid), 30)


def test_pod_security_restricted_rejects_a_non_compliant_pod(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    loose = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "loose"},
        "spec": {"containers": [_container(["true"])]},
    }
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod(namespace, loose)
    assert exc.value.status == 403
    message = json.loads(exc.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert "runAsNonRoot != true" in message
    tight = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "tight"},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                _container(
                    ["true"],
                    securityContext={
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                )
            ],
        },
    }
    core.create_namespaced_pod(namespace, tight)


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "ranges.test.modelgrid.firmus.ai"},
    "spec": {
        "group": "test.modelgrid.firmus.ai",
        "scope": "Namespaced",
        "names": {"plural": "ranges", "singular": "range", "kind": "Range"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.low <= self.high",
                                        "message": "low must not exceed high",
                                    }
                                ],
                                "properties": {
                                    "low": {"type": "integer"},
                                    "high": {"type": "integer"},
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_a_crd_cel_rule_rejects_a_bad_object_with_its_message(
    cluster: Cluster, namespace: str
) -> None:
    ext = client.ApiextensionsV1Api(cluster.api)
    try:
        ext.create_custom_resource_definition(CRD)
    except ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        crd = ext.read_custom_resource_definition(CRD["metadata"]["name"])
        return any(
            c.type == "Established" and c.status == "True" for c in crd.status.conditions or []
        )

    wait_for("the CRD to be established", established)
    custom = client.CustomObjectsApi(cluster.api)

    def create(low: int, high: int, name: str) -> Any:
        return custom.create_namespaced_custom_object(
            "test.modelgrid.firmus.ai",
            "v1",
            namespace,
            "ranges",
            {
                "apiVersion": "test.modelgrid.firmus.ai/v1",
                "kind": "Range",
                "metadata": {"name": name},
                "spec": {"low": low, "high": high},
            },
        )

    # Discovery of a new CRD can lag its Established condition by a moment.
    wait_for("the new type to be served", lambda: _try(lambda: create(1, 2, "good")))
    with pytest.raises(ApiException) as exc:
        create(5, 2, "bad")
    assert exc.value.status == 422
    assert "low must not exceed high" in exc.value.body


def _try(fn: Any) -> Any:
    try:
        return fn()
    except ApiException:
        return None


def _finished_pod(api: client.ApiClient, ns: str, name: str, timeout_s: float = 60) -> Any:
    core = client.CoreV1Api(api)

    def finished() -> Any:
        pod = core.read_namespaced_pod(name, ns)
        return pod if pod.status.phase in ("Succeeded", "Failed") else None

    return wait_for(f"pod {name} to finish", finished, timeout_s)


def test_the_termination_message_reaches_pod_status(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    script = (
        "import sys; open('/dev/termination-log', 'w').write('{\"ok\": true}'); "
        "print('log line'); sys.exit(0)"
    )
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "msg"},
            "spec": _gpu_pod_spec([PY, "-c", script]),
        },
    )
    pod = _finished_pod(api, namespace, "msg")
    term = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Succeeded"
    assert term.exit_code == 0
    assert term.reason == "Completed"
    assert json.loads(term.message) == {"ok": True}
    # The path is the container's own, and the 4096-byte limit holds.
    big = "import sys; open('/tmp/custom-term', 'w').write('x' * 10000); sys.exit(4)"
    spec = _gpu_pod_spec([PY, "-c", big])
    spec["containers"][0]["terminationMessagePath"] = "/tmp/custom-term"
    core.create_namespaced_pod(
        namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"}, "spec": spec}
    )
    pod = _finished_pod(api, namespace, "big")
    term = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Failed"
    assert term.exit_code == 4
    assert term.message == "x" * 4096
    # FallbackToLogsOnError: no message written, non-zero exit -> the log tail.
    spec = _gpu_pod_spec([PY, "-c", "print('model file missing'); raise SystemExit(2)"])
    spec["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    core.create_namespaced_pod(
        namespace,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fallback"}, "spec": spec},
    )
    pod = _finished_pod(api, namespace, "fallback")
    assert "model file missing" in pod.status.container_statuses[0].state.terminated.message


def test_the_real_benchmark_runs_in_a_pod_and_reports_simulated(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    spec = _gpu_pod_spec([], gpus=2)
    c = spec["containers"][0]
    c["image"] = "ghcr.io/firmus/modelgrid-bench:0.1.0"
    del c["command"]
    c["args"] = [
        "run",
        "--backend",
        "synthetic",
        "--model",
        "demo",
        "--samples",
        "3",
        "--tokens",
        "20",
        "--repeats",
        "2",
        "--warmup-samples",
        "0",
        "--idle-baseline-s",
        "0.5",
        "--expect-gpu",
        "NVIDIA-H200",
        "--output-dir",
        "/results/evidence",
    ]
    c["volumeMounts"] = [{"name": "results", "mountPath": "/results"}]
    spec["volumes"] = [{"name": "results", "emptyDir": {}}]
    core.create_namespaced_pod(
        namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench"}, "spec": spec}
    )
    pod = _finished_pod(api, namespace, "bench", 90)
    term = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Succeeded", term.message
    result = decode_compact(term.message)
    assert result.simulated
    assert result.source.value == "replay"
    assert result.gpu.name == "NVIDIA H200"
    assert result.gpu.count == 2
    assert result.node == "gpu-h200-0"
    assert result.output_tokens == 3 * 20 * 2


def test_deleting_a_pod_stops_its_process(
    api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(api)
    pidfile = tmp_path / "pid"
    cmd = [
        PY,
        "-c",
        f"import os,time; open({str(pidfile)!r},'w').write(str(os.getpid())); time.sleep(600)",
    ]
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "victim"},
            "spec": _gpu_pod_spec(cmd),
        },
    )
    wait_for("the pod to start", lambda: pidfile.exists() and pidfile.read_text())
    pid = int(pidfile.read_text())
    core.delete_namespaced_pod("victim", namespace)
    wait_for("the process to stop", lambda: _pid_gone(pid), 30)
    wait_for("the pod object to go", lambda: not _pods(api, namespace))


def test_rbac_is_enforced(cluster: Cluster, namespace: str) -> None:
    out = cluster.kubectl(
        "auth",
        "can-i",
        "list",
        "pods",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:default",
        check=False,
    )
    assert out.strip() == "no"
    assert cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace).strip() == "yes"


@pytest.mark.timeout(420)
def test_the_demo_command_runs_the_main_job_end_to_end(tmp_path: Path) -> None:
    """`make demo`: sandbox, operator, example qualification, verdict, clean exit."""
    import subprocess

    proc = subprocess.run(
        [
            PY,
            "-m",
            "modelgrid_sandbox",
            "--demo",
            "--demo-timeout",
            "300",
            "--log-dir",
            str(tmp_path / "logs"),
            "--kubeconfig-out",
            str(tmp_path / "kubeconfig"),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    for node in ("gpu-h200-0", "gpu-h200-1", "gpu-h100-0", "cpu-0"):
        assert node in out
    assert "NVIDIA-H100-80GB-HBM3" in out
    assert "installed: crds, tierpolicies, operator" in out
    table = out[out.index("NAMESPACE   NAME") :]
    assert "llama-8b-shape" in table
    assert "Succeeded" in table
    assert "Tier 1 - Low Variance" in out
    assert "verification: Verified" in out
    assert not (tmp_path / "kubeconfig").exists()  # removed on the way out


def _log(core: client.CoreV1Api, ns: str, name: str, **opts: Any) -> str:
    """The pod's log through the apiserver (pods/log, proxied to the simulated kubelet)."""
    return str(core.read_namespaced_pod_log(name, ns, container="main", **opts))


@pytest.mark.timeout(180)
def test_pod_logs_are_read_through_the_apiserver_while_it_runs_and_after(
    api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(api)
    gate = tmp_path / "go"
    script = (
        "import os, sys, time\n"
        "for i in range(5): print(f'line {i}', flush=True)\n"
        # Until the test has read the first lines (bounded, so no process outlives a failure).
        "deadline = time.monotonic() + 120\n"
        f"while not os.path.exists({str(gate)!r}) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "for i in range(5, 8): print(f'line {i}', flush=True)\n"
    )
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "talker"},
            "spec": _gpu_pod_spec([PY, "-c", script]),
        },
    )
    first = "".join(f"line {i}\n" for i in range(5))
    wait_for(
        "the first five lines to be readable through the apiserver",
        lambda: _try(lambda: _log(core, namespace, "talker")) == first,
        60,
    )
    assert core.read_namespaced_pod("talker", namespace).status.phase == "Running"
    assert _log(core, namespace, "talker", tail_lines=2) == "line 3\nline 4\n"
    assert _log(core, namespace, "talker", tail_lines=2, limit_bytes=4) == "line"
    stamped = _log(core, namespace, "talker", tail_lines=1, timestamps=True)
    stamp, text = stamped.split(" ", 1)
    assert text == "line 4\n"
    assert dt.datetime.fromisoformat(stamp).tzinfo is not None
    # follow=true streams what comes next and ends with the container.
    stream = core.read_namespaced_pod_log(
        "talker",
        namespace,
        container="main",
        follow=True,
        tail_lines=1,
        _preload_content=False,
        _request_timeout=90,
    )
    try:
        gate.touch()
        followed = stream.read().decode()
    finally:
        stream.release_conn()
    assert followed == "line 4\n" + "".join(f"line {i}\n" for i in range(5, 8))
    pod = _finished_pod(api, namespace, "talker")
    assert pod.status.phase == "Succeeded"
    # The log outlives the container, until the pod is deleted.
    assert _log(core, namespace, "talker", tail_lines=2) == "line 6\nline 7\n"
    assert _log(core, namespace, "talker") == "".join(f"line {i}\n" for i in range(8))
    with pytest.raises(ApiException) as unknown:
        core.read_namespaced_pod_log("talker", namespace, container="nope", tail_lines=2)
    assert unknown.value.status in (400, 404)
    with pytest.raises(ApiException) as previous:
        _log(core, namespace, "talker", previous=True)
    assert previous.value.status in (400, 404)
    assert "previous terminated container" in str(previous.value.body)


@pytest.mark.timeout(120)
def test_the_kubelet_log_endpoint_lets_in_only_the_cluster_ca_s_clients(
    cluster: Cluster, namespace: str
) -> None:
    node = client.CoreV1Api(cluster.api).read_node("gpu-h200-0")
    port = node.status.daemon_endpoints.kubelet_endpoint.port
    assert port
    url = f"https://127.0.0.1:{port}/containerLogs/{namespace}/absent/main?tailLines=1"
    anonymous = ssl.create_default_context()
    anonymous.check_hostname = False
    anonymous.verify_mode = ssl.CERT_NONE  # the kubelet's serving cert is self-signed
    with pytest.raises(OSError, match=r"(?i)certificate|reset|eof|closed"):  # in the handshake
        urllib.request.urlopen(url, timeout=10, context=anonymous).close()
    pki = cluster.control_plane.pki
    assert pki is not None
    apiserver = ssl.create_default_context()
    apiserver.check_hostname = False
    apiserver.verify_mode = ssl.CERT_NONE
    apiserver.load_cert_chain(*pki.clients["apiserver-kubelet-client"])
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(url, timeout=10, context=apiserver).close()
    assert missing.value.code == 404
    assert missing.value.read().decode().strip() == 'pod "absent" does not exist'
    missing.value.close()
