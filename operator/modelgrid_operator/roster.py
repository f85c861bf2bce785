"""The operator's roster of qualifications: a trimmed copy of each, kept in memory. No I/O.

The resync and the orphan sweep read it instead of listing every qualification (whose statuses
hold results, measurements and history: a few kilobytes each, megabytes for a fleet) on every
round. It is fed by kopf's watch events, by every reconcile's own read and by the status it
writes, and filled from one list before it is first used; the orphan sweep's metadata-only list
prunes what a missed deletion left behind.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

#: What the resync decides on (`resync.needs_resync`), and nothing else.
_META = (
    "namespace",
    "name",
    "uid",
    "generation",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
)
_SPEC = ("policyRef", "queueName")
_STATUS = ("phase", "observedGeneration", "policy", "expiresAt")


def trimmed(obj: dict[str, Any]) -> dict[str, Any]:
    """The part of a qualification the roster keeps (the Ready condition's status only)."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    status = obj.get("status") or {}
    ready = [
        {"type": "Ready", "status": c.get("status")}
        for c in status.get("conditions") or []
        if c.get("type") == "Ready"
    ]
    return {
        "metadata": {k: meta[k] for k in _META if k in meta},
        "spec": {k: spec[k] for k in _SPEC if k in spec},
        "status": {**{k: status[k] for k in _STATUS if k in status}, "conditions": ready[:1]},
    }


def merged(status: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`status` after a JSON merge patch of its top-level keys (None removes one)."""
    out = {**status, **patch}
    return {k: v for k, v in out.items() if v is not None}


class Roster:
    """(namespace, name) -> trimmed qualification; thread-safe."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        #: set once the roster was filled from a list (before that it may lack objects)
        self.primed = threading.Event()

    def prime(self, pages: Iterable[list[dict[str, Any]]]) -> None:
        """Fill from a list of every qualification, page by page (each trimmed before the next
        is read); a newer copy a watch event brought meanwhile is kept."""
        for objs in pages:
            for obj in objs:
                self.put(obj)
        self.primed.set()

    def put(self, obj: dict[str, Any]) -> None:
        """A qualification as last seen: a watch event that arrives after the operator's own
        write (an older resourceVersion) does not undo it."""
        entry = trimmed(obj)
        key = _key(entry)
        with self._lock:
            old = self._items.get(key)
            if old is None or not _older(entry, old):
                self._items[key] = entry

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._items.pop((namespace, name), None)

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items.values())

    def retain(self, alive: set[tuple[str, str, str]]) -> list[tuple[str, str]]:
        """Keep only the qualifications in `alive` ((namespace, name, uid), from a list of
        every one); returns those in `alive` the roster lacks (to be reconciled)."""
        with self._lock:
            kept = {
                k: v
                for k, v in self._items.items()
                if (k[0], k[1], str(v["metadata"].get("uid"))) in alive
            }
            self._items = kept
            known = {(k[0], k[1]) for k in kept}
        return sorted({(ns, name) for ns, name, _uid in alive} - known)


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _older(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether `new` is an earlier state of the object than `old`: a different uid is a new
    object of that name (never older); resourceVersions are compared as the numbers etcd makes
    them, and an unreadable one counts as newer."""
    a, b = new["metadata"], old["metadata"]
    if a.get("uid") != b.get("uid"):
        return False
    try:
        return int(a.get("resourceVersion") or "") < int(b.get("resourceVersion") or "")
    except ValueError:
        return False
