"""kopf wiring: thin handlers that hand a qualification to the reconciler. Does I/O through it.

A qualification created or changed is reconciled at once in kopf's handler; one resumed at
start only when it is not settled (a verdict that stands needs nothing, and a fleet restarts
quickly); deletions are seen as watch events, so no finalizer is ever asked for; a TierPolicy's
spec change queues its users. The rest (Jobs and pods changing, the resync, the sweeps) is the
watcher's. Handlers never return values into status: the reconciler patches the status
subresource itself; kopf keeps its own progress and diff-base in annotations.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import kopf

from modelgrid_operator import metrics
from modelgrid_operator.api import GROUP, MQ_PLURAL, TP_PLURAL, VERSION
from modelgrid_operator.kube import Kube
from modelgrid_operator.kubeconfig import Credentials, operator_credentials
from modelgrid_operator.reconciler import Reconciler
from modelgrid_operator.resync import needs_resync
from modelgrid_operator.settings import Settings
from modelgrid_operator.watcher import EventPoster, Watcher

log = logging.getLogger("modelgrid_operator")

#: Threads for kopf's (synchronous) handlers: each reconcile waits on the API most of its time.
HANDLER_THREADS = 16

_runtime: dict[str, Any] = {}


def _reconciler() -> Reconciler:
    return _runtime["reconciler"]  # type: ignore[no-any-return]


def _watcher() -> Watcher:
    return _runtime["watcher"]  # type: ignore[no-any-return]


def connection_info(creds: Credentials) -> kopf.ConnectionInfo:
    """kopf's view of the operator's credentials: its watches use the same server and identity
    as `kube` (and kopf never falls back to importing the kubernetes client to log in)."""
    token, (cert, key) = creds.current()
    return kopf.ConnectionInfo(
        server=creds.server,
        ca_path=creds.ca_file,
        insecure=creds.insecure,
        scheme="Bearer" if token else None,
        token=token,
        certificate_path=cert,
        private_key_path=key,
        default_namespace=creds.namespace,
        # an exec plugin's credential: kopf logs in again before it expires
        expiration=creds.expires_at(),
    )


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    # called again by kopf after a 401: a rotated token is read anew
    return connection_info(operator_credentials())


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf keeps its bookkeeping in annotations so that status is only ours.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.execution.max_workers = HANDLER_THREADS
    cfg = Settings.from_env()
    kube = Kube()
    poster = EventPoster(kube)
    _runtime["events"] = poster
    reconciler = Reconciler(kube, cfg, post_event=poster.post)
    _runtime["reconciler"] = reconciler
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_port)
    watcher = Watcher(reconciler)
    watcher.start()
    _runtime["watcher"] = watcher
    log.info(
        "modelgrid operator started: default policy %s, at most %d benchmark Jobs",
        cfg.default_policy,
        cfg.max_concurrent_jobs,
    )


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    watcher = _runtime.get("watcher")
    if watcher is not None:
        watcher.close()
    poster = _runtime.get("events")
    if poster is not None:
        poster.close()


@kopf.on.create(GROUP, VERSION, MQ_PLURAL)
@kopf.on.update(GROUP, VERSION, MQ_PLURAL, field="spec")
def on_qualification(body: kopf.Body, reason: str, namespace: str, name: str, **_: Any) -> None:
    # a new object is as its creation event shows it (one request less in a burst of them)
    _reconciler().reconcile(namespace, name, dict(body) if reason == "create" else None)


@kopf.on.resume(GROUP, VERSION, MQ_PLURAL)
def on_resume(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    r = _reconciler()
    obj = dict(body)
    r.roster.put(obj)
    policies = {
        p["metadata"]["name"]: int(p["metadata"].get("generation", 0))
        for p in r.kube.list_policies()
    }
    if needs_resync(obj, policies, r.settings.default_policy, dt.datetime.now(dt.UTC)):
        r.reconcile(namespace, name)


@kopf.on.event(GROUP, VERSION, MQ_PLURAL)
def on_event(
    event: dict[str, Any], body: kopf.Body, namespace: str, name: str, uid: str, **_: Any
) -> None:
    # A watch event, not a deletion handler: nothing asks kopf for a finalizer (kopf removes
    # the one an earlier version's per-object timer added), so a qualification goes at once and
    # its Jobs follow when the DELETED event arrives; a deletion missed while the operator was
    # down is the orphan sweep's.
    r = _reconciler()
    if event.get("type") == "DELETED":
        r.delete_jobs_of(namespace, name, uid)
    elif r.watched(namespace):
        r.roster.put(dict(body))


@kopf.on.create(GROUP, VERSION, TP_PLURAL)
@kopf.on.update(GROUP, VERSION, TP_PLURAL, field="spec")
def on_policy(body: kopf.Body, **_: Any) -> None:
    # not on resume: every qualification is resumed at start on its own
    _watcher().policy_changed(dict(body))
