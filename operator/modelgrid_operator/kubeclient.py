"""Kubernetes API clients: the operator's (a connection pool sized for its threads) and a
command line's (a kubeconfig and context), with one-line errors. Does I/O (reads kubeconfigs);
the requests themselves are `kube`'s.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

#: Connections the operator's client keeps: kopf's handler threads, the reconcile pool, the
#: resync, the sweeps and the long-running watches each hold one at a time (the client's
#: default, five per CPU, made them wait for one another on a small node).
POOL_CONNECTIONS = 32


def operator_client() -> client.ApiClient:
    """The operator's client: in-cluster credentials, else the kubeconfig (the sandbox)."""
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = POOL_CONNECTIONS
    # the client's watch helper builds its own ApiClient from the default configuration
    client.Configuration.set_default(cfg)
    return client.ApiClient(cfg)


def api_message(exc: ApiException) -> str:
    """The apiserver's own words for a refusal (its Status message), else the HTTP reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    text = body.get("message") if isinstance(body, dict) else None
    return str(text or exc.reason or "refused")


class KubeconfigError(Exception):
    """No usable kubeconfig or context (one line, for a command line to print)."""


class ApiError(Exception):
    """A request a command line made failed (refused, forbidden, unreachable): one line."""


@contextlib.contextmanager
def api_call(what: str) -> Iterator[None]:
    """Turn the client's failures while doing `what` into an `ApiError` of one line."""
    try:
        yield
    except ApiException as exc:
        raise ApiError(f"{what}: {exc.status} {api_message(exc)}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ApiError(f"{what}: the API server cannot be reached ({exc})") from exc


def client_for(kubeconfig: str | None, context: str | None) -> tuple[client.ApiClient, str]:
    """An API client for `context` of `kubeconfig` (kubectl's defaults when None: $KUBECONFIG,
    ~/.kube/config, the current context) and that context's namespace ("default")."""
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = next((c for c in contexts if c["name"] == context), None) if context else active
        if chosen is None:
            raise KubeconfigError(f"context {context!r} is not in the kubeconfig")
        api = config.new_client_from_config(config_file=kubeconfig, context=chosen["name"])
    except (config.ConfigException, OSError, TypeError, KeyError, ValueError) as exc:
        where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
        raise KubeconfigError(f"cannot use the kubeconfig {where}: {exc}") from exc
    namespace = str((chosen.get("context") or {}).get("namespace") or "default")
    return api, namespace


class JobRefused(Exception):
    """The apiserver refused a Job the operator built (invalid, or forbidden): `status` is the
    HTTP code, `message` the apiserver's own words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class BenchmarkAccessDenied(Exception):
    """The apiserver forbade a read or write in the benchmark namespace (the Role is missing or
    narrower than the chart's): an installation fault, reported without a traceback."""


@contextlib.contextmanager
def benchmark_access(what: str) -> Iterator[None]:
    """A 403 from the benchmark namespace as `BenchmarkAccessDenied` (doing `what`)."""
    try:
        yield
    except ApiException as exc:
        if exc.status == 403:
            raise BenchmarkAccessDenied(f"{what}: {api_message(exc)}") from exc
        raise
