"""The operator's own API client and credentials, against a local HTTP server that records what
it was sent and answers as an apiserver would (Status bodies, chunked watch streams, a 401 for a
rotated token). No cluster: the control-plane tier runs the same client over TLS with client
certificates (the sandbox) and ServiceAccount tokens (the chart)."""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelgrid_contract.progress import Progress, Stage
from modelgrid_operator import kubeconfig as kc
from modelgrid_operator.api import GROUP, VERSION
from modelgrid_operator.handlers import connection_info
from modelgrid_operator.kube import Kube
from modelgrid_operator.kubeclient import (
    MERGE_PATCH,
    ApiClient,
    ApiError,
    ApiException,
    api_call,
    api_message,
    client_for,
)

pytestmark = pytest.mark.timeout(60)


class _Apiserver(BaseHTTPRequestHandler):
    """Answers from the server's `script`: path -> (status, body or list of watch chunks)."""

    server: _Server

    def log_message(self, *_: Any) -> None: ...

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "type": self.headers.get("Content-Type"),
                "accept": self.headers.get("Accept"),
                "body": json.loads(body) if body else None,
            }
        )
        status, answer = self.server.answer(self.command, self.path.split("?")[0])
        if status == 0:  # the request was read, and the connection drops without an answer
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.path.split("?")[0].endswith("/log"):
            if self.headers.get("Accept") == "text/plain":  # as the apiserver does
                status, answer = 406, _status(406, "NotAcceptable", "only */* or json")
            else:
                self._text(status, str(answer).encode())
                return
        if isinstance(answer, list):  # a watch: chunked, split wherever the script says
            self.send_response(status)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in answer:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        data = json.dumps(answer).encode()
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _text(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Apiserver)
        self.seen: list[dict[str, Any]] = []
        self.script: dict[tuple[str, str], list[tuple[int, Any]]] = {}

    def answer(self, method: str, path: str) -> tuple[int, Any]:
        queue = self.script.get((method, path))
        if not queue:
            return 404, _status(404, "NotFound", f"{path} not found")
        return queue.pop(0) if len(queue) > 1 else queue[0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "code": code, "reason": reason, "message": message}


@pytest.fixture
def apiserver() -> Iterator[_Server]:
    srv = _Server()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _client(srv: _Server, **creds: Any) -> ApiClient:
    return ApiClient(kc.Credentials(server=srv.url, **creds))


# -- requests ---------------------------------------------------------------------------------


def test_a_get_sends_the_token_and_a_clean_query(apiserver: _Server) -> None:
    apiserver.script[("GET", "/apis/batch/v1/namespaces/b/jobs")] = [(200, {"items": [1]})]
    api = _client(apiserver, token="t0k")
    got = api.get_json(
        "/apis/batch/v1/namespaces/b/jobs",
        {"labelSelector": "a=b,c=d", "limit": 5, "watch": False, "continue": None, "x": ""},
    )
    assert got == {"items": [1]}
    seen = apiserver.seen[-1]
    assert seen["auth"] == "Bearer t0k"
    assert (
        seen["path"]
        == "/apis/batch/v1/namespaces/b/jobs?labelSelector=a%3Db%2Cc%3Dd&limit=5&watch=false"
    )


def test_a_refusal_carries_the_status_and_the_apiservers_words(apiserver: _Server) -> None:
    apiserver.script[("POST", "/x")] = [(422, _status(422, "Invalid", "spec.template: Required"))]
    api = _client(apiserver)
    with pytest.raises(ApiException) as exc:
        api.send_json("POST", "/x", {"a": 1})
    assert exc.value.status == 422
    assert api_message(exc.value) == "spec.template: Required"
    assert apiserver.seen[-1]["body"] == {"a": 1}
    assert apiserver.seen[-1]["auth"] is None  # no credentials, no header
    with (
        pytest.raises(ApiError, match=r"^creating x: 422 spec.template: Required$"),
        api_call("creating x"),
    ):
        api.send_json("POST", "/x", {})


