"""Simulated GPU nodes: a stand-in kubelet that registers nodes and runs their pods locally.

Does I/O (the Kubernetes API, processes, files). Only the GPU and the kubelet are simulated:
nodes look like real GPU nodes (capacity/allocatable `nvidia.com/gpu`, the labels NVIDIA GPU
Feature Discovery sets, the `nvidia.com/gpu:NoSchedule` taint), are kept Ready with node leases,
and every pod the real scheduler binds to them runs as a local process with the pod's command,
args and environment. The agent injects a replayed power source (`MODELGRID_POWER_SOURCE`) so
the real benchmark code runs and its result says `simulated: true`. Pod status moves through
Pending, Running and Succeeded/Failed, with exit codes and the termination message (from
`terminationMessagePath`, at most 4096 bytes, or the log tail under FallbackToLogsOnError).
A pod with a ServiceAccount token mount gets a token bound to it and `KUBECONFIG` pointing at
this apiserver, so an in-cluster client (the operator) acts as its ServiceAccount.
Deleting a pod stops its process.

Container logs: each container's stdout and stderr are kept as a kubelet's container runtime
keeps them (one line per record: time, stream, full/partial tag, text; a file per restart under
`<workdir>/logs/<namespace>_<pod>_<uid>/<container>/`), until the pod is deleted or the agent
stops. The agent serves the kubelet's `GET /containerLogs/{namespace}/{pod}/{container}` over
HTTPS on 127.0.0.1 (its port in every node's `status.daemonEndpoints`), so `kubectl logs` and
`read_namespaced_pod_log` work through the real apiserver, with `tailLines`, `limitBytes`,
`sinceSeconds`/`sinceTime`, `timestamps`, `follow`, `previous` and `stream`. Only a client
certificate signed by the CA that the agent's API client trusts (the sandbox's one CA, which
signs the apiserver's kubelet client certificate) is let in; the serving certificate is
self-signed, as a kubelet's own is (the apiserver runs without --kubelet-certificate-authority).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime as dt
import json
import logging
import os
import re
import select
import selectors
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from modelgrid_sandbox.certs import self_signed_server

log = logging.getLogger(__name__)

TERMINATION_MESSAGE_LIMIT_BYTES = 4096
FALLBACK_LOG_BYTES = 2048
LEASE_DURATION_S = 40
HEARTBEAT_S = 5.0
AGENT_NAME = "modelgrid-sim-kubelet"
GPU = "nvidia.com/gpu"
#: Where the ServiceAccount admission plugin mounts a pod's token (unless automount is off).
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
#: The kubelet's own request: the apiserver extends such pod-bound tokens to a year
#: (--service-account-extend-token-expiration, warn-only after an hour), so a long-running
#: process such as the operator keeps its credentials.
SA_TOKEN_SECONDS = 3607
#: A longer line is split into partial records, as container runtimes split theirs.
LOG_RECORD_BYTES = 16 * 1024
#: A `follow=true` log stream ends with its container; this bounds one in any case.
FOLLOW_MAX_S = 3600.0
FOLLOW_POLL_S = 0.2
#: How long a container's log writer may take to copy what the container wrote before it ended
#: (longer only when a process the container started outlives it and keeps its stdout open).
LOG_DRAIN_S = 5.0


@dataclass(frozen=True)
class NodeSpec:
    name: str
    gpu_product: str | None = "NVIDIA-H200"
    gpu_count: int = 8
    gpu_memory_mib: int = 143771
    cpu: str = "32"
    memory: str = "256Gi"
    pods: int = 110
    replay_trace: str = "builtin:h200-decode"

    @property
    def gpu_name(self) -> str | None:
        """The product as NVML would name it ('NVIDIA-H200' label -> 'NVIDIA H200')."""
        return self.gpu_product.replace("-", " ") if self.gpu_product else None


def default_fleet() -> list[NodeSpec]:
    """A mixed fleet: H200 nodes, one H100 node, and a CPU node for system pods."""
    return [
        NodeSpec("gpu-h200-0", "NVIDIA-H200", 8, 143771),
        NodeSpec("gpu-h200-1", "NVIDIA-H200", 8, 143771),
        NodeSpec("gpu-h100-0", "NVIDIA-H100-80GB-HBM3", 8, 81559, replay_trace="builtin:h200-busy"),
        NodeSpec("cpu-0", None, 0, 0),
    ]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rfc3339(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def node_manifest(spec: NodeSpec) -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "modelgrid.firmus.ai/simulated": "true",
    }
    taints: list[dict[str, str]] = []
    if spec.gpu_product:
        labels.update(
            {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": spec.gpu_product,
                "nvidia.com/gpu.count": str(spec.gpu_count),
                "nvidia.com/gpu.memory": str(spec.gpu_memory_mib),
                "nvidia.com/gpu.family": "hopper",
                "nvidia.com/mig.capable": "true",
                "nvidia.com/cuda.driver.major": "570",
            }
        )
        taints.append({"key": GPU, "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
        "spec": {"taints": taints} if taints else {},
    }


def node_status(spec: NodeSpec, kubelet_port: int | None = None) -> dict[str, Any]:
    """The node's status; `kubelet_port` is where the agent serves the kubelet's log endpoint
    (the apiserver proxies `pods/log` there)."""
    capacity = {"cpu": spec.cpu, "memory": spec.memory, "pods": str(spec.pods)}
    if spec.gpu_product:
        capacity[GPU] = str(spec.gpu_count)
    now = _rfc3339(_now())
    conditions = [
        {
            "type": t,
            "status": "False",
            "reason": r,
            "message": m,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        for t, r, m in (
            ("MemoryPressure", "KubeletHasSufficientMemory", "simulated"),
            ("DiskPressure", "KubeletHasNoDiskPressure", "simulated"),
            ("PIDPressure", "KubeletHasSufficientPID", "simulated"),
        )
    ]
    conditions.append(
        {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "simulated kubelet is posting ready status",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
    )
    status: dict[str, Any] = {
        "capacity": capacity,
        "allocatable": dict(capacity),
        "conditions": conditions,
        # The apiserver reaches the kubelet at the first address of a type in its
        # --kubelet-preferred-address-types (the control plane puts InternalIP first: the
        # Hostname, the node's name, resolves nowhere).
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": spec.name},
        ],
        "nodeInfo": {
            "machineID": spec.name,
            "systemUUID": spec.name,
            "bootID": spec.name,
            "kernelVersion": os.uname().release,
            "osImage": "modelgrid simulated node",
            "containerRuntimeVersion": "sim://1.0",
            "kubeletVersion": "v1.37.1-sim",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }
    if kubelet_port is not None:
        status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": kubelet_port}}
    return {"status": status}


@dataclass
class _Running:
    uid: str
    name: str
    namespace: str
    thread: threading.Thread
    stop: threading.Event = field(default_factory=threading.Event)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    grace_s: float = 10.0


@dataclass
class _PodLogs:
    """A pod's container logs, kept from its start until it is deleted."""

    uid: str
    namespace: str
    name: str
    directory: Path
    containers: tuple[str, ...]
    launches: dict[str, _Launch] = field(default_factory=dict)


