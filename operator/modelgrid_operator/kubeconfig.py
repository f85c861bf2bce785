"""Where the Kubernetes API is and who we are to it: in-cluster (the pod's ServiceAccount) or a
kubeconfig context, as `Credentials` that the operator's own HTTP client (`kubeclient`) and
kopf's (`handlers.login`) both use. Does I/O: reads kubeconfigs, token and CA files, runs a
kubeconfig's exec credential plugin.

The operator runs without the official kubernetes client (its import alone is about 15 MiB of
the operator's memory), so this reads what an operator and a command line meet: a
ServiceAccount (its token re-read as the kubelet rotates it), and kubeconfig clusters with a
CA file or data or insecure-skip-tls-verify, users with a token or token file, client
certificate and key (files or data), or an exec plugin (client.authentication.k8s.io, as cloud
providers' kubeconfigs use; run by `kubeexec`). Anything else is a one-line `KubeconfigError`.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelgrid_operator.kubeexec import ExecPlugin, KubeconfigError, expiry, run_exec_plugin

__all__ = [
    "Credentials",
    "ExecPlugin",
    "KubeconfigError",
    "from_kubeconfig",
    "in_cluster",
    "kubeconfig_paths",
    "operator_credentials",
    "run_exec_plugin",
]

#: Where the kubelet mounts a pod's ServiceAccount token, CA and namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
#: A token file is read again after this long (the kubelet rotates bound tokens well before
#: they expire; re-reading on every request would be a file read per request).
TOKEN_FILE_FRESH_S = 30.0


@dataclass
class Credentials:
    """One API server and one identity for it."""

    #: https://host:port, without a trailing slash
    server: str
    namespace: str = "default"
    ca_file: str | None = None
    insecure: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    token_file: str | None = None
    exec_plugin: ExecPlugin | None = None
    #: the name the server's certificate is checked against, when not the server's host
    tls_server_name: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _token_read_at: float = field(default=-1e9, repr=False, compare=False)
    #: when the exec plugin's credential is to be renewed (monotonic; 0: never run yet)
    _renew_at: float = field(default=0.0, repr=False, compare=False)
    _expires_at: dt.datetime | None = field(default=None, repr=False, compare=False)

    def current(self) -> tuple[str | None, tuple[str | None, str | None]]:
        """The token and the client certificate and key to use now, consistent with each
        other: a fixed token, a token file's (re-read every `TOKEN_FILE_FRESH_S`), or an exec
        plugin's (run again shortly before its credential expires; one run at a time)."""
        if self.token_file is None and self.exec_plugin is None:
            return self.token, (self.cert_file, self.key_file)
        with self._lock:
            now = time.monotonic()
            if self.token_file is not None and now - self._token_read_at >= TOKEN_FILE_FRESH_S:
                self.token = _read_text(self.token_file, "token file").strip()
                self._token_read_at = now
            elif self.exec_plugin is not None and now >= self._renew_at:
                self._run_exec(now)
            return self.token, (self.cert_file, self.key_file)

    def bearer_token(self) -> str | None:
        """The token to send now (see `current`)."""
        return self.current()[0]

    def expires_at(self) -> dt.datetime | None:
        """When the exec plugin said its credential expires (None: it did not, or no plugin)."""
        return self._expires_at

    def renew(self) -> None:
        """Forget the current token (the server answered 401): the next request reads anew."""
        with self._lock:
            self._token_read_at = -1e9
            self._renew_at = 0.0

    def _run_exec(self, now: float) -> None:
        plugin = self.exec_plugin
        assert plugin is not None
        status = run_exec_plugin(plugin)
        token = status.get("token")
        cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if not token and not (cert and key):
            raise KubeconfigError(f"the exec plugin {plugin.command} gave no token or certificate")
        self.token = str(token) if token else None
        if cert and key:
            self.cert_file = _private_file(str(cert).encode(), "exec-cert")
            self.key_file = _private_file(str(key).encode(), "exec-key")
        left, self._expires_at = expiry(status.get("expirationTimestamp"))
        self._renew_at = now + left