def test_an_unreachable_server_is_one_line() -> None:
    api = ApiClient(kc.Credentials(server="http://127.0.0.1:9"))
    with pytest.raises(ApiError, match="cannot be reached"), api_call("listing"):
        api.get_json("/api/v1/pods")


def test_a_status_patch_is_a_merge_patch_of_the_status_subresource(apiserver: _Server) -> None:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/team%2Fa/modelqualifications/q1/status"
    apiserver.script[("PATCH", path)] = [(200, {"status": {"phase": "Queued"}})]
    kube = Kube(_client(apiserver))
    written = kube.patch_qualification_status("team/a", "q1", {"phase": "Queued"})
    assert written == {"status": {"phase": "Queued"}}
    seen = apiserver.seen[-1]
    assert (seen["method"], seen["type"]) == ("PATCH", MERGE_PATCH)
    assert seen["body"] == {"status": {"phase": "Queued"}}


def test_gone_objects_are_none_and_a_deleted_job_takes_its_pods(apiserver: _Server) -> None:
    kube = Kube(_client(apiserver))
    assert kube.get_job("b", "nope") is None
    assert kube.get_qualification("ns", "nope") is None
    assert kube.patch_qualification_status("ns", "gone", {}) is None
    kube.delete_job("b", "nope")  # gone already is fine
    assert apiserver.seen[-1]["method"] == "DELETE"
    assert apiserver.seen[-1]["body"] == {"propagationPolicy": "Background"}


def test_the_metadata_only_list_asks_for_partial_objects(apiserver: _Server) -> None:
    path = f"/apis/{GROUP}/{VERSION}/modelqualifications"
    items = [{"metadata": {"namespace": "a", "name": "q", "uid": "u1"}}]
    apiserver.script[("GET", path)] = [(200, {"items": items})]
    assert Kube(_client(apiserver)).qualification_keys() == {("a", "q", "u1")}
    assert "as=PartialObjectMetadataList" in apiserver.seen[-1]["accept"]


def test_a_429_is_tried_again_and_then_reported(apiserver: _Server) -> None:
    busy = (429, _status(429, "TooManyRequests", "storage is (re)initializing"))
    apiserver.script[("POST", "/busy-once")] = [busy, (201, {"created": True})]
    api = _client(apiserver)
    assert api.send_json("POST", "/busy-once", {"a": 1}) == {"created": True}
    assert [s["method"] for s in apiserver.seen] == ["POST", "POST"]
    apiserver.script[("GET", "/busy")] = [busy]
    with pytest.raises(ApiException) as exc:
        api.get_json("/busy")
    assert exc.value.status == 429
    assert api_message(exc.value) == "storage is (re)initializing"
    assert len(apiserver.seen) == 2 + 4  # the first try and three more


def test_a_benchmark_log_is_read_as_the_apiserver_serves_it(apiserver: _Server) -> None:
    path = "/api/v1/namespaces/b/pods/p1/log"
    line = "engine up\n" + Progress(stage=Stage.WARMUP, run=1, runs=3).line() + "\n"
    apiserver.script[("GET", path)] = [(200, line)]
    pod = {"metadata": {"name": "p1", "namespace": "b"}}
    progress = Kube(_client(apiserver)).progress_of(pod)
    assert apiserver.seen[-1]["path"].startswith(path + "?container=")
    assert "tailLines=" in apiserver.seen[-1]["path"]
    assert apiserver.seen[-1]["accept"] != "text/plain"
    assert progress == Progress(stage=Stage.WARMUP, run=1, runs=3)


def test_a_post_the_server_may_have_processed_is_never_sent_twice(apiserver: _Server) -> None:
    apiserver.script[("POST", "/jobs")] = [(0, None)]
    with pytest.raises(ApiError, match="cannot be reached"), api_call("creating a Job"):
        _client(apiserver).send_json("POST", "/jobs", {"kind": "Job"})
    assert [s["method"] for s in apiserver.seen] == ["POST"]