class NodeAgent:
    """Registers `fleet` and runs the pods bound to it until `stop()`."""

    def __init__(
        self,
        api: client.ApiClient,
        fleet: list[NodeSpec],
        workdir: Path,
        *,
        python: str = sys.executable,
        extra_env: dict[str, str] | None = None,
        synthetic_inference: bool = False,
        client_ca: Path | None = None,
    ) -> None:
        """`client_ca`: whose client certificates may read logs; by default the CA that `api`
        trusts, which in the sandbox is its one CA, the signer of the apiserver's kubelet
        client certificate too."""
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coord = client.CoordinationV1Api(api)
        self.fleet = {n.name: n for n in fleet}
        self.workdir = workdir
        self.python = python
        self.extra_env = dict(extra_env or {})
        if synthetic_inference:
            # No GPU here to run the declared model on: the benchmark paces tokens instead
            # (its result says simulated, as it must).
            self.extra_env["MODELGRID_BACKEND_OVERRIDE"] = "synthetic"
            # About an 8B model's decode step at small batch on an H200, so that a declared
            # workload lasts as long as it would and yields whole 1 s windows.
            self.extra_env.setdefault("MODELGRID_SYNTHETIC_STEP_MS", "20")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pods: dict[str, _Running] = {}
        self._lock = threading.Lock()
        ca = client_ca or api.configuration.ssl_ca_cert
        self.client_ca = Path(ca) if ca else None
        #: Container logs by pod uid, in the order the pods started (guarded by `_lock`).
        self._logs: dict[str, _PodLogs] = {}
        self._server: _KubeletServer | None = None
        self._server_thread: threading.Thread | None = None
        self.kubelet_port: int | None = None

    # -- nodes ------------------------------------------------------------------------------

    def register(self) -> None:
        for spec in self.fleet.values():
            body = node_manifest(spec)
            try:
                self.core.create_node(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                self.core.patch_node(spec.name, body)
            self.core.patch_node_status(spec.name, node_status(spec, self.kubelet_port))
            self._renew_lease(spec.name)

    def _renew_lease(self, node: str) -> None:
        now = _now()
        body = {
            "metadata": {"name": node, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": node,
                "leaseDurationSeconds": LEASE_DURATION_S,
                "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        }
        try:
            self.coord.patch_namespaced_lease(node, "kube-node-lease", body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coord.create_namespaced_lease("kube-node-lease", body)

    def _heartbeat(self) -> None:
        last_status = 0.0
        while not self._stop.wait(HEARTBEAT_S):
            for name, spec in self.fleet.items():
                try:
                    self._renew_lease(name)
                    if time.monotonic() - last_status > 20:
                        self.core.patch_node_status(name, node_status(spec, self.kubelet_port))
                except Exception as exc:
                    log.warning("heartbeat for %s failed: %s", name, exc)
            if time.monotonic() - last_status > 20:
                last_status = time.monotonic()

    # -- pods -------------------------------------------------------------------------------

    def start(self) -> None:
        self._start_kubelet_server()
        self.register()
        for target, name in ((self._heartbeat, "heartbeat"), (self._watch_pods, "pod-watch")):
            t = threading.Thread(target=target, name=f"{AGENT_NAME}-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _watch_pods(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces()
                # Pods deleted while no watch ran: their logs go.
                pods: list[Any] = listing.items
                self._sweep_logs({str(pod.metadata.uid) for pod in pods})
                for pod in listing.items:
                    self._on_pod(pod)
                w = watch.Watch()
                for event in w.stream(
                    self.core.list_pod_for_all_namespaces,
                    resource_version=listing.metadata.resource_version
                    if listing.metadata
                    else None,
                    timeout_seconds=30,
                ):
                    if self._stop.is_set():
                        w.stop()
                        break
                    self._on_pod(event["object"], deleted=event["type"] == "DELETED")
            except Exception as exc:
                if not self._stop.is_set():
                    log.debug("pod watch restarted: %s", exc)
                    time.sleep(0.5)

    def _on_pod(self, pod: Any, deleted: bool = False) -> None:
        node = pod.spec.node_name
        if node not in self.fleet:
            return
        uid = pod.metadata.uid
        if deleted:
            self._forget_logs(uid)
        with self._lock:
            running = self._pods.get(uid)
            if deleted or pod.metadata.deletion_timestamp is not None:
                if running is not None:
                    running.stop.set()
                elif not deleted:
                    self._finalize_deletion(pod)
                return
            if running is not None or pod.status.phase in ("Succeeded", "Failed"):
                return
            r = _Running(uid, pod.metadata.name, pod.metadata.namespace, threading.Thread())
            r.grace_s = float(min(pod.spec.termination_grace_period_seconds or 30, 10))
            r.thread = threading.Thread(
                target=self._run_pod, args=(pod, r), name=f"pod-{pod.metadata.name}", daemon=True
            )
            self._pods[uid] = r
            r.thread.start()

    def _finalize_deletion(self, pod: Any) -> None:
        # What a kubelet does once the containers are gone: remove the object for good.
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(
                pod.metadata.name,
                pod.metadata.namespace,
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0,
                    preconditions=client.V1Preconditions(uid=pod.metadata.uid),
                ),
            )

    def _patch_status(self, pod: Any, status: dict[str, Any]) -> None:
        try:
            self.core.patch_namespaced_pod_status(
                pod.metadata.name, pod.metadata.namespace, {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning("status of %s/%s: %s", pod.metadata.namespace, pod.metadata.name, exc)

    def _run_pod(self, pod: Any, r: _Running) -> None:
        try:
            self._run_pod_inner(pod, r)
        except Exception:
            log.exception("running pod %s/%s failed", r.namespace, r.name)
        finally:
            for p in r.procs:
                _kill_group(p, 0)
            if r.stop.is_set():
                self._finalize_deletion(pod)
                # Deleted (or the agent stops): a deleted pod has no logs.
                self._forget_logs(r.uid)
            with self._lock:
                self._pods.pop(r.uid, None)

    def _run_pod_inner(self, pod: Any, r: _Running) -> None:
        spec = self.fleet[pod.spec.node_name]
        logs = self._pod_logs(pod)
        poddir = Path(tempfile.mkdtemp(prefix=f"{r.namespace}-{r.name}-", dir=self.workdir))
        try:
            self._run_containers(pod, r, spec, poddir, logs)
        finally:
            # The pod's files go with its containers; its logs stay until it is deleted.
            shutil.rmtree(poddir, ignore_errors=True)

    def _run_containers(
        self, pod: Any, r: _Running, spec: NodeSpec, poddir: Path, logs: _PodLogs
    ) -> None:
        """Pending while the containers are made; then run them to their end (or the pod's
        deletion, or its deadline) and report the pod's phase as a kubelet does."""
        containers = list(pod.spec.containers)
        waiting = self._report_pending(pod, containers)
        launches = self._prepare_all(pod, r, spec, poddir, logs, containers, waiting)
        if launches is None:
            return
        with self._lock:
            logs.launches.update(launches)
        for launch in launches.values():
            launch.start()
            r.procs.append(launch.proc)
        self._patch_status(pod, self._running_status(launches))
        ended = self._supervise(pod, r, launches)
        if ended is not None:
            self._patch_status(pod, _final_status(*ended))

    def _report_pending(self, pod: Any, containers: list[Any]) -> list[dict[str, Any]]:
        """Pending, every container ContainerCreating; returns their waiting statuses."""
        waiting = [
            {
                "name": c.name,
                "image": c.image,
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }
            for c in containers
        ]
        self._patch_status(
            pod,
            {
                "phase": "Pending",
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "startTime": _rfc3339(_now()),
                "conditions": [
                    {"type": "PodReadyToStartContainers", "status": "True"},
                    {"type": "Initialized", "status": "True"},
                    {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"},
                    {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
                ],
                "containerStatuses": waiting,
            },
        )
        return waiting

    def _prepare_all(
        self,
        pod: Any,
        r: _Running,
        spec: NodeSpec,
        poddir: Path,
        logs: _PodLogs,
        containers: list[Any],
        waiting: list[dict[str, Any]],
    ) -> dict[str, _Launch] | None:
        """Every container as a process to start; None (the pod left Pending with the reason
        on the container, until it is deleted) when one cannot be made."""
        launches: dict[str, _Launch] = {}
        for c in containers:
            try:
                launches[c.name] = self._prepare(pod, c, spec, poddir, logs.directory / c.name)
            except _CreateError as exc:
                for w in waiting:
                    if w["name"] == c.name:
                        w["state"] = {
                            "waiting": {"reason": "CreateContainerError", "message": str(exc)}
                        }
                self._patch_status(pod, {"containerStatuses": waiting})
                r.stop.wait()
                return None
        return launches

    def _supervise(
        self, pod: Any, r: _Running, launches: dict[str, _Launch]
    ) -> tuple[dict[str, dict[str, Any]], bool] | None:
        """Wait for every container to end, restarting as the pod's restartPolicy says and
        killing them at its activeDeadlineSeconds; their terminated statuses and whether the
        deadline was hit, or None when the pod was deleted meanwhile."""
        policy = pod.spec.restart_policy or "Always"
        seconds = pod.spec.active_deadline_seconds
        deadline = time.monotonic() + float(seconds) if seconds else None
        results: dict[str, dict[str, Any]] = {}
        deadline_hit = False
        while len(results) < len(launches):
            if r.stop.wait(0.1):
                for launch in launches.values():
                    launch.kill(r.grace_s)
                return None
            if deadline is not None and time.monotonic() > deadline:
                deadline_hit = True
                for launch in launches.values():
                    launch.kill(0)
            for name, launch in launches.items():
                code = launch.poll()
                if name in results or code is None:
                    continue
                if not deadline_hit and _restarts(policy, code):
                    launch.restarts += 1
                    if r.stop.wait(min(2.0**launch.restarts, 10.0)):
                        return None
                    launch.start()
                    r.procs.append(launch.proc)
                    self._patch_status(pod, self._running_status(launches))
                    continue
                results[name] = launch.terminated_status(code)
        return results, deadline_hit

    def _running_status(self, launches: dict[str, _Launch]) -> dict[str, Any]:
        return {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "conditions": [
                {"type": "ContainersReady", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
            "containerStatuses": [x.running_status() for x in launches.values()],
        }

    # -- turning a container into a process --------------------------------------------------

    def _mounts(self, pod: Any, c: Any, poddir: Path) -> dict[str, Path]:
        """Each mount path of the container and the local folder it is (its subPath, or its
        subPathExpr expanded with the container's environment, inside the volume)."""
        mounts: dict[str, Path] = {}
        raw_env = {
            e.name: (self._env_from(pod, e.value_from) if e.value_from is not None else e.value)
            or ""
            for e in c.env or []
        }
        for m in c.volume_mounts or []:
            sub = m.sub_path or _expand(m.sub_path_expr or "", raw_env)
            if sub.startswith("/") or ".." in Path(sub).parts:
                raise _CreateError(f"volume {m.name}: subPath {sub!r} must stay inside the volume")
            local = self._volume_root(pod, m.name, poddir) / sub
            local.mkdir(parents=True, exist_ok=True)
            mounts[m.mount_path.rstrip("/") or "/"] = local
        return mounts

    def _prepare(self, pod: Any, c: Any, spec: NodeSpec, poddir: Path, log_dir: Path) -> _Launch:
        mounts = self._mounts(pod, c, poddir)
        term_in_pod = c.termination_message_path or "/dev/termination-log"
        term_local = poddir / f"{c.name}.termination-log"
        term_local.touch()
        mounts[term_in_pod] = term_local

        # One pass over every mount (the longest first): a path already rewritten to a local
        # folder (under /tmp, say) must not be rewritten again by another mount.
        pattern = re.compile(
            r"(?<![\w./-])("
            + "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
            + r")(?=/|$|[\s\"',:;=])"
        )

        def rewrite(value: str) -> str:
            # A function replacement keeps backslashes in the path literal.
            return pattern.sub(lambda m: str(mounts[m.group(1)]), value)

        base: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(poddir),
            "HOSTNAME": pod.metadata.name,
            **self.extra_env,
        }
        # The pod's own values see its mounts; what the agent injects is already local.
        pod_env: dict[str, str] = {}
        for e in c.env or []:
            if e.value_from is not None:
                resolved = self._env_from(pod, e.value_from)
                if resolved is not None:
                    pod_env[e.name] = resolved
            else:
                pod_env[e.name] = _expand(e.value or "", {**base, **pod_env})
        limits = c.resources.limits if c.resources and c.resources.limits else {}
        gpus = int(limits.get(GPU, 0))
        injected = {
            "MODELGRID_POWER_SOURCE": f"replay:{spec.replay_trace}",
            "MODELGRID_TERMINATION_LOG": str(term_local),
            "MODELGRID_SIMULATED_NODE": spec.name,
        }
        if spec.gpu_name:
            injected["MODELGRID_REPLAY_GPU_NAME"] = spec.gpu_name
            injected["NVIDIA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(gpus)) or "void"
        if gpus:
            injected["MODELGRID_REPLAY_GPUS"] = str(gpus)
        if SA_MOUNT in mounts and "KUBECONFIG" not in pod_env:
            # In-cluster config needs KUBERNETES_SERVICE_HOST and fixed paths, which a local
            # process cannot have: it gets its ServiceAccount's credentials as a kubeconfig.
            injected["KUBECONFIG"] = str(self._service_account(pod, poddir, mounts[SA_MOUNT]))
        env = {**base, **{k: rewrite(v) for k, v in pod_env.items()}, **injected}
        env.setdefault("NODE_NAME", spec.name)
        argv = list(c.command or []) or _image_entrypoint(c.image)
        argv += list(c.args or [])
        argv = [rewrite(_expand(a, env)) for a in argv]
        if argv[0] in ("python", "python3") or re.fullmatch(r".*/python3?(\.\d+)?", argv[0]):
            argv[0] = self.python
        elif shutil.which(argv[0], path=env["PATH"]) is None:
            raise _CreateError(f'executable "{argv[0]}" not found on the simulated node')
        cwd = Path(rewrite(c.working_dir)) if c.working_dir else poddir
        if not cwd.is_dir():
            cwd = poddir
        return _Launch(
            container=c,
            argv=argv,
            env=env,
            cwd=cwd,
            log_dir=log_dir,
            raw_log=poddir / f"{c.name}.log",
            term_path=term_local,
            fallback_to_logs=c.termination_message_policy == "FallbackToLogsOnError",
        )

    def _service_account(self, pod: Any, poddir: Path, volume: Path) -> Path:
        """A token for the pod's ServiceAccount, bound to the pod (void once it is deleted), in
        the token volume as a kubelet writes it and as a kubeconfig for this apiserver."""
        kubeconfig = poddir / "serviceaccount.kubeconfig"
        if kubeconfig.exists():  # one per pod, shared by its containers
            return kubeconfig
        meta, sa = pod.metadata, pod.spec.service_account_name or "default"
        body = {
            "spec": {
                "audiences": [],  # the apiserver's own
                "expirationSeconds": SA_TOKEN_SECONDS,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta.name,
                    "uid": meta.uid,
                },
            }
        }
        try:
            issued = self.core.create_namespaced_service_account_token(sa, meta.namespace, body)
        except ApiException as exc:
            raise _CreateError(f"no token for ServiceAccount {sa}: {exc.reason}") from exc
        token = issued.status.token if issued.status is not None else ""
        if not token:
            raise _CreateError(f"no token for ServiceAccount {sa} in the TokenRequest")
        cfg = self.api.configuration
        cluster: dict[str, Any] = {"server": cfg.host}
        if cfg.ssl_ca_cert:
            cluster["certificate-authority"] = str(cfg.ssl_ca_cert)
            with contextlib.suppress(OSError):
                shutil.copyfile(cfg.ssl_ca_cert, volume / "ca.crt")
        elif not cfg.verify_ssl:
            cluster["insecure-skip-tls-verify"] = True
        (volume / "token").write_text(token)
        (volume / "namespace").write_text(meta.namespace)
        user = f"system:serviceaccount:{meta.namespace}:{sa}"
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "cluster", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": "in-pod",
                    "context": {"cluster": "cluster", "user": user, "namespace": meta.namespace},
                }
            ],
            "current-context": "in-pod",
        }
        kubeconfig.write_text(json.dumps(doc, indent=2))
        kubeconfig.chmod(0o600)
        return kubeconfig

    def _volume_root(self, pod: Any, volume: str, poddir: Path) -> Path:
        """Where a pod volume lives on this node: a claim bound to a hostPath PersistentVolume
        is that folder, shared by every pod and kept after them (the sandbox's evidence
        volume); anything else is a folder of the pod's own, gone with it."""
        source = next((v for v in pod.spec.volumes or [] if v.name == volume), None)
        claim = getattr(source, "persistent_volume_claim", None)
        if claim is not None:
            try:
                pvc = self.core.read_namespaced_persistent_volume_claim(
                    claim.claim_name, pod.metadata.namespace
                )
                bound = pvc.spec.volume_name if pvc.spec is not None else None
                pv = self.core.read_persistent_volume(bound or "")
            except (ApiException, ValueError):
                pv = None
            host = getattr(getattr(pv, "spec", None), "host_path", None)
            if host is not None:
                return Path(host.path)
        return poddir / "volumes" / volume

    def _env_from(self, pod: Any, source: Any) -> str | None:
        if source.field_ref is not None:
            path = source.field_ref.field_path
            simple = {
                "metadata.name": pod.metadata.name,
                "metadata.namespace": pod.metadata.namespace,
                "metadata.uid": pod.metadata.uid,
                "spec.nodeName": pod.spec.node_name,
                "spec.serviceAccountName": pod.spec.service_account_name,
                "status.podIP": "127.0.0.1",
                "status.hostIP": "127.0.0.1",
            }
            if path in simple:
                return str(simple[path])
            m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
            if m:
                return str((getattr(pod.metadata, m.group(1)) or {}).get(m.group(2), ""))
            return None
        ref = source.config_map_key_ref or source.secret_key_ref
        if ref is None:
            return None
        try:
            if source.config_map_key_ref is not None:
                cm = self.core.read_namespaced_config_map(ref.name, pod.metadata.namespace)
                return str((cm.data or {}).get(ref.key, ""))
            secret = self.core.read_namespaced_secret(ref.name, pod.metadata.namespace)
            raw = (secret.data or {}).get(ref.key)
            return base64.b64decode(raw).decode() if raw else ""
        except ApiException:
            return None

    # -- the kubelet's log endpoint ----------------------------------------------------------

    def _start_kubelet_server(self) -> None:
        if self.client_ca is None:
            # Without a CA no client certificate can be checked, and the endpoint is for the
            # apiserver only: no logs then (the apiserver's pods/log answers with an error).
            log.warning("no CA for the apiserver's client certificate: the nodes serve no logs")
            return
        crt, key = self_signed_server(
            self.workdir / "kubelet-pki", "kubelet", AGENT_NAME, sorted(self.fleet)
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(crt, key)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(self.client_ca))
        server = _KubeletServer(self, context)
        self._server = server
        self.kubelet_port = int(server.server_address[1])
        self._server_thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"{AGENT_NAME}-kubelet-endpoint",
            daemon=True,
        )
        self._server_thread.start()

    def _pod_logs(self, pod: Any) -> _PodLogs:
        meta = pod.metadata
        # As a kubelet lays them out under /var/log/pods.
        directory = self.workdir / "logs" / f"{meta.namespace}_{meta.name}_{meta.uid}"
        directory.mkdir(parents=True, exist_ok=True)
        entry = _PodLogs(
            meta.uid,
            meta.namespace,
            meta.name,
            directory,
            tuple(c.name for c in pod.spec.containers),
        )
        with self._lock:
            self._logs[meta.uid] = entry
        return entry

    def _forget_logs(self, uid: str) -> None:
        with self._lock:
            entry = self._logs.pop(uid, None)
        if entry is not None:
            shutil.rmtree(entry.directory, ignore_errors=True)

    def _sweep_logs(self, present: set[str]) -> None:
        with self._lock:
            gone = [uid for uid in self._logs if uid not in present]
        for uid in gone:
            self._forget_logs(uid)

    def _logs_kept(self, uid: str) -> bool:
        with self._lock:
            return uid in self._logs and not self._stop.is_set()

    def _log_source(
        self, namespace: str, pod: str, container: str, previous: bool
    ) -> tuple[str, Path, _LogWriter | None]:
        """The pod's uid, the log file to read, and its writer while it may still grow; a
        `_LogRequestError` with a kubelet's status and message where there is none."""
        with self._lock:
            entry = next(
                (
                    e
                    for e in reversed(self._logs.values())
                    if (e.namespace, e.name) == (namespace, pod)
                ),
                None,
            )
            if entry is None:
                raise _LogRequestError(404, f'pod "{pod}" does not exist')
            if container not in entry.containers:
                raise _LogRequestError(404, f'container "{container}" not found in pod "{pod}"')
            launch = entry.launches.get(container)
            if launch is None or launch.writer is None:
                raise _LogRequestError(
                    400, f'container "{container}" in pod "{pod}" is waiting to start - no logs yet'
                )
            # While a restart waits out its back-off, the last instance is the current one.
            current = launch.restarts
            if not launch.log_file(current).exists():
                current -= 1
            index = current - 1 if previous else current
            path = launch.log_file(index)
            if index < 0 or not path.exists():
                if not previous:  # its log went with a deletion under way
                    raise _LogRequestError(404, f'pod "{pod}" does not exist')
                raise _LogRequestError(
                    400, f'previous terminated container "{container}" in pod "{pod}" not found'
                )
            writer = launch.writer if launch.writer.path == path else None
            return entry.uid, path, writer

    # -- stopping ---------------------------------------------------------------------------

    def stop(self, delete_nodes: bool = True) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()  # no new requests; streams that follow a log end
            self._server.server_close()
        with self._lock:
            running = list(self._pods.values())
        for r in running:
            for p in r.procs:
                _kill_group(p, 0)
            r.stop.set()
        for r in running:
            r.thread.join(timeout=10)
        for t in self._threads:
            t.join(timeout=35)
        with self._lock:
            self._logs.clear()
        shutil.rmtree(self.workdir / "logs", ignore_errors=True)
        if delete_nodes:
            for name in self.fleet:
                with contextlib.suppress(ApiException):
                    self.core.delete_node(name)


class _CreateError(Exception):
    pass


@dataclass
class _Launch:
    """One container as a local process, restartable, with its status in the pod."""

    container: Any
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    #: One log file per instance, `<restarts>.log`, as a kubelet keeps them.
    log_dir: Path
    #: The output of every instance as it comes, in the pod's directory (see `_LogWriter`).
    raw_log: Path
    term_path: Path
    fallback_to_logs: bool
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: dt.datetime | None = None
    writer: _LogWriter | None = None

    def log_file(self, instance: int) -> Path:
        return self.log_dir / f"{instance}.log"

    @property
    def log_path(self) -> Path:
        """The current instance's log."""
        return self.log_file(self.restarts)

    def start(self) -> None:
        self.drain()  # the last instance's output is all in its file
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.restarts >= 2:  # a kubelet keeps the current instance's log and the previous
            self.log_file(self.restarts - 2).unlink(missing_ok=True)
        self.log_path.touch()
        proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # A killed agent leaves no pod behind (a long-lived one, like the operator of
            # the chart, would otherwise outlive its cluster); the pod's thread outlives it.
            preexec_fn=_die_with_agent,  # noqa: PLW1509 - it calls only a preloaded prctl
        )
        self.proc = proc
        self.started_at = _now()
        if proc.stdout is None or proc.stderr is None:  # pragma: no cover - PIPE gives both
            raise RuntimeError("no pipes to the container's stdout and stderr")
        self.writer = _LogWriter(
            self.log_path,
            {"stdout": proc.stdout, "stderr": proc.stderr},
            name=f"log-{self.container.name}-{proc.pid}",
            raw=self.raw_log,
        )
        self.writer.start()

    def drain(self) -> None:
        """Wait until what the current instance wrote is in its log."""
        if self.writer is not None:
            self.writer.join(timeout=LOG_DRAIN_S)

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def kill(self, grace_s: float) -> None:
        if self.proc is not None:
            _kill_group(self.proc, grace_s)

    def running_status(self) -> dict[str, Any]:
        c = self.container
        return {
            "name": c.name,
            "image": c.image,
            "imageID": f"sim://{c.image}",
            "containerID": f"sim://{self.proc.pid if self.proc else 0}",
            "ready": True,
            "started": True,
            "restartCount": self.restarts,
            "state": {"running": {"startedAt": _rfc3339(self.started_at or _now())}},
        }

    def termination_message(self, exit_code: int) -> str:
        with self.term_path.open("rb") as fh:
            message = fh.read(TERMINATION_MESSAGE_LIMIT_BYTES)
        if not message.strip() and self.fallback_to_logs and exit_code != 0:
            records = _read_records(self.log_path, 0, 80)[0] if self.log_path.exists() else []
            tail = b"".join(r.text(timestamps=False) for r in records)[-FALLBACK_LOG_BYTES:]
            message = b"\n".join(tail.splitlines()[-80:])
        return message.decode("utf-8", errors="replace")

    def terminated_status(self, returncode: int) -> dict[str, Any]:
        self.drain()  # a reader of the terminated container's log gets all of it
        code = returncode if returncode >= 0 else 128 - returncode
        c = self.container
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": _rfc3339(self.started_at or _now()),
            "finishedAt": _rfc3339(_now()),
            "containerID": f"sim://{self.proc.pid if self.proc else 0}",
        }
        message = self.termination_message(code)
        if message:
            terminated["message"] = message
        return {
            "name": c.name,
            "image": c.image,
            "imageID": f"sim://{c.image}",
            "containerID": terminated["containerID"],
            "ready": False,
            "started": False,
            "restartCount": self.restarts,
            "state": {"terminated": terminated},
        }


# -- container logs ---------------------------------------------------------------------------


def _stamp() -> bytes:
    return _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


class _LogWriter(threading.Thread):
    """Copies a container's stdout and stderr into its log file as a container runtime does:
    a record per line, `<time> <stream> <F|P> <text>` (P: part of a longer or unfinished line).
    Also appends the output as it comes to `raw`, the pod directory's `<container>.log` (gone
    with the pod's files when its containers end), which tests read directly.
    Ends when the container and whatever it started have closed both."""

    def __init__(
        self, path: Path, pipes: dict[str, IO[bytes]], name: str, raw: Path | None = None
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.path = path
        self.raw = raw
        self._pipes = pipes
        self._broken = False

    def _open(self) -> tuple[IO[bytes], IO[bytes] | None]:
        """The record log (devnull when it cannot be opened: the pod was deleted meanwhile,
        say) and the raw copy (None when it cannot)."""
        try:
            out: IO[bytes] = self.path.open("ab")
        except OSError as exc:
            log.warning("container log %s: %s", self.path, exc)
            self._broken = True
            out = open(os.devnull, "wb")  # noqa: SIM115 - closed by run
        raw: IO[bytes] | None = None
        if self.raw is not None:
            try:
                raw = self.raw.open("ab")
            except OSError as exc:
                log.warning("container log %s: %s", self.raw, exc)
        return out, raw

    def run(self) -> None:
        out, raw = self._open()
        with out, raw or contextlib.nullcontext(), selectors.DefaultSelector() as sel:
            pending: dict[str, bytes] = {}
            for stream, pipe in self._pipes.items():
                sel.register(pipe.fileno(), selectors.EVENT_READ, stream)
                pending[stream] = b""
            try:
                while sel.get_map():
                    for key, _ in sel.select():
                        chunk = os.read(key.fd, 65536)
                        if raw is not None:
                            raw = self._copy_raw(raw, chunk)
                        if not chunk:
                            sel.unregister(key.fd)
                        self._records(out, str(key.data), chunk, pending)
                    self._flush(out)
            finally:
                for pipe in self._pipes.values():
                    pipe.close()

    def _records(
        self, out: IO[bytes], stream: str, chunk: bytes, pending: dict[str, bytes]
    ) -> None:
        """Write the whole lines `chunk` completes as records (a line longer than a record in
        parts); an empty chunk (the stream closed) flushes what is left as a part."""
        if not chunk:
            if pending[stream]:
                self._write(out, _stamp(), stream, False, pending[stream])
            pending[stream] = b""
            return
        *lines, rest = (pending[stream] + chunk).split(b"\n")
        stamp = _stamp()
        for line in lines:
            self._write(out, stamp, stream, True, line)
        while len(rest) >= LOG_RECORD_BYTES:
            self._write(out, stamp, stream, False, rest[:LOG_RECORD_BYTES])
            rest = rest[LOG_RECORD_BYTES:]
        pending[stream] = rest

    def _copy_raw(self, raw: IO[bytes], chunk: bytes) -> IO[bytes] | None:
        try:
            raw.write(chunk)
            raw.flush()
        except OSError as exc:  # the pod's directory went: the copy ends, the log goes on
            log.debug("container output copy %s: %s", self.raw, exc)
            return None
        return raw

    def _write(self, out: IO[bytes], stamp: bytes, stream: str, full: bool, text: bytes) -> None:
        if not self._broken:
            tag = b"F" if full else b"P"
            try:
                out.write(b"%s %s %s %s\n" % (stamp, stream.encode(), tag, text))
            except OSError as exc:  # a full disk, say: the container runs on, unlogged
                log.warning(
                    "container log %s: %s; the rest of its output is dropped", self.path, exc
                )
                self._broken = True

    def _flush(self, out: IO[bytes]) -> None:
        if not self._broken:
            try:
                out.flush()
            except OSError as exc:
                log.warning(
                    "container log %s: %s; the rest of its output is dropped", self.path, exc
                )
                self._broken = True


@dataclass(frozen=True)
class _Record:
    stamp: bytes
    stream: str
    full: bool
    content: bytes

    @property
    def time(self) -> dt.datetime:
        return dt.datetime.strptime(self.stamp.decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=dt.UTC
        )

    def text(self, timestamps: bool) -> bytes:
        """What `kubectl logs` shows of it (a partial record does not end its line)."""
        prefix = self.stamp + b" " if timestamps else b""
        return prefix + self.content + (b"\n" if self.full else b"")


def _parse_record(line: bytes) -> _Record | None:
    parts = line.split(b" ", 3)
    if len(parts) != 4 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
        return None
    return _Record(parts[0], parts[1].decode(), parts[2] == b"F", parts[3])


def _read_records(path: Path, offset: int, tail: int | None) -> tuple[list[_Record], int]:
    """The whole records in `path` from `offset` (only the last `tail` of them when given),
    and the offset after them; a record still being written is left for the next read."""
    with path.open("rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        start, block = offset, 64 * 1024
        while True:
            if tail is not None:
                start = max(offset, end - block)
            fh.seek(start)
            data = fh.read(end - start)
            if tail is None or start == offset or data.count(b"\n") > tail:
                break
            block *= 4
    cut = data.rfind(b"\n") + 1
    lines = data[:cut].split(b"\n")[:-1]
    if start > offset:
        lines = lines[1:]  # read from the middle of a record, perhaps
    records = [r for r in map(_parse_record, lines) if r is not None]
    if tail is not None:
        records = records[len(records) - tail :] if tail else []
    return records, start + cut


class _LogRequestError(Exception):
    """A request for logs that a kubelet would refuse: its HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")
_STREAMS = {"All": ("stdout", "stderr"), "Stdout": ("stdout",), "Stderr": ("stderr",)}


@dataclass(frozen=True)
class _LogOptions:
    """The query of `GET /containerLogs/...`: a v1 PodLogOptions, as a kubelet decodes it."""

    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    since: dt.datetime | None = None
    tail: int | None = None
    limit: int | None = None
    streams: tuple[str, ...] = ("stdout", "stderr")

    @classmethod
    def parse(cls, query: dict[str, list[str]]) -> _LogOptions:
        """The options of a query, refused as a kubelet refuses them (400 or 422)."""
        tail = _query_number(query, "tailLines")
        legacy = _query_one(query, "tail")  # older clients' name for it; "all" is no limit
        if legacy is not None:
            tail = None if legacy == "all" else _query_number(query, "tail")
        limit = _query_number(query, "limitBytes")
        if (tail is not None and tail < 0) or (limit is not None and limit < 1):
            raise _LogRequestError(422, _INVALID)
        stream = _query_one(query, "stream") or "All"
        if stream not in _STREAMS:
            raise _LogRequestError(400, f'invalid stream type "{stream}"')
        return cls(
            follow=_query_flag(query, "follow"),
            previous=_query_flag(query, "previous"),
            timestamps=_query_flag(query, "timestamps"),
            since=_since(_query_number(query, "sinceSeconds"), _query_one(query, "sinceTime")),
            tail=tail,
            limit=limit,
            streams=_STREAMS[stream],
        )

    def render(self, records: list[_Record]) -> bytes:
        return b"".join(
            r.text(self.timestamps)
            for r in records
            if r.stream in self.streams and (self.since is None or r.time >= self.since)
        )


_UNDECODABLE = '{"message": "Unable to decode query."}'
_INVALID = '{"message": "Invalid request."}'


def _query_one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _query_flag(query: dict[str, list[str]], name: str) -> bool:
    value = _query_one(query, name)
    if value is None or value in _FALSE:
        return False
    if value in _TRUE:
        return True
    raise _LogRequestError(400, _UNDECODABLE)


def _query_number(query: dict[str, list[str]], name: str) -> int | None:
    value = _query_one(query, name)
    try:
        return None if value is None else int(value)
    except ValueError:
        raise _LogRequestError(400, _UNDECODABLE) from None


def _since(since_s: int | None, since_time: str | None) -> dt.datetime | None:
    """sinceSeconds or sinceTime (not both; a positive count, an RFC 3339 time with a zone)."""
    if since_s is not None and since_time is not None:
        raise _LogRequestError(422, _INVALID)
    if since_s is not None:
        if since_s < 1:
            raise _LogRequestError(422, _INVALID)
        return _now() - dt.timedelta(seconds=since_s)
    if since_time is None:
        return None
    try:
        since = dt.datetime.fromisoformat(since_time.replace("Z", "+00:00"))
    except ValueError:
        raise _LogRequestError(400, _UNDECODABLE) from None
    if since.tzinfo is None:
        raise _LogRequestError(422, _INVALID)
    return since


class _KubeletServer(ThreadingHTTPServer):
    """The kubelet's HTTPS endpoint, for the apiserver only: a client certificate is required."""

    daemon_threads = True

    def __init__(self, agent: NodeAgent, context: ssl.SSLContext) -> None:
        self.agent = agent
        self.context = context
        super().__init__(("127.0.0.1", 0), _KubeletHandler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        # The handshake happens in the request's thread (a slow client holds up no other).
        return self.context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # a refused certificate, a client gone: not the agent's
            log.debug("kubelet endpoint: connection from %s ended: %s", client_address, exc)
        else:
            log.error("kubelet endpoint: request from %s failed", client_address, exc_info=exc)


class _KubeletHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = AGENT_NAME
    timeout = 60.0  # an idle or stalled connection ends
    server: _KubeletServer

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("kubelet endpoint: " + format, *args)

    def do_GET(self) -> None:
        self._began = False
        try:
            self._container_logs()
        except (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError) as exc:
            log.debug("kubelet endpoint: %s: the client went: %s", self.path, exc)
            self.close_connection = True
        except Exception:
            # Never the agent's end: the request fails, and says so if it still can.
            log.exception("kubelet endpoint: %s failed", self.path)
            self.close_connection = True
            if not self._began:
                self._plain(500, "the simulated kubelet failed to serve this; see its log")

    def _plain(self, status: int, message: str) -> None:
        body = (message + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _container_logs(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.split("/")
        if len(parts) != 5 or parts[:2] != ["", "containerLogs"]:
            self._plain(404, "404 page not found")
            return
        namespace, pod, container = (urllib.parse.unquote(p) for p in parts[2:])
        agent = self.server.agent
        try:
            for value, what in (
                (pod, "podID"),
                (container, "container name"),
                (namespace, "podNamespace"),
            ):
                if not value:
                    raise _LogRequestError(400, f'{{"message": "Missing {what}."}}')
            opts = _LogOptions.parse(urllib.parse.parse_qs(url.query, keep_blank_values=True))
            uid, path, writer = agent._log_source(namespace, pod, container, opts.previous)
            try:
                records, offset = _read_records(path, 0, opts.tail)
            except FileNotFoundError:  # deleted just now
                raise _LogRequestError(404, f'pod "{pod}" does not exist') from None
        except _LogRequestError as exc:
            self._plain(exc.status, exc.message)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._began = True
        budget = opts.limit
        budget = self._send(opts.render(records), budget)
        if opts.follow and writer is not None:
            deadline = time.monotonic() + FOLLOW_MAX_S
            while (budget is None or budget > 0) and agent._logs_kept(uid):
                ended = not writer.is_alive()  # what it wrote before it ended is read below
                try:
                    records, offset = _read_records(path, offset, None)
                except FileNotFoundError:  # the pod was deleted
                    break
                budget = self._send(opts.render(records), budget)
                if ended or time.monotonic() > deadline or _peer_closed(self.connection):
                    break
                agent._stop.wait(FOLLOW_POLL_S)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _send(self, data: bytes, budget: int | None) -> int | None:
        if budget is not None:
            data = data[:budget]
        for i in range(0, len(data), 64 * 1024):
            self._chunk(data[i : i + 64 * 1024])
        return None if budget is None else budget - len(data)


def _peer_closed(sock: Any) -> bool:
    """While a log streams the client sends nothing: something to read means it has gone."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _restarts(policy: str, exit_code: int) -> bool:
    """Whether a container that exited with `exit_code` is started again (restartPolicy)."""
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def _final_status(results: dict[str, dict[str, Any]], deadline_hit: bool) -> dict[str, Any]:
    """The pod's status once every container ended: Succeeded only when all exited 0 before
    the deadline."""
    ok = all(v["state"]["terminated"]["exitCode"] == 0 for v in results.values())
    status: dict[str, Any] = {
        "phase": "Succeeded" if ok and not deadline_hit else "Failed",
        "conditions": [
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"},
            {"type": "Ready", "status": "False", "reason": "PodCompleted"},
        ],
        "containerStatuses": list(results.values()),
    }
    if deadline_hit:
        status["reason"] = "DeadlineExceeded"
        status["message"] = "Pod was active on the node longer than the specified deadline"
    return status


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known variables expand, $$(VAR) escapes, others stay."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0).startswith("$$"):
            return m.group(0)[1:]
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$?\(([A-Za-z_][A-Za-z0-9_]*)\)", repl, value)


#: Entrypoints of the project's images, for containers that name no command.
IMAGE_ENTRYPOINTS: dict[str, list[str]] = {
    "modelgrid-bench": ["python", "-m", "modelgrid_bench"],
    "modelgrid-operator": ["python", "-m", "modelgrid_operator"],
}


def _image_entrypoint(image: str) -> list[str]:
    repo = image.rsplit("/", 1)[-1].split("@", maxsplit=1)[0].split(":", maxsplit=1)[0]
    if repo in IMAGE_ENTRYPOINTS:
        return list(IMAGE_ENTRYPOINTS[repo])
    raise _CreateError(
        f"image {image!r} has no known entrypoint on the simulated node; give the container "
        "a command"
    )


try:  # loaded here, so that the forked child only calls it (no dlopen between fork and exec)
    _PRCTL: Any = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_agent() -> None:
    """In the child: SIGKILL when the thread that started it (the pod's) ends."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _kill_group(p: subprocess.Popen[bytes], grace_s: float) -> None:
    if p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout=max(grace_s, 0.5))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