def in_cluster(sa_dir: Path = SERVICE_ACCOUNT_DIR) -> Credentials | None:
    """The pod's own ServiceAccount, or None outside a cluster (no service host or token)."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token = sa_dir / "token"
    if not host or not token.is_file():
        return None
    if ":" in host:  # an IPv6 service address
        host = f"[{host}]"
    namespace_file = sa_dir / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.is_file() else "default"
    ca = sa_dir / "ca.crt"
    # a ServiceAccount token is renewed by the kubelet, not by us: no exec, no expiry
    return Credentials(
        server=f"https://{host}:{port}",
        namespace=namespace or "default",
        ca_file=str(ca) if ca.is_file() else None,
        token_file=str(token),
    )


def kubeconfig_paths(kubeconfig: str | None) -> list[Path]:
    """The kubeconfig files kubectl would read: `kubeconfig`, else $KUBECONFIG (a list, the
    first file naming an entry wins), else ~/.kube/config."""
    if kubeconfig:
        return [Path(kubeconfig).expanduser()]
    env = os.environ.get("KUBECONFIG", "")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


def from_kubeconfig(kubeconfig: str | None = None, context: str | None = None) -> Credentials:
    """The credentials of `context` (default: the current one) of the kubeconfig files."""
    paths = kubeconfig_paths(kubeconfig)
    where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    merged = _Merged()
    for path in paths:
        if not path.is_file() and len(paths) > 1:
            continue  # kubectl skips the missing files of a list
        merged.add(path, _load(path, where))
    return merged.credentials(context, where)


def operator_credentials() -> Credentials:
    """The operator's: in-cluster when it runs in a pod, else the kubeconfig (the sandbox)."""
    found = in_cluster()
    return found if found is not None else from_kubeconfig()


# -- reading a kubeconfig --------------------------------------------------------------------


class _Merged:
    """Contexts, clusters and users of several kubeconfig files; the first of a name wins
    (kubectl's rule), each entry remembering its file for relative paths."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.entries: dict[str, dict[str, tuple[dict[str, Any], Path]]] = {
            "contexts": {},
            "clusters": {},
            "users": {},
        }

    def add(self, path: Path, doc: dict[str, Any]) -> None:
        if self.current is None and doc.get("current-context"):
            self.current = str(doc["current-context"])
        for section, known in self.entries.items():
            for item in doc.get(section) or []:
                if isinstance(item, dict) and item.get("name") not in known:
                    body = item.get(section[:-1]) or {}
                    known[str(item.get("name"))] = (body if isinstance(body, dict) else {}, path)

    def _entry(self, section: str, name: str, where: str) -> tuple[dict[str, Any], Path]:
        found = self.entries[section].get(name)
        if found is None:
            raise KubeconfigError(f"{section[:-1]} {name!r} is not in the kubeconfig {where}")
        return found

    def credentials(self, context: str | None, where: str) -> Credentials:
        name = context or self.current
        if not name:
            raise KubeconfigError(f"the kubeconfig {where} sets no current context")
        ctx, _ = self._entry("contexts", name, where)
        cluster, cluster_file = self._entry("clusters", str(ctx.get("cluster") or ""), where)
        creds = _cluster(cluster, cluster_file, name)
        creds.namespace = str(ctx.get("namespace") or "default")
        if ctx.get("user"):  # a context without a user is anonymous (kubectl's reading)
            user, user_file = self._entry("users", str(ctx["user"]), where)
            _set_user(creds, user, user_file, name)
            if creds.exec_plugin is not None and user["exec"].get("provideClusterInfo"):
                creds.exec_plugin = _with_cluster_info(creds.exec_plugin, cluster, user_file)
        return creds


def _cluster(cluster: dict[str, Any], base: Path, context: str) -> Credentials:
    """The server and TLS settings of a kubeconfig cluster entry."""
    server = str(cluster.get("server") or "").rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise KubeconfigError(f"context {context!r}: the cluster has no https:// server")
    if cluster.get("proxy-url"):
        raise KubeconfigError(f"context {context!r}: proxy-url is not supported")
    creds = Credentials(
        server=server,
        ca_file=_file_or_data(cluster, "certificate-authority", base, "ca"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
    )
    if creds.insecure and creds.ca_file:  # client-go's rule too
        raise KubeconfigError(
            f"context {context!r}: a certificate authority and insecure-skip-tls-verify "
            "exclude each other"
        )
    return creds


def _set_user(creds: Credentials, user: dict[str, Any], base: Path, context: str) -> None:
    """Fill in the identity of a kubeconfig user entry (refusing the ones we cannot use)."""
    if user.get("auth-provider"):
        raise KubeconfigError(
            f"context {context!r}: auth-provider users are not supported (removed from kubectl "
            "in 1.26); use an exec plugin"
        )
    if user.get("username") or user.get("password"):
        raise KubeconfigError(f"context {context!r}: basic authentication is not supported")
    creds.cert_file = _file_or_data(user, "client-certificate", base, "cert")
    creds.key_file = _file_or_data(user, "client-key", base, "key")
    if (creds.cert_file is None) != (creds.key_file is None):
        raise KubeconfigError(f"context {context!r}: a client certificate needs its key")
    creds.token = str(user["token"]) if user.get("token") else None
    if user.get("tokenFile") and not creds.token:
        creds.token_file = str(_relative(base, str(user["tokenFile"])))
    if isinstance(user.get("exec"), dict):
        creds.exec_plugin = _exec_plugin(user["exec"], base, context)


def _exec_plugin(spec: dict[str, Any], base: Path, context: str) -> ExecPlugin:
    command = str(spec.get("command") or "")
    if not command:
        raise KubeconfigError(f"context {context!r}: the exec plugin names no command")
    if "/" in command and not command.startswith("/"):
        command = str(_relative(base, command))  # a bare name is looked up on PATH
    env = tuple(
        (str(e.get("name")), str(e.get("value") or ""))
        for e in spec.get("env") or []
        if isinstance(e, dict) and e.get("name")
    )
    return ExecPlugin(
        command=command,
        args=tuple(str(a) for a in spec.get("args") or []),
        env=env,
        api_version=str(spec.get("apiVersion") or "client.authentication.k8s.io/v1"),
    )


def _with_cluster_info(plugin: ExecPlugin, cluster: dict[str, Any], base: Path) -> ExecPlugin:
    """The plugin told of its cluster, as client-go tells it (`provideClusterInfo`)."""
    info: dict[str, Any] = {"server": str(cluster.get("server") or "")}
    ca = cluster.get("certificate-authority-data")
    if not ca and cluster.get("certificate-authority"):
        path = _relative(base, str(cluster["certificate-authority"]))
        ca = base64.b64encode(path.read_bytes()).decode()
    if ca:
        info["certificate-authority-data"] = str(ca)
    for key in ("insecure-skip-tls-verify", "tls-server-name"):
        if cluster.get(key):
            info[key] = cluster[key]
    for ext in cluster.get("extensions") or []:
        if isinstance(ext, dict) and ext.get("name") == "client.authentication.k8s.io/exec":
            info["config"] = ext.get("extension")
    return dataclasses.replace(plugin, cluster=tuple(sorted(info.items())))


def _load(path: Path, where: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KubeconfigError(f"cannot read the kubeconfig {where}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed"
        raise KubeconfigError(f"the kubeconfig {path} is not YAML{at}: {problem}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise KubeconfigError(f"the kubeconfig {path} is not a mapping")
    return doc


def _relative(base: Path, value: str) -> Path:
    """A path in a kubeconfig, relative to that kubeconfig's folder (kubectl's rule), made
    absolute (a plugin or a later read may run from another folder)."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(os.path.abspath(base)).parent / p