def test_a_webhooks_denial_over_several_lines_reads_as_one() -> None:
    body = json.dumps(_status(400, "BadRequest", "admission webhook denied:\n  a\n  b"))
    assert api_message(ApiException(400, "Bad Request", body)) == "admission webhook denied: a b"


# -- watches ----------------------------------------------------------------------------------


def _chunks(events: list[dict[str, Any]], size: int) -> list[bytes]:
    """The events as JSON lines, cut every `size` bytes (a line may span chunks)."""
    stream = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    return [stream[i : i + size] for i in range(0, len(stream), size)]


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_a_watch_yields_whole_events_however_the_stream_is_cut(
    apiserver: _Server, size: int
) -> None:
    events = [
        {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "2"}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
    ]
    apiserver.script[("GET", "/w")] = [(200, _chunks(events, size))]
    api = _client(apiserver)
    got = list(api.watch("/w", {"resourceVersion": "1", "timeoutSeconds": 5}))
    assert got == events
    assert "watch=true" in apiserver.seen[-1]["path"]
    assert "resourceVersion=1" in apiserver.seen[-1]["path"]


def test_a_compacted_version_in_a_watch_is_raised_as_gone(apiserver: _Server) -> None:
    events = [
        {"type": "ADDED", "object": {"metadata": {"name": "a"}}},
        {"type": "ERROR", "object": _status(410, "Expired", "too old resource version")},
    ]
    apiserver.script[("GET", "/w")] = [(200, _chunks(events, 64))]
    stream = _client(apiserver).watch("/w", {"resourceVersion": "1"})
    assert next(stream)["type"] == "ADDED"
    with pytest.raises(ApiException) as exc:
        next(stream)
    assert exc.value.status == 410


# -- credentials ------------------------------------------------------------------------------


def test_a_rotated_token_file_is_read_again_after_a_401(apiserver: _Server, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("old\n")
    apiserver.script[("GET", "/r")] = [(401, _status(401, "Unauthorized", "")), (200, {"ok": 1})]
    api = _client(apiserver, token_file=str(token))
    api.credentials.bearer_token()  # read once: "old"
    token.write_text("new\n")  # the kubelet rotates it
    assert api.get_json("/r") == {"ok": 1}
    assert [s["auth"] for s in apiserver.seen] == ["Bearer old", "Bearer new"]


def _kubeconfig(tmp_path: Path, name: str = "config", **doc: Any) -> Path:
    base = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dev",
        "contexts": [
            {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "team"}},
            {"name": "other", "context": {"cluster": "c", "user": "v"}},
        ],
        "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443/"}}],
        "users": [{"name": "u", "user": {"token": "abc"}}, {"name": "v", "user": {}}],
    }
    base.update(doc)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(base))
    return path


def test_a_kubeconfig_context_gives_server_namespace_and_token(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path)
    creds = kc.from_kubeconfig(str(path))
    assert (creds.server, creds.namespace, creds.bearer_token()) == (
        "https://10.0.0.1:6443",
        "team",
        "abc",
    )
    other = kc.from_kubeconfig(str(path), "other")
    assert (other.namespace, other.bearer_token()) == ("default", None)
    api, namespace = client_for(str(path), None)
    assert (api.credentials.server, namespace) == ("https://10.0.0.1:6443", "team")


