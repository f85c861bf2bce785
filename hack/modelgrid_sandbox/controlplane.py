"""Starts and stops a real Kubernetes control plane as local processes. Does process and file I/O.

etcd, kube-apiserver (RBAC and Node authorization; ServiceAccount and PodSecurity admission;
generated CA, serving certs and service-account keys; free ports on 127.0.0.1),
kube-controller-manager (every default controller: job, garbage collector, namespace,
serviceaccount, token, ...) and kube-scheduler. `start()` waits until each is healthy and writes
an admin kubeconfig; `stop()` ends every process (children die with their parent, too) and
removes the working directory. Each component logs to `log_dir/<component>.log`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from modelgrid_sandbox.certs import Pki, generate

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "build-control-plane.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or reached; the message names the logs."""


def locate_binaries(build: bool = True) -> Path:
    """The directory holding the control-plane binaries: $MODELGRID_K8S_BIN, or the build
    script's cache (building it when `build` is true and the cache is cold)."""
    env = os.environ.get("MODELGRID_K8S_BIN")
    if env:
        path = Path(env)
    else:
        if not build:
            raise ControlPlaneError("MODELGRID_K8S_BIN is not set and building is disabled")
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise ControlPlaneError(
                f"{BUILD_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        path = Path(proc.stdout.strip().splitlines()[-1])
    missing = [b for b in BINARIES if not (path / b).is_file()]
    if missing:
        raise ControlPlaneError(f"{path} lacks {', '.join(missing)}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Linux: the kernel kills the child when the process that started it dies, so a crashed
    # or killed test run cannot leave a control plane behind.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def kubeconfig_text(server: str, ca: Path, cert: Path, key: Path, user: str) -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: {user}@sandbox
  context:
    cluster: sandbox
    user: {user}
current-context: {user}@sandbox
"""


@dataclass
class ControlPlane:
    bin_dir: Path
    workdir: Path
    log_dir: Path
    keep_workdir: bool = False
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    pki: Pki | None = None
    kubeconfig: Path | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        bin_dir: Path | None = None,
        *,
        workdir: Path | None = None,
        log_dir: Path | None = None,
        timeout_s: float = 180.0,
    ) -> ControlPlane:
        bins = bin_dir or locate_binaries()
        created = workdir is None
        work = workdir or Path(tempfile.mkdtemp(prefix="modelgrid-cp-"))
        logs = log_dir or work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        cp = cls(bins, work, logs, keep_workdir=not created)
        try:
            cp._start_all(timeout_s)
        except BaseException:
            cp.stop()
            raise
        return cp

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        self.processes[name] = subprocess.Popen(
            [str(self.bin_dir / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads run in the child
        )

    def _start_all(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pki = generate(
            self.workdir / "pki",
            {
                "admin": ("modelgrid-admin", "system:masters"),
                "controller-manager": ("system:kube-controller-manager", None),
                "scheduler": ("system:kube-scheduler", None),
                "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
            },
        )
        self.pki = pki
        for name in ("etcd_client", "etcd_peer", "apiserver", "cm", "scheduler"):
            self.ports[name] = free_port()
        etcd_client = f"http://127.0.0.1:{self.ports['etcd_client']}"
        etcd_peer = f"http://127.0.0.1:{self.ports['etcd_peer']}"
        self._spawn(
            "etcd",
            [
                "--name=sandbox",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_client}",
                f"--advertise-client-urls={etcd_client}",
                f"--listen-peer-urls={etcd_peer}",
                f"--initial-advertise-peer-urls={etcd_peer}",
                f"--initial-cluster=sandbox={etcd_peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: _http_ok(f"{etcd_client}/health", None), deadline)
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports['apiserver']}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--kubelet-client-certificate={pki.clients['apiserver-kubelet-client'][0]}",
                f"--kubelet-client-key={pki.clients['apiserver-kubelet-client'][1]}",
                # pods/log, exec, port-forward reach a node's kubelet at its first address of
                # these types (the default puts Hostname first, and the simulated nodes' names
                # resolve nowhere; their InternalIP is 127.0.0.1). No
                # --kubelet-certificate-authority: the kubelet's own serving cert is not checked.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-account-issuer={SA_ISSUER}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
                "--endpoint-reconciler-type=none",
            ],
        )
        admin_cert, admin_key = pki.clients["admin"]
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.kubeconfig.write_text(
            kubeconfig_text(self.server, pki.ca_cert, admin_cert, admin_key, "admin")
        )
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(admin_cert), str(admin_key))
        self._wait("kube-apiserver", lambda: _http_ok(f"{self.server}/readyz", ctx), deadline)
        for comp, stem, port_key in (
            ("kube-controller-manager", "controller-manager", "cm"),
            ("kube-scheduler", "scheduler", "scheduler"),
        ):
            cert, key = pki.clients[stem]
            kc = self.workdir / f"{stem}.kubeconfig"
            kc.write_text(kubeconfig_text(self.server, pki.ca_cert, cert, key, stem))
            common = [
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports[port_key]}",
                "--leader-elect=false",
            ]
            if comp == "kube-controller-manager":
                common += [
                    "--controllers=*",
                    "--use-service-account-credentials=true",
                    f"--service-account-private-key-file={pki.sa_key}",
                    f"--root-ca-file={pki.ca_cert}",
                    f"--cluster-signing-cert-file={pki.ca_cert}",
                    f"--cluster-signing-key-file={pki.ca_key}",
                    "--cluster-name=modelgrid-sandbox",
                ]
            self._spawn(comp, common)
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # self-signed health endpoints on loopback
        for comp, port_key in (("kube-controller-manager", "cm"), ("kube-scheduler", "scheduler")):
            url = f"https://127.0.0.1:{self.ports[port_key]}/healthz"
            self._wait(comp, lambda u=url: _http_ok(u, insecure), deadline)

    def _wait(self, name: str, probe: Any, deadline: float) -> None:
        while time.monotonic() < deadline:
            proc = self.processes[name]
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {proc.returncode} during start-up; see "
                    f"{self.log_dir / (name + '.log')}:\n{self.tail(name)}"
                )
            if probe():
                return
            time.sleep(0.2)
        raise ControlPlaneError(
            f"{name} was not ready in time; see {self.log_dir / (name + '.log')}:\n"
            f"{self.tail(name)}"
        )

    def tail(self, name: str, lines: int = 25) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def alive(self) -> dict[str, bool]:
        return {n: p.poll() is None for n, p in self.processes.items()}

    def stop(self) -> None:
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.processes.pop(name, None)
            if proc is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        for log in self._logs:
            log.close()
        self._logs.clear()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _http_ok(url: str, ctx: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
