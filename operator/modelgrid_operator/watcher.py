"""The operator's background work beside kopf: the cache's changes mapped to reconciles, the
resync, the orphan sweep and the progress refresh, each a thread, reconciles in one bounded
pool. Does I/O through the reconciler and `kube` (the watches themselves are `kube`'s cache).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modelgrid_operator.heap import release_free_heap
from modelgrid_operator.jobs import qualification_of
from modelgrid_operator.kube import Kube
from modelgrid_operator.podstate import job_finished
from modelgrid_operator.reconciler import Reconciler

log = logging.getLogger("modelgrid_operator")

#: How often Jobs whose qualification is gone are looked for (and once at start).
ORPHAN_SWEEP_S = 60.0
#: How often a running benchmark's progress is read into its status (pods/log get, one call
#: per running benchmark: bounded by the concurrency cap).
PROGRESS_REFRESH_S = 10.0
#: Reconciles the watcher runs at once (kopf's handlers run in their own pool).
RECONCILE_WORKERS = 4
#: Events waiting to be posted; beyond it one is dropped with a log line (events only inform).
EVENT_BACKLOG = 10000


class EventPoster:
    """Posts the reconciler's events from one thread, in order: a reconcile does not wait for
    them (its status is written first; an event adds the words of a change). Those still
    waiting when the operator stops are not posted."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._queue: queue.Queue[tuple[dict[str, Any], str, str, str] | None] = queue.Queue(
            EVENT_BACKLOG
        )
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def post(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        try:
            self._queue.put_nowait((obj, event_type, reason, message))
        except queue.Full:
            log.warning(
                "event %s on %s dropped: %d waiting", reason, obj["metadata"]["name"], EVENT_BACKLOG
            )

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self.kube.post_event(*item)
            except Exception as exc:  # an event is worth a log line, never a stopped poster
                log.warning("cannot post event %s: %s", item[2], exc)

    def close(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)


class Watcher:
    """Reconciles what kopf's handlers do not see: a Job or pod of ours that changed, a slot
    that freed, an expiry, an event lost while the operator was down."""

    def __init__(self, reconciler: Reconciler) -> None:
        self.r = reconciler
        self.stop = threading.Event()
        #: set when a Job of ours finished: the resync runs at once
        self.wake = threading.Event()
        self.pool = ThreadPoolExecutor(
            max_workers=RECONCILE_WORKERS, thread_name_prefix="reconcile"
        )
        self._pending: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def enqueue(self, namespace: str, name: str) -> None:
        """Reconcile in the pool; one already waiting for the same qualification is enough."""
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
                log.exception("reconcile of %s/%s failed", namespace, name)

        self.pool.submit(run)

    def changed(self, obj: dict[str, Any]) -> None:
        """A Job or pod of ours changed (the cache's watch saw it): reconcile its owner; a
        Job that finished frees a slot, so the resync runs now for the queued ones."""
        owner = qualification_of(obj)
        if owner is not None:
            self.enqueue(owner[0], owner[1])
        if obj.get("kind") == "Job" and job_finished(obj):
            self.wake.set()

    def _sweep(self) -> None:
        while not self.stop.is_set():
            try:
                self.r.collect_orphans(self.enqueue)
            except Exception as exc:  # the next sweep retries; the operator keeps serving
                log.warning("orphaned-Job sweep failed: %s", exc)
            self.stop.wait(ORPHAN_SWEEP_S)

    def _resync(self) -> None:
        """One thread, reading the roster, not a timer per object: no finalizer on any
        qualification, and an idle cost that does not grow with the fleet."""
        while not self.stop.is_set():
            # every interval, or at once when a Job finished (a slot is free for the queue)
            self.wake.wait(self.r.settings.resync_interval_s)
            self.wake.clear()
            if self.stop.is_set():
                return
            try:
                self.r.resync(self.enqueue)
            except Exception as exc:  # the next round retries; the operator keeps serving
                log.warning("resync failed: %s", exc)
            self._release_heap()

    _heap_released_at = float("-inf")

    def _release_heap(self) -> None:
        """What bursts freed goes back to the system, at most once an interval (the resync
        wakes at every finished Job): RSS follows the fleet down, not its high-water mark."""
        now = time.monotonic()
        if now - self._heap_released_at >= self.r.settings.resync_interval_s:
            self._heap_released_at = now
            release_free_heap()

    def _progress(self) -> None:
        while not self.stop.wait(PROGRESS_REFRESH_S):
            try:
                for namespace, name in self.r.kube.running_benchmark_owners(self.r.bench_ns):
                    self.enqueue(namespace, name)
            except Exception as exc:  # the next round retries; progress only informs status
                log.warning("progress refresh failed: %s", exc)

    def policy_changed(self, obj: dict[str, Any]) -> None:
        """A TierPolicy changed (the cache's watch saw it): its users are priced again."""
        name = (obj.get("metadata") or {}).get("name")
        if name:
            for namespace, qualification in self.r.policy_users(str(name)):
                self.enqueue(namespace, qualification)

    def start(self) -> None:
        # the cache's watches resume from their resourceVersion: no replay of every object
        if not self.r.kube.start_cache(self.r.bench_ns, self.changed, self.stop):
            log.warning(
                "the cache of benchmark Jobs and pods is not synced yet: reading them from the "
                "API until it is"
            )
        threading.Thread(target=self._sweep, name="orphan-sweep", daemon=True).start()
        threading.Thread(target=self._progress, name="progress", daemon=True).start()
        threading.Thread(target=self._resync, name="resync", daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.wake.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
