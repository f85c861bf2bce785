"""The one module that talks to the Kubernetes API (kopf's own watches aside). Does I/O.

Thin wrappers over the kubernetes client with the operator's conventions: objects as plain
dicts, 404 as None, 409 on create as "already there" (so a restarted operator adopts the Job it
made instead of duplicating it), status written through the status subresource only.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

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
    JobRefused,
    api_message,
    benchmark_access,
    operator_client,
)
from modelgrid_operator.outcome import event_body
from modelgrid_operator.podstate import occupies_slot, owned_by_job, slim_job, slim_pod

log = logging.getLogger(__name__)

#: How long a claim read from the API is reused (`Kube.get_pvc`).
PVC_FRESH_S = 5.0
PVC_MEMO_LIMIT = 1024
#: Asks a list for its objects' metadata only (PartialObjectMetadataList).
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


class Kube:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        self.api = operator_client() if api is None else api
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
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
        self._jobs = Informer(
            "jobs", functools.partial(self.batch.list_namespaced_job, namespace), ours, on_change
        )
        self._jobs.trim = slim_job
        self._pods = Informer(
            "pods", functools.partial(self.core.list_namespaced_pod, namespace), ours, on_change
        )
        self._pods.trim = slim_pod
        # TierPolicies are few and read by every reconcile: cached as well (a reconcile that
        # finds none in the cache asks the API before it reports one missing); their changes
        # reach the qualifications through kopf's handler, which sees spec changes only
        policies = functools.partial(
            self.custom.list_cluster_custom_object, GROUP, VERSION, TP_PLURAL
        )
        self._policies = Informer("tierpolicies", policies, "", lambda _obj: None)
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

    def _dict(self, obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.api.sanitize_for_serialization(obj)
        return out

    # -- qualifications and policies -------------------------------------------------------

    def get_qualification(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, MQ_PLURAL, name
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def list_qualifications(
        self, namespace: str | None = None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        """Every qualification (in `namespace`, or all; matching `label_selector`)."""
        if namespace is None:
            listing = self.custom.list_cluster_custom_object(
                GROUP, VERSION, MQ_PLURAL, label_selector=label_selector
            )
        else:
            listing = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, MQ_PLURAL, label_selector=label_selector
            )
        return list(cast(dict[str, Any], listing)["items"])

    def qualification_pages(self, page: int = 100) -> Iterator[list[dict[str, Any]]]:
        """Every qualification, `page` at a time (a list in chunks: a fleet's statuses are
        never all in memory at once)."""
        token: str | None = None
        while True:
            listing = cast(
                dict[str, Any],
                self.custom.list_cluster_custom_object(
                    GROUP, VERSION, MQ_PLURAL, limit=page, _continue=token
                ),
            )
            yield list(listing.get("items") or [])
            token = (listing.get("metadata") or {}).get("continue") or None
            if not token:
                return

    def qualification_keys(self) -> set[tuple[str, str, str]]:
        """(namespace, name, uid) of every qualification, from a metadata-only list (the
        orphan sweep's: a few hundred bytes an object, not its whole status)."""
        resp: Any = self.custom.list_cluster_custom_object(
            GROUP, VERSION, MQ_PLURAL, _preload_content=False, _headers={"Accept": METADATA_ONLY}
        )
        try:
            doc = json.loads(resp.data)
        finally:
            resp.release_conn()
        return {
            (str(m["namespace"]), str(m["name"]), str(m["uid"]))
            for m in (item.get("metadata") or {} for item in doc.get("items") or [])
        }

    def patch_qualification_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; the object as written, None when it is gone."""
        try:
            written = self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, MQ_PLURAL, name, {"status": status}
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
        try:
            obj = cast(
                dict[str, Any],
                self.custom.get_cluster_custom_object(GROUP, VERSION, TP_PLURAL, name),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def list_policies(self) -> list[dict[str, Any]]:
        """Every TierPolicy (cluster-scoped)."""
        cached = self._policies
        if cached is not None and cached.synced.is_set():
            return cached.items()
        listing = self.custom.list_cluster_custom_object(GROUP, VERSION, TP_PLURAL)
        return list(cast(dict[str, Any], listing)["items"])

    # -- jobs and pods ---------------------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._dict(self.batch.read_namespaced_job(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_job(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the Job, or adopt the one of that name if it is this qualification's own
        (a restart); a Job of that name made for another qualification is refused (409)."""
        try:
            created = self._dict(self.batch.create_namespaced_job(namespace, manifest))
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
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
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
            jobs = self.batch.list_namespaced_job(namespace, label_selector=selector).items
            return [self._dict(j) for j in jobs]

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
                found = self.core.list_namespaced_pod(
                    meta["namespace"], label_selector=f"{LABEL_CONTROLLER_UID}={uid}"
                ).items
            pods = [self._dict(p) for p in found]
        return [p for p in pods if owned_by_job(p, uid)]

    def progress_of(self, pod: dict[str, Any]) -> Progress | None:
        """The benchmark's last progress line in its log (pods/log get, the last few lines);
        None when there is none or the log cannot be read (progress only informs status)."""
        meta = pod.get("metadata") or {}
        try:
            text = self.core.read_namespaced_pod_log(
                meta["name"], meta["namespace"], container=CONTAINER, tail_lines=TAIL_LINES
            )
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            log.debug("no log of %s/%s: %s", meta.get("namespace"), meta.get("name"), exc)
            return None
        return parse_progress(text if isinstance(text, str) else "")

    def running_benchmark_owners(self, namespace: str) -> list[tuple[str, str]]:
        """(namespace, name) of the qualifications whose benchmark pods are running now."""
        cache = self._cache(namespace)
        if cache is not None:
            running = [
                p for p in cache[1].items() if (p.get("status") or {}).get("phase") == "Running"
            ]
        else:
            with benchmark_access("listing running benchmark pods"):
                found = self.core.list_namespaced_pod(
                    namespace,
                    label_selector=f"{LABEL_MANAGED}={MANAGED_BY}",
                    field_selector="status.phase=Running",
                ).items
            running = [self._dict(p) for p in found]
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
            jobs = self.batch.list_namespaced_job(
                namespace, label_selector=f"{LABEL_MANAGED}={MANAGED_BY}"
            ).items
            return [self._dict(j) for j in jobs]

    def get_pvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A claim in the benchmark namespace, read at most every `PVC_FRESH_S` (a burst of
        new qualifications of one model asks once; a claim made or bound since is seen within
        that time, and the qualifications waiting on it look again on their own)."""
        now = time.monotonic()
        seen = self._pvcs.get((namespace, name))
        if seen is not None and now - seen[0] < PVC_FRESH_S:
            return seen[1]
        with benchmark_access("reading a model volume"):
            try:
                found: dict[str, Any] | None = self._dict(
                    self.core.read_namespaced_persistent_volume_claim(name, namespace)
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
                found = None
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
            self.core.create_namespaced_event(meta["namespace"], body)
        except ApiException as exc:  # an event is worth a log line, never a failed reconcile
            log.warning("cannot post event %s on %s: %s", reason, meta["name"], exc.reason)
