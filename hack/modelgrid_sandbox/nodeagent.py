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
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

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


def node_status(spec: NodeSpec) -> dict[str, Any]:
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
    return {
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": conditions,
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
    }


@dataclass
class _Running:
    uid: str
    name: str
    namespace: str
    thread: threading.Thread
    stop: threading.Event = field(default_factory=threading.Event)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    grace_s: float = 10.0


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
    ) -> None:
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
            self.core.patch_node_status(spec.name, node_status(spec))
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
                        self.core.patch_node_status(name, node_status(spec))
                except Exception as exc:
                    log.warning("heartbeat for %s failed: %s", name, exc)
            if time.monotonic() - last_status > 20:
                last_status = time.monotonic()

    # -- pods -------------------------------------------------------------------------------

    def start(self) -> None:
        self.register()
        for target, name in ((self._heartbeat, "heartbeat"), (self._watch_pods, "pod-watch")):
            t = threading.Thread(target=target, name=f"{AGENT_NAME}-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _watch_pods(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces()
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
            with self._lock:
                self._pods.pop(r.uid, None)

    def _run_pod_inner(self, pod: Any, r: _Running) -> None:
        spec = self.fleet[pod.spec.node_name]
        poddir = Path(tempfile.mkdtemp(prefix=f"{r.namespace}-{r.name}-", dir=self.workdir))
        try:
            self._run_containers(pod, r, spec, poddir)
        finally:
            shutil.rmtree(poddir, ignore_errors=True)

    def _run_containers(self, pod: Any, r: _Running, spec: NodeSpec, poddir: Path) -> None:
        containers = list(pod.spec.containers)
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
        launches: dict[str, _Launch] = {}
        for c in containers:
            try:
                launches[c.name] = self._prepare(pod, c, spec, poddir)
            except _CreateError as exc:
                # A kubelet leaves such a pod Pending with the reason on the container.
                for w in waiting:
                    if w["name"] == c.name:
                        w["state"] = {
                            "waiting": {"reason": "CreateContainerError", "message": str(exc)}
                        }
                self._patch_status(pod, {"containerStatuses": waiting})
                r.stop.wait()
                return
        policy = pod.spec.restart_policy or "Always"
        deadline = (
            time.monotonic() + float(pod.spec.active_deadline_seconds)
            if pod.spec.active_deadline_seconds
            else None
        )
        results: dict[str, dict[str, Any]] = {}
        for launch in launches.values():
            launch.start()
            r.procs.append(launch.proc)
        self._patch_status(pod, self._running_status(launches))
        deadline_hit = False
        while len(results) < len(launches):
            if r.stop.wait(0.1):
                for launch in launches.values():
                    launch.kill(r.grace_s)
                return
            if deadline is not None and time.monotonic() > deadline:
                deadline_hit = True
                for launch in launches.values():
                    launch.kill(0)
            for name, launch in launches.items():
                code = launch.poll()
                if name in results or code is None:
                    continue
                if not deadline_hit and (
                    policy == "Always" or (policy == "OnFailure" and code != 0)
                ):
                    launch.restarts += 1
                    if r.stop.wait(min(2.0**launch.restarts, 10.0)):
                        return
                    launch.start()
                    r.procs.append(launch.proc)
                    self._patch_status(pod, self._running_status(launches))
                    continue
                results[name] = launch.terminated_status(code)
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
        self._patch_status(pod, status)

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

    def _prepare(self, pod: Any, c: Any, spec: NodeSpec, poddir: Path) -> _Launch:
        mounts: dict[str, Path] = {}
        for m in c.volume_mounts or []:
            local = poddir / "volumes" / m.name / (m.sub_path or "")
            local.mkdir(parents=True, exist_ok=True)
            mounts[m.mount_path.rstrip("/") or "/"] = local
        term_in_pod = c.termination_message_path or "/dev/termination-log"
        term_local = poddir / f"{c.name}.termination-log"
        term_local.touch()
        mounts[term_in_pod] = term_local

        def rewrite(value: str) -> str:
            for mount in sorted(mounts, key=len, reverse=True):
                pattern = r"(?<![\w./-])" + re.escape(mount) + r"(?=/|$|[\s\"',:;=])"
                # A function replacement keeps backslashes in the path literal.
                value = re.sub(pattern, _literal(str(mounts[mount])), value)
            return value

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
            log_path=poddir / f"{c.name}.log",
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

    def stop(self, delete_nodes: bool = True) -> None:
        self._stop.set()
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
    log_path: Path
    term_path: Path
    fallback_to_logs: bool
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: dt.datetime | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as logf:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # A killed agent leaves no pod behind (a long-lived one, like the operator of
                # the chart, would otherwise outlive its cluster); the pod's thread outlives it.
                preexec_fn=_die_with_agent,  # noqa: PLW1509 - it calls only a preloaded prctl
            )
        self.started_at = _now()

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
            tail = (
                self.log_path.read_bytes()[-FALLBACK_LOG_BYTES:] if self.log_path.exists() else b""
            )
            message = b"\n".join(tail.splitlines()[-80:])
        return message.decode("utf-8", errors="replace")

    def terminated_status(self, returncode: int) -> dict[str, Any]:
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


def _literal(text: str) -> Callable[[re.Match[str]], str]:
    return lambda _m: text


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
