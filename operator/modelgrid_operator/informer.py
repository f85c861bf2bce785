"""An informer-style cache of the operator's own Jobs and pods in the benchmark namespace.
Does I/O (through `kube`'s API client, `kubeclient.ApiClient`).

One list, then one watch that resumes from the last resourceVersion it saw (a bookmark
included): a watch that ends (its server timeout, a dropped connection) picks up where it was,
without replaying every object; only a 410 Gone (the version was compacted away) lists again.
Reconciles read Jobs and pods from here instead of listing every benchmark Job in the cluster;
what the operator itself creates or deletes is written through at once, so a count taken right
after a create includes it (the concurrency cap relies on that).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from modelgrid_operator.kubeclient import ApiException, Query

log = logging.getLogger(__name__)

#: The server closes a watch after this long (it is then resumed from its resourceVersion).
WATCH_TIMEOUT_S = 300
HTTP_GONE = 410


class ListWatch(Protocol):
    """What an informer needs of the API client: a list and a watch of one path."""

    def get_json(self, path: str, query: Query | None = None) -> Any: ...

    def watch(self, path: str, query: Query) -> Iterator[dict[str, Any]]: ...


class Informer:
    """The objects under one API path (label-selected), kept current by a watch.

    `on_change(obj)` is called for every object added, changed or deleted (and, after a
    re-list, for every object that differs from what was cached)."""

    def __init__(
        self,
        kind: str,
        api: ListWatch,
        path: str,
        label_selector: str,
        on_change: Callable[[dict[str, Any]], None],
    ) -> None:
        self.kind = kind
        #: what is kept of each object (the fields the operator reads: memory stays flat as
        #: finished Jobs and their pods accumulate); all of it unless set
        self.trim: Callable[[dict[str, Any]], dict[str, Any]] = lambda obj: obj
        self._api = api
        self._path = path
        self._selector = label_selector
        self._on_change = on_change
        self._objs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._rv: str | None = None
        self.synced = threading.Event()
        #: how many times the cache was filled from a list (1 while watches resume cleanly)
        self.lists = 0

    # -- reading ------------------------------------------------------------------------

    def items(self) -> list[dict[str, Any]]:
        """A snapshot of every cached object (the dicts are not to be changed)."""
        with self._lock:
            return list(self._objs.values())

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objs.get(name)

    # -- writing through ------------------------------------------------------------------

    def put(self, obj: dict[str, Any]) -> None:
        """An object the operator just created (or read): cached before its watch event."""
        name = str((obj.get("metadata") or {}).get("name") or "")
        if name:
            with self._lock:
                self._objs[name] = self.trim(obj)

    def forget(self, name: str) -> None:
        """An object the operator just deleted."""
        with self._lock:
            self._objs.pop(name, None)

    # -- feeding ------------------------------------------------------------------------------

    def _relist(self) -> None:
        doc = self._api.get_json(self._path, {"labelSelector": self._selector})
        fresh = {str(o["metadata"]["name"]): self.trim(o) for o in doc.get("items") or []}
        with self._lock:
            old, self._objs = self._objs, fresh
        self._rv = str((doc.get("metadata") or {}).get("resourceVersion") or "") or None
        self.lists += 1
        self.synced.set()
        changed = [o for n, o in fresh.items() if old.get(n) != o]
        gone = [o for n, o in old.items() if n not in fresh]
        for obj in changed + gone:
            self._on_change(obj)

    def _apply(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        meta = obj.get("metadata") or {}
        obj = self.trim(obj) if kind != "BOOKMARK" else obj
        if meta.get("resourceVersion"):
            self._rv = str(meta["resourceVersion"])
        if kind == "BOOKMARK":
            return
        name = str(meta.get("name") or "")
        with self._lock:
            if kind == "DELETED":
                self._objs.pop(name, None)
            else:
                self._objs[name] = obj
        self._on_change(obj)

    def _watch_once(self) -> None:
        query = {
            "labelSelector": self._selector,
            "resourceVersion": self._rv,
            "timeoutSeconds": WATCH_TIMEOUT_S,
            "allowWatchBookmarks": True,
        }
        events = self._api.watch(self._path, query)
        try:
            for event in events:
                self._apply(event)
                if self._stopping is not None and self._stopping.is_set():
                    return
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()  # gives the connection back

    _stopping: threading.Event | None = None

    def run(self, stop: threading.Event) -> None:
        """List, then watch from where the list (or the last event) left off, until `stop`."""
        self._stopping = stop
        while not stop.is_set():
            try:
                if self._rv is None:
                    self._relist()
                self._watch_once()
            except ApiException as exc:
                if exc.status == HTTP_GONE:
                    log.info("%s watch: version %s is gone; listing again", self.kind, self._rv)
                    self._rv = None
                    continue
                log.warning("%s watch failed (%s); resuming", self.kind, exc.status)
                stop.wait(1.0)
            except Exception as exc:
                if not stop.is_set():
                    log.warning("%s watch restarted after: %s", self.kind, exc)
                    stop.wait(1.0)