def test_relative_files_and_inline_data_become_readable_paths(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_text("CA")
    clusters = [
        {"name": "c", "cluster": {"server": "https://h", "certificate-authority": "pki/ca.crt"}}
    ]
    users = [
        {
            "name": "u",
            "user": {"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"},
        }
    ]
    creds = kc.from_kubeconfig(str(_kubeconfig(tmp_path, clusters=clusters, users=users)))
    assert creds.ca_file == str(tmp_path / "pki" / "ca.crt")
    assert creds.cert_file is not None
    assert creds.key_file is not None
    assert Path(creds.cert_file).read_bytes() == b"CERT"
    assert Path(creds.key_file).read_bytes() == b"KEY"
    assert stat.S_IMODE(os.stat(creds.key_file).st_mode) == 0o600


def test_the_first_kubeconfig_of_a_list_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _kubeconfig(
        tmp_path, "a", clusters=[{"name": "c", "cluster": {"server": "https://first"}}]
    )
    second = _kubeconfig(tmp_path, "b", **{"current-context": "other"})
    monkeypatch.setenv(
        "KUBECONFIG", os.pathsep.join([str(first), str(tmp_path / "none"), str(second)])
    )
    creds = kc.from_kubeconfig()
    assert (creds.server, creds.namespace) == ("https://first", "team")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"current-context": "nope"}, "context 'nope' is not in the kubeconfig"),
        ({"current-context": None}, "sets no current context"),
        ({"users": [{"name": "u", "user": {"auth-provider": {"name": "gcp"}}}]}, "auth-provider"),
        ({"users": [{"name": "u", "user": {"username": "a", "password": "b"}}]}, "basic auth"),
        ({"users": [{"name": "u", "user": {"client-certificate-data": "QQ=="}}]}, "needs its key"),
        ({"clusters": [{"name": "c", "cluster": {"server": "10.0.0.1"}}]}, "no https:// server"),
        (
            {
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://h", "certificate-authority": "x"}}
                ]
            },
            "does not exist",
        ),
    ],
)
def test_an_unusable_kubeconfig_is_one_line(
    tmp_path: Path, change: dict[str, Any], words: str
) -> None:
    path = _kubeconfig(tmp_path, **change)
    with pytest.raises(kc.KubeconfigError) as exc:
        kc.from_kubeconfig(str(path))
    assert words in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("text", "words"), [(None, "cannot read"), ("a: [", "not YAML"), ("- 1", "not a mapping")]
)
def test_a_missing_or_malformed_kubeconfig_is_one_line(
    tmp_path: Path, text: str | None, words: str
) -> None:
    path = tmp_path / "config"
    if text is not None:
        path.write_text(text)
    with pytest.raises(kc.KubeconfigError, match=words) as exc:
        kc.from_kubeconfig(str(path))
    assert "\n" not in str(exc.value)


def _exec_user(tmp_path: Path, credential: dict[str, Any], code: int = 0) -> list[dict[str, Any]]:
    script = tmp_path / "plugin.py"
    script.write_text(
        "import json, os, sys\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['kind'] == 'ExecCredential', info\n"
        f"open({str(tmp_path / 'runs')!r}, 'a').write('run\\n')\n"
        f"print(json.dumps({credential!r}))\n"
        f"sys.stderr.write('denied by the cloud\\n'); sys.exit({code})\n"
    )
    spec = {
        "command": sys.executable,
        "args": [str(script)],
        "apiVersion": "client.authentication.k8s.io/v1",
    }
    return [{"name": "u", "user": {"exec": spec}}]


def _runs(tmp_path: Path) -> int:
    return len((tmp_path / "runs").read_text().splitlines())


def test_an_exec_plugins_token_is_used_until_shortly_before_it_expires(tmp_path: Path) -> None:
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30))
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    lasting = _exec_user(tmp_path, {"status": {"token": "ex1", "expirationTimestamp": later}})
    creds = kc.from_kubeconfig(str(_kubeconfig(tmp_path, users=lasting)))
    assert creds.bearer_token() == "ex1"
    assert creds.bearer_token() == "ex1"
    assert _runs(tmp_path) == 1  # an hour left: not run again
    expiring = _exec_user(tmp_path, {"status": {"token": "ex2", "expirationTimestamp": soon}})
    creds = kc.from_kubeconfig(str(_kubeconfig(tmp_path, users=expiring)))
    assert creds.bearer_token() == "ex2"
    assert creds.bearer_token() == "ex2"
    assert _runs(tmp_path) == 3  # within the renewal margin: run for every request


@pytest.mark.parametrize(
    ("credential", "code", "words"),
    [
        ({"status": {"token": "x"}}, 1, r"failed \(1\): denied by the cloud"),
        ({"status": {}}, 0, "no token or certificate"),
        ({"nostatus": 1}, 0, "printed no status"),
    ],
)
def test_a_failing_exec_plugin_is_one_line(
    tmp_path: Path, credential: dict[str, Any], code: int, words: str
) -> None:
    creds = kc.from_kubeconfig(
        str(_kubeconfig(tmp_path, users=_exec_user(tmp_path, credential, code)))
    )
    with pytest.raises(kc.KubeconfigError, match=words):
        creds.bearer_token()


