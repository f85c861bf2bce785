"""The one module that talks to the Kubernetes API (kopf's own watches aside). Does I/O.

Thin wrappers over the operator's HTTP client (`kubeclient`) with its conventions: objects as
plain JSON dicts, 404 as None, 409 on create as "already there" (so a restarted operator adopts
the Job it made instead of duplicating it), status written through the status subresource only.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import urllib3

from modelgrid_contract.progress import TAIL_LINES, Progress, parse_progress
from modelgrid_operator.api import GROUP, MQ_PLURAL, TP_PLURAL, VERSION
from modelgrid_operator.informer import Informer
from modelgrid_operator.jobs import (
    CONTAINER,
    LABEL_CONTROLLER_UID,
    LABEL_MANAGED,
    LABEL_QUALIFICATION,
    MANAGED_BY,
    qualification_of,
)
from modelgrid_operator.kubeclient import (
    MERGE_PATCH,
    ApiClient,
    ApiException,
    JobRefused,
    api_message,
    benchmark_access,
    operator_client,
    path_of,
)
from modelgrid_operator.outcome import event_body
from modelgrid_operator.podstate import occupies_slot, owned_by_job, slim_job, slim_pod

log = logging.getLogger(__name__)

#: How long a claim read from the API is reused (`Kube.get_pvc`).
PVC_FRESH_S = 5.0
PVC_MEMO_LIMIT = 1024
#: Asks a list for its objects' metadata only (PartialObjectMetadataList).
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def _jobs(namespace: str) -> str:
    return f"/apis/batch/v1/namespaces/{path_of(namespace)}/jobs"


def _core(namespace: str, plural: str) -> str:
    return f"/api/v1/namespaces/{path_of(namespace)}/{plural}"


def _ours(plural: str, namespace: str | None = None) -> str:
    """Our resource's collection: cluster-wide, or one namespace's."""
    where = "" if namespace is None else f"namespaces/{path_of(namespace)}/"
    return f"/apis/{GROUP}/{VERSION}/{where}{plural}"


def _items(listing: Any) -> list[dict[str, Any]]:
    return list((listing or {}).get("items") or [])


class Kube:
    def __init__(self, api: ApiClient | None = None) -> None:
        self.api = operator_client() if api is None else api
        #: the benchmark namespace's Jobs and pods of ours, once `start_cache` synced them
        self._cache_ns: str | None = None
        self._jobs: Informer | None = None
        self._pods: Informer | None = None
        self._policies: Informer | None = None
        #: model and evidence claims read lately: name -> (monotonic time, object or None)
        self._pvcs: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}

    # -- the cache of our Jobs and pods ------------------------------------------------------

    def start_cache(
        self,
        namespace: str,
        on_change: Callable[[dict[str, Any]], None],
        stop: threading.Event,
        timeout_s: float = 60.0,
    ) -> bool:
        """Keep the benchmark namespace's Jobs and pods of ours in memory (`informer`), calling
        `on_change` for each change, until `stop`. Reads fall back to the API until both are
        synced (or if they never are: a forbidden namespace is reported by those reads)."""
        ours = f"{LABEL_MANAGED}={MANAGED_BY}"
        self._jobs = Informer("jobs", self.api, _jobs(namespace), ours, on_change)
        self._jobs.trim = slim_job
        self._pods = Informer("pods", self.api, _core(namespace, "pods"), ours, on_change)
        self._pods.trim = slim_pod
        # TierPolicies are few and read by every reconcile: cached as well (a reconcile that
        # finds none in the cache asks the API before it reports one missing); their changes
        # reach the qualifications through kopf's handler, which sees spec changes only
        self._policies = Informer("tierpolicies", self.api, _ours(TP_PLURAL), "", lambda _obj: None)
        self._cache_ns = namespace
        informers = (self._jobs, self._pods, self._policies)
        for inf in informers:
            threading.Thread(
                target=inf.run, args=(stop,), name=f"informer-{inf.kind}", daemon=True
            ).start()
        return all(inf.synced.wait(timeout_s) for inf in informers)

    def _cache(self, namespace: str) -> tuple[Informer, Informer] | None:
        jobs, pods = self._jobs, self._pods
        if jobs is None or pods is None or namespace != self._cache_ns:
            return None
        if not (jobs.synced.is_set() and pods.synced.is_set()):
            return None
        return jobs, pods

    def _get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, None when there is none (404)."""
        try:
            return cast(dict[str, Any], self.api.get_json(path))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    # -- qualifications and policies -------------------------------------------------------

    def get_qualification(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(f"{_ours(MQ_PLURAL, namespace)}/{path_of(name)}")

    def list_qualifications(
        self, namespace: str | None = None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        """Every qualification (in `namespace`, or all; matching `label_selector`)."""
        listing = self.api.get_json(_ours(MQ_PLURAL, namespace), {"labelSelector": label_selector})
        return _items(listing)

    def qualification_pages(self, page: int = 100) -> Iterator[list[dict[str, Any]]]:
        """Every qualification, `page` at a time (a list in chunks: a fleet's statuses are
        never all in memory at once)."""
        token: str | None = None
        while True:
            listing = self.api.get_json(_ours(MQ_PLURAL), {"limit": page, "continue": token})
            yield _items(listing)
            token = (listing.get("metadata") or {}).get("continue") or None
            if not token:
                return

    def qualification_keys(self) -> set[tuple[str, str, str]]:
        """(namespace, name, uid) of every qualification, from a metadata-only list (the
        orphan sweep's: a few hundred bytes an object, not its whole status)."""
        doc = self.api.get_json(_ours(MQ_PLURAL), accept=METADATA_ONLY)
        return {
            (str(m["namespace"]), str(m["name"]), str(m["uid"]))
            for m in (item.get("metadata") or {} for item in doc.get("items") or [])
        }

    def patch_qualification_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; the object as written, None when it is gone."""
        try:
            written = self.api.send_json(
                "PATCH",
                f"{_ours(MQ_PLURAL, namespace)}/{path_of(name)}/status",
                {"status": status},
                content_type=MERGE_PATCH,
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise
            return None
        return cast(dict[str, Any], written)

    def get_policy(self, name: str) -> dict[str, Any] | None:
        cached = self._policies
        if cached is not None and cached.synced.is_set():
            found = cached.get(name)
            if found is not None:
                return found
        return self._get(f"{_ours(TP_PLURAL)}/{path_of(name)}")

    def list_policies(self) -> list[dict[str, Any]]:
        """Every TierPolicy (cluster-scoped)."""
        cached = self._policies
        if cached is not None and cached.synced.is_set():
            return cached.items()
        return _items(self.api.get_json(_ours(TP_PLURAL)))

    # -- jobs and pods ---------------------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(f"{_jobs(namespace)}/{path_of(name)}")

    def create_job(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the Job, or adopt the one of that name if it is this qualification's own
        (a restart); a Job of that name made for another qualification is refused (409)."""
        try:
            created = cast(dict[str, Any], self.api.send_json("POST", _jobs(namespace), manifest))
        except ApiException as exc:
            if exc.status in (400, 403, 404, 422):
                raise JobRefused(int(exc.status), api_message(exc)) from exc
            if exc.status != 409:
                raise
            name = manifest["metadata"]["name"]
            existing = self.get_job(namespace, name)
            if existing is None:
                raise
            owner = manifest["metadata"]["labels"][LABEL_QUALIFICATION]
            if (existing["metadata"].get("labels") or {}).get(LABEL_QUALIFICATION) != owner:
                raise JobRefused(
                    409, f"a Job named {name} already exists in {namespace} for another owner"
                ) from exc
            return existing
        cache = self._cache(namespace)
        if cache is not None:  # counted at once, before its watch event arrives
            cache[0].put(created)
        return created

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and, in the background, its pods; gone already is fine."""
        try:
            self.api.send_json(
                "DELETE", f"{_jobs(namespace)}/{path_of(name)}", {"propagationPolicy": "Background"}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        cache = self._cache(namespace)
        if cache is not None:
            cache[0].forget(name)

    def jobs_of(self, namespace: str, qualification_uid: str) -> list[dict[str, Any]]:
        cache = self._cache(namespace)
        if cache is not None:
            return [
                j
                for j in cache[0].items()
                if ((j.get("metadata") or {}).get("labels") or {}).get(LABEL_QUALIFICATION)
                == qualification_uid
            ]
        with benchmark_access("listing benchmark Jobs"):
            selector = f"{LABEL_MANAGED}={MANAGED_BY},{LABEL_QUALIFICATION}={qualification_uid}"
            return _items(self.api.get_json(_jobs(namespace), {"labelSelector": selector}))

    def pods_of_job(self, job: dict[str, Any], *, whole: bool = False) -> list[dict[str, Any]]:
        """The pods the Job controller made for this Job: selected by the controller-uid label
        and kept only with a controller owner reference to the Job's uid (a pod that merely
        carries the Job's name in a label is someone else's). From the cache, whose copies
        lack the termination messages; `whole`: from the API, with them (to read a result)."""
        meta = job["metadata"]
        uid = meta["uid"]
        cache = None if whole else self._cache(meta["namespace"])
        if cache is not None:
            pods = [
                p
                for p in cache[1].items()
                if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_CONTROLLER_UID) == uid
            ]
        else:
            with benchmark_access("listing benchmark pods"):
                pods = _items(
                    self.api.get_json(
                        _core(meta["namespace"], "pods"),
                        {"labelSelector": f"{LABEL_CONTROLLER_UID}={uid}"},
                    )
                )
        return [p for p in pods if owned_by_job(p, uid)]

    def progress_of(self, pod: dict[str, Any]) -> Progress | None:
        """The benchmark's last progress line in its log (pods/log get, the last few lines);
        None when there is none or the log cannot be read (progress only informs status)."""
        meta = pod.get("metadata") or {}
        try:
            raw = self.api.request(
                "GET",
                f"{_core(meta['namespace'], 'pods')}/{path_of(meta['name'])}/log",
                query={"container": CONTAINER, "tailLines": TAIL_LINES},
                accept="*/*",  # the apiserver answers text/plain but refuses to be asked for it
            )
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            log.debug("no log of %s/%s: %s", meta.get("namespace"), meta.get("name"), exc)
            return None
        return parse_progress(raw.decode(errors="replace"))

    def running_benchmark_owners(self, namespace: str) -> list[tuple[str, str]]:
        """(namespace, name) of the qualifications whose benchmark pods are running now."""
        cache = self._cache(namespace)
        if cache is not None:
            running = [
                p for p in cache[1].items() if (p.get("status") or {}).get("phase") == "Running"
            ]
        else:
            with benchmark_access("listing running benchmark pods"):
                running = _items(
                    self.api.get_json(
                        _core(namespace, "pods"),
                        {
                            "labelSelector": f"{LABEL_MANAGED}={MANAGED_BY}",
                            "fieldSelector": "status.phase=Running",
                        },
                    )
                )
        owners = []
        for pod in running:
            owner = qualification_of(pod)
            if owner is not None:
                owners.append((owner[0], owner[1]))
        return owners

    def list_benchmark_jobs(self, namespace: str) -> list[dict[str, Any]]:
        """Every benchmark Job in the benchmark namespace (metadata and status)."""
        cache = self._cache(namespace)
        if cache is not None:
            return cache[0].items()
        with benchmark_access("listing benchmark Jobs"):
            selector = f"{LABEL_MANAGED}={MANAGED_BY}"
            return _items(self.api.get_json(_jobs(namespace), {"labelSelector": selector}))

    def get_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A claim in the benchmark namespace, read at most every `PVC_FRESH_S` (a burst of
        new qualifications of one model asks once; a claim made or bound since is seen within
        that time, and the qualifications waiting on it look again on their own)."""
        now = time.monotonic()
        seen = self._pvcs.get((namespace, name))
        if seen is not None and now - seen[0] < PVC_FRESH_S:
            return seen[1]
        with benchmark_access("reading a model volume"):
            found = self._get(f"{_core(namespace, 'persistentvolumeclaims')}/{path_of(name)}")
        if len(self._pvcs) > PVC_MEMO_LIMIT:
            self._pvcs.clear()
        self._pvcs[(namespace, name)] = (now, found)
        return found

    def active_benchmarks(self, namespace: str) -> int:
        """Benchmark Jobs that have neither finished nor wait suspended (from the cache: no
        list of every Job in the cluster on each reconcile)."""
        return sum(1 for j in self.list_benchmark_jobs(namespace) if occupies_slot(j))

    # -- events ----------------------------------------------------------------------------

    def post_event(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        body = event_body(obj, event_type, reason, message, dt.datetime.now(dt.UTC))
        try:
            self.api.send_json("POST", _core(meta["namespace"], "events"), body)
        except ApiException as exc:  # an event is worth a log line, never a failed reconcile
            log.warning("cannot post event %s on %s: %s", reason, meta["name"], exc.reason)
