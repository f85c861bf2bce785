"""The cache of our Jobs and pods: one list, then watches resumed from the last
resourceVersion (no replay), a re-list only on 410 Gone, write-through of what we create.
The API is scripted at the client (its list and watch of one path). No cluster."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from modelgrid_operator.informer import Informer
from modelgrid_operator.kubeclient import ApiException


def _job(name: str, rv: int, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": str(rv), "labels": labels}}


class _Api:
    """Lists answer `items`; each watch answers the next scripted batch of events (or
    raises), and records the resourceVersion it was asked to start from."""

    def __init__(self, items: list[dict[str, Any]], rv: int, watches: list[Any]) -> None:
        self.items, self.rv, self.watches = items, rv, watches
        self.lists = 0
        self.watched_from: list[str | None] = []
        self.paths: set[str] = set()
        self.closed = 0
        self.done = threading.Event()

    def get_json(self, path: str, query: Any = None) -> Any:
        self.paths.add(path)
        self.lists += 1
        return {"metadata": {"resourceVersion": str(self.rv)}, "items": self.items}

    def watch(self, path: str, query: Any) -> Iterator[dict[str, Any]]:
        self.paths.add(path)
        assert query["allowWatchBookmarks"] is True
        self.watched_from.append(query.get("resourceVersion"))
        if not self.watches:
            self.done.set()
            threading.Event().wait(0.05)
            return iter([])
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        return self._events(step)

    def _events(self, events: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        try:
            yield from events
        finally:
            self.closed += 1


def _run(api: _Api) -> tuple[Informer, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    inf = Informer(
        "jobs",
        api,
        "/apis/batch/v1/namespaces/b/jobs",
        "app.kubernetes.io/managed-by=x",
        seen.append,
    )
    stop = threading.Event()
    t = threading.Thread(target=inf.run, args=(stop,), daemon=True)
    t.start()
    assert api.done.wait(20), "the scripted watches were not all consumed"
    stop.set()
    t.join(10)
    return inf, seen


@pytest.mark.timeout(60)
def test_watches_resume_from_the_last_version_without_listing_again() -> None:
    api = _Api(
        [_job("a", 10)],
        10,
        [
            [{"type": "ADDED", "object": _job("b", 11)}],  # the server closes the watch
            [
                {"type": "MODIFIED", "object": _job("a", 12)},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
            ],
            [{"type": "DELETED", "object": _job("b", 16)}],
        ],
    )
    inf, seen = _run(api)
    assert api.lists == 1  # never replayed
    assert api.watched_from[:3] == ["10", "11", "15"]
    assert {o["metadata"]["name"] for o in inf.items()} == {"a"}
    assert inf.get("a")["metadata"]["resourceVersion"] == "12"  # type: ignore[index]
    assert [o["metadata"]["name"] for o in seen] == ["a", "b", "a", "b"]
    assert api.paths == {"/apis/batch/v1/namespaces/b/jobs"}
    assert api.closed == 3  # every watch's connection given back


@pytest.mark.timeout(60)
def test_a_version_gone_lists_again_and_reports_what_changed() -> None:
    api = _Api(
        [_job("a", 10)],
        10,
        [ApiException(status=410, reason="Gone"), []],
    )
    inf, seen = _run(api)
    assert api.lists == 2
    assert inf.lists == 2
    assert [o["metadata"]["name"] for o in seen] == ["a"]  # the re-list found nothing new


@pytest.mark.timeout(60)
def test_other_failures_resume_from_where_they_were() -> None:
    api = _Api(
        [],
        5,
        [ApiException(status=500, reason="boom"), [{"type": "ADDED", "object": _job("c", 6)}]],
    )
    inf, _ = _run(api)
    assert api.lists == 1
    assert api.watched_from[:2] == ["5", "5"]
    assert inf.get("c") is not None


def test_what_we_create_is_cached_before_its_event() -> None:
    inf = Informer("jobs", _Api([], 1, []), "/jobs", "", lambda o: None)
    inf.put(_job("mine", 3))
    assert inf.get("mine") is not None
    inf.forget("mine")
    assert inf.items() == []