def _file_or_data(entry: dict[str, Any], key: str, base: Path, label: str) -> str | None:
    """`key` (a path) or `key-data` (base64, written to a private file: TLS reads files)."""
    data = entry.get(f"{key}-data")
    if data:
        try:
            raw = base64.b64decode(str(data), validate=False)
        except ValueError as exc:
            raise KubeconfigError(f"{key}-data in {base} is not base64") from exc
        return _private_file(raw, label)
    if entry.get(key):
        path = _relative(base, str(entry[key]))
        if not path.is_file():
            raise KubeconfigError(f"{key} {path} (in {base}) does not exist")
        return str(path)
    return None


def _private_file(data: bytes, label: str) -> str:
    """`data` in a file only we can read, removed when the process ends; the same data is
    the same file (a re-login or a renewed exec credential writes no new one)."""
    key = (label, hashlib.sha256(data).hexdigest())
    with _TEMP_LOCK:
        name = _TEMP_FILES.get(key)
        if name is None or not os.path.exists(name):
            fd, name = tempfile.mkstemp(prefix=f"modelgrid-{label}-", suffix=".pem")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            _TEMP_FILES[key] = name
        return name


_TEMP_FILES: dict[tuple[str, str], str] = {}
_TEMP_LOCK = threading.Lock()


@atexit.register
def _remove_temp_files() -> None:
    for name in _TEMP_FILES.values():
        with contextlib.suppress(OSError):
            os.unlink(name)


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise KubeconfigError(f"cannot read the {what} {path}: {exc.strerror}") from exc