def test_in_cluster_reads_the_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert kc.in_cluster(tmp_path) is None  # no token mounted
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_text("CA")
    (tmp_path / "namespace").write_text("modelgrid-system\n")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert kc.in_cluster(tmp_path) is None  # not in a cluster
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "8443")
    creds = kc.in_cluster(tmp_path)
    assert creds is not None
    assert (creds.server, creds.namespace, creds.ca_file) == (
        "https://[fd00::1]:8443",
        "modelgrid-system",
        str(tmp_path / "ca.crt"),
    )
    assert creds.bearer_token() == "sa-token"
    info = connection_info(creds)
    assert (info.server, info.token, info.scheme, info.ca_path) == (
        creds.server,
        "sa-token",
        "Bearer",
        creds.ca_file,
    )


def test_a_context_without_a_user_is_anonymous(tmp_path: Path) -> None:
    contexts = [{"name": "dev", "context": {"cluster": "c"}}]
    creds = kc.from_kubeconfig(str(_kubeconfig(tmp_path, contexts=contexts)))
    assert creds.current() == (None, (None, None))


@pytest.mark.parametrize(
    ("cluster", "words"),
    [
        ({"server": "https://h", "proxy-url": "http://proxy:3128"}, "proxy-url is not supported"),
        (
            {
                "server": "https://h",
                "certificate-authority-data": "Q0E=",
                "insecure-skip-tls-verify": True,
            },
            "exclude each other",
        ),
    ],
)
def test_cluster_settings_we_cannot_honour_are_refused(
    tmp_path: Path, cluster: dict[str, Any], words: str
) -> None:
    path = _kubeconfig(tmp_path, clusters=[{"name": "c", "cluster": cluster}])
    with pytest.raises(kc.KubeconfigError, match=words):
        kc.from_kubeconfig(str(path))


def test_an_exec_plugin_giving_a_certificate_runs_once_and_writes_it_once(tmp_path: Path) -> None:
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    status = {"clientCertificateData": "CERT", "clientKeyData": "KEY", "expirationTimestamp": later}
    users = _exec_user(tmp_path, {"status": status})
    creds = kc.from_kubeconfig(str(_kubeconfig(tmp_path, users=users)))
    first = creds.current()
    assert creds.current() == first
    assert _runs(tmp_path) == 1
    token, (cert, key) = first
    assert token is None
    assert cert is not None
    assert key is not None
    assert Path(cert).read_text() == "CERT"
    again = kc.from_kubeconfig(str(_kubeconfig(tmp_path, users=users)))
    assert again.current()[1] == (cert, key)  # the same data, the same files
    assert creds.expires_at() is not None


def test_a_relative_exec_command_is_found_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf" / "bin").mkdir(parents=True)
    plugin = tmp_path / "conf" / "bin" / "plugin"
    plugin.write_text(
        f"#!{sys.executable}\n"
        "import json, os\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "print(json.dumps({'status': {'token': json.dumps(info['spec'])}}))\n"
    )
    plugin.chmod(0o700)
    spec = {"command": "./bin/plugin", "provideClusterInfo": True}
    clusters = [{"name": "c", "cluster": {"server": "https://h:6443"}}]
    (tmp_path / "conf" / "config").write_text(
        yaml.safe_dump(
            {
                "current-context": "dev",
                "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u"}}],
                "clusters": clusters,
                "users": [{"name": "u", "user": {"exec": spec}}],
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    creds = kc.from_kubeconfig("conf/config")  # relative, and run from elsewhere
    monkeypatch.chdir(tmp_path / "conf" / "bin")
    told = json.loads(creds.bearer_token() or "{}")
    assert told == {"interactive": False, "cluster": {"server": "https://h:6443"}}
