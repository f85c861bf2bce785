"""The HTTP client `kube` sends its requests through: JSON in and out over one urllib3 pool,
watches as a stream of events, refusals as `ApiException` (the HTTP status and the apiserver's
own Status), and the one-line errors a command line prints. Does I/O (network).

It replaces the official kubernetes client in the operator: the operator reads and writes plain
JSON (it never used the generated models), and importing that client cost about 15 MiB of the
operator's memory, a tenth of its budget at 1000 qualifications. Credentials come from
`kubeconfig` (in-cluster or a kubeconfig context).
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3

from modelgrid_operator.kubeconfig import Credentials, KubeconfigError, from_kubeconfig
from modelgrid_operator.kubeconfig import operator_credentials as _operator_credentials

log = logging.getLogger(__name__)

#: Connections the operator's client keeps: kopf's handler threads, the reconcile pool, the
#: resync, the sweeps and the long-running watches each hold one at a time.
POOL_CONNECTIONS = 32
CONNECT_TIMEOUT_S = 10.0
#: A request (not a watch) that has sent nothing back for this long is given up.
READ_TIMEOUT_S = 60.0
#: A watch's read waits this much longer than the server's own timeout (and its bookmarks,
#: about once a minute), so only a dead connection ends it from our side.
WATCH_READ_MARGIN_S = 60.0
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
HTTP_UNAUTHORIZED = 401
#: A connection refused or reset before the request went out is tried again (any method: the
#: server saw nothing), and so is a 429 (the apiserver's "storage is (re)initializing" and its
#: priority-and-fairness refusals: not processed, with a Retry-After of a second or so),
#: as client-go does; nothing else, so a slow answer is never sent twice.
#: A Retry-After longer than this is cut to it (a request thread is not parked for long).
RETRY_AFTER_MAX_S = 10.0


class _Retry(urllib3.Retry):
    def get_retry_after(self, response: urllib3.BaseHTTPResponse) -> float | None:
        after = super().get_retry_after(response)
        return None if after is None else min(after, RETRY_AFTER_MAX_S)


_RETRIES = _Retry(
    total=5,
    connect=3,
    read=0,
    other=0,  # e.g. a TLS error while reading the answer: the request may have been processed
    redirect=0,
    status=3,
    status_forcelist=(429,),
    allowed_methods=None,
    respect_retry_after_header=True,
    raise_on_status=False,
    backoff_factor=0.5,
    backoff_max=5.0,
)

Query = Mapping[str, str | int | bool | None]

__all__ = [
    "ApiClient",
    "ApiError",
    "ApiException",
    "BenchmarkAccessDenied",
    "JobRefused",
    "KubeconfigError",
    "api_call",
    "api_message",
    "benchmark_access",
    "client_for",
    "operator_client",
]


class ApiException(Exception):
    """The apiserver answered with an error: `status` (HTTP), `reason`, `body` (its Status)."""

    def __init__(self, status: int, reason: str = "", body: str = "") -> None:
        super().__init__(f"{status} {reason}".strip())
        self.status = status
        self.reason = reason
        self.body = body


class ApiClient:
    """One API server, one identity, one connection pool (thread-safe)."""

    def __init__(self, credentials: Credentials, pool_size: int = POOL_CONNECTIONS) -> None:
        self.credentials = credentials
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._pool: urllib3.PoolManager | None = None
        self._pool_identity: tuple[str | None, str | None] | None = None
        if credentials.insecure:
            log.warning(
                "TLS verification is off for %s (insecure-skip-tls-verify)", credentials.server
            )

    # -- requests -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: Any = None,
        content_type: str = JSON,
        accept: str = JSON,
    ) -> bytes:
        """The response body of `method path?query`; `ApiException` for a refusal."""
        resp = self._send(method, path, query, body, content_type, accept, stream=False)
        return bytes(resp.data)

    def get_json(self, path: str, query: Query | None = None, *, accept: str = JSON) -> Any:
        return json.loads(self.request("GET", path, query=query, accept=accept))

    def send_json(
        self,
        method: str,
        path: str,
        body: Any,
        *,
        content_type: str = JSON,
        query: Query | None = None,
    ) -> Any:
        data = self.request(method, path, query=query, body=body, content_type=content_type)
        return json.loads(data) if data else {}

    def watch(self, path: str, query: Query) -> Iterator[dict[str, Any]]:
        """The events of a watch (`watch=true` is added) until the server ends it. An ERROR
        event (a compacted resourceVersion: 410 Gone) is raised as `ApiException`."""
        resp = self._send("GET", path, {**query, "watch": True}, None, JSON, JSON, stream=True)
        try:
            for line in _lines(resp):
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiException(
                        int(status.get("code") or 500),
                        str(status.get("reason") or "watch error"),
                        json.dumps(status),
                    )
                yield event
        finally:
            resp.close()  # a watch left unread is not given back to the pool
            resp.release_conn()

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.clear()
                self._pool = None

    # -- the connection ---------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        query: Query | None,
        body: Any,
        content_type: str,
        accept: str,
        *,
        stream: bool,
    ) -> urllib3.BaseHTTPResponse:
        url = self.credentials.server + path + _query_string(query)
        data = None if body is None else json.dumps(body).encode()
        read_s = READ_TIMEOUT_S
        if stream and query is not None and query.get("timeoutSeconds"):
            read_s = float(query["timeoutSeconds"] or 0) + WATCH_READ_MARGIN_S
        for attempt in (1, 2):
            headers = {"Accept": accept, "User-Agent": "modelgrid-operator"}
            if data is not None:
                headers["Content-Type"] = content_type
            token, identity = self.credentials.current()
            if token:
                headers["Authorization"] = f"Bearer {token}"
            resp = self._pool_manager(identity).request(
                method,
                url,
                body=data,
                headers=headers,
                preload_content=not stream,
                timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=read_s),
                retries=_RETRIES,
            )
            if resp.status < 400:
                return resp
            text = resp.data.decode(errors="replace") if resp.status != 304 else ""
            resp.release_conn()
            if resp.status == HTTP_UNAUTHORIZED and attempt == 1 and _renewable(self.credentials):
                self.credentials.renew()  # a rotated token: read it again, once
                continue
            raise ApiException(resp.status, str(resp.reason or ""), text)
        raise AssertionError("unreachable")

    def _pool_manager(self, identity: tuple[str | None, str | None]) -> urllib3.PoolManager:
        """The pool for this client certificate (a renewed one gets a new pool)."""
        with self._lock:
            if self._pool is None or self._pool_identity != identity:
                if self._pool is not None:
                    self._pool.clear()
                extra: dict[str, Any] = {}
                if self.credentials.tls_server_name:
                    extra["server_hostname"] = self.credentials.tls_server_name
                self._pool = urllib3.PoolManager(
                    num_pools=2,
                    maxsize=self._pool_size,
                    ssl_context=_tls(self.credentials, identity),
                    **extra,
                )
                self._pool_identity = identity
            return self._pool


def _tls(creds: Credentials, identity: tuple[str | None, str | None]) -> ssl.SSLContext:
    """The TLS settings of `creds`: its CA (else the system's), the client certificate."""
    ctx = ssl.create_default_context(cafile=creds.ca_file)
    if creds.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cert, key = identity
    if cert and key:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise KubeconfigError(f"cannot use the client certificate {cert}: {exc}") from exc
    return ctx


def _renewable(creds: Credentials) -> bool:
    return creds.token_file is not None or creds.exec_plugin is not None


def _query_string(query: Query | None) -> str:
    if not query:
        return ""
    pairs = [
        (k, ("true" if v else "false") if isinstance(v, bool) else str(v))
        for k, v in query.items()
        if v is not None and v != ""
    ]
    return "?" + urllib.parse.urlencode(pairs) if pairs else ""


def _lines(resp: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """The newline-separated JSON documents of a streamed response."""
    pending = b""
    for chunk in resp.stream(64 * 1024, decode_content=True):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line.strip())
    if pending.strip():
        yield pending


def path_of(name: str) -> str:
    """A name as one path segment."""
    return urllib.parse.quote(name, safe="")


def operator_client() -> ApiClient:
    """The operator's client: in-cluster credentials, else the kubeconfig (the sandbox)."""
    return ApiClient(_operator_credentials())


def client_for(kubeconfig: str | None, context: str | None) -> tuple[ApiClient, str]:
    """An API client for `context` of `kubeconfig` (kubectl's defaults when None: $KUBECONFIG,
    ~/.kube/config, the current context) and that context's namespace ("default")."""
    creds = from_kubeconfig(kubeconfig, context)
    return ApiClient(creds, pool_size=4), creds.namespace


# -- errors ---------------------------------------------------------------------------------


def api_message(exc: ApiException) -> str:
    """The apiserver's own words for a refusal (its Status message), else the HTTP reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    text = body.get("message") if isinstance(body, dict) else None
    # an admission webhook's denial may span lines: a person reads one
    return " ".join(str(text or exc.reason or "refused").split())


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
