"""The cache of our Jobs and pods: one list, then watches resumed from the last
resourceVersion (no replay), a re-list only on 410 Gone, write-through of what we create.
The API is scripted at the list function (what `kube` hands the informer). No cluster."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modelgrid_operator.informer import Informer


def _job(name: str, rv: int, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": str(rv), "labels": labels}}


class _Resp:
    """An unparsed response: a list body, or a watch stream of JSON lines."""

    def __init__(self, body: bytes = b"", lines: list[dict[str, Any]] | None = None) -> None:
        self.data = body
        self._lines = lines or []
        self.status = 200

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        for line in self._lines:
            yield (json.dumps(line) + "\n").encode()

    def close(self) -> None: ...

    def release_conn(self) -> None: ...


class _Api:
    """Lists answer `items`; each watch answers the next scripted batch of events (or
    raises), and records the resourceVersion it was asked to start from."""

    def __init__(self, items: list[dict[str, Any]], rv: int, watches: list[Any]) -> None:
        self.items, self.rv, self.watches = items, rv, watches
        self.lists = 0
        self.watched_from: list[str | None] = []
        self.done = threading.Event()

    def __call__(self, **kwargs: Any) -> _Resp:
        if kwargs.get("watch"):
            self.watched_from.append(kwargs.get("resource_version"))
            if not self.watches:
                self.done.set()
                threading.Event().wait(0.05)
                return _Resp(lines=[])
            step = self.watches.pop(0)
            if isinstance(step, Exception):
                raise step
            return _Resp(lines=step)
        self.lists += 1
        body = {"metadata": {"resourceVersion": str(self.rv)}, "items": self.items}
        return _Resp(body=json.dumps(body).encode())


def _run(api: _Api) -> tuple[Informer, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    inf = Informer("jobs", api, "app.kubernetes.io/managed-by=modelgrid-operator", seen.append)
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
    inf = Informer("jobs", _Api([], 1, []), "", lambda o: None)
    inf.put(_job("mine", 3))
    assert inf.get("mine") is not None
    inf.forget("mine")
    assert inf.items() == []
