"""The reconcile of one qualification, end to end: observe, `decide`, act, write status. Does I/O
through `kube` (the one module that talks to the API) and nowhere else.

Every trigger (the qualification created, changed or resumed; one of its Jobs or pods changed;
a TierPolicy changed; the resync) ends in this same level-triggered reconcile, serialised per
object. The status is patched explicitly through the status subresource (kopf keeps its own
bookkeeping in annotations) and only when the patch would change something.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from typing import Any

from modelgrid_operator import metrics
from modelgrid_operator.api import QualificationSpec
from modelgrid_operator.blocked import installation_fault, job_refused
from modelgrid_operator.jobs import job_name, model_claims, qualification_of
from modelgrid_operator.kube import Kube
from modelgrid_operator.kubeclient import BenchmarkAccessDenied, JobRefused
from modelgrid_operator.outcome import (
    BLOCKED_RECHECK_S,
    ActionKind,
    Decision,
    Observed,
    parse_iso,
)
from modelgrid_operator.podstate import job_finished
from modelgrid_operator.reconcile import decide
from modelgrid_operator.resync import due_now, waiting_ahead
from modelgrid_operator.roster import Roster, merged
from modelgrid_operator.settings import Settings
from modelgrid_operator.status import Phase, Reason
from modelgrid_operator.statuspatch import validate_status_patch

log = logging.getLogger("modelgrid_operator")

Volumes = dict[str, dict[str, Any] | None]
#: (qualification, type, reason, message) -> None
PostEvent = Callable[[dict[str, Any], str, str, str], None]


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        roster: Roster | None = None,
        post_event: PostEvent | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.roster = roster if roster is not None else Roster()
        #: how a decision's events are posted (the operator's: in the background, in order)
        self.post_event: PostEvent = post_event or kube.post_event
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        #: held while the benchmark slots in use are counted and one is taken
        self._slots = threading.Lock()
        #: Jobs decided on and being created: they hold their slot before the cache has them
        self._reserved: set[str] = set()

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

    def reconcile(
        self, namespace: str, name: str, body: dict[str, Any] | None = None
    ) -> float | None:
        """Reconcile one qualification; `body` is the object as just delivered by its creation
        event (nothing else has written it yet), else it is read from the API."""
        if not self.watched(namespace):
            return None
        with self._locked(namespace, name):
            try:
                requeue = self._reconcile(namespace, name, body)
            except Exception:
                metrics.RECONCILES.labels(outcome="error").inc()
                raise
            metrics.RECONCILES.labels(outcome="ok").inc()
            return requeue

    def _reconcile(self, namespace: str, name: str, body: dict[str, Any] | None) -> float | None:
        mq = body if body is not None else self.kube.get_qualification(namespace, name)
        if mq is None or mq["metadata"].get("deletionTimestamp"):
            self.forget(namespace, name)
            return None
        self.roster.put(mq)
        try:
            return self._reconcile_one(mq)
        except BenchmarkAccessDenied as exc:
            return self._access_denied(mq, str(exc))

    def forget(self, namespace: str, name: str) -> None:
        """A qualification that is gone (or going): out of the roster and the metrics."""
        self.roster.forget(namespace, name)
        with self._guard:
            self._locks.pop((namespace, name), None)
        metrics.forget(namespace, name)

    def _observed(self, mq: dict[str, Any], **parts: Any) -> Observed:
        meta = mq["metadata"]
        return Observed(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=int(meta.get("generation", 1)),
            spec=mq.get("spec") or {},
            status=mq.get("status") or {},
            max_concurrent=self.settings.max_concurrent_jobs,
            now=dt.datetime.now(dt.UTC),
            **{
                "policy_name": "",
                "policy": None,
                "job": None,
                "pods": [],
                "stale_jobs": [],
                "active_benchmarks": 0,
                "nonce": "",
                **parts,
            },
        )

    def _access_denied(self, mq: dict[str, Any], message: str) -> float:
        """The benchmark namespace forbids the operator: say so on the qualification (a verdict
        that stands is left alone) and look again at the next resync."""
        status = mq.get("status") or {}
        log.warning("benchmark namespace %s: %s", self.bench_ns, message)
        if status.get("phase") in (Phase.SUCCEEDED.value, Phase.FAILED.value):
            return BLOCKED_RECHECK_S  # an outcome stands as it is
        d = installation_fault(self._observed(mq), self.bench_ns, message)
        self._write(mq, d)
        return BLOCKED_RECHECK_S

    def _reconcile_one(self, mq: dict[str, Any]) -> float | None:
        meta, spec = mq["metadata"], mq.get("spec") or {}
        status = mq.get("status") or {}
        generation = int(meta.get("generation", 1))
        policy_name = (spec.get("policyRef") or {}).get("name") or self.settings.default_policy
        attempt = (
            int(status.get("attempt") or 0) if status.get("observedGeneration") == generation else 0
        )
        current = job_name(meta["name"], meta["uid"], generation, attempt)
        jobs = self.kube.jobs_of(self.bench_ns, meta["uid"])
        job = next((j for j in jobs if j["metadata"]["name"] == current), None)
        stale = [
            j["metadata"]["name"]
            for j in jobs
            if j["metadata"]["name"] != current and not job_finished(j)
        ]
        live = job is not None and not job_finished(job)
        # a finished Job's pods are read whole (their termination messages: the result or the
        # failure) until its outcome is in status; the cache's copies serve every other look
        settled = status.get("observedGeneration") == generation and status.get("phase") in (
            Phase.SUCCEEDED,
            Phase.FAILED,
        )
        pods = self.kube.pods_of_job(job, whole=not live and not settled) if job else []
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        # what only a Job about to be created needs: none yet, or this one finished (a rerun
        # or a re-verification makes the next attempt's); read before the slot lock is taken
        may_create = not live
        parts = {
            "policy_name": policy_name,
            "policy": self.kube.get_policy(policy_name),
            "job": job,
            "pods": pods,
            "stale_jobs": stale,
            "progress": self.kube.progress_of(running[0]) if live and running else None,
            "volumes": self._volumes(meta["namespace"], spec) if may_create else {},
        }
        d, obs = self._decide_and_create(mq, parts, may_create)
        self._write(mq, d)
        self._observe_outcome(mq, d, obs)
        return d.requeue_after_s

    def _write(self, mq: dict[str, Any], d: Decision) -> None:
        """Patch the status (when it changes anything) and post the decision's events (when
        the phase or a condition moved), and keep the roster's copy current."""
        meta, status = mq["metadata"], mq.get("status") or {}
        if not _noop(status, d.status):
            # the apiserver would drop an unknown key without a word: refuse to send one
            validate_status_patch(d.status)
            written = self.kube.patch_qualification_status(
                meta["namespace"], meta["name"], d.status
            )
            self.roster.put(written or {**mq, "status": merged(status, d.status)})
        if _changed(status, d.status):
            for event_type, reason, text in d.events:
                self.post_event(mq, event_type, reason, text)

    def _observe_outcome(self, mq: dict[str, Any], d: Decision, obs: Observed) -> None:
        meta, status = mq["metadata"], mq.get("status") or {}
        new_phase = d.status.get("phase", status.get("phase"))
        if _changed(status, d.status) and new_phase in (Phase.SUCCEEDED, Phase.FAILED):
            started = parse_iso(d.status.get("startedAt") or status.get("startedAt"))
            if started is not None:
                metrics.BENCHMARK_SECONDS.observe((obs.now - started).total_seconds())
            stalled: dict[str, Any] = next(
                (c for c in d.status.get("conditions", []) if c["type"] == "Stalled"), {}
            )
            if new_phase == Phase.FAILED and stalled.get("reason") == Reason.RESULT_REJECTED:
                metrics.REFUSED.labels(reason=str(stalled.get("message", "")).split(":")[0]).inc()
        succeeded = new_phase == Phase.SUCCEEDED
        tier = (d.status.get("tier") or status.get("tier") or {}) if succeeded else {}
        metrics.observe(
            meta["namespace"],
            meta["name"],
            str(new_phase or Phase.PENDING.value),
            str(tier.get("number", "none")) if tier else "none",
        )

    def _volumes(self, namespace: str, spec: dict[str, Any]) -> Volumes:
        """The claims a new Job would mount, as they are in the benchmark namespace: the
        model's (an invalid spec has none: decide reports the spec) and the evidence claim."""
        claims = [self.settings.job.evidence_claim_for(namespace)]
        with suppress(ValueError):
            claims += model_claims(QualificationSpec.model_validate(spec))
        return {c: self.kube.get_pvc(self.bench_ns, c) for c in dict.fromkeys(claims) if c}

    def _decide_and_create(
        self, mq: dict[str, Any], parts: dict[str, Any], may_create: bool
    ) -> tuple[Decision, Observed]:
        """Decide; delete superseded Jobs and create the new one. A decision that may take a
        slot is made under the slot lock, counting the Jobs running (from the cache: no
        request) and those other reconciles are creating, and reserves its slot before the
        lock is let go: two qualifications reconciled at once never both take the last slot,
        and the create request itself runs outside the lock."""
        meta = mq["metadata"]
        with self._slots if may_create else nullcontext():
            active = self._slots_in_use() if may_create else 0
            ahead = waiting_ahead(self.roster.items(), mq) if may_create else 0
            obs = self._observed(
                mq,
                active_benchmarks=active,
                waiting_ahead=ahead,
                nonce=secrets.token_hex(16),
                **parts,
            )
            d = decide(obs, self.settings.job)
            creating = (
                d.job["metadata"]["name"] if d.action is ActionKind.CREATE_JOB and d.job else ""
            )
            if creating:
                self._reserved.add(creating)
        try:
            for old in d.delete_jobs:
                log.info("superseding Job %s/%s", self.bench_ns, old)
                self.kube.delete_job(self.bench_ns, old)
            if creating and d.job is not None:
                try:
                    self.kube.create_job(self.bench_ns, d.job)
                except JobRefused as exc:
                    log.warning("Job for %s/%s refused: %s", meta["namespace"], meta["name"], exc)
                    d = job_refused(obs, d, exc.status, exc.message)
        finally:
            if creating:  # created (the cache counts it now) or refused: the slot is its own
                with self._slots:
                    self._reserved.discard(creating)
        return d, obs

    def _slots_in_use(self) -> int:
        """Running benchmark Jobs and those being created (the caller holds the slot lock)."""
        cached = {job_of(j) for j in self.kube.list_benchmark_jobs(self.bench_ns)}
        return self.kube.active_benchmarks(self.bench_ns) + len(self._reserved - cached)

    def delete_jobs_of(self, namespace: str, name: str, uid: str) -> None:
        """Delete every benchmark Job of a qualification that is gone (owner references cannot
        cross from the benchmark namespace to a tenant's, so garbage collection cannot); under
        the qualification's lock, so that no reconcile creates one meanwhile."""
        with self._locked(namespace, name):
            jobs = self.kube.jobs_of(self.bench_ns, uid)
        self.forget(namespace, name)
        for job in jobs:
            log.info("deleting Job %s/%s of a deleted qualification", self.bench_ns, job_of(job))
            self.kube.delete_job(self.bench_ns, job_of(job))

    def collect_orphans(self, enqueue: Callable[[str, str], None] | None = None) -> int:
        """Delete benchmark Jobs whose qualification no longer exists (deleted while the
        operator was down, or its namespace deleted); returns how many went. The list of every
        qualification it needs (metadata only) also prunes the roster, and the qualifications
        the roster lacks are handed to `enqueue`."""
        # Jobs before qualifications: a Job listed first has its owner in the later listing
        # unless the owner is really gone (the other order would delete a brand-new Job).
        jobs = self.kube.list_benchmark_jobs(self.bench_ns)
        alive = self.kube.qualification_keys()
        missing = self.roster.retain(alive)
        if enqueue is not None:
            for namespace, name in missing:
                if self.watched(namespace):
                    enqueue(namespace, name)
        gone = 0
        for job in jobs:
            owner = qualification_of(job)
            if (owner is not None and owner in alive) or job["metadata"].get("deletionTimestamp"):
                continue
            log.info("deleting orphaned Job %s/%s (owner %s)", self.bench_ns, job_of(job), owner)
            self.kube.delete_job(self.bench_ns, job_of(job))
            gone += 1
        return gone

    def resync(self, enqueue: Callable[[str, str], None]) -> int:
        """The periodic resync, from the roster (filled from one list on its first round):
        reconcile what is not settled (`resync.due_now`), the oldest queued first and only as
        many of those as there are free slots; returns how many were handed to `enqueue`."""
        if not self.roster.primed.is_set():
            self.roster.prime(self.kube.qualification_pages())
        policies = {
            p["metadata"]["name"]: int(p["metadata"].get("generation", 0))
            for p in self.kube.list_policies()
        }
        with self._slots:
            free = self.settings.max_concurrent_jobs - self._slots_in_use()
        due = due_now(
            [m for m in self.roster.items() if self.watched(m["metadata"]["namespace"])],
            policies,
            self.settings.default_policy,
            dt.datetime.now(dt.UTC),
            free,
        )
        for namespace, name in due:
            enqueue(namespace, name)
        return len(due)

    def policy_users(self, policy: str) -> list[tuple[str, str]]:
        """The qualifications priced by `policy` (named, or the default)."""
        if not self.roster.primed.is_set():
            self.roster.prime(self.kube.qualification_pages())
        users = []
        for mq in self.roster.items():
            ref = ((mq.get("spec") or {}).get("policyRef") or {}).get("name")
            m = mq["metadata"]
            if (ref or self.settings.default_policy) == policy and self.watched(m["namespace"]):
                users.append((m["namespace"], m["name"]))
        return users


def job_of(job: dict[str, Any]) -> str:
    return str(job["metadata"]["name"])


def _noop(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether merge-patching `new` onto `old` changes nothing (null removes a field): such a
    patch is not sent, so an idle resync writes nothing."""
    return all((k not in old) if v is None else old.get(k) == v for k, v in new.items())


def _changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether the phase, the attempt or a condition's status or reason moves (events are
    posted only then, so a repeated reconcile does not repeat them)."""

    def key(st: dict[str, Any]) -> tuple[Any, ...]:
        conds = {
            c.get("type"): (c.get("status"), c.get("reason")) for c in st.get("conditions", [])
        }
        return st.get("phase"), st.get("attempt"), tuple(sorted(conds.items()))

    return key(old) != key({**old, **new})
