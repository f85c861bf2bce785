"""kopf wiring: thin handlers that call `Reconciler.reconcile`. Does I/O through `kube`.

Every trigger (a qualification created, changed or resumed; a periodic resync; one of its Jobs
or pods changing, seen through a server-side label-selected watch; a TierPolicy changing) ends
in the same level-triggered reconcile of one qualification, serialised per object. Handlers
never return values into status: the reconciler patches the status subresource explicitly.
kopf keeps its own progress and diff-base in annotations, so status belongs to the API.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from typing import Any

import kopf

from modelgrid_operator import metrics
from modelgrid_operator.api import GROUP, MQ_PLURAL, TP_PLURAL, VERSION, QualificationSpec
from modelgrid_operator.jobs import (
    job_name,
    model_claims,
    qualification_of,
)
from modelgrid_operator.kube import BenchmarkAccessDenied, JobRefused, Kube
from modelgrid_operator.reconcile import (
    BLOCKED_RECHECK_S,
    ActionKind,
    Decision,
    Observed,
    decide,
    installation_fault,
    job_refused,
    needs_resync,
    parse_iso,
)
from modelgrid_operator.settings import Settings

log = logging.getLogger("modelgrid_operator")


def _job_active(job: dict[str, Any]) -> bool:
    done = {"Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"}
    conds = (job.get("status") or {}).get("conditions") or []
    return not any(c.get("type") in done and c.get("status") == "True" for c in conds)


class Reconciler:
    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        #: held from counting the benchmark slots in use to creating a Job in one
        self._slots = threading.Lock()

    @contextmanager
    def _locked(self, namespace: str, name: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault((namespace, name), threading.Lock())
        with lock:
            yield

    @property
    def bench_ns(self) -> str:
        """The namespace benchmark Jobs run in (the operator's own, not a tenant's)."""
        return self.settings.job.namespace

    def watched(self, namespace: str) -> bool:
        return not self.settings.namespaces or namespace in self.settings.namespaces

    def reconcile(self, namespace: str, name: str) -> float | None:
        if not self.watched(namespace):
            return None
        with self._locked(namespace, name):
            try:
                requeue = self._reconcile(namespace, name)
            except Exception:
                metrics.RECONCILES.labels(outcome="error").inc()
                raise
            metrics.RECONCILES.labels(outcome="ok").inc()
            return requeue

    def _reconcile(self, namespace: str, name: str) -> float | None:
        mq = self.kube.get_qualification(namespace, name)
        if mq is None or mq["metadata"].get("deletionTimestamp"):
            metrics.forget(namespace, name)
            return None
        try:
            return self._reconcile_one(mq)
        except BenchmarkAccessDenied as exc:
            return self._access_denied(mq, str(exc))

    def _access_denied(self, mq: dict[str, Any], message: str) -> float:
        """The benchmark namespace forbids the operator: say so on the qualification (a verdict
        that stands is left alone) and look again at the next resync."""
        meta, status = mq["metadata"], mq.get("status") or {}
        log.warning("benchmark namespace %s: %s", self.bench_ns, message)
        if status.get("phase") in ("Succeeded", "Failed"):  # an outcome stands as it is
            return BLOCKED_RECHECK_S
        obs = Observed(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=int(meta.get("generation", 1)),
            spec=mq.get("spec") or {},
            status=status,
            policy_name="",
            policy=None,
            job=None,
            pods=[],
            stale_jobs=[],
            active_benchmarks=0,
            max_concurrent=self.settings.max_concurrent_jobs,
            now=dt.datetime.now(dt.UTC),
            nonce="",
        )
        d = installation_fault(obs, self.bench_ns, message)
        self.kube.patch_qualification_status(meta["namespace"], meta["name"], d.status)
        if _changed(status, d.status):
            for event_type, reason, text in d.events:
                self.kube.post_event(mq, event_type, reason, text)
        return BLOCKED_RECHECK_S

    def _reconcile_one(self, mq: dict[str, Any]) -> float | None:
        meta = mq["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        spec = mq.get("spec") or {}
        status = mq.get("status") or {}
        generation = int(meta.get("generation", 1))
        policy_name = (spec.get("policyRef") or {}).get("name") or self.settings.default_policy
        policy = self.kube.get_policy(policy_name)
        attempt = (
            int(status.get("attempt") or 0) if status.get("observedGeneration") == generation else 0
        )
        current = job_name(name, meta["uid"], generation, attempt)
        jobs = self.kube.jobs_of(self.bench_ns, meta["uid"])
        job = next((j for j in jobs if j["metadata"]["name"] == current), None)
        stale = [
            j["metadata"]["name"]
            for j in jobs
            if j["metadata"]["name"] != current and _job_active(j)
        ]
        pods = self.kube.pods_of_job(job) if job else []
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        progress = (
            self.kube.progress_of(running[0]) if job and _job_active(job) and running else None
        )
        # what only a Job about to be created needs: none yet, or this one finished (a rerun
        # or a re-verification makes the next attempt's)
        may_create = job is None or not _job_active(job)
        # A reconcile that may create a Job counts the free slots and creates it under one
        # lock: two qualifications reconciled at once must never both take the last slot.
        with self._slots if may_create else nullcontext():
            d, obs = self._decide_and_create(
                mq, policy_name, policy, job, pods, stale, progress, may_create
            )
        if not _noop(status, d.status):
            self.kube.patch_qualification_status(namespace, name, d.status)
        new_phase = d.status.get("phase", status.get("phase"))
        if _changed(status, d.status):
            for event_type, reason, message in d.events:
                self.kube.post_event(mq, event_type, reason, message)
            if new_phase in ("Succeeded", "Failed"):
                started = parse_iso(d.status.get("startedAt") or status.get("startedAt"))
                if started is not None:
                    metrics.BENCHMARK_SECONDS.observe((obs.now - started).total_seconds())
            if new_phase == "Failed":
                ready: dict[str, Any] = next(
                    (c for c in d.status.get("conditions", []) if c["type"] == "Stalled"), {}
                )
                if ready.get("reason") == "ResultRejected":
                    metrics.REFUSED.labels(reason=str(ready.get("message", "")).split(":")[0]).inc()
        tier = (
            (d.status.get("tier") or status.get("tier") or {}) if new_phase == "Succeeded" else {}
        )
        metrics.observe(
            namespace,
            name,
            str(new_phase or "Pending"),
            str(tier.get("number", "none")) if tier else "none",
        )
        return d.requeue_after_s

    def _volumes(self, namespace: str, spec: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
        """The claims a new Job would mount, as they are in the benchmark namespace: the
        model's (an invalid spec has none: decide reports the spec) and the evidence claim."""
        claims = [self.settings.job.evidence_claim_for(namespace)]
        with suppress(ValueError):
            claims += model_claims(QualificationSpec.model_validate(spec))
        return {c: self.kube.get_pvc(self.bench_ns, c) for c in dict.fromkeys(claims) if c}

    def delete_jobs_of(self, namespace: str, name: str, uid: str) -> None:
        """Delete every benchmark Job of a qualification that is gone (owner references cannot
        cross from the benchmark namespace to a tenant's, so garbage collection cannot); under
        the qualification's lock, so that no reconcile creates one meanwhile."""
        with self._locked(namespace, name):
            jobs = self.kube.jobs_of(self.bench_ns, uid)
        for job in jobs:
            log.info(
                "deleting Job %s/%s of a deleted qualification",
                self.bench_ns,
                job["metadata"]["name"],
            )
            self.kube.delete_job(self.bench_ns, job["metadata"]["name"])

    def collect_orphans(self) -> int:
        """Delete benchmark Jobs whose qualification no longer exists (deleted while the
        operator was down, or its namespace deleted); returns how many went."""
        # Jobs before qualifications: a Job listed first has its owner in the later listing
        # unless the owner is really gone (the other order would delete a brand-new Job).
        jobs = self.kube.list_benchmark_jobs(self.bench_ns)
        alive = {
            (m["metadata"]["namespace"], m["metadata"]["name"], m["metadata"]["uid"])
            for m in self.kube.list_qualifications()
        }
        gone = 0
        for job in jobs:
            owner = qualification_of(job)
            if owner is not None and owner in alive:
                continue
            if job["metadata"].get("deletionTimestamp"):
                continue
            log.info(
                "deleting orphaned Job %s/%s (owner %s)",
                self.bench_ns,
                job["metadata"]["name"],
                owner,
            )
            self.kube.delete_job(self.bench_ns, job["metadata"]["name"])
            gone += 1
        return gone

    def _decide_and_create(
        self,
        mq: dict[str, Any],
        policy_name: str,
        policy: dict[str, Any] | None,
        job: dict[str, Any] | None,
        pods: list[dict[str, Any]],
        stale: list[str],
        progress: Any,
        may_create: bool,
    ) -> tuple[Decision, Observed]:
        """Observe what only a new Job needs (the slots in use, the claims), decide, delete
        superseded Jobs and create the new one."""
        meta = mq["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        spec = mq.get("spec") or {}
        status = mq.get("status") or {}
        generation = int(meta.get("generation", 1))
        active = self.kube.active_benchmarks(self.bench_ns) if may_create else 0
        volumes = self._volumes(namespace, spec) if may_create else {}
        obs = Observed(
            name=name,
            namespace=namespace,
            uid=meta["uid"],
            generation=generation,
            spec=spec,
            status=status,
            policy_name=policy_name,
            policy=policy,
            job=job,
            pods=pods,
            stale_jobs=stale,
            active_benchmarks=active,
            max_concurrent=self.settings.max_concurrent_jobs,
            now=dt.datetime.now(dt.UTC),
            nonce=secrets.token_hex(16),
            volumes=volumes,
            progress=progress,
        )
        d = decide(obs, self.settings.job)
        for old in d.delete_jobs:
            log.info("superseding Job %s/%s", self.bench_ns, old)
            self.kube.delete_job(self.bench_ns, old)
        if d.action is ActionKind.CREATE_JOB and d.job is not None:
            try:
                self.kube.create_job(self.bench_ns, d.job)
            except JobRefused as exc:
                log.warning("Job for %s/%s refused: %s", namespace, name, exc)
                d = job_refused(obs, d, exc.status, exc.message)
        return d, obs

    def resync(self, enqueue: Callable[[str, str], None]) -> int:
        """The periodic resync: one list of qualifications and one of policies, and a
        reconcile of those that need one (`needs_resync`); returns how many."""
        policies = {
            p["metadata"]["name"]: int(p["metadata"].get("generation", 0))
            for p in self.kube.list_policies()
        }
        now = dt.datetime.now(dt.UTC)
        due = 0
        for mq in self.kube.list_qualifications():
            m = mq["metadata"]
            if self.watched(m["namespace"]) and needs_resync(
                mq, policies, self.settings.default_policy, now
            ):
                enqueue(m["namespace"], m["name"])
                due += 1
        return due

    def reconcile_policy_users(self, policy: str) -> None:
        for mq in self.kube.list_qualifications():
            ref = ((mq.get("spec") or {}).get("policyRef") or {}).get("name")
            if (ref or self.settings.default_policy) == policy:
                m = mq["metadata"]
                self.reconcile(m["namespace"], m["name"])


def _noop(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether merge-patching `new` onto `old` changes nothing (null removes a field): such a
    patch is not sent, so an idle resync writes nothing."""
    return all((k not in old) if v is None else old.get(k) == v for k, v in new.items())


def _changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    def key(st: dict[str, Any]) -> tuple[Any, ...]:
        conds = {
            c.get("type"): (c.get("status"), c.get("reason")) for c in st.get("conditions", [])
        }
        return st.get("phase"), st.get("attempt"), tuple(sorted(conds.items()))

    return key(old) != key({**old, **new})


#: How often Jobs whose qualification is gone are looked for (and once at start).
ORPHAN_SWEEP_S = 60.0
#: How often a running benchmark's progress is read into its status (pods/log get, one call
#: per running benchmark: bounded by the concurrency cap).
PROGRESS_REFRESH_S = 10.0


class _Watcher:
    """The cache's changes of our Jobs and pods mapped to their owner's reconcile; the orphan
    sweep, the progress refresh and the resync, each a thread."""

    def __init__(self, reconciler: Reconciler) -> None:
        self.r = reconciler
        self.stop = threading.Event()
        #: set when a Job of ours finished: the resync runs at once
        self.wake = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="reconcile")
        self._pending: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def _enqueue(self, namespace: str, name: str) -> None:
        with self._lock:
            if (namespace, name) in self._pending:
                return
            self._pending.add((namespace, name))

        def run() -> None:
            with self._lock:
                self._pending.discard((namespace, name))
            try:
                self.r.reconcile(namespace, name)
            except Exception:
                log.exception("reconcile of %s/%s after a Job/pod change failed", namespace, name)

        self.pool.submit(run)

    def _changed(self, obj: dict[str, Any]) -> None:
        """A Job or pod of ours changed (the cache's watch saw it): reconcile its owner; a
        Job that finished frees a slot, so the resync runs now for the queued ones."""
        owner = qualification_of(obj)
        if owner is not None:
            self._enqueue(owner[0], owner[1])
        if obj.get("kind") == "Job" and not _job_active(obj):
            self.wake.set()

    def _sweep(self) -> None:
        while not self.stop.is_set():
            try:
                self.r.collect_orphans()
            except Exception as exc:  # the next sweep retries; the operator keeps serving
                log.warning("orphaned-Job sweep failed: %s", exc)
            self.stop.wait(ORPHAN_SWEEP_S)

    def _resync(self) -> None:
        """Covers what no watch event announces: a free slot in the queue, an expiry, an event
        lost while the operator was down. One thread, two lists a round, not a timer per
        object: no finalizer on any qualification, and an idle cost that does not grow with
        the fleet."""
        while not self.stop.is_set():
            # every interval, or at once when a Job finished (a slot is free for the queue)
            self.wake.wait(self.r.settings.resync_interval_s)
            self.wake.clear()
            if self.stop.is_set():
                return
            try:
                self.r.resync(self._enqueue)
            except Exception as exc:  # the next round retries; the operator keeps serving
                log.warning("resync failed: %s", exc)

    def _progress(self) -> None:
        while not self.stop.wait(PROGRESS_REFRESH_S):
            try:
                for namespace, name in self.r.kube.running_benchmark_owners(self.r.bench_ns):
                    self._enqueue(namespace, name)
            except Exception as exc:  # the next round retries; progress only informs status
                log.warning("progress refresh failed: %s", exc)

    def start(self) -> None:
        # the cache's watches resume from their resourceVersion: no replay of every object
        if not self.r.kube.start_cache(self.r.bench_ns, self._changed, self.stop):
            log.warning(
                "the cache of benchmark Jobs and pods is not synced yet: reading them from the "
                "API until it is"
            )
        threading.Thread(target=self._sweep, name="orphan-sweep", daemon=True).start()
        threading.Thread(target=self._progress, name="progress", daemon=True).start()
        threading.Thread(target=self._resync, name="resync", daemon=True).start()


_runtime: dict[str, Any] = {}


def _reconciler() -> Reconciler:
    return _runtime["reconciler"]  # type: ignore[no-any-return]


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf keeps its bookkeeping in annotations so that status is only ours.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    cfg = Settings.from_env()
    reconciler = Reconciler(Kube(), cfg)
    _runtime["reconciler"] = reconciler
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_port)
    watcher = _Watcher(reconciler)
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
        watcher.stop.set()
        watcher.wake.set()
        watcher.pool.shutdown(wait=False, cancel_futures=True)


@kopf.on.create(GROUP, VERSION, MQ_PLURAL)
@kopf.on.update(GROUP, VERSION, MQ_PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, MQ_PLURAL)
def on_qualification(namespace: str, name: str, **_: Any) -> None:
    _reconciler().reconcile(namespace, name)


@kopf.on.event(GROUP, VERSION, MQ_PLURAL)
def on_deleted(event: dict[str, Any], namespace: str, name: str, uid: str, **_: Any) -> None:
    # A watch event, not a deletion handler: nothing asks kopf for a finalizer (kopf removes
    # the one an earlier version's per-object timer added), so a qualification goes at once and
    # its Jobs follow when the DELETED event arrives; a deletion missed while the operator was
    # down is the orphan sweep's.
    if event.get("type") != "DELETED":
        return
    metrics.forget(namespace, name)
    _reconciler().delete_jobs_of(namespace, name, uid)


@kopf.on.create(GROUP, VERSION, TP_PLURAL)
@kopf.on.update(GROUP, VERSION, TP_PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, TP_PLURAL)
def on_policy(name: str, **_: Any) -> None:
    _reconciler().reconcile_policy_users(name)
